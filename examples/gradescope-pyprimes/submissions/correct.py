"""Primes by trial division up to the square root (expected: 10 / 10)."""


def is_prime(n):
    """Whether n is a prime number."""
    if n < 2:
        return False
    d = 2
    while d * d <= n:
        if n % d == 0:
            return False
        d += 1
    return True


def primes_up_to(n):
    """The primes p <= n, in increasing order."""
    return [k for k in range(2, n + 1) if is_prime(k)]
