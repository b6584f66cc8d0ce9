"""Snowflake IDs: 64-bit, roughly time-ordered, unique without asking anyone — and safe to deploy.

An ID packs *when* (milliseconds since a custom epoch), *who* (a worker id no other live node holds)
and *which one in that millisecond* (a sequence number) into one integer:

    bit 63 ........ 58 | 57 ........................... 17 | 16 .... 12 | 11 ........ 0
        6 unused (0)   |  41-bit timestamp (ms since epoch) | 5-bit worker | 12-bit sequence

Only bit 63 must be 0 (it is the sign bit: the ID stays a positive signed 64-bit integer). The other 5
unused bits are this layout's choice, and they cost workers: Twitter's layout gives 10 bits to the
machine (5 datacenter + 5 worker, 1,024 machines) and leaves only the sign bit unused.

Two IDs from different workers cannot collide (the worker bits differ); two from one worker cannot
collide as long as that worker never reuses a (millisecond, sequence) pair. Everything in this
module exists to keep that promise when reality misbehaves:

- several threads call `next_id()` at once          -> one lock around read-clock-and-bump;
- more than 4,096 IDs are asked for in one ms        -> wait for the next millisecond (sleeping);
- the wall clock steps back (NTP, VM migration)      -> wait if the step is small, else refuse
                                                        (`ClockMovedBackwardsError`), never reuse;
- the 41 timestamp bits run out (year ~2092 with the default epoch) -> `TimestampOverflowError`.

The generator is pure logic plus a clock: pass `clock` (Unix ms) and `sleep` to drive time in tests.
Worker-id assignment is a separate concern: see `worker_lease.py`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

# --- The layout, defined once. Everything else is derived from these four numbers. -------------
UNUSED_BITS = 6
TIMESTAMP_BITS = 41
WORKER_ID_BITS = 5
SEQUENCE_BITS = 12
assert UNUSED_BITS + TIMESTAMP_BITS + WORKER_ID_BITS + SEQUENCE_BITS == 64

WORKER_ID_SHIFT = SEQUENCE_BITS
TIMESTAMP_SHIFT = SEQUENCE_BITS + WORKER_ID_BITS
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1           # 4095
MAX_WORKER_ID = (1 << WORKER_ID_BITS) - 1         # 31
MAX_TIMESTAMP = (1 << TIMESTAMP_BITS) - 1         # ms after the epoch: about 69.7 years
MAX_ID = (1 << (TIMESTAMP_BITS + WORKER_ID_BITS + SEQUENCE_BITS)) - 1   # the unused bits stay 0
IDS_PER_MS_PER_WORKER = MAX_SEQUENCE + 1          # 4,096 -> 4,096,000 IDs/s per worker at most

DEFAULT_EPOCH_MS = 1672531200000                  # 2023-01-01T00:00:00Z
DEFAULT_CLOCK_BACK_TOLERANCE_MS = 5

# While waiting for the next millisecond we poll the clock this often: at most ~10 wake-ups per
# millisecond, each a sleeping syscall, so a saturated generator does not spin a core.
_NEXT_MS_POLL_SECONDS = 0.0001


class SnowflakeError(Exception):
    """Base class of every error this module raises."""


class WorkerIdOutOfRangeError(SnowflakeError, ValueError):
    """The worker id does not fit in the layout's worker bits."""


class EpochInFutureError(SnowflakeError, ValueError):
    """The custom epoch lies after the current time: timestamps would be negative."""


class TimestampOverflowError(SnowflakeError, OverflowError):
    """The time since the epoch no longer fits in the timestamp bits."""


class ClockMovedBackwardsError(SnowflakeError, RuntimeError):
    """The clock went back further than the tolerance; issuing IDs now could repeat old ones."""

    def __init__(self, behind_ms: int, tolerance_ms: int):
        self.behind_ms = behind_ms
        self.tolerance_ms = tolerance_ms
        super().__init__(
            f"the clock moved backwards by {behind_ms} ms (tolerance {tolerance_ms} ms); refusing to "
            f"issue IDs that could repeat earlier ones. Retry once the clock has caught up, or check "
            f"NTP/clock configuration on this host"
        )


class InvalidSnowflakeError(SnowflakeError, ValueError):
    """The integer given to parse() cannot be a Snowflake ID of this layout."""


