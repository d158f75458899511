"""FizzBuzz that runs but gets everything wrong: it prints instead of returning.

Expected: 0 / 10. The printed lines show up in each test's output.
"""


def fizzbuzz(n):
    for i in range(1, n + 1):
        if i % 15 == 0:
            print("FizzBuzz")
        elif i % 3 == 0:
            print("Fizz")
        elif i % 5 == 0:
            print("Buzz")
        else:
            print(i)
