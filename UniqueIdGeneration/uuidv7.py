"""UUIDv7 (RFC 9562, section 5.7): a standard 128-bit ID that, like Snowflake, starts with the time.

    bits 0-47   unix_ts_ms   big-endian Unix time in milliseconds
    bits 48-51  ver          0b0111
    bits 52-63  rand_a       here: a 12-bit counter (RFC 9562 section 6.2, "Method 1")
    bits 64-65  var          0b10
    bits 66-127 rand_b       62 random bits

Compared with Snowflake it needs no worker id at all (62 random bits make collisions negligible),
at the price of 16 bytes instead of 8. It is in the sortable-key experiment as the standard
alternative to random UUIDv4 keys.

Monotonicity within one generator (RFC 9562 section 6.2): on each new millisecond the counter
starts at a random value below 2**11 (the top bit is a guard, leaving >= 2,048 increments); within
the millisecond it increments. If it would overflow, the timestamp is advanced by 1 ms — the RFC's
allowed "borrow from the future" — so values from one generator strictly increase.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable

_COUNTER_BITS = 12
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_COUNTER_START_BITS = _COUNTER_BITS - 1      # one guard bit
_RAND_B_BITS = 62
_TIMESTAMP_MAX = (1 << 48) - 1
_VERSION = 0x7
_VARIANT = 0b10


class UUIDv7Generator:
    """Thread-safe, strictly increasing UUIDv7 values. `clock` returns Unix time in ms."""

    def __init__(self, clock: Callable[[], int] | None = None):
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def next_int(self) -> int:
        """The next UUIDv7 as a 128-bit integer."""
        with self._lock:
            now = self._clock()
            if now > self._last_ms:
                self._last_ms = now
                self._counter = secrets.randbits(_COUNTER_START_BITS)
            elif self._counter < _COUNTER_MAX:
                # Same millisecond, or the clock went back: keep the stored timestamp, count on.
                self._counter += 1
            else:
                self._last_ms += 1
                self._counter = secrets.randbits(_COUNTER_START_BITS)
            if self._last_ms > _TIMESTAMP_MAX:
                raise OverflowError("Unix time in ms no longer fits UUIDv7's 48 bits (year 10889)")
            return compose_uuid7(self._last_ms, self._counter, secrets.randbits(_RAND_B_BITS))

    def next_uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.next_int())

    def next_bytes(self) -> bytes:
        """16 bytes, big-endian: byte order = time order, which is what a B-tree key needs."""
        return self.next_int().to_bytes(16, "big")


def compose_uuid7(unix_ts_ms: int, rand_a: int, rand_b: int) -> int:
    """Assemble the 128 bits of a UUIDv7 from its fields (RFC 9562, section 5.7)."""
    if not 0 <= unix_ts_ms <= _TIMESTAMP_MAX:
        raise ValueError(f"unix_ts_ms {unix_ts_ms} does not fit in 48 bits")
    if not 0 <= rand_a <= _COUNTER_MAX:
        raise ValueError(f"rand_a {rand_a} does not fit in 12 bits")
    if not 0 <= rand_b < (1 << _RAND_B_BITS):
        raise ValueError(f"rand_b {rand_b} does not fit in 62 bits")
    return (unix_ts_ms << 80) | (_VERSION << 76) | (rand_a << 64) | (_VARIANT << 62) | rand_b


def uuid7_timestamp_ms(value: uuid.UUID | int) -> int:
    """The Unix-ms timestamp stored in a UUIDv7."""
    as_int = value.int if isinstance(value, uuid.UUID) else value
    return as_int >> 80
