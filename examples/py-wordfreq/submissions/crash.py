"""Word frequencies with a syntax error (a missing colon).

Expected: graded, 0.0, with the SyntaxError and its line in the feedback.
"""

from collections import Counter


def top_words(text, n)
    counts = Counter(text.lower().split())
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]
