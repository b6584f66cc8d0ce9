"""The race itself, as pure functions: a shared counter updated by threads with and without a lock.

`race_condition.py` is the command line around it; read its docstring for the why. Kept apart so
that the package can re-export these names without importing the script `python -m` runs.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class Counter:
    """Shared mutable state: one integer."""

    def __init__(self) -> None:
        self.value = 0


def plus_one(value: int) -> int:
    """The 'compute' step. Being a call, it is a point where CPython 3.11 may switch threads."""
    return value + 1


def increment_unsafe(counter: Counter, times: int) -> None:
    for _ in range(times):
        current = counter.value         # 1. read
        updated = plus_one(current)     # 2. compute  <- another thread may run here ...
        counter.value = updated         # 3. write    <- ... and its increments are overwritten


def increment_safe(counter: Counter, times: int, lock: threading.Lock) -> None:
    for _ in range(times):
        with lock:  # read, compute and write happen with no other incrementer in between
            current = counter.value
            updated = plus_one(current)
            counter.value = updated


def append_unlocked(items: list[int], times: int) -> None:
    for i in range(times):
        items.append(i)  # one C call under the GIL: atomic in CPython


@dataclass(frozen=True)
class RaceResult:
    workload: str
    safe: bool
    threads: int
    expected: int
    actual: int
    seconds: float

    @property
    def lost(self) -> int:
        return self.expected - self.actual


@contextmanager
def switch_interval(seconds: float) -> Iterator[None]:
    """Temporarily change how often CPython asks the running thread to hand over the GIL."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def run_race(threads: int = 8, iterations: int = 100_000, safe: bool = False, workload: str = "counter",
             interval: float = 1e-6) -> RaceResult:
    """Start `threads` threads that each do `iterations` updates; all start before any is joined."""
    if threads < 1 or iterations < 1:
        raise ValueError("threads and iterations must be >= 1")
    counter, items, lock = Counter(), [], threading.Lock()
    if workload == "counter":
        target, args = (increment_safe, (counter, iterations, lock)) if safe else \
            (increment_unsafe, (counter, iterations))
    elif workload == "append":
        target, args = append_unlocked, (items, iterations)
    else:
        raise ValueError(f"workload must be 'counter' or 'append', got {workload!r}")
    workers = [threading.Thread(target=target, args=args) for _ in range(threads)]
    with switch_interval(interval):
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:  # joined only after all were started, so they really overlap
            worker.join()
        seconds = time.perf_counter() - started
    actual = counter.value if workload == "counter" else len(items)
    return RaceResult(workload, safe and workload == "counter", threads, threads * iterations, actual,
                      seconds)


def describe(result: RaceResult) -> str:
    how = "append to a list" if result.workload == "append" else (
        "counter, with a lock" if result.safe else "counter, no lock")
    return (f"{how}: expected {result.expected:,}, actual {result.actual:,}, lost updates {result.lost:,} "
            f"({result.lost / result.expected:.1%}) in {result.seconds:.2f}s")
