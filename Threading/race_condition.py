"""A race condition you can see: threads doing read-modify-write on a shared counter lose updates.

    python -m Threading.race_condition                  8 threads x 100,000 increments, no lock
    python -m Threading.race_condition --safe           the same under a threading.Lock: nothing lost
    python -m Threading.race_condition --workload append   list.append: nothing lost even without a lock

Why updates get lost: an increment is three steps - read the value, compute value + 1, write it
back. If thread A is switched out after reading 41 and thread B then reads 41 and writes 42 (many
times, perhaps), A resumes and writes *its* 42: every increment B made in between is overwritten.

The GIL does not prevent this. It guarantees only that one thread at a time runs bytecode; CPython
may switch threads between any two of the three steps. In CPython 3.11 the interpreter checks for a
pending switch at function calls and backward jumps, so the compute step here is a call
(`plus_one`), and the switch interval is shortened from 5 ms to 1 us so that switches are frequent.
Without the call (`counter.value += 1` in a loop) 3.11 almost never switches mid-update and the bug
hides - which is exactly why such bugs survive testing and strike in production.

Why `list.append` shows no race: it is a single call into C that does the whole read-modify-write
of the list (size, storage, new item) while holding the GIL; no thread switch can happen inside it.
That atomicity is a CPython implementation detail (free-threaded builds use per-object locks to keep
it); it does not make `counter.value += 1`, `d[k] = d.get(k, 0) + 1` or check-then-act code atomic.
"""

from __future__ import annotations

import argparse
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m Threading.race_condition",
        description="Threads doing read-modify-write on a shared counter lose updates unless they "
                    "hold a lock.")
    parser.add_argument("--threads", type=int, default=8, help="threads (default 8)")
    parser.add_argument("--iterations", type=int, default=100_000,
                        help="increments per thread (default 100000)")
    parser.add_argument("--safe", action="store_true", help="hold a threading.Lock around each increment")
    parser.add_argument("--workload", choices=["counter", "append"], default="counter",
                        help="counter: read-modify-write (races); append: list.append (atomic under the GIL)")
    parser.add_argument("--switch-interval", type=float, default=1e-6,
                        help="sys.setswitchinterval during the run, seconds "
                             "(default 1e-6; CPython's is 0.005)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.iterations < 1 or not args.switch_interval > 0:
        parser.error("--threads and --iterations must be >= 1 and --switch-interval > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"Python {sys.version.split()[0]}: {args.threads} threads x {args.iterations:,} updates, "
          f"switch interval {args.switch_interval:g}s")
    try:
        result = run_race(args.threads, args.iterations, args.safe, args.workload, args.switch_interval)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(f"expected {result.expected:,}")
    print(f"actual   {result.actual:,}")
    print(f"lost     {result.lost:,}")
    print(f"result: {describe(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
