"""FizzBuzz whose module-level demo never ends (no `if __name__ == "__main__":`).

The loop runs while the grader imports the module, which the grader does not
time itself: the whole run exceeds the assignment's timeout_s (8 s) and
gradeflow reports timed_out. The loop prints nothing, so only time runs out.
"""


def fizzbuzz(n):
    return [("Fizz" * (i % 3 == 0) + "Buzz" * (i % 5 == 0)) or str(i) for i in range(1, n + 1)]


# Demo: check the last entry for 1..20 (the print was commented out, and so,
# by mistake, was the increment).
i = 1
while i <= 20:
    last = fizzbuzz(i)[-1]
    # print(i, last)
    # i += 1
