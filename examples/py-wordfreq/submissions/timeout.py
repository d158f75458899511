"""Word frequencies whose module-level self-check never ends.

The loop runs while the grader imports the module, which the grader does not
time itself: the whole run exceeds the assignment's timeout_s (8 s) and
gradeflow reports timed_out. The loop prints nothing, so only time runs out.
"""

from collections import Counter


def top_words(text, n):
    counts = Counter(text.lower().split())
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


# Self-check: grow the text until its top word occurs 10 times. The text is
# reset instead of extended (= instead of +=), so that never happens.
text = ""
while not top_words(text, 1) or top_words(text, 1)[0][1] < 10:
    text = "hello world "
