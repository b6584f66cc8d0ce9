"""The tour's short version of both Threading experiments (about 20 s on an idle 2-CPU machine).

1. CPU-bound work on 2 workers and I/O-bound work on 8 workers: sequential vs threads vs processes.
2. The race condition: a shared counter without a lock loses updates; with a lock it loses none.

How the speed-ups are made stable enough to show their lesson on every run:
- enough work per task (~0.4 s of CPU per worker), so a pool's start-up is a small part of the time;
- `--repeat` rounds; in each round the three modes run back to back (their order rotated), and the
  speed-up is the ratio *within the round*: a burst of load from another program hits the sequential
  run and the run it is compared with alike, instead of one of them only;
- the median of the per-round ratios, which ignores one or two disturbed rounds.

The full, repeated measurement over 1, 2, 4 and 8 workers, with a plot, is `python -m Threading.compare`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable

from common import cli

from .compare import gil_status
from .experiments import MODES, Run, default_start_method, run_cpu, run_io
from .io_server import slow_http_server
from .race import describe, run_race

DEFAULT_N = 800_000   # ~0.8 s of trial division on one core of the 2-CPU reference machine
DEFAULT_REPEAT = 5
BUSY_FRACTION = 0.75  # worker processes keeping fewer than this share of the cores they need: busy


def rotated(modes: tuple[str, ...], shift: int) -> tuple[str, ...]:
    """The modes in a different order each round, so no mode always runs first (or last)."""
    shift %= len(modes)
    return modes[shift:] + modes[:shift]


def median_speedups(run: Callable[[str], Run], repeat: int) -> dict[str, tuple[float, float]]:
    """Per mode: (median speed-up vs sequential, median cores used); prints the per-round range too.

    Each round runs every mode once; a round's speed-up for a mode is the sequential time of that
    round divided by the mode's time in that round. Every run must return the same result.
    """
    ratios: dict[str, list[float]] = {mode: [] for mode in MODES}
    cores: dict[str, list[float]] = {mode: [] for mode in MODES}
    results = set()
    for round_number in cli.progress(range(repeat), label="rounds"):
        seconds = {}
        for mode in rotated(MODES, round_number):
            outcome = run(mode)
            seconds[mode] = outcome.seconds
            cores[mode].append(outcome.cores_used)
            results.add(outcome.result)
        for mode in MODES:
            ratios[mode].append(seconds["sequential"] / seconds[mode])
    if len(results) != 1:
        raise AssertionError(f"the modes disagree: {sorted(results)}")
    summary = {}
    for mode in MODES:
        median = statistics.median(ratios[mode])
        low, high = min(ratios[mode]), max(ratios[mode])
        summary[mode] = (median, statistics.median(cores[mode]))
        print(f"    {mode:<11} speed-up {median:5.2f}x  (rounds: {low:.2f}x .. {high:.2f}x)  "
              f"cores used {summary[mode][1]:4.2f}")
    return summary


def busy_machine_note(process_cores: float, workers: int) -> str | None:
    """Processes can only show a speed-up on free cores. If W worker processes kept clearly fewer than
    min(W, CPUs) cores busy, other programs had the CPUs, and the reader should know why it is low."""
    wanted = min(workers, os.cpu_count() or 1)
    if wanted < 2 or process_cores >= BUSY_FRACTION * wanted:
        return None
    return (f"    note: the {workers} worker processes kept only {process_cores:.2f} cores busy, "
            f"not {wanted}: other programs\n    are using the CPUs, so processes cannot show their "
            f"speed-up now; run again on an idle machine")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m Threading.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=cli.int_range(2), default=DEFAULT_N,
                        help=f"CPU-bound work: count primes in [2, N] (default {DEFAULT_N})")
    parser.add_argument("--repeat", type=cli.positive_int, default=DEFAULT_REPEAT,
                        help=f"rounds; the median per-round speed-up is shown (default {DEFAULT_REPEAT})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = os.cpu_count() or 1
    print(f"Python {sys.version.split()[0]}, {cpus} CPUs; {gil_status()}; "
          f"processes started with {default_start_method()!r}")
    print(f"median of {args.repeat} rounds; on an idle 2-CPU machine expect threads 0.85-1.1x and processes "
          f"1.5-1.9x for the CPU-bound work (a busy machine pushes processes down, towards 1x)")
    print(f"\n1a. CPU-bound: count primes in [2, {args.n:,}] in 2 chunks, 2 workers")
    cpu = median_speedups(lambda mode: run_cpu(mode, 2, args.n), args.repeat)
    print("    threads take turns holding the GIL (~1x, never more than 1 core busy); "
          f"processes each have their own GIL (up to {min(cpus, 2)}x)")
    note = busy_machine_note(cpu["processes"][1], workers=2)
    if note:
        print(note)
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
    print(f"result: CPU-bound x2 workers: threads {cpu['threads'][0]:.2f}x, "
          f"processes {cpu['processes'][0]:.2f}x; I/O-bound x8: threads {io['threads'][0]:.1f}x; "
          f"race: {unsafe.lost:,} updates lost without a lock, {safe.lost} with one")
    return 0 if safe.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