@dataclass(frozen=True)
class SnowflakeParts:
    """A decoded ID. `timestamp_ms` is Unix time in ms (the custom epoch already added back)."""

    timestamp_ms: int
    datetime_utc: datetime
    worker_id: int
    sequence: int


def compose(timestamp_offset_ms: int, worker_id: int, sequence: int) -> int:
    """Pack the three fields (timestamp as ms *since the custom epoch*) into an ID, checking ranges."""
    if not 0 <= timestamp_offset_ms <= MAX_TIMESTAMP:
        raise TimestampOverflowError(
            f"timestamp offset {timestamp_offset_ms} ms is outside 0..{MAX_TIMESTAMP} "
            f"({TIMESTAMP_BITS} bits); choose a later epoch")
    _check_worker_id(worker_id)
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence {sequence} is outside 0..{MAX_SEQUENCE}")
    return (timestamp_offset_ms << TIMESTAMP_SHIFT) | (worker_id << WORKER_ID_SHIFT) | sequence


def parse(snowflake_id: int, *, epoch_ms: int = DEFAULT_EPOCH_MS) -> SnowflakeParts:
    """Decode an ID into its parts. `epoch_ms` must be the epoch of the generator that made it."""
    if isinstance(snowflake_id, bool) or not isinstance(snowflake_id, int):
        raise InvalidSnowflakeError(f"a Snowflake ID is an int, got {type(snowflake_id).__name__}")
    if not 0 <= snowflake_id <= MAX_ID:
        raise InvalidSnowflakeError(
            f"{snowflake_id} is not a Snowflake ID: it must be in 0..{MAX_ID} "
            f"(the top {UNUSED_BITS} bits are always 0)")
    timestamp_ms = (snowflake_id >> TIMESTAMP_SHIFT) + epoch_ms
    return SnowflakeParts(
        timestamp_ms=timestamp_ms,
        datetime_utc=datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC),
        worker_id=(snowflake_id >> WORKER_ID_SHIFT) & MAX_WORKER_ID,
        sequence=snowflake_id & MAX_SEQUENCE,
    )


def format_bits(snowflake_id: int) -> str:
    """The ID's 64 bits grouped by field: 'unused | timestamp | worker | sequence'."""
    bits = format(snowflake_id, "064b")
    cut1 = UNUSED_BITS
    cut2 = cut1 + TIMESTAMP_BITS
    cut3 = cut2 + WORKER_ID_BITS
    return f"{bits[:cut1]} | {bits[cut1:cut2]} | {bits[cut2:cut3]} | {bits[cut3:]}"


