"""Threads vs processes under the GIL, and race conditions: measured, not asserted.

- primes        the CPU-bound work (trial division) and its contiguous, work-balanced chunks
- io_server     a real loopback HTTP server that answers after a delay (the I/O-bound work)
- experiments   the same work run sequentially, on W threads, in W processes, timed
- compare       `python -m Threading.compare`: the table and the speed-up plot
- race            the shared counter updated with and without a lock (pure)
- race_condition  `python -m Threading.race_condition`: lost updates without a lock
- demo          `python -m Threading.demo`: the short version for the tour
"""

from .experiments import MODES, Run, run_cpu, run_io, split_evenly
from .io_server import fetch, fetch_many, slow_http_server
from .primes import chunk_bounds, count_primes, is_prime
from .race import Counter, RaceResult, run_race

__all__ = [
    "MODES", "Counter", "RaceResult", "Run", "chunk_bounds", "count_primes", "fetch", "fetch_many",
    "is_prime", "run_cpu", "run_io", "run_race", "slow_http_server", "split_evenly",
]
