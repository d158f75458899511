"""Forgets n < 2 and tries every divisor below n (expected: 6 / 10).

Fails the visible "rejects 0, 1 and negatives" test and, too slow for a large
prime, the hidden one: a student sees 6 / 10 and one failed test.
"""


def is_prime(n):
    for d in range(2, n):
        if n % d == 0:
            return False
    return True


def primes_up_to(n):
    return [k for k in range(2, n + 1) if is_prime(k)]
