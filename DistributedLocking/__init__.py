"""Distributed locking with Redis done right: atomic acquire, safe release, lease renewal,
fencing tokens that a resource can check, Redlock, and a ticket-booking service built on them.
"""

from .fencing import FencedResource, FenceResult
from .lock import (
    WAIT_BACKOFF,
    WAIT_WAKEUP,
    LockBackendUnavailable,
    LockError,
    LockLost,
    LockNotAcquired,
    RedisLock,
    backoff_delays,
    watchdog_active_count,
)
from .redlock import Redlock, RedlockLease
from .seat_store import Claim, SeatStore
from .ticket_booking import BookingOutcome, BookingResult, CancelOutcome, TicketBookingSystem

__all__ = [
    "WAIT_BACKOFF", "WAIT_WAKEUP", "BookingOutcome", "BookingResult", "CancelOutcome", "FenceResult",
    "FencedResource", "LockBackendUnavailable", "LockError", "LockLost", "LockNotAcquired", "RedisLock",
    "Claim", "Redlock", "RedlockLease", "SeatStore", "TicketBookingSystem", "backoff_delays",
    "watchdog_active_count",
]
