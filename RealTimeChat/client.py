"""A scripted chat user: a python-socketio client that records every server event.

The demo, the benchmark and the tests all drive the server through this class, so they speak the
protocol exactly as a third-party client would (README "Real-Time Chat" → event protocol).

    user = ChatClient("http://127.0.0.1:5000").connect()
    user.join("lobby", "alice")
    user.wait_for("history")
    user.say("lobby", "hello")
    user.wait_for("message", lambda m: m["text"] == "hello")
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import socketio

SERVER_EVENTS = ("message", "private_message", "history", "presence", "typing", "error")


class ChatTimeout(AssertionError):
    """An expected event did not arrive in time. The message lists what did arrive."""


class ChatClient:
    """One connection. Events are kept in arrival order; `wait_for` blocks on a condition variable
    (no polling), and each recorded event is returned by `wait_for` at most once."""

    def __init__(self, url: str, name: str = "", transports: Iterable[str] = ("websocket",),
                 on_event: Callable[[str, Any, float], None] | None = None):
        self.url = url
        self.name = name
        self.transports = list(transports)
        # No automatic reconnection: a test or benchmark must see a drop, not paper over it.
        self.sio = socketio.Client(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self._taken: set[int] = set()
        self._changed = threading.Condition()
        self._on_event = on_event
        for event in SERVER_EVENTS:
            self.sio.on(event, self._recorder(event))
        self.sio.on("disconnect", self._recorder("disconnect"))

    def _recorder(self, event: str):
        def record(*args: Any) -> None:
            data = args[0] if args else None
            if self._on_event is not None:
                self._on_event(event, data, time.perf_counter())
            with self._changed:
                self.events.append((event, data))
                self._changed.notify_all()
        return record

    # ---- connection ----------------------------------------------------------------------------

    def connect(self, headers: dict[str, str] | None = None, timeout: float = 15.0) -> ChatClient:
        self.sio.connect(self.url, headers=headers or {}, transports=self.transports,
                         wait_timeout=timeout)
        return self

    @property
    def connected(self) -> bool:
        return self.sio.connected

    @property
    def transport(self) -> str:
        return self.sio.transport()

    def disconnect(self) -> None:
        """The polite goodbye (Engine.IO close packet, then a WebSocket close). Can take 3 s: see
        `disconnect_all`."""
        self.sio.disconnect()

    def drop(self, timeout: float = 10.0) -> None:
        """Cut the TCP connection with no goodbye, as a crashed client or a lost network would.

        Reaches into the Engine.IO client for its socket: there is no public API for "vanish".
        Returns once the client has noticed it is disconnected.
        """
        ws = getattr(self.sio.eio, "ws", None)
        raw = getattr(ws, "sock", None)
        if raw is None:
            return
        try:
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.sio.connected and time.monotonic() < deadline:
                self._changed.wait(0.05)

    # ---- client -> server ----------------------------------------------------------------------

    def emit(self, event: str, data: Any = None) -> None:
        """Any event, any payload: a tuple sends several arguments, None sends none."""
        self.sio.emit(event, data)

    def join(self, room: str, username: str) -> None:
        self.sio.emit("join", {"room": room, "username": username})

    def leave(self, room: str) -> None:
        self.sio.emit("leave", {"room": room})

    def say(self, room: str, text: str) -> None:
        self.sio.emit("message", {"room": room, "text": text})

    def whisper(self, to: str, text: str) -> None:
        self.sio.emit("private_message", {"to": to, "text": text})

    def typing(self, room: str) -> None:
        self.sio.emit("typing", {"room": room})

    # ---- server -> client ----------------------------------------------------------------------

    def wait_for(self, event: str, match: Callable[[Any], bool] = lambda data: True,
                 timeout: float = 15.0) -> Any:
        """The first not-yet-returned `event` whose payload satisfies `match`."""
        return self.wait_for_any((event,), match, timeout)[1]

    def wait_for_any(self, events: Iterable[str], match: Callable[[Any], bool] = lambda data: True,
                     timeout: float = 15.0) -> tuple[str, Any]:
        """The first not-yet-returned event named in `events` (and satisfying `match`): (name, data)."""
        wanted = set(events)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index, (name, data) in enumerate(self.events):
                    if name in wanted and index not in self._taken and match(data):
                        self._taken.add(index)
                        return name, data
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = ", ".join(name for name, _ in self.events[-12:]) or "nothing"
                    raise ChatTimeout(f"{self.name or 'client'}: no matching {'/'.join(sorted(wanted))} "
                                      f"within {timeout:.0f}s; last events: {seen}")
                self._changed.wait(remaining)

    def received(self, event: str) -> list[Any]:
        """Every payload of `event` so far (returned or not)."""
        with self._changed:
            return [data for name, data in self.events if name == event]

    def joined(self, room: str, username: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Join and wait for the room's history; returns the history messages."""
        self.join(room, username)
        return self.wait_for("history", lambda h: h["room"] == room, timeout)["messages"]


def disconnect_all(clients: Iterable[ChatClient]) -> None:
    """Disconnect many clients at once.

    python-socketio's `disconnect()` can block for 3 s: the WebSocket client waits that long for
    the server's close frame, and the client's own reader thread often consumes that frame first.
    In parallel, N clients cost those 3 s once instead of N times.
    """
    threads = [threading.Thread(target=client.disconnect, daemon=True) for client in clients
               if client.connected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