class SnowflakeGenerator:
    """Issues strictly increasing, unique IDs for one worker id. Thread-safe.

    clock: a callable returning Unix time in whole milliseconds (default: `time.time_ns()` / 1e6).
    sleep: how to wait (default `time.sleep`); tests pass a fake that moves their fake clock.
    clock_back_tolerance_ms: a backwards clock step up to this size is waited out; larger raises.
    """

    def __init__(self, worker_id: int, *, epoch_ms: int = DEFAULT_EPOCH_MS,
                 clock: Callable[[], int] | None = None,
                 sleep: Callable[[float], object] = time.sleep,
                 clock_back_tolerance_ms: int = DEFAULT_CLOCK_BACK_TOLERANCE_MS):
        _check_worker_id(worker_id)
        if clock_back_tolerance_ms < 0:
            raise ValueError(f"clock_back_tolerance_ms must be >= 0, got {clock_back_tolerance_ms}")
        # The clock is kept in "ticks": with the default, raw time_ns() (1e6 ticks per ms) rather
        # than a lambda dividing it, so the fast path costs one C call and no extra Python frame.
        if clock is None:
            self._ticks, self._ticks_per_ms = time.time_ns, 1_000_000
        else:
            self._ticks, self._ticks_per_ms = clock, 1
        self.worker_id = worker_id
        if isinstance(epoch_ms, bool) or not isinstance(epoch_ms, int) or epoch_ms < 0:
            raise ValueError(f"epoch_ms must be a non-negative int (Unix ms), got {epoch_ms!r}")
        self._epoch_ms = epoch_ms
        self.clock_back_tolerance_ms = clock_back_tolerance_ms
        self._sleep = sleep
        self._worker_bits = worker_id << WORKER_ID_SHIFT
        self._lock = threading.Lock()

        now_unix_ms = self._ticks() // self._ticks_per_ms
        if epoch_ms > now_unix_ms:
            raise EpochInFutureError(
                f"epoch_ms={epoch_ms} is {epoch_ms - now_unix_ms} ms in the future; "
                f"use a fixed epoch in the past (default {DEFAULT_EPOCH_MS}, 2023-01-01 UTC)")
        _check_timestamp(now_unix_ms - epoch_ms)
        # State of the newest ID: its millisecond and sequence. Starting at (now, -1) means the
        # first ID of this millisecond gets sequence 0 and no ID predates the generator.
        self._sequence = -1
        self._enter_millisecond(now_unix_ms - epoch_ms)

    def next_id(self) -> int:
        """The next ID: unique for this worker id and greater than every ID issued before."""
        # acquire/try/finally rather than `with`: measurably cheaper per call on CPython 3.11.
        self._lock.acquire()
        try:
            ticks = self._ticks()
            sequence = self._sequence + 1
            # Fast path: still inside the current millisecond (a range check on the raw clock,
            # no division) and sequence numbers left. Everything else goes to the slow path.
            if self._ms_start_ticks <= ticks < self._ms_end_ticks and sequence <= MAX_SEQUENCE:
                self._sequence = sequence
                return self._ms_prefix | sequence
            return self._next_id_slow_path(ticks)
        finally:
            self._lock.release()

    def parse(self, snowflake_id: int) -> SnowflakeParts:
        """Decode an ID made with this generator's epoch."""
        return parse(snowflake_id, epoch_ms=self.epoch_ms)

    @property
    def epoch_ms(self) -> int:
        """The custom epoch (Unix ms). Read-only: changing it would break the ordering promise."""
        return self._epoch_ms

    def _next_id_slow_path(self, ticks: int) -> int:
        """Called with the lock held: a new millisecond, an exhausted one, or a clock that went back.

        Loops until an ID can be issued without reusing a (millisecond, sequence) pair; may wait
        (sleeping, never spinning) or raise.
        """
        while True:
            now = ticks // self._ticks_per_ms - self._epoch_ms
            last = self._last_ms
            if now > last:
                _check_timestamp(now)
                self._enter_millisecond(now)
                self._sequence = 0
                return self._ms_prefix
            if now == last and self._sequence < MAX_SEQUENCE:
                # Only reachable after a clock-back wait ended inside the same millisecond.
                self._sequence += 1
                return self._ms_prefix | self._sequence
            if now == last:
                # 4,096 IDs already issued in this millisecond: the only safe move is the next one.
                # Holding the lock while we sleep is right: every other caller needs it too.
                self._sleep(_NEXT_MS_POLL_SECONDS)
            else:
                behind = last - now
                if behind > self.clock_back_tolerance_ms:
                    raise ClockMovedBackwardsError(behind, self.clock_back_tolerance_ms)
                # A small step back (NTP step, VM hiccup): sleep it out instead of failing.
                self._sleep(behind / 1000)
            ticks = self._ticks()

    def _enter_millisecond(self, offset_ms: int) -> None:
        """Make `offset_ms` (ms since the epoch) the current millisecond of the fast path."""
        self._last_ms = offset_ms
        self._ms_start_ticks = (offset_ms + self._epoch_ms) * self._ticks_per_ms
        self._ms_end_ticks = self._ms_start_ticks + self._ticks_per_ms
        self._ms_prefix = (offset_ms << TIMESTAMP_SHIFT) | self._worker_bits

    def __repr__(self) -> str:
        return f"SnowflakeGenerator(worker_id={self.worker_id}, epoch_ms={self.epoch_ms})"


def _check_worker_id(worker_id: int) -> None:
    if isinstance(worker_id, bool) or not isinstance(worker_id, int):
        raise WorkerIdOutOfRangeError(f"worker_id must be an int, got {type(worker_id).__name__}")
    if not 0 <= worker_id <= MAX_WORKER_ID:
        raise WorkerIdOutOfRangeError(
            f"worker_id {worker_id} is outside 0..{MAX_WORKER_ID} ({WORKER_ID_BITS} bits); "
            f"lease one with worker_lease.WorkerLease instead of hard-coding it")


def _check_timestamp(offset_ms: int) -> None:
    if offset_ms > MAX_TIMESTAMP:
        raise TimestampOverflowError(
            f"{offset_ms} ms since the epoch does not fit in {TIMESTAMP_BITS} bits "
            f"(max {MAX_TIMESTAMP}); the epoch is too old for this layout — pick a later epoch "
            f"(IDs from different epochs must never be mixed)")
