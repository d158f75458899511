"""FizzBuzz that raises while being imported (a leftover debugging line).

Expected: graded, 0 / 10, with the ZeroDivisionError traceback in the
"fizzbuzz.py imports" test and the top-level output.
"""

WORDS = {3: "Fizz", 5: "Buzz"}

# quick check of the divisors before submitting...
CHECK = 15 / (len(WORDS) - 2)


def fizzbuzz(n):
    return ["".join(w for d, w in WORDS.items() if i % d == 0) or str(i) for i in range(1, n + 1)]
