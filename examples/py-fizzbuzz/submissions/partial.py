"""FizzBuzz with the classic bug: 3 is tested before 15, so "FizzBuzz" never appears.

Expected: 7 / 10 (fails "Multiples of 15 are FizzBuzz" and the after-due-date
comparison with the reference).
"""


def fizzbuzz(n):
    result = []
    for i in range(1, n + 1):
        if i % 3 == 0:
            result.append("Fizz")
        elif i % 5 == 0:
            result.append("Buzz")
        elif i % 15 == 0:  # never reached
            result.append("FizzBuzz")
        else:
            result.append(str(i))
    return result
