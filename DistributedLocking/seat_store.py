"""The seats, in SQLite: the system of record, and the issuer of its own fencing tokens.

Why the seat store issues the tokens: a fence is only as good as its memory of the highest token.
If the tokens came from the lock's Redis and that Redis restarted without persistence, the counter
would start again at 1 while a paused holder still carried token 13 — and a fence that forgot (or
never learned) the order would let both write. The rule: **the token counter must be at least as
durable as the resource it fences.** The surest way is to keep it *in* the resource, changed in the
same transaction as the data. Here every seat row carries its own ``fence``:

* ``issue_token(event, seat)`` — one statement: ``fence = fence + 1``, returning the new value and
  the seat's holder. Issuing *is* registering: from this moment every older token is stale, so a
  holder that reads the seat free can be sure no stale holder will write after it.
* ``write(event, seat, token, user)`` — ``UPDATE ... WHERE fence = token``. The store issued every
  token itself, so the current fence is the highest there is: equal means "nobody came after you".
* ``book_if_free(event, seat, user)`` — no lock, no token: one conditional write
  (``... WHERE holder IS NULL``). It moves the fence too, so a stale token holder cannot overwrite it.

The Redis lock in front of it (``ticket_booking.py``) is then there for *efficiency* — only one user
at a time pays for a seat — while *correctness* rests on this file alone: restart Redis, lose every
lease, and the fence still holds, because it lives where the seats live. Durability: WAL journal,
``synchronous=FULL`` (every commit is on disk before it returns).

A booking is a hold that lapses after ``hold_seconds`` (``held_until``, wall-clock seconds) unless
a real system confirmed it elsewhere; a lapsed hold reads as free.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .fencing import FenceResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seats (
    event      TEXT    NOT NULL,
    seat       TEXT    NOT NULL,
    holder     TEXT,                        -- user id, NULL when free
    held_until REAL,                        -- time.time() when the hold lapses
    fence      INTEGER NOT NULL DEFAULT 0,  -- the highest fencing token issued for this seat
    PRIMARY KEY (event, seat)
)
"""


@dataclass(frozen=True)
class Claim:
    """A freshly issued fencing token, and the seat as it was at that moment."""

    token: int
    holder: str | None


class SeatStore:
    """Seats of events in one SQLite file; one object per process (a connection is not shared)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        # isolation_level=None: autocommit. Every method below is ONE statement, and SQLite runs each
        # statement atomically in its own transaction, so there is no BEGIN/COMMIT to get wrong.
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")     # readers do not block the writer
        self._db.execute("PRAGMA synchronous=FULL")     # a commit is durable when it returns
        self._db.execute(_SCHEMA)

    # -- the fenced path (with a lock in front) ---------------------------------------------------

    def issue_token(self, event: str, seat: str) -> Claim:
        """Issue the seat's next fencing token (making every older one stale) and read the seat."""
        token, holder, held_until = self._db.execute(
            "INSERT INTO seats (event, seat, fence) VALUES (?, ?, 1) "
            "ON CONFLICT (event, seat) DO UPDATE SET fence = fence + 1 "
            "RETURNING fence, holder, held_until", (event, seat)).fetchone()
        return Claim(token, _live(holder, held_until))

    def write(self, event: str, seat: str, token: int, user: str, hold_seconds: float) -> FenceResult:
        """Book the seat for `user` if `token` is still the newest issued; else rejected."""
        return self._fenced_update(event, seat, token, user, time.time() + hold_seconds)

    def clear(self, event: str, seat: str, token: int) -> FenceResult:
        """Free the seat (a cancellation) if `token` is still the newest issued."""
        return self._fenced_update(event, seat, token, None, None)

    def _fenced_update(self, event: str, seat: str, token: int, user: str | None,
                       held_until: float | None) -> FenceResult:
        if isinstance(token, bool) or not isinstance(token, int) or token <= 0:
            raise ValueError(f"a fencing token is a positive int from issue_token, got {token!r}")
        changed = self._db.execute(
            "UPDATE seats SET holder = ?, held_until = ? WHERE event = ? AND seat = ? AND fence = ?",
            (user, held_until, event, seat, token)).rowcount
        fence, holder = self._fence_and_holder(event, seat)
        return FenceResult(changed == 1, fence, holder)

    # -- the lock-free path: one conditional write ------------------------------------------------

    def book_if_free(self, event: str, seat: str, user: str, hold_seconds: float) -> bool:
        """Book the seat for `user` only if nobody holds it; True if this call booked it."""
        now = time.time()
        return self._db.execute(
            "INSERT INTO seats (event, seat, holder, held_until, fence) VALUES (?, ?, ?, ?, 1) "
            "ON CONFLICT (event, seat) DO UPDATE "
            "SET holder = excluded.holder, held_until = excluded.held_until, fence = fence + 1 "
            "WHERE holder IS NULL OR held_until <= ?",
            (event, seat, user, now + hold_seconds, now)).rowcount == 1

    # -- the old design, kept to show the double booking ------------------------------------------

    def overwrite(self, event: str, seat: str, user: str, hold_seconds: float) -> None:
        """Write the seat unconditionally (no fence): what a lock-only design does after paying."""
        self._db.execute(
            "INSERT INTO seats (event, seat, holder, held_until) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (event, seat) DO UPDATE SET holder = excluded.holder, "
            "held_until = excluded.held_until", (event, seat, user, time.time() + hold_seconds))

    # -- reads ------------------------------------------------------------------------------------

    def holder(self, event: str, seat: str) -> str | None:
        return self._fence_and_holder(event, seat)[1]

    def fence(self, event: str, seat: str) -> int:
        return self._fence_and_holder(event, seat)[0]

    def reservations(self, event: str) -> dict[str, str]:
        """{seat: user} for every seat of the event held right now."""
        rows = self._db.execute("SELECT seat, holder FROM seats WHERE event = ? AND holder IS NOT NULL "
                                "AND held_until > ? ORDER BY seat", (event, time.time()))
        return dict(rows.fetchall())

    def delete_event(self, event: str) -> int:
        """Forget every seat of one event (the demos start each run from a clean event)."""
        return self._db.execute("DELETE FROM seats WHERE event = ?", (event,)).rowcount

    def close(self) -> None:
        self._db.close()

    def _fence_and_holder(self, event: str, seat: str) -> tuple[int, str | None]:
        row = self._db.execute("SELECT fence, holder, held_until FROM seats WHERE event = ? AND seat = ?",
                               (event, seat)).fetchone()
        return (0, None) if row is None else (row[0], _live(row[1], row[2]))

    def __enter__(self) -> SeatStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _live(holder: str | None, held_until: float | None) -> str | None:
    """The holder, unless the hold has lapsed."""
    return holder if holder is not None and held_until is not None and held_until > time.time() else None
