"""Confuses primes with even numbers (expected: 0 / 10)."""


def is_prime(n):
    return n % 2 == 0


def primes_up_to(n):
    return [k for k in range(n + 1) if is_prime(k)]
