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
    assert store.append_message("other", "bob", "hi").id == 1
    history = store.history("lobby")
    assert [m.id for m in history] == list(range(11, 61))
    store.close()
    reopened = LocalStore(db)
    assert reopened.history("lobby") == history
    assert reopened.append_message("lobby", "alice", "again").id == 61
    assert reopened.next_private_id() == 1 and reopened.next_private_id() == 2
    reopened.close()


def test_local_store_concurrent_appends_get_unique_consecutive_ids(tmp_path):
    store = LocalStore(tmp_path / "chat.sqlite3")
    ids: list[int] = []
    lock = threading.Lock()

    def writer(name):
        mine = [store.append_message("lobby", name, "x").id for _ in range(50)]
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
