"""Adversarial review of RealTimeChat's input handling (issue 13): what the first tests leave out.

Reserved Socket.IO / Engine.IO names, non-string and surrogate-bearing nicknames, rooms and
client ids, binary attachments, deeply nested payloads, a `since` beyond any message id, and a
join flood. Every one must get an `error` with a specific code (never `internal_error`), change
nothing, and leave the sender and everyone else served. Each case runs against one instance with
SQLite history and one in `--redis` mode.
"""

from __future__ import annotations

import pytest

from tests.chat_helpers import barrier, start_chat, users


@pytest.fixture(params=["sqlite", "redis"])
def chat_url(request, spawn, data_dir):
    if request.param == "redis":
        _, url = start_chat(spawn, "--rate", "1000", "--burst", "1000",
                            redis=request.getfixturevalue("redis_url"))
    else:
        _, url = start_chat(spawn, "--rate", "1000", "--burst", "1000", db=str(data_dir / "chat.sqlite3"))
    return url


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


# (event, payload, the error code the server must answer with)
HOSTILE = [
    ("removeListener", "x", "unknown_event"),
    ("connect_error", {"message": "x"}, "unknown_event"),
    ("newListener", ("message", "x"), "unknown_event"),
    ("no_such_event", {"room": "lobby"}, "unknown_event"),
    ("join", {"room": "lobby", "username": 5}, "invalid_nickname"),
    ("join", {"room": ["lobby"], "username": "mallory"}, "invalid_room"),
    ("join", {"room": "lobby", "username": "mal\ud800"}, "invalid_nickname"),
    ("join", {"room": "lob\udfff", "username": "mallory"}, "invalid_room"),
    ("join", {"room": "lobby", "username": "mallory", "since": 2**63}, "bad_request"),
    ("join", {"room": "lobby", "username": "mallory", "since": 10**40}, "bad_request"),
    ("join", {"room": "lobby", "username": "mallory", "since": 1.5}, "bad_request"),
    ("message", {"room": "lobby", "text": "x", "client_id": "id\ud800"}, "bad_request"),
    ("message", {"room": "lobby", "text": "x", "client_id": 7}, "bad_request"),
    ("message", {"room": "lobby", "text": b"\x00\xff binary attachment"}, "bad_request"),
    ("message", b"a binary attachment as the whole payload", "bad_request"),
    ("message", {"room": "lobby", "text": _nested(400)}, "bad_request"),
    ("message", {"room": "lobby", "text": "x", **{f"k{i}": i for i in range(5000)}}, "bad_request"),
    ("private_message", {"to": "b\ud800b", "text": "x"}, "invalid_nickname"),
]


def test_hostile_events_get_a_specific_error_and_change_nothing(chat_url):
    with users(chat_url, 2) as (mallory, bob):
        bob.joined("lobby", "bob")
        for event, payload, code in HOSTILE:
            mallory.emit(event, payload)
            error = mallory.wait_for("error", timeout=10)
            assert error["code"] == code, (event, payload if len(repr(payload)) < 200 else "...", error)
        # None of the refused joins took effect: not in the room, no nickname claimed ...
        mallory.say("lobby", "x")
        assert mallory.wait_for("error")["code"] == "not_joined"
        # ... so the name is free, the room works, and bob saw nothing of the above.
        mallory.joined("lobby", "mallory")
        mallory.say("lobby", "hello after all that")
        assert bob.wait_for("message")["text"] == "hello after all that"
        bob.wait_for("presence", lambda p: p["users"] == ["bob", "mallory"])


def test_a_join_flood_is_bounded_and_answered(chat_url):
    with users(chat_url, 2) as (mallory, bob):
        bob.joined("lobby", "bob")
        for index in range(60):
            mallory.join(f"room-{index}", "mallory")
        codes = []
        for _ in range(60):
            name, data = mallory.wait_for_any(("history", "error"))
            codes.append("history" if name == "history" else data["code"])
        # MAX_ROOMS_PER_CONNECTION bounds what one connection makes the server hold.
        assert codes.count("history") == 20 and set(codes) == {"history", "too_many_rooms"}, codes
        assert "internal_error" not in codes
        barrier(bob, "lobby", "bob is still served")
