"""RealTimeChat: a client may not send the server's own lifecycle events, nor any event it does not own.

python-socketio dispatches a client's event packet by its name to whichever handler has that name,
and that includes the server's `connect` and `disconnect` handlers. Before the fix, a client's
`emit("connect")` replaced its connection record (fresh rate-limit bucket, nickname and presence
orphaned forever) and `emit("disconnect")` freed its nickname while the socket stayed open. Each
test runs against one instance with SQLite history and against one instance in `--redis` mode.
"""

from __future__ import annotations

import time

import pytest

from tests.chat_helpers import start_chat, users

# Every name a client might try that is not one of its five events: the server's lifecycle events,
# Socket.IO's reserved client-side names, the catch-all's own key, and server -> client events.
NOT_CLIENT_EVENTS = ["connect", "disconnect", "connect_error", "disconnecting", "*", "error",
                     "history", "presence", "newListener"]
RATE, BURST = 10, 20


@pytest.fixture(params=["sqlite", "redis"])
def chat_url(request, spawn, data_dir):
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        _, url = start_chat(spawn, "--rate", str(RATE), "--burst", str(BURST), redis=redis_url)
    else:
        _, url = start_chat(spawn, "--rate", str(RATE), "--burst", str(BURST),
                            db=str(data_dir / "chat.sqlite3"))
    return url


def test_spoofed_lifecycle_events_are_refused_and_change_nothing(chat_url):
    with users(chat_url, 3) as (alice, bob, impostor):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        bob.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])

        alice.emit("connect", {"token": "x"})
        assert alice.wait_for("error")["code"] == "unknown_event"
        alice.emit("disconnect")
        assert alice.wait_for("error")["code"] == "unknown_event"
        for name in NOT_CLIENT_EVENTS:
            alice.emit(name, "payload")
            assert alice.wait_for("error")["code"] == "unknown_event", name

        # alice keeps working: her messages still reach the room.
        alice.say("lobby", "still here")
        assert bob.wait_for("message", lambda m: m["text"] == "still here")["username"] == "alice"
        # Her nickname is still taken, and presence still lists her (the next broadcast shows it).
        impostor.join("lobby", "alice")
        assert impostor.wait_for("error")["code"] == "nickname_taken"
        impostor.joined("lobby", "carol")
        bob.wait_for("presence", lambda p: p["users"] == ["alice", "bob", "carol"])

        # The rate limit still holds: a spoofed connect every fifth message must not refill it.
        start = time.monotonic()
        for n in range(100):
            if n % 5 == 0:
                alice.emit("connect")
            alice.say("lobby", f"burst {n}")
        elapsed = _wait_until_accepted_again(alice, start)
        delivered = [m for m in bob.received("message") if m["text"].startswith("burst")]
        assert delivered, "the first messages of the burst are within the limit"
        assert len(delivered) <= BURST + RATE * elapsed, (len(delivered), elapsed)

        # Really disconnecting frees the nickname and drops her from presence.
        alice.drop()
        bob.wait_for("presence", lambda p: p["users"] == ["bob", "carol"])
        with users(chat_url, 1) as (alice_again,):
            alice_again.joined("lobby", "alice")
            bob.wait_for("presence", lambda p: p["users"] == ["alice", "bob", "carol"])


def _wait_until_accepted_again(client, start: float) -> float:
    """Send a marker until one gets through; returns the seconds since `start`.

    The server handles one connection's events in order, so once the marker is echoed every
    message of the burst has been handled: the elapsed time is an upper bound on the burst's.
    """
    for attempt in range(100):
        marker = f"marker {attempt}"
        client.say("lobby", marker)
        try:
            client.wait_for("message", lambda m, text=marker: m["text"] == text, timeout=0.5)
            return time.monotonic() - start
        except AssertionError:
            continue
    raise AssertionError("never accepted again after the burst")


def test_lone_surrogate_is_a_bad_request_not_an_internal_error(chat_url):
    with users(chat_url, 2) as (alice, bob):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        for text in ("\ud800", "ok \udfff then"):
            alice.say("lobby", text)
            assert alice.wait_for("error")["code"] == "bad_request"
        alice.whisper("bob", "\ud800")
        assert alice.wait_for("error")["code"] == "bad_request"
        valid = "valid text still works \u2603 \U0001f600"
        alice.say("lobby", valid)
        # bob's first message is the valid one: none of the refused texts reached the room.
        assert bob.wait_for("message")["text"] == valid


def test_a_refused_event_that_asks_for_an_ack_gets_one(chat_url):
    # A client that emits with a callback waits for the acknowledgement; a refused event must still
    # answer it ({ok: false, code, message}, like a known event's failure), not leave it hanging.
    with users(chat_url, 1) as (alice,):
        alice.joined("lobby", "alice")
        for name in ("connect", "no_such_event"):
            answer = alice.sio.call(name, "payload", timeout=10)
            assert answer["ok"] is False and answer["code"] == "unknown_event", (name, answer)
        alice.say("lobby", "still here")
        alice.wait_for("message", lambda m: m["text"] == "still here")
