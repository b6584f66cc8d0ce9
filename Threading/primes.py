"""The CPU-bound work of the experiment: count primes by trial division, split into contiguous chunks.

Pure functions, no I/O: the experiment runs exactly this code sequentially, on threads, and in
processes, so any difference in wall time comes from how it is scheduled, not from what it computes.
Trial division is deliberately naive: it is pure-Python bytecode that holds the GIL the whole time.
"""

from __future__ import annotations

import math


def is_prime(n: int) -> bool:
    """Trial division by 2, 3 and then 6k +/- 1 up to sqrt(n)."""
    if n < 2:
        return False
    if n < 4:
        return True
    if n % 2 == 0 or n % 3 == 0:
        return False
    divisor = 5
    while divisor * divisor <= n:
        if n % divisor == 0 or n % (divisor + 2) == 0:
            return False
        divisor += 6
    return True


def count_primes(lo: int, hi: int) -> int:
    """How many primes p satisfy lo <= p < hi (a half-open range, so chunks never overlap)."""
    return sum(1 for n in range(lo, hi) if is_prime(n))


def chunk_bounds(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """Split [lo, hi) into `parts` contiguous half-open chunks of about equal *work*.

    Testing n costs about sqrt(n) divisions when n is prime, so equal-width chunks would hand the
    last worker far more work than the first (with 2 chunks of [0, N): about 65% vs 35%) and cap the
    speed-up well below 2 even with perfect parallelism. Cumulative work up to x grows like x**1.5,
    so boundary k sits at lo + (hi - lo) * (k / parts) ** (2 / 3). The chunks still cover every
    number exactly once: each one starts where the previous one ended.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if hi < lo:
        raise ValueError(f"empty range: hi ({hi}) < lo ({lo})")
    width = hi - lo
    cuts = [lo + math.floor(width * (k / parts) ** (2 / 3)) for k in range(parts)] + [hi]
    return [(cuts[k], cuts[k + 1]) for k in range(parts)]
