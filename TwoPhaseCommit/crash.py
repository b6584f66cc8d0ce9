"""Fault injection: make this process SIGKILL itself at a named point of the protocol.

2PC exists for one reason: processes die at the worst possible moment. To prove the recovery rules we
kill our own process exactly there - between "the reservation is durable" and "the vote is sent", or
between "the decision is logged" and "phase 2 is sent" - with SIGKILL, the one signal no handler,
`finally` or atexit can soften. What survives is only what SQLite had committed.

    --crash-at after-decision-logged        crash the first time that point is reached
    --crash-at mid-phase2:3                 crash the third time (lets chaos hit later transactions)
    TWOPC_CRASH_AT=mid-phase2 python -m ... the same, through the environment
"""

from __future__ import annotations

import os
import signal
import sys
import threading

CRASH_ENV = "TWOPC_CRASH_AT"

COORDINATOR_POINTS = ("before-decision-logged", "after-decision-logged", "mid-phase2")
PARTICIPANT_POINTS = ("before-prepare-recorded", "after-prepare-recorded",
                      "before-commit-applied", "after-commit-applied")
ALL_POINTS = COORDINATOR_POINTS + PARTICIPANT_POINTS


class BadCrashPoint(ValueError):
    """The --crash-at value names no crash point of this process kind."""


class CrashPlan:
    """Where (and on which occurrence) to crash. `CrashPlan.none()` never crashes."""

    def __init__(self, point: str | None = None, occurrence: int = 1):
        self.point = point
        self.occurrence = occurrence
        self.tracer = None  # set by a process that traces: its crash is drawn on the diagram
        self._seen = 0
        self._lock = threading.Lock()

    @classmethod
    def none(cls) -> CrashPlan:
        return cls(None)

    @classmethod
    def parse(cls, spec: str | None, allowed: tuple[str, ...]) -> CrashPlan:
        """Parse "POINT" or "POINT:N". Raises BadCrashPoint naming the valid points."""
        if not spec:
            return cls.none()
        point, _, count = spec.partition(":")
        if point not in allowed:
            raise BadCrashPoint(f"unknown crash point {point!r}; choose one of: {', '.join(allowed)}")
        try:
            occurrence = int(count) if count else 1
        except ValueError:
            occurrence = 0
        if occurrence < 1:
            raise BadCrashPoint(f"crash occurrence must be a positive integer, got {count!r}")
        return cls(point, occurrence)

    @classmethod
    def from_cli_or_env(cls, cli_value: str | None, allowed: tuple[str, ...]) -> CrashPlan:
        """The command-line flag wins over the environment variable."""
        return cls.parse(cli_value or os.environ.get(CRASH_ENV), allowed)

    def reached(self, point: str) -> None:
        """Call at each named point; SIGKILLs this process if the plan says so."""
        if point != self.point:
            return
        with self._lock:
            self._seen += 1
            if self._seen != self.occurrence:
                return
        print(f"CRASH: SIGKILL at {point} (occurrence {self.occurrence})", flush=True)
        if self.tracer is not None:
            self.tracer.crash(f"SIGKILL at {point}")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
