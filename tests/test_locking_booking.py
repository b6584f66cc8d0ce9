"""TicketBookingSystem with real processes: races, cancels, the GC-pause double booking, Redis restarts."""

from __future__ import annotations

import os
import queue
import signal
import threading

import pytest
import redis

from common import RedisServer
from DistributedLocking import BookingOutcome, CancelOutcome, SeatStore, TicketBookingSystem
from DistributedLocking.workers import booking_worker, crowd_worker, race_worker, seat_rush_worker
from tests.locking_helpers import recv, workers


@pytest.fixture
def seat_db(tmp_path) -> str:
    """A fresh SQLite seat store (schema created) that every process of the test opens."""
    path = str(tmp_path / "seats.sqlite3")
    SeatStore(path).close()
    return path


def booking(url: str, db: str, **kwargs) -> TicketBookingSystem:
    return TicketBookingSystem(redis.Redis.from_url(url), SeatStore(db), **kwargs)


def test_many_processes_race_for_one_seat_and_exactly_one_wins(redis_url, seat_db):
    with workers() as group:
        start, results = group.event(), group.queue()
        for n in range(8):
            group.start(race_worker, redis_url, seat_db, "show", "A1", f"user{n}", start, results)
        start.set()
        outcomes = [results.get(timeout=120) for _ in range(8)]
        group.join_all()
    winners = [user for user, outcome, _ in outcomes if outcome == "booked"]
    assert len(winners) == 1
    assert {o for _, o, _ in outcomes} <= {"booked", "already booked", "lock busy"}
    assert booking(redis_url, seat_db).reservations("show") == {"A1": winners[0]}


def test_fifty_users_racing_for_ten_seats_book_exactly_ten_none_twice(redis_url, seat_db):
    seats = [f"S{n}" for n in range(10)]
    users = [f"u{n}" for n in range(50)]
    with workers() as group:
        start, results = group.event(), group.queue()
        for w in range(5):
            group.start(crowd_worker, redis_url, seat_db, "gig", seats, users[w::5], 100 + w, 0.0,
                        start, results)
        start.set()
        log = [entry for _ in range(5) for entry in results.get(timeout=120)]
        group.join_all()
    booked = [(user, seat) for user, outcome, seat in log if outcome == "booked"]
    assert len(booked) == 10
    assert len({seat for _, seat in booked}) == 10                # no seat twice
    assert len({user for user, _ in booked}) == 10                # nobody got two seats
    assert booking(redis_url, seat_db).reservations("gig") == {seat: user for user, seat in booked}


def test_a_user_whose_cancel_failed_keeps_one_seat_and_books_no_second(redis_url, seat_db, monkeypatch):
    # Under load a cancel can find the seat's lock busy; the user still holds the seat then, and the
    # simulation's crowd must not send them off to book another (its audit once caught "holds 2 seats").
    monkeypatch.setattr(TicketBookingSystem, "cancel", lambda *_: CancelOutcome.LOCK_BUSY)
    start, results = threading.Event(), queue.Queue()
    start.set()
    crowd_worker(redis_url, seat_db, "tour", ["S1", "S2"], ["carol"], 7, 1.0, start, results)
    log = results.get_nowait()
    assert [outcome for _, outcome, _ in log if outcome.startswith("cancel")] == ["cancel lock busy"]
    assert [outcome for _, outcome, _ in log].count("booked") == 1
    assert list(booking(redis_url, seat_db).reservations("tour").values()) == ["carol"]


def test_cancel_only_by_the_holder(redis_url, seat_db):
    system = booking(redis_url, seat_db)
    assert system.book_seat("e1", "B2", "alice").outcome is BookingOutcome.BOOKED
    assert system.book_seat("e1", "B2", "bob").outcome is BookingOutcome.ALREADY_BOOKED
    assert system.cancel("e1", "B2", "bob") is CancelOutcome.NOT_HOLDER
    assert system.holder("e1", "B2") == "alice"
    assert system.cancel("e1", "B2", "alice") is CancelOutcome.CANCELLED
    assert system.cancel("e1", "B2", "alice") is CancelOutcome.NOT_BOOKED
    assert system.book_seat("e1", "B2", "bob").outcome is BookingOutcome.BOOKED


def test_a_busy_seat_lock_is_reported_not_waited_for(redis_url, seat_db):
    client = redis.Redis.from_url(redis_url)
    system = TicketBookingSystem(client, SeatStore(seat_db))
    from DistributedLocking import RedisLock
    lock = RedisLock(client, "e1:C3")                             # the seat's lock: lock:e1:C3
    lock.acquire()
    assert system.book_seat("e1", "C3", "carol").outcome is BookingOutcome.LOCK_BUSY
    assert system.cancel("e1", "C3", "carol") is CancelOutcome.LOCK_BUSY
    lock.release()


