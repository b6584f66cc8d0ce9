"""A scripted chat user: a python-socketio client that records every server event.

The demo, the benchmark and the tests all drive the server through this class, so they speak the
protocol exactly as a third-party client would (README "Real-Time Chat" → event protocol).

    user = ChatClient("http://127.0.0.1:5000").connect()
    user.join("lobby", "alice")
    user.wait_for("history")
    user.say("lobby", "hello")
    user.wait_for("message", lambda m: m["text"] == "hello")

`say` is fire-and-forget (what the protocol tests need). `send` is the at-least-once path a real
client uses: the message gets a `client_id` and waits in an outbox as "sending" until the server's
acknowledgement marks it "sent"; after a reconnect (`reconnect`, to the same or another instance)
the client joins its rooms again with `since` = the last id it holds (the server fills the gap)
and resends what is still unacknowledged. The server stores a resend once, so the user sees each
message once: at-least-once delivery + deduplication = effectively-once display.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import socketio

SERVER_EVENTS = ("message", "private_message", "history", "presence", "typing", "error")
# After this many sends without an acknowledgement, a message is shown as failed (not retried).
# With the growing delay below, 8 tries span about 15 s: longer than a typical failover.
MAX_TRIES = 8
# Error codes worth retrying: the same message may well succeed later. Any other error (too long,
# not in the room, ...) would fail the same way again.
RETRYABLE = {"rate_limited", "internal_error", "not_joined", "not_in_room"}
RETRY_DELAY_S = 0.5      # after the n-th retryable error, wait n x this (at most MAX_RETRY_DELAY_S)
MAX_RETRY_DELAY_S = 3.0


@dataclass
class Outgoing:
    """One message in the outbox: "sending" until acknowledged, then "sent" (with the server's id),
    or "failed" after MAX_TRIES or an error that a retry cannot fix."""
    client_id: str
    event: str                     # "message" or "private_message"
    payload: dict[str, Any]
    state: str = "sending"
    tries: int = 0
    id: int | None = None
    error: str | None = None
    sent_at: float = field(default_factory=time.monotonic)


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
        self.events: list[tuple[str, Any]] = []
        self._taken: set[int] = set()
        self._changed = threading.Condition()
        self._on_event = on_event
        self.username: str | None = None
        self.rooms: set[str] = set()
        self.outbox: dict[str, Outgoing] = {}          # client_id -> message, in send order
        self._seen: dict[str, set[int]] = {}           # room -> message ids this user holds
        self.sio = self._new_socket()

    def _new_socket(self) -> socketio.Client:
        # No automatic reconnection: a test or benchmark must see a drop, not paper over it;
        # `reconnect` is the explicit way back. No SIGINT handler either: engineio's disconnects
        # every client from inside the signal handler, which takes the send queue's lock, and a
        # Ctrl-C landing while the main thread holds that lock (in `emit`) deadlocked the demo.
        # Ctrl-C stays a KeyboardInterrupt, and our callers' `finally:` blocks disconnect.
        sio = socketio.Client(reconnection=False, handle_sigint=False)
        for event in SERVER_EVENTS:
            sio.on(event, self._recorder(event))
        sio.on("disconnect", self._recorder("disconnect"))
        return sio

    def _recorder(self, event: str):
        def record(*args: Any) -> None:
            data = args[0] if args else None
            if self._on_event is not None:
                self._on_event(event, data, time.perf_counter())
            with self._changed:
                self.events.append((event, data))
                if event == "message":
                    self._seen.setdefault(data["room"], set()).add(data["id"])
                elif event == "history":
                    self._seen.setdefault(data["room"], set()).update(m["id"] for m in data["messages"])
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

    def join(self, room: str, username: str, since: int | None = None) -> None:
        self.username = username
        self.rooms.add(room)
        payload: dict[str, Any] = {"room": room, "username": username}
        if since is not None:
            payload["since"] = since
        self.sio.emit("join", payload)

    def leave(self, room: str) -> None:
        self.sio.emit("leave", {"room": room})

    def say(self, room: str, text: str) -> None:
        self.sio.emit("message", {"room": room, "text": text})

    def whisper(self, to: str, text: str) -> None:
        self.sio.emit("private_message", {"to": to, "text": text})

    def typing(self, room: str) -> None:
        self.sio.emit("typing", {"room": room})

    # ---- at-least-once sends -------------------------------------------------------------------

    def send(self, room: str, text: str) -> Outgoing:
        """Send a room message through the outbox; see the module docstring."""
        return self._send_new("message", {"room": room, "text": text})

    def send_private(self, to: str, text: str) -> Outgoing:
        return self._send_new("private_message", {"to": to, "text": text})

    def _send_new(self, event: str, payload: dict[str, Any]) -> Outgoing:
        client_id = uuid.uuid4().hex
        item = Outgoing(client_id, event, {**payload, "client_id": client_id})
        with self._changed:
            self.outbox[client_id] = item
        self._transmit(item)
        return item

    def _transmit(self, item: Outgoing) -> None:
        with self._changed:
            if item.state != "sending" or not self.sio.connected:
                return   # offline: it goes out again after `reconnect`, and that is not a try
            if item.tries >= MAX_TRIES:
                item.state, item.error = "failed", item.error or "no acknowledgement"
                self._changed.notify_all()
                return
            item.tries += 1
        try:
            self.sio.emit(item.event, item.payload, callback=lambda ack: self._acked(item, ack))
        except socketio.exceptions.SocketIOError:
            pass  # not connected: it stays "sending" and goes out again after `reconnect`

    def _acked(self, item: Outgoing, ack: Any) -> None:
        retry = False
        with self._changed:
            if isinstance(ack, dict) and ack.get("ok"):
                item.state, item.id = "sent", ack["id"]
            elif isinstance(ack, dict) and ack.get("code") in RETRYABLE:
                item.error, retry = ack["code"], True
            else:
                item.state = "failed"
                item.error = ack.get("code") if isinstance(ack, dict) else "bad acknowledgement"
            self._changed.notify_all()
        if retry:
            delay = min(MAX_RETRY_DELAY_S, RETRY_DELAY_S * item.tries)
            timer = threading.Timer(delay, self._transmit, args=(item,))
            timer.daemon = True
            timer.start()

    def pending(self) -> list[Outgoing]:
        with self._changed:
            return [item for item in self.outbox.values() if item.state == "sending"]

    def wait_until_sent(self, timeout: float = 15.0) -> None:
        """Block until nothing in the outbox is "sending" (sent or failed)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while any(item.state == "sending" for item in self.outbox.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChatTimeout(f"{self.name or 'client'}: {len(self.pending())} message(s) "
                                      f"still sending after {timeout:.0f}s")
                self._changed.wait(remaining)

    def since(self, room: str) -> int | None:
        """The last id of the unbroken run of ids this user holds for `room` (None: holds none).

        Not simply the highest id: messages from several senders can arrive out of id order, so
        holding 7 does not mean holding 6. Asking from the first hole on refills exactly the gap.
        """
        with self._changed:
            seen = self._seen.get(room)
            if not seen:
                return None
            last = min(seen)
            while last + 1 in seen:
                last += 1
            return last

    def reconnect(self, url: str | None = None, timeout: float = 15.0) -> ChatClient:
        """A new connection (to `url`, e.g. another instance): join the same rooms again, asking for
        what was missed, then resend every message still "sending". Raises ChatError-carrying
        ChatTimeout if the join is refused (e.g. the nickname is still held by a dead instance)."""
        if self.sio.connected:
            self.drop()
        self.url = url or self.url
        self.sio = self._new_socket()
        self.connect(timeout=timeout)
        for room in sorted(self.rooms):
            # Only a reply to this join counts: older errors (say, internal_error from an outage)
            # may still be waiting in the event list.
            mark = self.mark()
            self.join(room, self.username, since=self.since(room))
            event, data = self.wait_for_any(("history", "error"),
                                            lambda d, r=room: d.get("room", r) == r, timeout, newer_than=mark)
            if event == "error":
                raise ChatTimeout(f"{self.name or 'client'}: rejoining #{room} refused: {data['code']}")
        # In order, after the joins: one connection's events are handled in the order sent.
        for item in self.pending():
            self._transmit(item)
        return self

    def displayed(self, room: str) -> dict[int, dict[str, Any]]:
        """What a UI would show for `room`: every message received live or in a history, by id."""
        shown: dict[int, dict[str, Any]] = {}
        with self._changed:
            for name, data in self.events:
                if name == "message" and data["room"] == room:
                    shown[data["id"]] = data
                elif name == "history" and data["room"] == room:
                    shown.update((m["id"], m) for m in data["messages"])
        return shown

    # ---- server -> client ----------------------------------------------------------------------

    def wait_for(self, event: str, match: Callable[[Any], bool] = lambda data: True,
                 timeout: float = 15.0) -> Any:
        """The first not-yet-returned `event` whose payload satisfies `match`."""
        return self.wait_for_any((event,), match, timeout)[1]

    def wait_for_any(self, events: Iterable[str], match: Callable[[Any], bool] = lambda data: True,
                     timeout: float = 15.0, newer_than: int = 0) -> tuple[str, Any]:
        """The first not-yet-returned event named in `events` (and satisfying `match`): (name, data).
        `newer_than`: ignore the first that many recorded events (see `mark`)."""
        wanted = set(events)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index, (name, data) in enumerate(self.events):
                    if index < newer_than:
                        continue
                    if name in wanted and index not in self._taken and match(data):
                        self._taken.add(index)
                        return name, data
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = ", ".join(name for name, _ in self.events[-12:]) or "nothing"
                    raise ChatTimeout(f"{self.name or 'client'}: no matching {'/'.join(sorted(wanted))} "
                                      f"within {timeout:.0f}s; last events: {seen}")
                self._changed.wait(remaining)

    def mark(self) -> int:
        """The number of events recorded so far: pass it as `newer_than` to wait for a reply to
        what you send next (and not for an older event of the same name)."""
        with self._changed:
            return len(self.events)

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
