"""TicketBookingSystem with real processes: races, cancels, SCAN, and the GC-pause double booking."""

from __future__ import annotations

import os
import signal

import pytest
import redis

from common import RedisServer
from DistributedLocking import BookingOutcome, CancelOutcome, TicketBookingSystem
from DistributedLocking.workers import booking_worker, crowd_worker, race_worker
from tests.locking_helpers import recv, workers


def test_many_processes_race_for_one_seat_and_exactly_one_wins(redis_url):
    with workers() as group:
        start, results = group.event(), group.queue()
        for n in range(8):
            group.start(race_worker, redis_url, "show", "A1", f"user{n}", start, results)
        start.set()
        outcomes = [results.get(timeout=120) for _ in range(8)]
        group.join_all()
    winners = [user for user, outcome, _ in outcomes if outcome == "booked"]
    assert len(winners) == 1
    assert {o for _, o, _ in outcomes} <= {"booked", "already booked", "lock busy"}
    system = TicketBookingSystem(redis.Redis.from_url(redis_url))
    assert system.reservations("show") == {"A1": winners[0]}


def test_fifty_users_racing_for_ten_seats_book_exactly_ten_none_twice(redis_url):
    seats = [f"S{n}" for n in range(10)]
    users = [f"u{n}" for n in range(50)]
    with workers() as group:
        start, results = group.event(), group.queue()
        for w in range(5):
            group.start(crowd_worker, redis_url, "gig", seats, users[w::5], 100 + w, 0.0, start, results)
        start.set()
        log = [entry for _ in range(5) for entry in results.get(timeout=120)]
        group.join_all()
    booked = [(user, seat) for user, outcome, seat in log if outcome == "booked"]
    assert len(booked) == 10
    assert len({seat for _, seat in booked}) == 10                # no seat twice
    assert len({user for user, _ in booked}) == 10                # nobody got two seats
    system = TicketBookingSystem(redis.Redis.from_url(redis_url))
    assert system.reservations("gig") == {seat: user for user, seat in booked}


def test_cancel_only_by_the_holder(redis_url):
    system = TicketBookingSystem(redis.Redis.from_url(redis_url))
    assert system.book_seat("e1", "B2", "alice").outcome is BookingOutcome.BOOKED
    assert system.book_seat("e1", "B2", "bob").outcome is BookingOutcome.ALREADY_BOOKED
    assert system.cancel("e1", "B2", "bob") is CancelOutcome.NOT_HOLDER
    assert system.holder("e1", "B2") == "alice"
    assert system.cancel("e1", "B2", "alice") is CancelOutcome.CANCELLED
    assert system.cancel("e1", "B2", "alice") is CancelOutcome.NOT_BOOKED
    assert system.book_seat("e1", "B2", "bob").outcome is BookingOutcome.BOOKED


def test_a_busy_seat_lock_is_reported_not_waited_for(redis_url):
    client = redis.Redis.from_url(redis_url)
    system = TicketBookingSystem(client)
    from DistributedLocking import RedisLock
    lock = RedisLock(client, "e1:C3")                             # the seat's lock: lock:e1:C3
    lock.acquire()
    assert system.book_seat("e1", "C3", "carol").outcome is BookingOutcome.LOCK_BUSY
    assert system.cancel("e1", "C3", "carol") is CancelOutcome.LOCK_BUSY
    lock.release()


def test_reservations_use_scan_and_work_when_keys_is_disabled():
    # KEYS renamed away: any call to it fails, so passing proves reservations() never uses it.
    with RedisServer(extra_args=("--rename-command", "KEYS", "")) as server:
        client = redis.Redis.from_url(server.url)
        with pytest.raises(redis.ResponseError):
            client.keys("*")
        client.mset({f"noise:{n}": n for n in range(3_000)})      # many SCAN pages
        system = TicketBookingSystem(client)
        for n in range(30):
            assert system.book_seat("ev*", f"R{n}", f"user{n}").booked
        assert system.book_seat("evX", "R0", "other").booked       # 'ev*' must not match 'evX'
        assert system.reservations("ev*") == {f"R{n}": f"user{n}" for n in range(30)}
        assert system.reservations("evX") == {"R0": "other"}
        assert system.reservations("nothing") == {}


@pytest.mark.parametrize("fencing", [True, False])
def test_gc_pause_during_payment(redis_url, fencing):
    """A is paused past its lease while paying; B books; A resumes. Fenced: A refused. Unfenced: both win."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with workers() as group:
        a_end, a_child = group.pipe()
        a = group.start(booking_worker, redis_url, "opera", "D4", "alice", 1.0, fencing, 400, a_child)
        kind, a_token, _ = recv(a_end)
        assert kind == "locked"
        os.kill(a.pid, signal.SIGSTOP)                            # mid-payment
        # B waits for the seat's lock; A's lease expires while A is frozen, and B gets in.
        system = TicketBookingSystem(client, lock_ttl_ms=5_000, fencing=fencing, lock_wait_s=10)
        b = system.book_seat("opera", "D4", "bob")
        assert b.outcome is BookingOutcome.BOOKED and b.token > a_token
        os.kill(a.pid, signal.SIGCONT)
        kind, outcome, token, _ = recv(a_end)
        assert (kind, token) == ("result", a_token)
        a.join(10)
    if fencing:
        assert outcome == "rejected stale"
        assert system.reservations("opera") == {"D4": "bob"}
    else:
        assert outcome == "booked"                                # both were told "booked"...
        assert system.reservations("opera") == {"D4": "alice"}    # ...and B's booking was overwritten


def test_simulation_under_redis_url_keeps_other_keys_and_starts_from_a_clean_event(redis_url, monkeypatch):
    # With REDIS_URL set the scripts use the user's own Redis: they must delete only their own keys
    # (a FLUSHDB there would wipe the user's data), yet still start without the last run's seats.
    from DistributedLocking import simulation

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set("users-own-data", "precious")
    client.set("seat:sim:S00", "ghost-from-a-previous-run")
    client.set("seat:other:S00", "someone")
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert simulation.main(["--users", "4", "--seats", "2", "--processes", "1", "--cancel", "0"]) == 0
    assert client.get("users-own-data") == "precious" and client.get("seat:other:S00") == "someone"
    assert "ghost-from-a-previous-run" not in TicketBookingSystem(client).reservations("sim").values()


def test_delete_event_keys_deletes_exactly_one_events_keys(redis_url):
    from DistributedLocking.ticket_booking import delete_event_keys

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    system = TicketBookingSystem(client)
    for event in ("e*", "eX", "e"):
        assert system.book_seat(event, "A1", "u").booked
    client.set("seat-notes", "keep")
    assert delete_event_keys(client, "e*") == 4                   # seat, fence, token counter, wake list
    assert sorted(client.keys("*")) == sorted(
        [f"{prefix}:{event}:A1" for event in ("eX", "e")
         for prefix in ("seat", "fence:seat", "lock-token", "lock-wake")]
        + ["seat-notes"])
