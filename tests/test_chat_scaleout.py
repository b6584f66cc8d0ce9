"""RealTimeChat scale-out: two app processes share one real redis-server.

A user on instance A and a user on instance B must chat, whisper and see each other in presence;
nicknames are unique across both; history is shared; a SIGKILLed instance's users disappear.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.chat_helpers import barrier, start_chat, users


@pytest.fixture
def two_instances(spawn, redis_url):
    _, url_a = start_chat(spawn, redis=redis_url)
    _, url_b = start_chat(spawn, redis=redis_url)
    return url_a, url_b


def test_cross_instance_room_messages_and_presence(two_instances):
    url_a, url_b = two_instances
    with users(url_a, 1) as (alice,), users(url_b, 1) as (bob,):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        alice.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])
        bob.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])
        alice.say("lobby", "hello from A")
        assert bob.wait_for("message")["text"] == "hello from A"
        bob.say("lobby", "hello from B")
        got = alice.wait_for("message", lambda m: m["username"] == "bob")
        assert got["text"] == "hello from B" and got["id"] == 2   # one id sequence for the room


def test_cross_instance_private_message_reaches_only_recipient(two_instances):
    url_a, url_b = two_instances
    with users(url_a, 2) as (alice, dave), users(url_b, 2) as (bob, carol):
        for client, name in ((alice, "alice"), (dave, "dave"), (bob, "bob"), (carol, "carol")):
            client.joined("lobby", name)
        alice.whisper("bob", "across the queue")
        assert bob.wait_for("private_message")["text"] == "across the queue"
        assert alice.wait_for("private_message")["to"] == "bob"       # the echo, on A
        for other in (carol, dave):                                   # one on each instance
            barrier(other, "lobby", f"barrier {other.name}")
            assert other.received("private_message") == []


def test_nickname_is_unique_across_instances(two_instances):
    url_a, url_b = two_instances
    with users(url_a, 1) as (alice,), users(url_b, 1) as (impostor,):
        alice.joined("lobby", "alice")
        impostor.join("lobby", "ALICE")
        assert impostor.wait_for("error")["code"] == "nickname_taken"
        alice.whisper("alice", "note to self")   # reaches alice's one connection, once
        alice.wait_for("private_message")
        barrier(alice, "lobby", "after the note")
        assert len(alice.received("private_message")) == 1


def test_history_is_shared_and_survives_app_restarts(spawn, redis_url):
    server_a, url_a = start_chat(spawn, redis=redis_url)
    with users(url_a, 1) as (alice,):
        alice.joined("lobby", "alice")
        for n in range(3):
            alice.say("lobby", f"m{n}")
        alice.wait_for("message", lambda m: m["text"] == "m2")
    server_a.stop()
    _, url_b = start_chat(spawn, redis=redis_url)      # a different process, same Redis
    with users(url_b, 1) as (bob,):
        history = bob.joined("lobby", "bob")
    assert [(m["id"], m["text"]) for m in history] == [(1, "m0"), (2, "m1"), (3, "m2")]


def test_killed_instance_users_leave_presence_and_free_their_nicknames(spawn, redis_url):
    server_a, url_a = start_chat(spawn, "--heartbeat-ttl", "1.5", redis=redis_url)
    _, url_b = start_chat(spawn, "--heartbeat-ttl", "1.5", redis=redis_url)
    with users(url_a, 1) as (alice,), users(url_b, 1) as (bob,):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        bob.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])
        server_a.signal(signal.SIGKILL)     # no cleanup code runs: only the heartbeat TTL tells
        server_a.popen.wait()
        # B's reaper notices A's heartbeat is gone and tells the room, with nobody joining/leaving.
        bob.wait_for("presence", lambda p: p["users"] == ["bob"], timeout=20)
        # alice reconnects to B with her nickname. Normally the reaper has freed it by now; if not,
        # it is refused (nickname_taken) until A's heartbeat expires.
        deadline = time.monotonic() + 20
        with users(url_b, 1) as (alice_again,):
            while True:
                alice_again.join("lobby", "alice")
                event, data = alice_again.wait_for_any(("history", "error"))
                if event == "history":
                    break
                assert data["code"] == "nickname_taken"
                assert time.monotonic() < deadline, "alice's nickname was never freed"
                time.sleep(0.3)   # waiting for a TTL to run out: the passing time is the condition
            bob.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])
            # Her own view: the live alice once, and bob.
            assert alice_again.wait_for("presence")["users"] == ["alice", "bob"]


def test_stopped_instance_tells_the_other_instances_at_once(spawn, redis_url):
    # A 60 s heartbeat TTL: if bob sees alice leave within the test's timeout, it was the clean
    # shutdown path (SIGTERM) that told him, not the reaper.
    server_a, url_a = start_chat(spawn, "--heartbeat-ttl", "60", redis=redis_url)
    _, url_b = start_chat(spawn, "--heartbeat-ttl", "60", redis=redis_url)
    with users(url_a, 1) as (alice,), users(url_b, 1) as (bob,):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        bob.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])
        assert server_a.stop() == 0           # SIGTERM: clean exit, status 0
        bob.wait_for("presence", lambda p: p["users"] == ["bob"], timeout=20)
        with users(url_b, 1) as (alice_again,):
            alice_again.joined("lobby", "alice")   # her nickname was released too
