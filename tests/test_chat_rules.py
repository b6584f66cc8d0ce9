"""RealTimeChat: the pure rules (validation, rate limiter) and the two stores, without a server."""

from __future__ import annotations

import threading

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from RealTimeChat.rules import (
    MAX_TEXT_CHARS,
    ChatError,
    TokenBucket,
    parse_join,
    parse_message,
    parse_private_message,
    utc_timestamp,
)
from RealTimeChat.store import LocalStore, RedisStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_then_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=20, clock=clock)
    assert sum(bucket.try_take() for _ in range(25)) == 20   # the burst, then nothing
    clock.now += 0.25                                          # 2.5 tokens refill
    assert sum(bucket.try_take() for _ in range(5)) == 2
    clock.now += 100                                           # never more than the burst
    assert sum(bucket.try_take() for _ in range(50)) == 20


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_token_bucket_never_exceeds_burst_plus_rate_times_time(gaps):
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=20, clock=clock)
    taken = 0
    for gap in gaps:
        clock.now += gap
        taken += bucket.try_take()
    assert taken <= 20 + 10 * sum(gaps) + 1e-9


def test_token_bucket_is_thread_safe():
    bucket = TokenBucket(rate=1e-9, burst=1000)   # effectively no refill during the test
    results: list[bool] = []
    lock = threading.Lock()

    def worker():
        mine = [bucket.try_take() for _ in range(500)]
        with lock:
            results.extend(mine)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 1000


@pytest.mark.parametrize("payload, code", [
    ((), "bad_request"),
    (("x",), "bad_request"),
    (({"username": "a"}, {}), "bad_request"),
    (({"room": "lobby"},), "bad_request"),
    (({"username": ""},), "invalid_nickname"),
    (({"username": "has space"},), "invalid_nickname"),
    (({"username": "ok", "room": "UPPER"},), "invalid_room"),
    (({"username": "ok", "room": "-dash-first"},), "invalid_room"),
    (({"username": "ok", "room": "lobby", "admin": True},), "bad_request"),
])
def test_parse_join_rejects(payload, code):
    with pytest.raises(ChatError) as caught:
        parse_join(payload)
    assert caught.value.code == code
    assert caught.value.payload() == {"code": code, "message": caught.value.message}


@pytest.mark.parametrize("payload", [
    {"room": "r", "text": "x", "client_id": ""},
    {"room": "r", "text": "x", "client_id": "a" * 65},
    {"room": "r", "text": "x", "client_id": 5},
    {"room": "r", "text": "x", "client_id": "has space"},
])
def test_parse_message_rejects_bad_client_ids(payload):
    with pytest.raises(ChatError) as caught:
        parse_message((payload,))
    assert caught.value.code == "bad_request"


@pytest.mark.parametrize("since", [-1, True, "3", 1.5, [1]])
def test_parse_join_rejects_bad_since(since):
    with pytest.raises(ChatError) as caught:
        parse_join(({"username": "alice", "since": since},))
    assert caught.value.code == "bad_request"


def test_parse_accepts_uuid_client_ids_and_since():
    client_id = "0b6a4c6e-3f1d-4c1e-9f55-0d4bb1a7b9e2"
    assert parse_message(({"room": "r", "text": "x", "client_id": client_id},)).client_id == client_id
    assert parse_private_message(({"to": "bob", "text": "x", "client_id": client_id},)).client_id == client_id
    assert parse_join(({"username": "alice", "since": 41},)).since == 41


def test_parse_join_defaults_to_lobby():
    assert parse_join(({"username": "alice"},)).room == "lobby"


def test_text_limit_is_exact():
    assert parse_message(({"room": "r", "text": "x" * MAX_TEXT_CHARS},)).text == "x" * MAX_TEXT_CHARS
    with pytest.raises(ChatError, match="at most 2000"):
        parse_message(({"room": "r", "text": "x" * (MAX_TEXT_CHARS + 1)},))
    # Characters, not bytes: 2,000 emoji are fine.
    assert len(parse_private_message(({"to": "bob", "text": "😀" * MAX_TEXT_CHARS},)).text) == 2000


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                               max_size=4),
                    max_leaves=12))
def test_any_json_payload_either_parses_or_raises_chat_error(payload):
    for parse in (parse_join, parse_message, parse_private_message):
        try:
            parse((payload,))
        except ChatError as exc:
            assert exc.code and exc.message


