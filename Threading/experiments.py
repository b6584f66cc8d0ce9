"""The two experiments: the same work run sequentially, on W threads, and in W processes.

- CPU-bound: count the primes in [2, N], split into W contiguous chunks (primes.chunk_bounds).
- I/O-bound: R HTTP requests to a server that answers after ~50 ms, split into W tasks.

Each run is timed around the *whole* thing (start every worker, wait for every result), with
`time.perf_counter()`, and returns the result so the caller can check that every mode agrees. The
workers run concurrently: all are submitted before any result is awaited. (Joining each thread right
after starting it would run them one after another and measure nothing but the sequential case.)
"""

from __future__ import annotations

import multiprocessing
import resource
import signal
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

from .io_server import fetch_many
from .primes import chunk_bounds, count_primes

MODES = ("sequential", "threads", "processes")
# Start methods whose workers are children of this process, so RUSAGE_CHILDREN counts their CPU time.
COUNTED_START_METHODS = ("fork", "spawn")


@dataclass(frozen=True)
class Run:
    experiment: str  # "cpu" or "io"
    mode: str        # one of MODES
    workers: int
    seconds: float
    result: int      # primes counted / requests answered: identical in every mode, or something is wrong
    cpu_seconds: float = 0.0  # CPU time used by this process's threads plus any worker processes

    @property
    def cores_used(self) -> float:
        """Average number of cores busy during the run: CPU seconds / wall seconds.

        Under the GIL, threads running pure-Python code can never keep more than ~1 core busy, however
        many there are; processes can keep all cores busy. This holds even on a machine loaded by
        other work (which only pushes every figure down), so it shows the GIL more robustly than
        wall-clock speed-ups do.
        """
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0


def split_evenly(total: int, parts: int) -> list[int]:
    """total requests over `parts` tasks: sizes differ by at most one and sum to total."""
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def _ignore_sigint() -> None:
    """Pool workers ignore Ctrl-C: the parent handles it and shuts the pool down, so the terminal
    shows one clean "interrupted" instead of a traceback from every worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _cpu_seconds() -> float:
    """CPU time of this process (all its threads) plus its reaped children (finished pool workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def default_start_method() -> str:
    """The start method used when none is asked for: the platform's default if its workers are our
    children (fork on Linux up to Python 3.13, spawn on macOS and Windows), otherwise spawn.

    Python 3.14 made forkserver the default on Linux. Its workers are children of the fork server,
    not of this process, so their CPU time would be missing and "cores used" would read ~0 for
    processes, which the demo would then blame on other programs using the CPUs.
    """
    method = multiprocessing.get_start_method()
    return method if method in COUNTED_START_METHODS else "spawn"


def _run_tasks(mode: str, workers: int, fn: Callable[..., int], tasks: list[tuple],
               start_method: str | None = None) -> tuple[int, float, float]:
    """Run fn(*task) for every task in the given mode; return (sum of results, wall s, CPU s).

    start_method: how worker processes start, "fork" or "spawn" (None: default_start_method()). Both
    make the workers children of this process, so their CPU time is counted.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cpu_started = _cpu_seconds()
    started = time.perf_counter()
    if mode == "sequential":
        total = sum(fn(*task) for task in tasks)
    else:
        context = multiprocessing.get_context(start_method or default_start_method())
        pool: Executor = (ThreadPoolExecutor(workers) if mode == "threads"
                          else ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_sigint))
        # The pool's start-up and shutdown are inside the timing: they are part of the real cost.
        with pool:
            futures = [pool.submit(fn, *task) for task in tasks]  # all started before any is awaited
            total = sum(f.result() for f in futures)
        # Leaving the `with` block joins the workers, so their CPU time is in RUSAGE_CHILDREN now.
    return total, time.perf_counter() - started, _cpu_seconds() - cpu_started


def run_cpu(mode: str, workers: int, n: int, start_method: str | None = None) -> Run:
    """Count primes in [2, n] split into `workers` contiguous chunks."""
    tasks = chunk_bounds(2, n + 1, workers)
    count, seconds, cpu = _run_tasks(mode, workers, count_primes, tasks, start_method)
    return Run("cpu", mode, workers, seconds, count, cpu)


def run_io(mode: str, workers: int, url: str, requests: int, start_method: str | None = None) -> Run:
    """`requests` GETs to `url` (each answered after the server's delay) split into `workers` tasks."""
    tasks = [(url, count) for count in split_evenly(requests, workers) if count]
    answered, seconds, cpu = _run_tasks(mode, workers, fetch_many, tasks, start_method)
    return Run("io", mode, workers, seconds, answered, cpu)
