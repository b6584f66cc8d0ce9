"""RealTimeChat: acknowledged, idempotent sends and catching up after a gap (`join` with `since`).

Each test runs against one instance with SQLite history and one instance in `--redis` mode; the
last one kills an instance and resends to the other.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from RealTimeChat.client import ChatClient
from tests.chat_helpers import barrier, start_chat, users

TS_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(params=["sqlite", "redis"])
def chat_url(request, spawn, data_dir):
    if request.param == "redis":
        _, url = start_chat(spawn, redis=request.getfixturevalue("redis_url"))
    else:
        _, url = start_chat(spawn, db=str(data_dir / "chat.sqlite3"))
    return url


def call(client: ChatClient, event: str, payload) -> dict:
    """Emit and wait for the acknowledgement."""
    return client.sio.call(event, payload, timeout=15)


def test_ack_shapes_and_a_resend_is_stored_and_broadcast_once(chat_url):
    with users(chat_url, 2) as (alice, bob):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        payload = {"room": "lobby", "text": "exactly once", "client_id": "a1b2c3"}
        ack = call(alice, "message", payload)
        assert set(ack) == {"ok", "id", "ts"} and ack["ok"] is True and TS_FORMAT.fullmatch(ack["ts"])
        assert call(alice, "message", payload) == ack          # the resend: the original id and ts
        echo = alice.wait_for("message")
        assert (echo["id"], echo["client_id"]) == (ack["id"], "a1b2c3")
        barrier(alice, "lobby", "after the resend")
        barrier(bob, "lobby", "bob's barrier")
        assert [m["text"] for m in bob.received("message")] == ["exactly once", "after the resend",
                                                                  "bob's barrier"]
        with users(chat_url, 1) as (carol,):
            history = carol.joined("lobby", "carol")
        assert [m["text"] for m in history].count("exactly once") == 1


def test_error_acks_carry_the_error_code(chat_url):
    with users(chat_url, 1) as (alice,):
        alice.joined("lobby", "alice")
        too_long = call(alice, "message", {"room": "lobby", "text": "x" * 2001, "client_id": "c1"})
        assert too_long["ok"] is False and too_long["code"] == "text_too_long" and too_long["message"]
        assert call(alice, "message", {"room": "elsewhere", "text": "x"})["code"] == "not_in_room"
        assert call(alice, "message", {"room": "lobby", "text": "x", "client_id": "bad id"})["code"] \
            == "bad_request"
        assert call(alice, "private_message", {"to": "nobody", "text": "x"})["code"] == "unknown_user"
        assert alice.wait_for("error")["code"] == "text_too_long"   # the error event still comes too


def test_private_message_resend_is_delivered_once(chat_url):
    with users(chat_url, 2) as (alice, bob):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        payload = {"to": "bob", "text": "psst", "client_id": "p-1"}
        first = call(alice, "private_message", payload)
        assert first["ok"] and call(alice, "private_message", payload) == first
        bob.wait_for("private_message")
        barrier(bob, "lobby", "barrier")
        assert len(bob.received("private_message")) == 1


def test_join_since_returns_exactly_the_missed_messages(chat_url):
    with users(chat_url, 2) as (alice, bob):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        for n in range(3):
            alice.say("lobby", f"before {n}")
        bob.wait_for("message", lambda m: m["text"] == "before 2")
        last_seen = bob.since("lobby")
        bob.drop()                                   # bob is cut off ...
        for n in range(4):
            alice.say("lobby", f"missed {n}")
        alice.wait_for("message", lambda m: m["text"] == "missed 3")
        bob.reconnect()                              # ... and comes back asking from his last id
        history = bob.received("history")[-1]["messages"]
        assert last_seen == 3
        assert [m["text"] for m in history] == [f"missed {n}" for n in range(4)]
        assert sorted(bob.displayed("lobby")) == list(range(1, 8))


def test_outbox_sends_marks_sent_and_resends_after_a_reconnect(chat_url):
    with users(chat_url, 2) as (alice, bob):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        first = alice.send("lobby", "acknowledged")
        alice.wait_until_sent()
        assert first.state == "sent" and first.id == bob.wait_for("message")["id"]
        alice.drop()
        offline = alice.send("lobby", "typed while offline")
        assert offline.state == "sending"
        alice.reconnect()
        alice.wait_until_sent()
        assert offline.state == "sent"
        bob.wait_for("message", lambda m: m["text"] == "typed while offline")
        too_long = alice.send("lobby", "x" * 2001)
        alice.wait_until_sent()
        assert too_long.state == "failed" and too_long.error == "text_too_long"


def test_resend_to_another_instance_after_the_first_died_is_deduplicated(spawn, redis_url):
    server_a, url_a = start_chat(spawn, "--heartbeat-ttl", "1", redis=redis_url)
    _, url_b = start_chat(spawn, "--heartbeat-ttl", "1", redis=redis_url)
    with users(url_a, 1) as (alice,), users(url_b, 1) as (bob,):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        payload = {"room": "lobby", "text": "stored, then the instance died", "client_id": "k-1"}
        ack = call(alice, "message", payload)
        bob.wait_for("message", lambda m: m["client_id"] == "k-1")
        server_a.signal(signal.SIGKILL)               # as if A died before the ack reached alice
        server_a.popen.wait()
        alice.wait_for("disconnect")
        for _ in range(100):                          # A's nickname claim lapses with its heartbeat
            try:
                alice.reconnect(url_b)
                break
            except AssertionError:
                time.sleep(0.1)   # waiting for a 1 s TTL to run out: the passing time is the condition
        assert call(alice, "message", payload) == ack  # B knows it: same id, not stored again
        barrier(bob, "lobby", "barrier")
        assert [m["client_id"] for m in bob.received("message")].count("k-1") == 1
        with users(url_b, 1) as (carol,):
            history = carol.joined("lobby", "carol")
        assert [m["client_id"] for m in history].count("k-1") == 1