def test_utc_timestamp_format():
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_timestamp(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"


# ---- stores ------------------------------------------------------------------------------------

def test_local_store_ids_history_and_restart(tmp_path):
    db = tmp_path / "chat.sqlite3"
    store = LocalStore(db)
    for n in range(60):
        store.append_message("lobby", "alice", f"m{n}")
    assert store.append_message("other", "bob", "hi")[0].id == 1
    history = store.history("lobby")
    assert [m.id for m in history] == list(range(11, 61))
    store.close()
    reopened = LocalStore(db)
    assert reopened.history("lobby") == history
    assert reopened.append_message("lobby", "alice", "again")[0].id == 61
    assert reopened.record_private("alice")[0] == 1 and reopened.record_private("alice")[0] == 2
    reopened.close()


def test_local_store_concurrent_appends_get_unique_consecutive_ids(tmp_path):
    store = LocalStore(tmp_path / "chat.sqlite3")
    ids: list[int] = []
    lock = threading.Lock()

    def writer(name):
        mine = [store.append_message("lobby", name, "x")[0].id for _ in range(50)]
        assert mine == sorted(mine)            # each writer's ids increase in its own order
        with lock:
            ids.extend(mine)
    threads = [threading.Thread(target=writer, args=(f"u{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == list(range(1, 301))
    store.close()


def test_local_store_nicknames_and_presence(tmp_path):
    store = LocalStore(tmp_path / "chat.sqlite3")
    assert store.claim_nickname("alice") and not store.claim_nickname("alice")
    store.add_to_room("lobby", "bob")
    store.add_to_room("lobby", "Alice")
    assert store.presence("lobby") == ["Alice", "bob"]     # case-insensitive order
    store.remove_from_room("lobby", "bob")
    store.release_nickname("alice")
    assert store.presence("lobby") == ["Alice"] and store.claim_nickname("alice")
    store.close()


def test_redis_store_shared_state_and_history_order(redis_url):
    a, b = RedisStore(redis_url), RedisStore(redis_url)
    try:
        assert a.claim_nickname("alice")
        assert not b.claim_nickname("alice") and not a.claim_nickname("alice")
        assert b.nickname_online("alice")
        b.release_nickname("alice")                 # not b's to release: no effect
        assert a.nickname_online("alice")
        a.add_to_room("lobby", "alice")
        b.add_to_room("lobby", "bob")
        assert a.presence("lobby") == b.presence("lobby") == ["alice", "bob"]
        for n in range(60):
            (a if n % 2 else b).append_message("lobby", "x", f"m{n}")
        history = b.history("lobby")
        assert [m.id for m in history] == list(range(11, 61))
        assert [m.text for m in history] == [f"m{n}" for n in range(10, 60)]
        assert a.history("lobby") == history
    finally:
        a.close()
        b.close()


def test_redis_store_forgets_a_dead_instance(redis_url):
    dead = RedisStore(redis_url, heartbeat_ttl=30)
    alive = RedisStore(redis_url)
    try:
        dead.claim_nickname("alice")
        dead.add_to_room("lobby", "alice")
        alive.add_to_room("lobby", "bob")
        assert alive.presence("lobby") == ["alice", "bob"]
        # What a SIGKILL leaves behind: entries whose owner's heartbeat has expired. Deleting the
        # heartbeat key is the expiry, without waiting out the TTL.
        dead._stop.set()
        dead._heartbeat.join()                      # no beat can land after the delete below
        client = redis.Redis.from_url(redis_url)
        client.delete(f"chat:instance:{dead.instance_id}")
        client.close()
        assert alive.reap_dead_instances() == ["lobby"]      # the rooms whose presence changed
        assert alive.reap_dead_instances() == []             # done once
        assert alive.presence("lobby") == ["bob"]
        assert not alive.nickname_online("alice")
        assert alive.claim_nickname("alice")        # the nickname is free again
    finally:
        dead.close()
        alive.close()


@pytest.fixture(params=["sqlite", "redis"])
def any_store(request, tmp_path):
    if request.param == "redis":
        store = RedisStore(request.getfixturevalue("redis_url"))
    else:
        store = LocalStore(tmp_path / "chat.sqlite3")
    yield store
    store.close()


def test_a_resend_with_the_same_client_id_returns_the_original_and_stores_nothing(any_store):
    first, new = any_store.append_message("lobby", "alice", "hello", client_id="c-1")
    assert new and first.client_id == "c-1"
    again, new = any_store.append_message("lobby", "ALICE", "hello", client_id="c-1")   # same sender
    assert not new and again == first
    # The same client_id from another sender, or in another room, is another message.
    assert any_store.append_message("lobby", "bob", "hello", client_id="c-1")[1]
    assert any_store.append_message("dev", "alice", "hello", client_id="c-1")[1]
    # Without a client_id there is nothing to recognise: each send is stored.
    assert all(any_store.append_message("lobby", "alice", "hi")[1] for _ in range(2))
    assert [m.id for m in any_store.history("lobby")] == [1, 2, 3, 4]
    # Private messages: the same id for a resend, a new one otherwise.
    pm_id, ts, new = any_store.record_private("alice", "p-1")
    assert new and any_store.record_private("Alice", "p-1") == (pm_id, ts, False)
    assert any_store.record_private("alice", "p-2")[0] == pm_id + 1


def test_history_since_returns_exactly_what_came_after(any_store):
    for n in range(10):
        any_store.append_message("lobby", "alice", f"m{n}")
    assert [m.id for m in any_store.history("lobby", since=7)] == [8, 9, 10]
    assert any_store.history("lobby", since=10) == []
    assert [m.id for m in any_store.history("lobby", since=0)] == list(range(1, 11))
    assert [m.id for m in any_store.history("lobby", limit=2, since=3)] == [9, 10]   # bounded: the latest


def test_concurrent_resends_store_one_copy(any_store):
    """Two instances (threads here) racing on the same resend: one message, one id for both."""
    results = []
    barrier = threading.Barrier(8)

    def resend():
        barrier.wait()
        results.append(any_store.append_message("lobby", "alice", "once", client_id="race"))
    threads = [threading.Thread(target=resend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({message.id for message, _ in results}) == 1
    assert sum(new for _, new in results) == 1
    assert [m.text for m in any_store.history("lobby")] == ["once"]
