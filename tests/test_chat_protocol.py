"""RealTimeChat: the event protocol against a real server process, with python-socketio clients."""

from __future__ import annotations

import re
import time

import pytest

from RealTimeChat.client import ChatClient, disconnect_all
from RealTimeChat.rules import MAX_TEXT_CHARS
from tests.chat_helpers import barrier, start_chat, users

TS_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def chat_url(spawn, data_dir):
    _, url = start_chat(spawn, db=str(data_dir / "chat.sqlite3"))
    return url


def test_join_sends_history_and_presence_and_uses_real_websocket(chat_url):
    with users(chat_url, 2) as (alice, bob):
        assert alice.transport == "websocket"
        assert alice.joined("lobby", "alice") == []
        alice.wait_for("presence", lambda p: p == {"room": "lobby", "users": ["alice"]})
        bob.joined("lobby", "bob")
        alice.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])
        bob.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])


def test_messages_get_server_ids_and_utc_timestamps_per_room(chat_url):
    with users(chat_url, 1) as (alice,):
        alice.joined("lobby", "alice")
        alice.joined("dev", "alice")
        for text in ("one", "two", "three"):
            alice.say("lobby", text)
        alice.say("dev", "elsewhere")
        lobby = [alice.wait_for("message", lambda m, t=t: m["text"] == t) for t in ("one", "two", "three")]
        dev = alice.wait_for("message", lambda m: m["room"] == "dev")
    assert [m["id"] for m in lobby] == [1, 2, 3]   # increasing per room, in the sender's order
    assert dev["id"] == 1                          # each room counts on its own
    assert all(TS_FORMAT.fullmatch(m["ts"]) for m in [*lobby, dev])
    assert set(lobby[0]) == {"id", "room", "username", "text", "ts", "client_id"}
    assert lobby[0]["username"] == "alice"


def test_room_isolation(chat_url):
    with users(chat_url, 3) as (alice, bob, carol):
        alice.joined("red", "alice")
        carol.joined("red", "carol")
        bob.joined("blue", "bob")
        alice.say("red", "for red only")
        carol.wait_for("message", lambda m: m["text"] == "for red only")
        barrier(bob, "blue", "bob-barrier")
        assert [m["text"] for m in bob.received("message")] == ["bob-barrier"]
        assert not [p for p in bob.received("presence") if p["room"] == "red"]


def test_private_message_reaches_only_recipient_and_echoes_to_sender(chat_url):
    with users(chat_url, 3) as (alice, bob, carol):
        for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            client.joined("lobby", name)
        alice.whisper("BOB", "just between us")       # nicknames match case-insensitively
        got = bob.wait_for("private_message")
        echo = alice.wait_for("private_message")
        assert got == echo
        assert got["from"] == "alice" and got["to"] == "BOB" and got["text"] == "just between us"
        assert isinstance(got["id"], int) and TS_FORMAT.fullmatch(got["ts"])
        barrier(carol, "lobby", "carol-barrier")
        assert carol.received("private_message") == []
        assert len(alice.received("private_message")) == 1   # one echo, not two

        alice.whisper("nobody", "hello?")
        assert alice.wait_for("error")["code"] == "unknown_user"


def test_history_holds_last_50_in_order_and_survives_restart(spawn, data_dir):
    db = str(data_dir / "chat.sqlite3")
    server, url = start_chat(spawn, "--rate", "1000", "--burst", "1000", db=db)
    with users(url, 1) as (alice,):
        alice.joined("lobby", "alice")
        for n in range(55):
            alice.say("lobby", f"m{n}")
        alice.wait_for("message", lambda m: m["text"] == "m54")
    with users(url, 1) as (bob,):
        history = bob.joined("lobby", "bob")
    assert [m["text"] for m in history] == [f"m{n}" for n in range(5, 55)]
    assert [m["id"] for m in history] == list(range(6, 56))

    server.stop()
    _, url = start_chat(spawn, db=db)
    with users(url, 1) as (carol,):
        after_restart = carol.joined("lobby", "carol")
        assert after_restart == history
        carol.say("lobby", "after restart")
        assert carol.wait_for("message")["id"] == 56    # ids continue, never reused


