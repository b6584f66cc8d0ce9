"""Seat booking for events: a Redis lock per seat for efficiency, a fenced SQLite write for correctness.

The flow of ``book_seat`` (the shape every "check, then pay, then write" service has):

    lock lock:<event_id>:<seat_id>                   (RedisLock; busy -> LOCK_BUSY)
    token = the seat store issues the seat's next     (SQLite, one statement; every older token is
            fencing token and reads the seat           now stale; someone there -> ALREADY_BOOKED)
    take the payment                                  (slow: seconds, and the process may pause here)
    write the seat if its fence still equals token    (a newer token issued -> REJECTED_STALE)
    release the lock

The lock keeps two users from paying for the same seat at once; it cannot keep a paused holder
from writing after its lease ran out. The fence can, and because the seat store issues the tokens
itself (``seat_store.py``), it keeps working when the lock's Redis restarts and forgets everything.

``book_seat_lock_free`` is the other answer: no lock at all, the booking as ONE conditional write
(``... WHERE holder IS NULL``). Right when the decision fits in one write; the lock earns its place
when several steps must see a stable seat — here, not charging two users for one seat.

``fencing=False`` reproduces the old design (read, pay, write unconditionally): a holder paused
past its lease overwrites the next holder's booking. The demo uses it to show the double booking.

Ids must be non-empty and must not contain ':' (it separates the parts of the Redis lock keys).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import redis

from .lock import RedisLock
from .seat_store import SeatStore


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
    token: int | None = None          # the seat's fencing token, if one was issued
    holder: str | None = None         # who holds the seat after the attempt, as far as we saw

    @property
    def booked(self) -> bool:
        return self.outcome is BookingOutcome.BOOKED


class TicketBookingSystem:
    """Books seats: a Redis lock per seat in front of a SQLite seat store that fences every write."""

    def __init__(self, client: redis.Redis, store: SeatStore, *, lock_ttl_ms: int = 10_000,
                 hold_seconds: int = 300, fencing: bool = True, lock_wait_s: float = 0.0,
                 auto_renew: bool = True):
        if isinstance(hold_seconds, bool) or not isinstance(hold_seconds, int) or hold_seconds <= 0:
            raise ValueError(f"hold_seconds must be a positive int, got {hold_seconds!r}")
        if lock_wait_s < 0:
            raise ValueError("lock_wait_s must be >= 0 (0: do not wait for a busy seat)")
        RedisLock(client, "probe", ttl_ms=lock_ttl_ms)  # validates lock_ttl_ms with the lock's own rules
        self.client = client
        self.store = store
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
        if lock.acquire(blocking=self.lock_wait_s > 0, timeout=self.lock_wait_s or None) is None:
            return BookingResult(BookingOutcome.LOCK_BUSY, event_id, seat_id, user_id)
        try:
            if self.fencing:
                return self._book_fenced(event_id, seat_id, user_id, payment_seconds, on_locked)
            return self._book_unfenced(event_id, seat_id, user_id, payment_seconds, on_locked)
        finally:
            lock.release()  # False if our lease expired meanwhile; the fence already judged the write

    def book_seat_lock_free(self, event_id: str, seat_id: str, user_id: str) -> BookingResult:
        """Book with no lock: one conditional write. Exactly one of any number of racers wins."""
        _check_ids(event_id=event_id, seat_id=seat_id, user_id=user_id)
        if self.store.book_if_free(event_id, seat_id, user_id, self.hold_seconds):
            return BookingResult(BookingOutcome.BOOKED, event_id, seat_id, user_id, holder=user_id)
        return BookingResult(BookingOutcome.ALREADY_BOOKED, event_id, seat_id, user_id,
                             holder=self.store.holder(event_id, seat_id))

    def cancel(self, event_id: str, seat_id: str, user_id: str) -> CancelOutcome:
        """Cancel a booking — only the user who holds it may."""
        _check_ids(event_id=event_id, seat_id=seat_id, user_id=user_id)
        lock = self._lock(event_id, seat_id)
        if lock.acquire(blocking=self.lock_wait_s > 0, timeout=self.lock_wait_s or None) is None:
            return CancelOutcome.LOCK_BUSY
        try:
            claim = self.store.issue_token(event_id, seat_id)
            if claim.holder is None:
                return CancelOutcome.NOT_BOOKED
            if claim.holder != user_id:
                return CancelOutcome.NOT_HOLDER
            cleared = self.store.clear(event_id, seat_id, claim.token)
            return CancelOutcome.CANCELLED if cleared.accepted else CancelOutcome.REJECTED_STALE
        finally:
            lock.release()

    def reservations(self, event_id: str) -> dict[str, str]:
        """{seat_id: user_id} for every seat of the event held right now."""
        _check_ids(event_id=event_id)
        return self.store.reservations(event_id)

    def holder(self, event_id: str, seat_id: str) -> str | None:
        """Who holds the seat right now (None: free)."""
        _check_ids(event_id=event_id, seat_id=seat_id)
        return self.store.holder(event_id, seat_id)

    # -- the two locked paths ---------------------------------------------------------------------

    def _book_fenced(self, event_id: str, seat_id: str, user_id: str, payment_seconds: float,
                     on_locked: Callable[[int], None] | None) -> BookingResult:
        # A plain read first: a seat already taken needs no token (issuing one is a durable write).
        # The decision below is made on the claim, read in the same statement that issued the token.
        taken_by = self.store.holder(event_id, seat_id)
        if taken_by is not None:
            return BookingResult(BookingOutcome.ALREADY_BOOKED, event_id, seat_id, user_id, None, taken_by)
        claim = self.store.issue_token(event_id, seat_id)  # from now on, every older token is stale
        if claim.holder is not None:
            return BookingResult(BookingOutcome.ALREADY_BOOKED, event_id, seat_id, user_id, claim.token,
                                 claim.holder)
        self._pay(claim.token, payment_seconds, on_locked)
        written = self.store.write(event_id, seat_id, claim.token, user_id, self.hold_seconds)
        outcome = BookingOutcome.BOOKED if written.accepted else BookingOutcome.REJECTED_STALE
        return BookingResult(outcome, event_id, seat_id, user_id, claim.token, written.value)

    def _book_unfenced(self, event_id: str, seat_id: str, user_id: str, payment_seconds: float,
                       on_locked: Callable[[int], None] | None) -> BookingResult:
        # The old design: trusts the lock alone. Correct only if no holder ever outlives its lease.
        claim = self.store.issue_token(event_id, seat_id)  # the token is shown, but never checked
        if claim.holder is not None:
            return BookingResult(BookingOutcome.ALREADY_BOOKED, event_id, seat_id, user_id, claim.token,
                                 claim.holder)
        self._pay(claim.token, payment_seconds, on_locked)
        self.store.overwrite(event_id, seat_id, user_id, self.hold_seconds)
        return BookingResult(BookingOutcome.BOOKED, event_id, seat_id, user_id, claim.token, user_id)

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


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def delete_event_keys(client: redis.Redis, event_id: str) -> int:
    """Delete the Redis keys of one event's seat locks (leases, counters, wake lists); returns how many.

    For the demo and the simulation: under REDIS_URL they run against the user's own Redis, where a
    FLUSHDB would wipe data that is not ours. SCAN, not KEYS: KEYS walks the whole keyspace in one
    call and blocks every other client meanwhile.
    """
    _check_ids(event_id=event_id)
    escaped = _glob_escape(event_id)
    deleted = 0
    for prefix in ("lock", "lock-token", "lock-wake", "lock-delay"):
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
