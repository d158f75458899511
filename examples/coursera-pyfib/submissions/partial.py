"""Fibonacci with the wrong base case (expected: 0.8, fails fib(0))."""


def fib(n):
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a
