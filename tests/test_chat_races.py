"""RealTimeChat: a disconnect that runs while the same connection's `join` is still in flight.

Flask-SocketIO runs one connection's events one after another, but its disconnect handler can run
in another thread (a ping timeout, a long-polling request) while a handler is mid-way. Driven in
process with Flask-SocketIO's test client; the "other thread" is started from inside the join.
"""

from __future__ import annotations

import threading

from flask import request

from RealTimeChat.app import create_app
from RealTimeChat.store import LocalStore


class DisconnectDuringHistory(LocalStore):
    """Runs `during_history` the first time a join reads history: the join is then half done."""

    during_history = None

    def history(self, room, limit=50, since=None):
        hook, self.during_history = self.during_history, None
        if hook is not None:
            hook()
        return super().history(room, limit, since)


def test_disconnect_during_join_never_frees_a_nickname_someone_else_now_holds(tmp_path):
    store = DisconnectDuringHistory(tmp_path / "chat.sqlite3")
    app, socketio, chat = create_app(store)
    client = socketio.test_client(app)
    (sid,) = chat._connections          # the one connection, by its Socket.IO sid
    outcome = {}

    def disconnect_in_another_thread():
        with app.test_request_context("/"):
            request.sid, request.namespace = sid, "/"
            chat.on_disconnect()

    def hook():
        racer = threading.Thread(target=disconnect_in_another_thread)
        racer.start()
        racer.join(timeout=1.0)   # a fixed implementation makes it wait for the join to finish
        outcome["racer"] = racer
        # Another user asks for the same nickname while our join is still running.
        outcome["other_claimed"] = store.claim_nickname("alice")

    store.during_history = hook
    client.emit("join", {"room": "lobby", "username": "alice"})
    outcome["racer"].join(timeout=10)
    assert not outcome["racer"].is_alive()
    if outcome["other_claimed"]:
        # The other user holds "alice" now; the half-done join must not have released it.
        assert store.nickname_online("alice"), "the join's clean-up freed another user's nickname"
    else:
        # The disconnect waited for the join, then cleaned up all of it.
        assert not store.nickname_online("alice") and store.presence("lobby") == []
    store.close()
