"""Helpers for the DistributedLocking tests: start real worker processes and always stop them."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from DistributedLocking.workers import SPAWN

FORK = multiprocessing.get_context("fork")


class Workers:
    """Processes started by one test; every one is stopped (continued, then killed) at the end."""

    def __init__(self) -> None:
        self.procs = []

    def start(self, target, *args):
        proc = SPAWN.Process(target=target, args=args, daemon=True)
        proc.start()
        self.procs.append(proc)
        return proc

    def start_forked(self, target, *args):
        """Like start(), but fork: a few ms instead of a fresh interpreter's import time each.

        For tests that need many processes (32 racers) within the suite's time budget. The worker
        opens its own Redis and SQLite connections after the fork, so nothing is shared.
        """
        proc = FORK.Process(target=target, args=args, daemon=True)
        proc.start()
        self.procs.append(proc)
        return proc

    def pipe(self):
        return SPAWN.Pipe()

    def event(self):
        return SPAWN.Event()

    def queue(self):
        return SPAWN.Queue()

    def join_all(self, timeout: float = 120.0) -> None:
        for proc in self.procs:
            proc.join(timeout)
            assert proc.exitcode == 0, f"worker {proc.pid} exited with {proc.exitcode}"

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                try:
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot die of SIGKILL late
                except ProcessLookupError:
                    pass
                proc.kill()
            proc.join(10)


@contextmanager
def workers() -> Iterator[Workers]:
    group = Workers()
    try:
        yield group
    finally:
        group.stop_all()


def recv(conn, timeout: float = 30.0):
    """Receive from a pipe or fail clearly (never hang the suite)."""
    assert conn.poll(timeout), f"no message from the worker within {timeout} s"
    return conn.recv()
