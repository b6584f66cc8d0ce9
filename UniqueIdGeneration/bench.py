"""Benchmark: IDs per second, ours vs the `snowflake-id` package vs `uuid.uuid4()`, in one run.

    python -m UniqueIdGeneration.bench [--calls 300000] [--repeats 7]

- one thread: each generator called `--calls` times;
- four threads sharing one generator. `snowflake-id`'s generator is not thread-safe (its state
  update is several bytecodes, so two threads can issue the same ID), so it is measured behind a
  threading.Lock — the price any multi-threaded user of it must pay. uuid4() needs no lock.

Repetitions are interleaved (ours, peer, uuid4, ours, ...) and the median is reported, so a burst of
load from other processes hits every contender alike. Each rate is also shown as a share of the
layout's ceiling: 4,096 IDs per ms = 4,096,000 IDs/s per worker id.

`snowflake-id` returns None instead of an ID when its millisecond is exhausted or the clock went
back; the bench counts those Nones (an ID-less call is not an ID).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat

import snowflake as snowflake_id_package

from common import cli

from .snowflake import IDS_PER_MS_PER_WORKER, SnowflakeGenerator

LAYOUT_LIMIT_PER_SECOND = IDS_PER_MS_PER_WORKER * 1000     # 4,096,000


@dataclass
class Contender:
    name: str
    threads: int
    make: Callable[[], Callable[[], object]]       # a fresh generator's "next" for each repetition
    rates: list[float] = field(default_factory=list)
    nones: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def ours() -> Callable[[], int]:
    return SnowflakeGenerator(1).next_id


def peer() -> Callable[[], int | None]:
    # __next__ directly: the cheapest way to call it (next(gen) adds a builtin call).
    return snowflake_id_package.SnowflakeGenerator(1).__next__


def peer_with_lock() -> Callable[[], int | None]:
    next_id = peer()
    lock = threading.Lock()

    def locked() -> int | None:
        lock.acquire()
        try:
            return next_id()
        finally:
            lock.release()
    return locked


def uuid4() -> Callable[[], uuid.UUID]:
    return uuid.uuid4


def measure(contender: Contender, calls: int) -> None:
    """Run `calls` calls split over the contender's threads; record IDs/s and peer Nones."""
    next_id = contender.make()
    per_thread = calls // contender.threads
    nones = [0] * contender.threads
    start = threading.Barrier(contender.threads + 1)

    def work(index: int) -> None:
        start.wait()
        missing = 0
        for _ in repeat(None, per_thread):
            if next_id() is None:
                missing += 1
        nones[index] = missing

    threads = [threading.Thread(target=work, args=(i,)) for i in range(contender.threads)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    contender.rates.append((per_thread * contender.threads - sum(nones)) / elapsed)
    contender.nones += sum(nones)


def paired_ratio(ours: Contender, peer: Contender) -> float:
    """Median over runs of ours/peer, each pair measured back to back: robust to load drifting."""
    return statistics.median(o / p for o, p in zip(ours.rates, peer.rates, strict=True))


def print_table(contenders: list[Contender], calls: int, repeats: int) -> None:
    print(f"\nPython {platform.python_version()} ({platform.python_implementation()}), "
          f"{os.cpu_count()} CPUs; {calls:,} calls per run, median of {repeats} interleaved runs")
    print("| generator | threads | IDs/s (median) | min .. max | ours/peer | share of 4,096,000 IDs/s |")
    print("|---|---|---|---|---|---|")
    by_threads: dict[int, dict[str, Contender]] = {}
    for contender in contenders:
        by_threads.setdefault(contender.threads, {})[contender.name.split(" ")[0]] = contender
    for contender in contenders:
        group = by_threads[contender.threads]
        ratio = ""
        if contender.name.startswith("ours") and "snowflake-id" in group:
            ratio = f"{paired_ratio(contender, group['snowflake-id']):.2f}x"
        print(f"| {contender.name} | {contender.threads} | {contender.median:,.0f} "
              f"| {min(contender.rates):,.0f} .. {max(contender.rates):,.0f} | {ratio} "
              f"| {contender.median / LAYOUT_LIMIT_PER_SECOND:.0%} |")
    print("ours/peer = median of the per-run ratios (each run measures both back to back)")
    for contender in contenders:
        if contender.nones:
            print(f"note: {contender.name} returned None (no ID) {contender.nones:,} times; "
                  f"those calls are not counted as IDs")


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m UniqueIdGeneration.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=cli.int_range(1000), default=300_000,
                        help="calls per run (default 300000, minimum 1000)")
    parser.add_argument("--repeats", type=cli.int_range(5), default=7,
                        help="interleaved runs (default 7, minimum 5)")
    args = parser.parse_args(argv)

    contenders = [
        Contender("ours (SnowflakeGenerator)", 1, ours),
        Contender("snowflake-id", 1, peer),
        Contender("uuid.uuid4()", 1, uuid4),
        Contender("ours (SnowflakeGenerator)", 4, ours),
        Contender("snowflake-id + Lock", 4, peer_with_lock),
        Contender("uuid.uuid4()", 4, uuid4),
    ]
    print(f"snowflake-id {snowflake_id_package.__version__}; {args.repeats} runs of {args.calls:,} calls")
    for run in cli.progress(range(1, args.repeats + 1), total=args.repeats, label="runs"):
        # Rotate the starting contender each run so none is always first (warm-up, turbo, load).
        order = contenders[run % len(contenders):] + contenders[:run % len(contenders)]
        for contender in order:
            measure(contender, args.calls)
    print_table(contenders, args.calls, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