@pytest.mark.parametrize("how", ["disconnect", "drop"])
def test_presence_after_disconnect_and_nickname_freed(chat_url, how):
    with users(chat_url, 1) as (alice,):
        alice.joined("lobby", "alice")
        bob = ChatClient(chat_url, "bob").connect()
        bob.joined("lobby", "bob")
        bob.joined("dev", "bob")
        alice.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])
        if how == "disconnect":
            disconnect_all([bob])          # the polite goodbye
        else:
            bob.drop()                     # the TCP connection just vanishes
        alice.wait_for("presence", lambda p: p["users"] == ["alice"])
        with users(chat_url, 1) as (bob_again,):
            bob_again.joined("lobby", "bob")     # the nickname is free once bob is gone
            alice.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])


def test_leave_updates_presence_and_stops_delivery(chat_url):
    with users(chat_url, 2) as (alice, bob):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        alice.wait_for("presence", lambda p: p["users"] == ["alice", "bob"])
        bob.leave("lobby")
        alice.wait_for("presence", lambda p: p["users"] == ["alice"])
        bob.wait_for("presence", lambda p: p["users"] == ["alice"])
        alice.say("lobby", "bob has gone")
        alice.wait_for("message")
        bob.say("lobby", "can I still talk?")
        assert bob.wait_for("error")["code"] == "not_in_room"
        assert bob.received("message") == []


def test_nickname_collision_is_a_clear_error_and_connection_stays_usable(chat_url):
    with users(chat_url, 2) as (alice, impostor):
        alice.joined("lobby", "alice")
        impostor.join("lobby", "Alice")
        error = impostor.wait_for("error")
        assert error["code"] == "nickname_taken" and "Alice" in error["message"]
        assert impostor.connected
        impostor.joined("lobby", "alice2")
        barrier(impostor, "lobby", "I am alice2")
        impostor.join("lobby", "other")
        assert impostor.wait_for("error")["code"] == "nickname_mismatch"


def test_typing_goes_to_others_in_the_room(chat_url):
    with users(chat_url, 2) as (alice, bob):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        bob.typing("lobby")
        assert alice.wait_for("typing") == {"room": "lobby", "username": "bob"}
        barrier(bob, "lobby", "done typing")
        assert bob.received("typing") == []


def test_typing_flood_is_thinned_silently(chat_url):
    with users(chat_url, 2) as (alice, bob):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        start = time.monotonic()
        for _ in range(40):
            bob.typing("lobby")
        barrier(bob, "lobby", "stopped typing")
        alice.wait_for("message", lambda m: m["text"] == "stopped typing")
        elapsed = time.monotonic() - start
        forwarded = len(alice.received("typing"))
        assert 1 <= forwarded <= 4 + 2 * elapsed + 1     # burst 4, then 2/s
        assert bob.received("error") == []               # no error per keystroke


def test_text_length_limit(chat_url):
    with users(chat_url, 1) as (alice,):
        alice.joined("lobby", "alice")
        alice.say("lobby", "x" * (MAX_TEXT_CHARS + 1))
        assert alice.wait_for("error")["code"] == "text_too_long"
        alice.say("lobby", "y" * MAX_TEXT_CHARS)
        assert len(alice.wait_for("message")["text"]) == MAX_TEXT_CHARS
        alice.say("lobby", "   ")
        assert alice.wait_for("error")["code"] == "empty_text"
        assert alice.connected


def test_rate_limit_then_recovers(chat_url):
    with users(chat_url, 1) as (alice,):
        alice.joined("lobby", "alice")   # costs one token of the burst of 20
        start = time.monotonic()
        for n in range(60):
            alice.say("lobby", f"flood {n}")
        barrier_text = "after the flood"
        # Keep trying until a message is accepted again: the bucket refills at 10/s.
        deadline = time.monotonic() + 30
        while True:
            alice.say("lobby", barrier_text)
            try:
                alice.wait_for("message", lambda m: m["text"] == barrier_text, timeout=1)
                break
            except AssertionError:
                assert time.monotonic() < deadline, "never accepted again after rate limiting"
        elapsed = time.monotonic() - start
        accepted = [m for m in alice.received("message") if m["text"].startswith("flood")]
        limited = [e for e in alice.received("error") if e["code"] == "rate_limited"]
        assert limited, "60 messages at once must hit the limit"
        assert len(limited) >= 60 - len(accepted)
        assert 19 <= len(accepted) <= 19 + 10 * elapsed + 1   # burst left after join, + refill
        assert alice.connected


