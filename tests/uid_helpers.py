"""Helpers for the UniqueIdGeneration tests: a clock the test drives, and a process worker."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from UniqueIdGeneration.snowflake import SnowflakeGenerator

START_MS = 1_700_000_000_000   # 2023-11-14, after the default epoch


class SteppedClock:
    """A fake wall clock in Unix ms. Time moves only when the test (or `on_sleep`) moves it.

    Pass `clock=c, sleep=c.sleep` to SnowflakeGenerator: every wait the generator makes is recorded
    in `sleeps`, and `on_sleep(clock)` decides whether time moves while it "sleeps".
    """

    def __init__(self, now_ms: int = START_MS):
        self.now_ms = now_ms
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[SteppedClock], None] | None = None

    def __call__(self) -> int:
        return self.now_ms

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(self)

    def advance_by_sleep(self) -> None:
        """An on_sleep policy: the sleep really takes its time (rounded up to whole ms)."""
        self.now_ms += max(1, math.ceil(self.sleeps[-1] * 1000))


def ids_from_process(worker_id: int, count: int) -> list[int]:
    """Run in a child process: `count` IDs from a fresh generator with this worker id."""
    generator = SnowflakeGenerator(worker_id)
    return [generator.next_id() for _ in range(count)]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.01):
    """Poll `predicate` until it returns something truthy (returned); fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def process_state(pid: int) -> str:
    """The one-letter state of a process from /proc (R running, S sleeping, T stopped, ...)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) is in parentheses and may contain spaces: split after it.
        return stat.read().rsplit(")", 1)[1].split()[0]
