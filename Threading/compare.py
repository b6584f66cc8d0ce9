"""Threads vs processes on CPU-bound and I/O-bound work: a measured table and a speed-up plot.

    python -m Threading.compare                       workers 1 2 4 8: the table, and a plot in out/Threading/
    python -m Threading.compare --experiment cpu --workers 1 2 --repeat 3 --no-plot

What it shows. In CPython one thread at a time executes Python bytecode: the Global Interpreter Lock
(GIL) serialises it. So W threads counting primes take as long as one thread doing all of it
(speed-up ~1x), while W *processes* (each with its own interpreter and GIL) use every core (speed-up up
to the number of cores). A thread waiting for a socket, though, releases the GIL during the system
call, so W threads each waiting on a 50 ms HTTP response overlap their waits (speed-up ~W) - and so
do processes, which additionally pay for starting up.

Method: every (experiment, workers, mode) cell is run `--repeat` times, the repetitions interleaved
(round-robin over all cells, the mode order rotated each round) so background load hits every cell
alike; the table shows the median wall time and the speed-up against the sequential run of the same
work. Every run must produce the same prime count / number of answered requests.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from common import cli

from .experiments import COUNTED_START_METHODS, MODES, Run, default_start_method, run_cpu, run_io
from .io_server import slow_http_server

DEFAULT_PLOT = cli.output_path("Threading", "threads_vs_processes.png")
# Both make the workers our children, so "cores used" counts their CPU time (forkserver would not).
START_METHODS = [m for m in COUNTED_START_METHODS if m in multiprocessing.get_all_start_methods()]


def gil_status() -> str:
    """Say whether this interpreter has a GIL (3.13+ free-threaded builds can run without one)."""
    check = getattr(sys, "_is_gil_enabled", None)
    if check is None:
        return "GIL enabled (this interpreter has no sys._is_gil_enabled(): it is not a free-threaded build)"
    return f"sys._is_gil_enabled() = {check()}" + ("" if check() else " (free-threaded: threads can scale)")


def measure(workers: list[int], n: int, requests: int, delay: float, repeat: int,
            experiments: tuple[str, ...] = ("cpu", "io"), progress: bool = True,
            start_method: str | None = None) -> list[Run]:
    """Run every cell `repeat` times, interleaved; return every Run (the caller takes medians)."""
    runs: list[Run] = []
    with slow_http_server(delay) as url:
        for rep in (cli.progress(range(repeat), label="rounds") if progress else range(repeat)):
            for experiment in experiments:
                for w in workers:
                    shift = (rep + w) % len(MODES)
                    for mode in MODES[shift:] + MODES[:shift]:
                        if experiment == "cpu":
                            runs.append(run_cpu(mode, w, n, start_method))
                        else:
                            runs.append(run_io(mode, w, url, requests, start_method))
    return runs


def check_agreement(runs: list[Run]) -> dict[str, int]:
    """Every run of one experiment must have the same result; return it per experiment."""
    results: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        results[run.experiment].add(run.result)
    for experiment, values in results.items():
        if len(values) != 1:
            raise AssertionError(f"{experiment}: the modes disagree on the result: {sorted(values)}")
    return {experiment: values.pop() for experiment, values in results.items()}


def summarise(runs: list[Run]) -> list[dict]:
    """Median seconds per (experiment, workers, mode) and speed-up vs sequential with equal workers."""
    cells: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    cores: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for run in runs:
        cells[(run.experiment, run.workers, run.mode)].append(run.seconds)
        cores[(run.experiment, run.workers, run.mode)].append(run.cores_used)
    rows = []
    for (experiment, workers, mode), seconds in sorted(cells.items(), key=lambda kv: (
            kv[0][0], kv[0][1], MODES.index(kv[0][2]))):
        median = statistics.median(seconds)
        baseline = statistics.median(cells[(experiment, workers, "sequential")])
        rows.append({"experiment": experiment, "workers": workers, "mode": mode, "seconds": median,
                     "speedup": baseline / median,
                     "cores": statistics.median(cores[(experiment, workers, mode)])})
    return rows


def print_table(rows: list[dict], labels: dict[str, str]) -> None:
    print(f"\n  {'experiment':<10} {'mode':<11} {'workers':>7} {'wall s':>8} {'speed-up':>9} "
          f"{'cores used':>11}")
    for row in rows:
        print(f"  {labels[row['experiment']]:<10} {row['mode']:<11} {row['workers']:>7} "
              f"{row['seconds']:>8.3f} {row['speedup']:>8.2f}x {row['cores']:>11.2f}")
    print("  (cores used = CPU seconds of the process and its workers / wall seconds)")


def best(rows: list[dict], experiment: str, mode: str) -> float:
    return max(r["speedup"] for r in rows if r["experiment"] == experiment and r["mode"] == mode)


def plot(rows: list[dict], labels: dict[str, str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experiments = sorted({r["experiment"] for r in rows})
    fig, axes = plt.subplots(1, len(experiments), figsize=(5.2 * len(experiments), 4), squeeze=False)
    cpus = os.cpu_count() or 1
    for ax, experiment in zip(axes[0], experiments, strict=True):
        workers = sorted({r["workers"] for r in rows if r["experiment"] == experiment})
        for mode, marker in (("threads", "o"), ("processes", "s")):
            ys = [next(r["speedup"] for r in rows if r["experiment"] == experiment and r["mode"] == mode
                       and r["workers"] == w) for w in workers]
            ax.plot(workers, ys, marker=marker, label=mode)
        ax.plot(workers, workers, linestyle=":", color="grey", label="ideal (= workers)")
        if experiment == "cpu":
            ax.axhline(cpus, linestyle="--", color="red", linewidth=1, label=f"{cpus} CPU cores")
        ax.axhline(1, color="black", linewidth=0.6)
        ax.set_xscale("log", base=2)
        ax.set_xticks(workers, [str(w) for w in workers])
        ax.set_xlabel("workers")
        ax.set_ylabel("speed-up vs sequential")
        ax.set_title(labels[experiment])
        ax.legend(fontsize=8)
    fig.suptitle(f"Python {platform.python_version()}, {cpus} CPUs (median of repeated, interleaved runs)")
    fig.tight_layout()
    fig.savefig(cli.ensure_parent(path), dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        prog="python -m Threading.compare",
        description="CPU-bound (count primes) and I/O-bound (HTTP requests to a slow local server) work, "
                    "run sequentially, on threads and in processes; prints a table, optionally plots.")
    parser.add_argument("--workers", type=cli.positive_int, nargs="+", default=[1, 2, 4, 8],
                        help="worker counts to try (default 1 2 4 8)")
    parser.add_argument("--n", type=cli.int_range(2), default=600_000,
                        help="count primes in [2, N] (default 600000)")
    parser.add_argument("--requests", type=cli.positive_int, default=16,
                        help="HTTP requests in the I/O-bound experiment (default 16)")
    parser.add_argument("--delay-ms", type=cli.non_negative_float, default=50.0,
                        help="the local server's delay before each answer, ms (default 50)")
    parser.add_argument("--repeat", type=cli.positive_int, default=5,
                        help="repetitions per cell, median taken (default 5)")
    parser.add_argument("--experiment", choices=["cpu", "io", "both"], default="both",
                        help="which experiment to run (default both)")
    parser.add_argument("--plot", metavar="PATH", type=cli.writable_path, default=DEFAULT_PLOT,
                        help="where to save the PNG of speed-up vs workers (default out/Threading/"
                             "threads_vs_processes.png)")
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    parser.add_argument("--start-method", choices=START_METHODS, default=None,
                        help="how worker processes start: fork (copy this process) or spawn (a fresh "
                             f"interpreter per worker); default: this platform's if it is one of "
                             f"those, else spawn; here {default_start_method()}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    experiments = ("cpu", "io") if args.experiment == "both" else (args.experiment,)
    labels = {"cpu": "CPU-bound", "io": "I/O-bound"}
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{os.cpu_count()} CPUs; {gil_status()}")
    # fork is the default on Linux up to Python 3.13; macOS and Windows spawn, which starts a fresh
    # interpreter per worker and costs more at start-up. (3.14's forkserver: see default_start_method.)
    print(f"worker processes are started with {args.start_method or default_start_method()!r}")
    print(f"CPU-bound: count primes in [2, {args.n:,}] split into W contiguous chunks")
    print(f"I/O-bound: {args.requests} HTTP GETs to a local server that answers after "
          f"{args.delay_ms:.0f} ms, split into W tasks")
    print(f"workers {args.workers}; median of {args.repeat} interleaved repetitions; load average before: "
          f"{os.getloadavg()[0]:.1f}")
    runs = measure(sorted(set(args.workers)), args.n, args.requests, args.delay_ms / 1000, args.repeat,
                   experiments, start_method=args.start_method)
    results = check_agreement(runs)
    rows = summarise(runs)
    print_table(rows, labels)
    agreed = ", ".join(f"{e}: {v:,}" for e, v in results.items())
    print(f"\nevery mode produced the same result ({agreed}); load average after: {os.getloadavg()[0]:.1f}")
    if not args.no_plot:
        plot(rows, labels, args.plot)
        print(f"plot saved to {os.path.relpath(args.plot)}")
    parts = [f"{labels[e]} best speed-up: threads {best(rows, e, 'threads'):.2f}x, "
             f"processes {best(rows, e, 'processes'):.2f}x" for e in experiments]
    print(f"result: {'; '.join(parts)} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
