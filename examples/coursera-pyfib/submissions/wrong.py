"""Prints instead of returning (expected: 0.0)."""


def fib(n):
    print(n * 2)
