"""The tour's short version of both Threading experiments (about 10-20 seconds).

1. CPU-bound vs I/O-bound work on 2 workers and 8 workers: threads vs processes vs sequential.
2. The race condition: a shared counter without a lock loses updates; with a lock it loses none.

The full, repeated measurement with a plot is `python -m Threading.compare`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from .compare import gil_status
from .experiments import MODES, run_cpu, run_io
from .io_server import slow_http_server
from .race import describe, run_race


def median_speedups(run, repeat: int) -> dict[str, float]:
    """Median wall time per mode (modes interleaved each round) -> speed-up vs sequential."""
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    results = set()
    for _ in range(repeat):
        for mode in MODES:
            outcome = run(mode)
            times[mode].append(outcome.seconds)
            results.add(outcome.result)
    if len(results) != 1:
        raise AssertionError(f"the modes disagree: {sorted(results)}")
    medians = {mode: statistics.median(ts) for mode, ts in times.items()}
    for mode in MODES:
        print(f"    {mode:<11} {medians[mode]:7.3f}s  speed-up {medians['sequential'] / medians[mode]:5.2f}x")
    return {mode: medians["sequential"] / medians[mode] for mode in MODES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m Threading.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300_000, help="count primes in [2, N] (default 300000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions, median taken (default 3)")
    args = parser.parse_args(argv)
    if args.n < 2 or args.repeat < 1:
        parser.error("--n must be >= 2 and --repeat >= 1")
    cpus = os.cpu_count() or 1
    print(f"Python {sys.version.split()[0]}, {cpus} CPUs; {gil_status()}")
    try:
        print(f"\n1a. CPU-bound: count primes in [2, {args.n:,}] in 2 chunks, 2 workers")
        cpu = median_speedups(lambda mode: run_cpu(mode, 2, args.n), args.repeat)
        print("    threads take turns holding the GIL (~1x); processes each have their own (up to ~2x)")
        with slow_http_server(0.05) as url:
            print("\n1b. I/O-bound: 16 HTTP GETs to a local server that answers after 50 ms, 8 workers")
            io = median_speedups(lambda mode: run_io(mode, 8, url, 16), args.repeat)
        print("    a thread waiting on a socket releases the GIL, so 8 waits overlap (~8x)")
        print("\n2. Race condition: 8 threads x 50,000 increments of a shared counter")
        unsafe = run_race(8, 50_000, safe=False)
        print(f"    {describe(unsafe)}")
        safe = run_race(8, 50_000, safe=True)
        print(f"    {describe(safe)}")
        appended = run_race(8, 50_000, workload="append")
        print(f"    {describe(appended)}  <- one C call under the GIL: atomic")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(f"result: CPU-bound x2 workers: threads {cpu['threads']:.2f}x, processes {cpu['processes']:.2f}x; "
          f"I/O-bound x8: threads {io['threads']:.1f}x; race: {unsafe.lost:,} updates lost without a lock, "
          f"{safe.lost} with one")
    return 0 if safe.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
