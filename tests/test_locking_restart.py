"""A fence that survives a Redis restart: the seat store issues its own tokens (issue 21, item 4).

The scenario that broke the old design: A holds the seat lock with token 13 and is paying; Redis is
SIGKILLed and restarted empty; B gets the lock and books; A wakes up and writes. With the lock, the
token counter and the fence all in one Redis without persistence, A's write passed the empty fence
(13 >= 1) — a double booking. Tokens now come from the seat store (SQLite), in the same row as the
seat, so a Redis restart costs leases but never the fence.
"""

from __future__ import annotations

import os
import signal

import pytest
import redis

from DistributedLocking import BookingOutcome, FencedResource, RedisLock, SeatStore, TicketBookingSystem
from DistributedLocking.workers import booking_worker
from tests.locking_helpers import recv, workers

EARLIER_HOLDERS = 12   # so that A's token is 13, as in the issue


@pytest.fixture
def seat_db(tmp_path) -> str:
    path = str(tmp_path / "seats.sqlite3")
    with SeatStore(path) as store:
        for _ in range(EARLIER_HOLDERS):
            store.issue_token("gala", "A1")
    return path


@pytest.mark.parametrize("order", ["B books, then A's late write", "A's late write, then B"])
def test_a_redis_restart_while_a_pays_never_double_books(redis_process, seat_db, order):
    server = redis_process()
    with workers() as group:
        a_end, a_child = group.pipe()
        a = group.start(booking_worker, server.url, seat_db, "gala", "A1", "alice", 0.5, True, 60_000,
                        a_child)
        kind, a_token, _ = recv(a_end)
        assert (kind, a_token) == ("locked", EARLIER_HOLDERS + 1)
        os.kill(a.pid, signal.SIGSTOP)                      # A is mid-payment, holding the lock
        server.kill()
        server.restart()                                    # empty: A's lease and every counter gone
        bob = TicketBookingSystem(redis.Redis.from_url(server.url), SeatStore(seat_db), auto_renew=False)
        if order == "B books, then A's late write":
            b = bob.book_seat("gala", "A1", "bob")          # the lock is free again: nobody holds it
            os.kill(a.pid, signal.SIGCONT)
            _, a_outcome, _, _ = recv(a_end)
            assert b.outcome is BookingOutcome.BOOKED and b.token == a_token + 1
            assert a_outcome == "rejected stale"
        else:
            os.kill(a.pid, signal.SIGCONT)
            _, a_outcome, _, _ = recv(a_end)
            b = bob.book_seat("gala", "A1", "bob")
            assert a_outcome == "booked"                   # nobody came after A: its write is fine
            assert b.outcome is BookingOutcome.ALREADY_BOOKED
        a.join(10)
    told_booked = [who for who, outcome in (("alice", a_outcome), ("bob", b.outcome.value))
                   if outcome == "booked"]
    assert len(told_booked) == 1                            # 0 double bookings
    assert bob.reservations("gala") == {"A1": told_booked[0]}


def test_a_fence_kept_in_the_restarted_redis_forgets_and_double_books(redis_process):
    """Why the tokens moved: the same restart with lock, counter and fence in one Redis."""
    server = redis_process()
    client = redis.Redis.from_url(server.url)
    for _ in range(EARLIER_HOLDERS):
        with RedisLock(client, "gala:A1", auto_renew=False):
            pass
    a_lock = RedisLock(client, "gala:A1", auto_renew=False)
    a_token = a_lock.acquire()
    seat = FencedResource(client, "seat:gala:A1")
    assert a_token == 13 and seat.read(a_token).value is None
    server.kill()
    server.restart()
    b_lock = RedisLock(client, "gala:A1", auto_renew=False)
    b_token = b_lock.acquire()
    assert b_token == 1                                     # the counter started again
    assert seat.read(b_token).value is None
    assert seat.write(b_token, "bob").accepted
    assert seat.write(a_token, "alice").accepted            # 13 >= 1: the stale write passes
    assert client.get("seat:gala:A1") == b"alice"           # bob was told "booked": double booking
