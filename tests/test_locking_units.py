"""Pure logic of DistributedLocking, no processes: backoff, argument checks, fencing rules."""

from __future__ import annotations

import random

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from DistributedLocking import (
    FencedResource,
    RedisLock,
    Redlock,
    SeatStore,
    TicketBookingSystem,
    backoff_delays,
)
from DistributedLocking.ticket_booking import _glob_escape

# Constructing a client does not connect: these tests never reach a server.
OFFLINE = redis.Redis(host="127.0.0.1", port=1)


@settings(max_examples=50, deadline=None)
@given(base=st.floats(0.0001, 0.01), factor=st.integers(1, 64), seed=st.integers(0, 2**32))
def test_backoff_delays_stay_within_the_capped_exponential_envelope(base, factor, seed):
    cap = base * factor
    delays = backoff_delays(base, cap, random.Random(seed))
    for attempt in range(40):
        delay = next(delays)
        assert 0.0 <= delay <= min(cap, base * 2 ** attempt)


def test_backoff_is_jittered_and_grows_until_the_cap():
    delays = backoff_delays(0.001, 0.064, random.Random(7))
    first = [next(delays) for _ in range(200)]
    late = first[10:]
    assert max(first[:3]) <= 0.004             # early attempts are short
    assert max(late) > 0.032                   # later ones reach towards the cap
    assert len({round(d, 6) for d in late}) > 150   # and are spread out, not lock-step


@pytest.mark.parametrize("kwargs", [
    {"name": ""}, {"name": "x", "ttl_ms": 0}, {"name": "x", "ttl_ms": -5}, {"name": "x", "ttl_ms": 1.5},
    {"name": "x", "wait": "spin"}, {"name": "x", "blocking_timeout": -1},
])
def test_bad_lock_arguments_raise_value_error(kwargs):
    name = kwargs.pop("name")
    with pytest.raises(ValueError):
        RedisLock(OFFLINE, name, **kwargs)


def test_bad_extend_and_timeout_arguments_raise_value_error():
    lock = RedisLock(OFFLINE, "x")
    with pytest.raises(ValueError):
        lock.extend(0)
    with pytest.raises(ValueError):
        lock.acquire(timeout=-1)


def test_redlock_needs_three_servers_and_sane_arguments():
    with pytest.raises(ValueError, match="at least 3"):
        Redlock([OFFLINE, OFFLINE], "x")
    with pytest.raises(ValueError):
        Redlock([OFFLINE] * 3, "x", ttl_ms=0)
    with pytest.raises(ValueError):
        Redlock([OFFLINE] * 3, "")


def test_fencing_tokens_must_be_positive_ints():
    resource = FencedResource(OFFLINE, "r")
    for bad in (0, -1, "3", 2.0, True):
        with pytest.raises(ValueError):
            resource.write(bad, "v")


def test_booking_rejects_ids_that_would_break_the_key_layout(tmp_path):
    store = SeatStore(tmp_path / "seats.sqlite3")
    system = TicketBookingSystem(OFFLINE, store)
    with pytest.raises(ValueError, match="':'"):
        system.book_seat("e:1", "A1", "u")
    with pytest.raises(ValueError, match="non-empty"):
        system.book_seat("e1", "", "u")
    with pytest.raises(ValueError):
        system.book_seat("e1", "A1", "u", payment_seconds=-1)
    with pytest.raises(ValueError):
        TicketBookingSystem(OFFLINE, store, hold_seconds=0)
    with pytest.raises(ValueError):
        TicketBookingSystem(OFFLINE, store, lock_ttl_ms=0)


def test_glob_escape_makes_scan_match_literal():
    assert _glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"
    assert _glob_escape("plain-id") == "plain-id"


def test_simulation_audit_catches_a_double_booking_and_a_lost_claim():
    from DistributedLocking.simulation import audit

    clean = [("u1", "booked", "S1"), ("u1", "cancel cancelled", "S1"), ("u2", "booked", "S1")]
    assert audit(clean, {"S1": "u2"}) == []
    double = [("u1", "booked", "S1"), ("u2", "booked", "S1")]
    assert any("2 live bookings" in p for p in audit(double, {"S1": "u2"}))
    assert any("the store says None" in p for p in audit([("u1", "booked", "S2")], {}))
    assert any("holds 2 seats" in p for p in audit(
        [("u1", "booked", "S1"), ("u1", "booked", "S2")], {"S1": "u1", "S2": "u1"}))