def test_delete_event_keys_uses_scan_and_works_when_keys_is_disabled(seat_db):
    # KEYS renamed away: any call to it fails, so passing proves delete_event_keys() never uses it.
    from DistributedLocking.ticket_booking import delete_event_keys

    with RedisServer(extra_args=("--rename-command", "KEYS", "")) as server:
        client = redis.Redis.from_url(server.url)
        with pytest.raises(redis.ResponseError):
            client.keys("*")
        client.mset({f"noise:{n}": n for n in range(3_000)})      # many SCAN pages
        system = TicketBookingSystem(client, SeatStore(seat_db))
        for n in range(30):
            assert system.book_seat("ev*", f"R{n}", f"user{n}").booked
        assert system.book_seat("evX", "R0", "other").booked       # 'ev*' must not match 'evX'
        assert delete_event_keys(client, "ev*") == 60              # a counter and a wake list per seat
        assert client.exists("lock-token:evX:R0", "lock-wake:evX:R0") == 2
        assert client.dbsize() == 3_002


@pytest.mark.parametrize("fencing", [True, False])
def test_gc_pause_during_payment(redis_url, seat_db, fencing):
    """A is paused past its lease while paying; B books; A resumes. Fenced: A refused. Unfenced: both win."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with workers() as group:
        a_end, a_child = group.pipe()
        a = group.start(booking_worker, redis_url, seat_db, "opera", "D4", "alice", 1.0, fencing, 400,
                        a_child)
        kind, a_token, _ = recv(a_end)
        assert kind == "locked"
        os.kill(a.pid, signal.SIGSTOP)                            # mid-payment
        # B waits for the seat's lock; A's lease expires while A is frozen, and B gets in.
        system = TicketBookingSystem(client, SeatStore(seat_db), lock_ttl_ms=5_000, fencing=fencing,
                                     lock_wait_s=10)
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
    client.set("lock:sim:S00", "ghost-from-a-previous-run")      # a lease left by a killed run
    client.set("lock:other:S00", "someone")
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert simulation.main(["--users", "4", "--seats", "2", "--processes", "1", "--cancel", "0"]) == 0
    assert client.get("users-own-data") == "precious" and client.get("lock:other:S00") == "someone"
    assert client.get("lock:sim:S00") is None


def test_delete_event_keys_deletes_exactly_one_events_keys(redis_url, seat_db):
    from DistributedLocking.ticket_booking import delete_event_keys

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    system = TicketBookingSystem(client, SeatStore(seat_db))
    for event in ("e*", "eX", "e"):
        assert system.book_seat(event, "A1", "u").booked
    client.set("lock-notes", "keep")
    assert delete_event_keys(client, "e*") == 2                   # token counter, wake list
    assert sorted(client.keys("*")) == sorted(
        [f"{prefix}:{event}:A1" for event in ("eX", "e") for prefix in ("lock-token", "lock-wake")]
        + ["lock-notes"])


def test_thirty_two_processes_book_lock_free_and_each_seat_has_exactly_one_winner(redis_url, seat_db):
    """No lock: the booking is one conditional write, and the seat store lets exactly one racer win."""
    seats, racers = [f"S{n}" for n in range(5)], 32
    with workers() as group:
        start, results = group.event(), group.queue()
        for n in range(racers):
            group.start_forked(seat_rush_worker, redis_url, seat_db, "rush", seats, f"u{n}", True, n, start,
                               results)
        start.set()
        reports = [results.get(timeout=120) for _ in range(racers)]
        group.join_all()
    winners = {seat: [] for seat in seats}
    for user, attempts in reports:
        assert [seat for seat, *_ in sorted(attempts)] == seats              # every racer tried every seat
        for seat, outcome, _ in attempts:
            assert outcome in ("booked", "already booked")
            if outcome == "booked":
                winners[seat].append(user)
    assert all(len(users) == 1 for users in winners.values()), winners
    assert booking(redis_url, seat_db).reservations("rush") == {s: users[0] for s, users in winners.items()}


def test_seat_store_fence_rules(seat_db):
    with SeatStore(seat_db) as store:
        first = store.issue_token("e", "A1")
        second = store.issue_token("e", "A1")               # a later holder registered
        assert (first.token, second.token) == (1, 2) and second.holder is None
        assert not store.write("e", "A1", first.token, "stale", 60).accepted
        assert store.write("e", "A1", second.token, "alice", 60).accepted
        assert store.book_if_free("e", "A1", "bob", 60) is False            # taken: the condition fails
        assert store.book_if_free("e", "B2", "bob", 60) is True
        assert store.fence("e", "B2") == 1
        late = store.issue_token("e", "B2")
        assert store.book_if_free("e", "C3", "carol", 60) and late.holder == "bob"
        # A lock-free booking moves the fence too: a token issued before it can no longer write.
        before = store.issue_token("e", "D4")
        assert store.book_if_free("e", "D4", "dave", 60)
        assert not store.write("e", "D4", before.token, "stale", 60).accepted
        assert store.holder("e", "D4") == "dave"
        # A lapsed hold reads as free and can be booked again.
        assert store.book_if_free("e", "E5", "erin", 0.0)
        assert store.holder("e", "E5") is None and store.book_if_free("e", "E5", "frank", 60)
        assert store.reservations("e") == {"A1": "alice", "B2": "bob", "C3": "carol", "D4": "dave",
                                           "E5": "frank"}
        with pytest.raises(ValueError):
            store.write("e", "A1", 0, "x", 60)