MALFORMED = [
    ("message", None, "bad_request"),                              # no payload at all
    ("message", "hello", "bad_request"),                           # not an object
    ("message", [1, 2], "bad_request"),
    ("message", ({"room": "lobby", "text": "a"}, "extra"), "bad_request"),   # two arguments
    ("message", {"room": "lobby"}, "bad_request"),                 # missing text
    ("message", {"room": "lobby", "text": 5}, "bad_request"),      # wrong type
    ("message", {"room": ["lobby"], "text": "x"}, "invalid_room"),
    ("message", {"room": "Lobby!", "text": "x"}, "invalid_room"),
    ("message", {"room": "lobby", "text": "x", "extra": 1}, "bad_request"),
    ("message", {"room": "lobby", "text": {"nested": "x"}}, "bad_request"),
    ("join", {"room": "lobby"}, "bad_request"),                    # missing username
    ("join", {"room": "lobby", "username": None}, "invalid_nickname"),
    ("join", {"room": "lobby", "username": "<b>x</b>"}, "invalid_nickname"),
    ("join", {"room": "lobby", "username": "a" * 25}, "invalid_nickname"),
    ("join", {"room": "x" * 33, "username": "alice"}, "invalid_room"),
    ("leave", 42, "bad_request"),
    ("leave", {"room": "nowhere"}, "not_in_room"),
    ("private_message", {"to": "bob"}, "bad_request"),
    ("private_message", {"to": 7, "text": "x"}, "invalid_nickname"),
    ("typing", {}, "bad_request"),
    ("no_such_event", {"x": 1}, "unknown_event"),
    # A "huge object" that still fits in one packet: 20,000 keys, about 400 KB.
    ("message", {"room": "lobby", "text": "x", **{f"k{i}": "v" * 10 for i in range(20_000)}}, "bad_request"),
    ("message", {"room": "lobby", "text": "z" * 300_000}, "text_too_long"),
]


def test_malformed_payloads_get_errors_and_connection_stays_usable(spawn, data_dir):
    # A generous rate limit: this test sends ~50 events back to back on purpose.
    _, chat_url = start_chat(spawn, "--rate", "1000", "--burst", "1000", db=str(data_dir / "c.sqlite3"))
    with users(chat_url, 1) as (alice,):
        alice.joined("lobby", "alice")
        for index, (event, payload, code) in enumerate(MALFORMED):
            alice.emit(event, payload)
            error = alice.wait_for("error")
            assert error["code"] == code, (index, event, error)
            assert error["message"]
            # Still usable: a well-formed message goes through after every bad one.
            barrier(alice, "lobby", f"still here {index}")
        assert alice.connected


def test_events_before_joining_are_refused(chat_url):
    with users(chat_url, 1) as (anon,):
        anon.say("lobby", "hi")
        assert anon.wait_for("error")["code"] == "not_joined"
        anon.whisper("bob", "hi")
        assert anon.wait_for("error")["code"] == "not_joined"


def test_cross_origin_browser_connection_is_refused(chat_url):
    import requests

    # The Engine.IO handshake, as a browser on another site would send it.
    handshake = chat_url + "/socket.io/?EIO=4&transport=polling"
    evil = requests.get(handshake, headers={"Origin": "http://evil.example"}, timeout=10)
    assert evil.status_code == 400 and "origin" in evil.text.lower()
    own = requests.get(handshake, headers={"Origin": chat_url}, timeout=10)
    assert own.status_code == 200 and '"sid"' in own.text
    assert own.headers["Access-Control-Allow-Origin"] == chat_url


def test_page_is_self_contained(chat_url):
    import requests

    page = requests.get(chat_url + "/", timeout=10)
    assert page.status_code == 200
    assert "socket.io.min.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text   # no CDN, works offline
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    script = requests.get(chat_url + "/static/vendor/socket.io.min.js", timeout=10)
    assert script.status_code == 200 and "Socket.IO v4" in script.text[:200]


def test_packet_over_the_transport_limit_closes_only_that_connection(chat_url):
    from RealTimeChat.app import MAX_PACKET_BYTES

    with users(chat_url, 2) as (alice, bob):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        bob.emit("message", {"room": "lobby", "text": "z" * (MAX_PACKET_BYTES + 1000)})
        bob.wait_for("disconnect")              # the one deliberate exception: refused by Engine.IO
        alice.wait_for("presence", lambda p: p["users"] == ["alice"])
        barrier(alice, "lobby", "the server is fine")   # everyone else carries on
