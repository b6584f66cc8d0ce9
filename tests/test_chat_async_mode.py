"""RealTimeChat under `--async-mode gevent`: the same protocol on one OS thread.

gevent only works when the standard library is monkey-patched before anything else is imported;
without the patch at the top of app.py, connections under gevent hang until the client times out.
"""

from __future__ import annotations

import signal

from tests.chat_helpers import start_chat, users


def test_gevent_mode_acks_broadcasts_and_deduplicates(spawn, data_dir):
    server, url = start_chat(spawn, "--async-mode", "gevent", db=str(data_dir / "chat.sqlite3"))
    with users(url, 2) as (alice, bob):
        alice.joined("lobby", "alice")
        bob.joined("lobby", "bob")
        payload = {"room": "lobby", "text": "one thread", "client_id": "g1"}
        first = alice.sio.call("message", payload, timeout=15)
        again = alice.sio.call("message", payload, timeout=15)
        assert first["ok"] and again == first          # the resend returns the original id
        assert bob.wait_for("message", lambda m: m["text"] == "one thread")["id"] == first["id"]
        bob.say("lobby", "and back")
        alice.wait_for("message", lambda m: m["text"] == "and back")
        assert len([m for m in bob.received("message") if m["text"] == "one thread"]) == 1
    assert "MonkeyPatchWarning" not in server.output()   # patched before ssl or threading were used


def test_gevent_mode_stops_on_sigterm_without_a_traceback(spawn, data_dir):
    server, url = start_chat(spawn, "--async-mode", "gevent", db=str(data_dir / "chat.sqlite3"))
    with users(url, 1) as (alice,):
        alice.joined("lobby", "alice")
    server.signal(signal.SIGTERM)
    server.popen.wait(timeout=15)
    assert "stopped" in server.output()
    assert "Traceback" not in server.output()
