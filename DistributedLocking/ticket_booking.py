"""Seat booking for events: a lock per seat, and a seat write fenced by the lock's token.

The flow of ``book_seat`` (the shape every "check, then pay, then write" service has):

    token = lock lock:<event_id>:<seat_id>          (RedisLock; busy -> LOCK_BUSY)
    read the seat, registering the token             (fenced read; someone there -> ALREADY_BOOKED)
    take the payment                                 (slow: seconds, and the process may pause here)
    write the seat with the token                    (fenced write; a newer holder seen -> REJECTED_STALE)
    release the lock

Redis keys (``event_id`` and ``seat_id`` must not contain ':'):

* ``lock:<event_id>:<seat_id>``   the seat's lock (see lock.py; its token counter is
  ``lock-token:<event_id>:<seat_id>``).
* ``seat:<event_id>:<seat_id>``   a plain string: the id of the user who booked the seat, alone. It
  expires after ``hold_seconds`` (the booking hold lapses unless your system confirms it elsewhere).
* ``fence:seat:<event_id>:<seat_id>``  the highest fencing token the seat has accepted (no expiry: it
  must outlive any paused holder that could still wake up). Kept apart from the seat value so a
  cancel or an expired hold does not reset the fence.

``fencing=False`` reproduces the old design (plain GET, then SET after payment): a holder paused past
its lease overwrites the next holder's booking. The demo uses it to show the double booking.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import redis

from .fencing import FencedResource
from .lock import RedisLock


class BookingOutcome(Enum):
    BOOKED = "booked"
    ALREADY_BOOKED = "already booked"
    LOCK_BUSY = "lock busy"
    REJECTED_STALE = "rejected stale"


class CancelOutcome(Enum):
    CANCELLED = "cancelled"
    NOT_HOLDER = "not the holder"
    NOT_BOOKED = "not booked"
    LOCK_BUSY = "lock busy"
    REJECTED_STALE = "rejected stale"


@dataclass(frozen=True)
class BookingResult:
    outcome: BookingOutcome
    event_id: str
    seat_id: str
    user_id: str
    token: int | None = None          # the lock's fencing token, if the lock was acquired
    holder: str | None = None         # who holds the seat after the attempt, as far as we saw

    @property
    def booked(self) -> bool:
        return self.outcome is BookingOutcome.BOOKED


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class TicketBookingSystem:
    """Books seats of events in Redis, one lock per seat, the seat write fenced by the lock token."""

    def __init__(self, client: redis.Redis, *, lock_ttl_ms: int = 10_000, hold_seconds: int = 300,
                 fencing: bool = True, lock_wait_s: float = 0.0, auto_renew: bool = True):
        if isinstance(hold_seconds, bool) or not isinstance(hold_seconds, int) or hold_seconds <= 0:
            raise ValueError(f"hold_seconds must be a positive int, got {hold_seconds!r}")
        if lock_wait_s < 0:
            raise ValueError("lock_wait_s must be >= 0 (0: do not wait for a busy seat)")
        RedisLock(client, "probe", ttl_ms=lock_ttl_ms)  # validates lock_ttl_ms with the lock's own rules
        self.client = client
        self.lock_ttl_ms = lock_ttl_ms
        self.hold_seconds = hold_seconds
        self.fencing = fencing
        self.lock_wait_s = lock_wait_s
        self.auto_renew = auto_renew

    # -- public API ------------------------------------------------------------------------------

    def book_seat(self, event_id: str, seat_id: str, user_id: str, payment_seconds: float = 0.0, *,
                  on_locked: Callable[[int], None] | None = None) -> BookingResult:
        """Try to book a seat. ``on_locked(token)`` runs after the seat was seen free, before payment."""
        _check_ids(event_id=event_id, seat_id=seat_id, user_id=user_id)
        if payment_seconds < 0:
            raise ValueError("payment_seconds must be >= 0")
        lock = self._lock(event_id, seat_id)
        token = lock.acquire(blocking=self.lock_wait_s > 0, timeout=self.lock_wait_s or None)
        if token is None:
            return BookingResult(BookingOutcome.LOCK_BUSY, event_id, seat_id, user_id)
        try:
            if self.fencing:
                return self._book_fenced(event_id, seat_id, user_id, token, payment_seconds, on_locked)
            return self._book_unfenced(event_id, seat_id, user_id, token, payment_seconds, on_locked)
        finally:
            lock.release()  # False if our lease expired meanwhile; the fence already judged the write

    def cancel(self, event_id: str, seat_id: str, user_id: str) -> CancelOutcome:
        """Cancel a booking — only the user who holds it may."""
        _check_ids(event_id=event_id, seat_id=seat_id, user_id=user_id)
        lock = self._lock(event_id, seat_id)
        token = lock.acquire(blocking=self.lock_wait_s > 0, timeout=self.lock_wait_s or None)
        if token is None:
            return CancelOutcome.LOCK_BUSY
        try:
            seat = self._seat(event_id, seat_id)
            seen = seat.read(token)
            if not seen.accepted:
                return CancelOutcome.REJECTED_STALE
            if seen.value is None:
                return CancelOutcome.NOT_BOOKED
            if seen.value != user_id:
                return CancelOutcome.NOT_HOLDER
            deleted = seat.delete(token)
            return CancelOutcome.CANCELLED if deleted.accepted else CancelOutcome.REJECTED_STALE
        finally:
            lock.release()

    def reservations(self, event_id: str) -> dict[str, str]:
        """{seat_id: user_id} for every booked seat of the event, found with SCAN (never KEYS).

        SCAN walks the keyspace in small steps, so Redis keeps serving others meanwhile (KEYS blocks
        the whole server for the full walk). It may return a key twice; the dict absorbs that.
        """
        _check_ids(event_id=event_id)
        pattern = f"seat:{_glob_escape(event_id)}:*"
        keys = list(dict.fromkeys(self.client.scan_iter(match=pattern, count=500)))
        result: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            batch = keys[start:start + 500]
            for key, value in zip(batch, self.client.mget(batch), strict=True):
                if value is not None:  # the hold may have expired between SCAN and MGET
                    result[_text(key).rsplit(":", 1)[1]] = _text(value)
        return result

    def holder(self, event_id: str, seat_id: str) -> str | None:
        """Who holds the seat right now (None: free)."""
        _check_ids(event_id=event_id, seat_id=seat_id)
        value = self.client.get(f"seat:{event_id}:{seat_id}")
        return None if value is None else _text(value)

    # -- the two booking paths --------------------------------------------------------------------

    def _book_fenced(self, event_id: str, seat_id: str, user_id: str, token: int, payment_seconds: float,
                     on_locked: Callable[[int], None] | None) -> BookingResult:
        seat = self._seat(event_id, seat_id)
        seen = seat.read(token)  # registers our token first: a stale holder can no longer write
        if not seen.accepted:
            return BookingResult(BookingOutcome.REJECTED_STALE, event_id, seat_id, user_id, token, seen.value)
        if seen.value is not None:
            return BookingResult(BookingOutcome.ALREADY_BOOKED, event_id, seat_id, user_id, token, seen.value)
        self._pay(token, payment_seconds, on_locked)
        written = seat.write(token, user_id, ttl_ms=self.hold_seconds * 1000)
        outcome = BookingOutcome.BOOKED if written.accepted else BookingOutcome.REJECTED_STALE
        return BookingResult(outcome, event_id, seat_id, user_id, token, written.value)

    def _book_unfenced(self, event_id: str, seat_id: str, user_id: str, token: int, payment_seconds: float,
                       on_locked: Callable[[int], None] | None) -> BookingResult:
        # The old design: trusts the lock alone. Correct only if no holder ever outlives its lease.
        key = f"seat:{event_id}:{seat_id}"
        current = self.client.get(key)
        if current is not None:
            return BookingResult(BookingOutcome.ALREADY_BOOKED, event_id, seat_id, user_id, token,
                                 _text(current))
        self._pay(token, payment_seconds, on_locked)
        self.client.set(key, user_id, ex=self.hold_seconds)
        return BookingResult(BookingOutcome.BOOKED, event_id, seat_id, user_id, token, user_id)

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _pay(token: int, payment_seconds: float, on_locked: Callable[[int], None] | None) -> None:
        if on_locked is not None:
            on_locked(token)
        if payment_seconds:
            time.sleep(payment_seconds)  # stands in for a call to a payment provider

    def _lock(self, event_id: str, seat_id: str) -> RedisLock:
        return RedisLock(self.client, f"{event_id}:{seat_id}", ttl_ms=self.lock_ttl_ms,
                         auto_renew=self.auto_renew)

    def _seat(self, event_id: str, seat_id: str) -> FencedResource:
        return FencedResource(self.client, f"seat:{event_id}:{seat_id}")


def delete_event_keys(client: redis.Redis, event_id: str) -> int:
    """Delete every key one event uses (seats, fences, seat locks and their counters); returns how many.

    For the demo and the simulation: under REDIS_URL they run against the user's own Redis, where a
    FLUSHDB would wipe data that is not ours. SCAN, not KEYS, for the same reason as ``reservations``.
    """
    _check_ids(event_id=event_id)
    escaped = _glob_escape(event_id)
    deleted = 0
    for prefix in ("seat", "fence:seat", "lock", "lock-token", "lock-wake"):
        keys = list(client.scan_iter(match=f"{prefix}:{escaped}:*", count=500))
        for start in range(0, len(keys), 500):
            deleted += client.delete(*keys[start:start + 500])
    return deleted


def _check_ids(**ids: str) -> None:
    for name, value in ids.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if ":" in value:
            raise ValueError(f"{name} must not contain ':' (it separates the parts of Redis keys): {value!r}")


def _glob_escape(text: str) -> str:
    """Escape SCAN MATCH's glob characters so an event id like 'a*' matches only itself."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
