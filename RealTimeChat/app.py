# ruff: noqa: E402
"""The chat server: Flask serves the page, Flask-SocketIO carries the events.

    python -m RealTimeChat.app [--host 127.0.0.1] [--port 5000] [--db PATH]      one instance
    python -m RealTimeChat.app --port 5001 --redis redis://127.0.0.1:6379/0       scale-out

Each handler does three things in order: take a token from the connection's rate limiter, parse
the payload with `rules.py` (which raises `ChatError` on anything wrong), then act on the store and
emit. A `ChatError` anywhere becomes an `error` {code, message} event to that connection only; the
connection stays open. See README "Real-Time Chat" for the event protocol.

Async mode: "threading" with simple-websocket. Every connection gets a real WebSocket and its own
thread; handlers may block (SQLite, Redis) without stalling anyone else, and no monkey-patching is
needed. `async_handlers=False` runs one connection's events one after another, in the order the
client sent them — so a sender's messages get increasing ids in the order they were typed.

`--async-mode gevent` runs the same app on gevent instead: one OS thread, every connection a
greenlet. gevent must replace the standard library's blocking calls (socket, threading, time)
before anything uses them, so the patching happens here, first thing, and only when this module
is the program being run (importing app.py, as the tests do, patches nothing).
"""

from __future__ import annotations

import sys


def _gevent_asked(argv: list[str]) -> bool:
    """`--async-mode gevent` (or `=gevent`) on the command line, read before argparse runs."""
    pairs = zip(argv, argv[1:], strict=False)
    return "--async-mode=gevent" in argv or ("--async-mode", "gevent") in pairs


if __name__ == "__main__" and _gevent_asked(sys.argv):
    from gevent import monkey

    monkey.patch_all()

# The imports below come after the patching on purpose (E402 is silenced for this file only).
import argparse
import logging
import os
import secrets
import socket
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any

import redis
import socketio
from flask import Flask, render_template, request
from flask_socketio import SocketIO, join_room, leave_room
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.serving import WSGIRequestHandler, make_server

from common import cli

from .rules import (
    CATCH_UP_LIMIT,
    HISTORY_LIMIT,
    INTERNAL_ERROR,
    MAX_ROOMS_PER_CONNECTION,
    NICKNAME_MISMATCH,
    NICKNAME_TAKEN,
    NOT_IN_ROOM,
    NOT_JOINED,
    RATE_LIMITED,
    TOO_MANY_ROOMS,
    UNKNOWN_EVENT,
    UNKNOWN_USER,
    ChatError,
    TokenBucket,
    ack_error,
    ack_ok,
    nickname_key,
    parse_join,
    parse_leave,
    parse_message,
    parse_private_message,
    parse_typing,
    private_message_payload,
)
from .store import ChatStore, LocalStore, RedisStore

DEFAULT_DB = cli.output_path("RealTimeChat", "chat.sqlite3")   # git-ignored out/
# Engine.IO refuses packets above this size by closing the connection: the only input that costs a
# client its connection. Anything smaller reaches rules.py and gets a polite `error`.
MAX_PACKET_BYTES = 1_000_000
# The events a client may send. Everything else, the server's own lifecycle events `connect` and
# `disconnect` included, is refused with `unknown_event` (see ChatServer._refuse_foreign_events).
CLIENT_EVENTS = frozenset({"join", "leave", "message", "private_message", "typing"})
# Presence changes within this window are sent as one list (see ChatServer._change_presence).
PRESENCE_COALESCE_S = 0.2
ASYNC_MODES = ("threading", "gevent")

log = logging.getLogger("chat")


@dataclass
class Connection:
    """What the server knows about one Socket.IO connection (it lives on exactly one instance)."""
    sid: str
    bucket: TokenBucket
    typing_bucket: TokenBucket
    username: str | None = None
    rooms: set[str] = field(default_factory=set)
    # Held by each handler and by the disconnect clean-up. Flask-SocketIO runs one connection's
    # events one at a time, but a disconnect may run in another thread (ping timeout, long-polling)
    # while a handler is half-way: the clean-up waits for it, then undoes all of it, exactly once.
    lock: threading.RLock = field(default_factory=threading.RLock)  # re-entrant: never self-deadlock
    closed: bool = False


def user_room(username: str) -> str:
    """The Socket.IO room that reaches every connection of one user (private messages).

    The '@' cannot appear in a chat room name, so the two namespaces never collide.
    """
    return "@" + nickname_key(username)


class ChatServer:
    """The event handlers, and the per-connection state they share."""

    def __init__(self, store: ChatStore, socketio: SocketIO, rate: float = 10.0, burst: int = 20):
        self.store = store
        self.socketio = socketio
        self.rate = rate
        self.burst = burst
        self._connections: dict[str, Connection] = {}
        self._presence_pending: set[str] = set()   # rooms with a broadcast scheduled
        self._lock = threading.Lock()

    # ---- wiring --------------------------------------------------------------------------------

    def register(self) -> None:
        on = self.socketio.on
        on("connect")(self.on_connect)
        on("disconnect")(self.on_disconnect)
        on("join")(self._guarded(self.on_join))
        on("leave")(self._guarded(self.on_leave))
        on("message")(self._guarded(self.on_message))
        on("private_message")(self._guarded(self.on_private_message))
        # Typing pings have their own silent limiter (see on_typing).
        on("typing")(self._guarded(self.on_typing, limited=False))
        self._refuse_foreign_events()

    def _refuse_foreign_events(self) -> None:
        """Let only CLIENT_EVENTS through from a client; answer anything else with `unknown_event`.

        python-socketio dispatches a client's event packet by its name to whichever handler has
        that name, and `connect` and `disconnect` are names too: before this check, a client's
        `emit("connect")` re-ran the connect handler (a fresh rate-limit bucket; its nickname and
        presence orphaned for ever) and `emit("disconnect")` freed its nickname while the socket
        stayed open. A catch-all `*` handler is no help either: an event literally named "*" takes
        the catch-all's own slot, and Flask-SocketIO then reads the payload as the sender's sid.
        So the allow-list is checked where a client's packet becomes an event, before any
        dispatch. `_handle_event` is python-socketio's (private) entry for client event packets;
        tests/test_chat_spoofing.py fails if an upgrade ever bypasses this wrapper.
        """
        server = self.socketio.server
        dispatch = server._handle_event

        def handle_event(eio_sid: str, namespace: str | None, ack_id: int | None, data: list) -> Any:
            name = data[0] if data else None
            if isinstance(name, str) and name in CLIENT_EVENTS:
                return dispatch(eio_sid, namespace, ack_id, data)
            sid = server.manager.sid_from_eio_sid(eio_sid, namespace or "/")
            if sid is None:
                return None
            answer = self._handle(sid, self.on_unknown_event, (name,), limited=True)
            if ack_id is not None:
                # The client asked for an acknowledgement: give it the same {ok: false, ...} a
                # known event's failure gets, or it would wait for one until its own timeout.
                server._send_packet(eio_sid, server.packet_class(
                    socketio.packet.ACK, namespace=namespace or "/", id=ack_id, data=[answer]))
            return None
        server._handle_event = handle_event

    def _guarded(self, handler, limited: bool = True):
        """Wrap a handler for Flask-SocketIO: the connection comes from the request context, and
        what the handler returns is the Socket.IO acknowledgement (if the client asked for one)."""
        def wrapper(*args: Any) -> Any:
            return self._handle(request.sid, handler, args, limited)
        wrapper.__name__ = handler.__name__
        return wrapper

    def _handle(self, sid: str, handler, args: tuple[Any, ...], limited: bool) -> Any:
        """Run one client event: rate limit first, and turn every failure into an `error` event
        (and an `{ok: false, code, message}` acknowledgement). Returns the acknowledgement.

        Catching here (rather than letting Flask-SocketIO log and drop the exception) is what keeps
        a bad payload from costing anything but one `error` reply.
        """
        conn = self._connection(sid)
        if conn is None:
            return ack_error(ChatError(NOT_JOINED, "the connection is closing"))  # raced with disconnect
        with conn.lock:
            if conn.closed:  # the disconnect clean-up ran first: nothing may be claimed after it
                return ack_error(ChatError(NOT_JOINED, "the connection is closing"))
            try:
                if limited and not conn.bucket.try_take():
                    raise ChatError(RATE_LIMITED, f"slow down: at most {self.rate:g} events/s "
                                                  f"(bursts of {self.burst})")
                return handler(conn, *args)
            except ChatError as exc:
                error = exc
            except redis.RedisError as exc:   # scale-out: Redis unreachable (an outage, a partition)
                log.warning("handler %s: Redis unavailable (%s)", handler.__name__, exc)
                error = ChatError(INTERNAL_ERROR, "the chat's shared state is unreachable; try again")
            except Exception:
                log.exception("handler %s failed", handler.__name__)
                error = ChatError(INTERNAL_ERROR, "the server failed to handle that event; try again")
            self._send_error(conn.sid, error)
            return ack_error(error)

    def _connection(self, sid: str) -> Connection | None:
        with self._lock:
            return self._connections.get(sid)

    def _send_error(self, sid: str, error: ChatError) -> None:
        self.socketio.emit("error", error.payload(), to=sid)

    # ---- lifecycle -----------------------------------------------------------------------------

    def on_connect(self, auth: Any = None) -> None:
        conn = Connection(
            sid=request.sid,
            bucket=TokenBucket(self.rate, self.burst),
            # Typing pings are advisory: a separate, small bucket, and excess pings are dropped
            # silently instead of answered with errors.
            typing_bucket=TokenBucket(2.0, 4),
        )
        with self._lock:
            self._connections[conn.sid] = conn

    def on_disconnect(self, *reason: Any) -> None:
        with self._lock:
            conn = self._connections.pop(request.sid, None)
        if conn is None:
            return
        with conn.lock:  # waits for a handler of this connection that is still running
            conn.closed = True
            if conn.username is None:
                return
            for room in sorted(conn.rooms):
                self._change_presence(room, conn.username, joined=False)
            self.store.release_nickname(nickname_key(conn.username))
        log.info("%s disconnected", conn.username)

    def start_reaper(self, interval: float) -> None:
        """Scale-out only: every `interval` s, drop the users of crashed instances and tell their
        rooms. Without this, a SIGKILLed instance's users stay listed until the next join/leave."""
        reap = getattr(self.store, "reap_dead_instances", None)
        if reap is None:
            return

        def loop() -> None:
            while True:
                self.socketio.sleep(interval)
                try:
                    rooms = reap()
                except redis.RedisError as exc:
                    log.warning("reaping dead instances failed (%s); retrying in %.1fs", exc, interval)
                    continue
                except Exception:
                    log.exception("reaping dead instances failed; retrying in %.1fs", interval)
                    continue
                for room in rooms:
                    self._broadcast_presence(room)
                    log.info("removed a dead instance's users from #%s", room)
        self.socketio.start_background_task(loop)

    def disconnect_everyone(self, silent_s: float) -> None:
        """Scale-out: after our heartbeat was missing for `silent_s` s (a partition from Redis), the
        other instances have declared us dead, reaped our users' presence and freed their
        nicknames. Keeping the connections would leave users who are invisible to the others and
        whose nicknames someone else may now hold. So every user is disconnected; their clients
        reconnect (here or elsewhere), claim their nicknames again and catch up with `since`."""
        with self._lock:
            sids = list(self._connections)
        log.warning("no heartbeat for %.1fs: presumed dead by the other instances; disconnecting %d "
                    "connection(s) so they reconnect and claim again", silent_s, len(sids))
        # One task each: a disconnect waits for its connection's writer to finish, and in a row
        # those waits added up to seconds per user.
        for sid in sids:
            self.socketio.start_background_task(self.socketio.server.disconnect, sid)

    def close_all(self) -> None:
        """On shutdown: release our users' nicknames and presence, and tell the rooms.

        Matters in scale-out mode: the users of the other instances see ours leave at once,
        instead of after the heartbeat TTL.
        """
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for conn in connections:
            if conn.username is None:
                continue
            for room in sorted(conn.rooms):
                # At once: this process is about to exit and take its scheduled tasks with it.
                self._change_presence(room, conn.username, joined=False, at_once=True)
            self.store.release_nickname(nickname_key(conn.username))

    # ---- events --------------------------------------------------------------------------------

    def on_join(self, conn: Connection, *args: Any) -> None:
        req = parse_join(args)
        self._claim_nickname(conn, req.username)
        if req.room not in conn.rooms and len(conn.rooms) >= MAX_ROOMS_PER_CONNECTION:
            raise ChatError(TOO_MANY_ROOMS, f"a connection may be in at most {MAX_ROOMS_PER_CONNECTION} "
                                            f"rooms; leave one first")
        # Subscribe before reading history: a message sent in between then arrives live (and maybe
        # also in the history); clients merge by id, so nothing falls in a gap.
        join_room(req.room, sid=conn.sid)
        conn.rooms.add(req.room)
        # With `since` (a reconnecting client's last id), only what it missed: the gap is filled.
        limit = HISTORY_LIMIT if req.since is None else CATCH_UP_LIMIT
        history = [m.payload() for m in self.store.history(req.room, limit, since=req.since)]
        self.socketio.emit("history", {"room": req.room, "messages": history}, to=conn.sid)
        # A disconnect arriving meanwhile waits on conn.lock and then undoes this join in full.
        self._change_presence(req.room, conn.username, joined=True)
        log.info("%s joined #%s", conn.username, req.room)

    def _claim_nickname(self, conn: Connection, username: str) -> None:
        if conn.username is not None:
            if conn.username != username:
                raise ChatError(NICKNAME_MISMATCH, f"this connection is already '{conn.username}'; "
                                                   f"reconnect to use another nickname")
            return
        if not self.store.claim_nickname(nickname_key(username)):
            raise ChatError(NICKNAME_TAKEN, f"the nickname '{username}' is in use; pick another")
        conn.username = username
        join_room(user_room(username), sid=conn.sid)

    def on_leave(self, conn: Connection, *args: Any) -> None:
        room = parse_leave(args)
        self._require_room(conn, room)
        leave_room(room, sid=conn.sid)
        conn.rooms.discard(room)
        self._change_presence(room, conn.username, joined=False)
        # The leaver is no longer in the Socket.IO room, so tell them directly too.
        self.socketio.emit("presence", {"room": room, "users": self.store.presence(room)}, to=conn.sid)
        log.info("%s left #%s", conn.username, room)

    def on_message(self, conn: Connection, *args: Any) -> dict[str, Any]:
        req = parse_message(args)
        self._require_room(conn, req.room)
        # Stored (committed) first, so an acknowledged message is never lost by a crash after this.
        message, new = self.store.append_message(req.room, conn.username, req.text, req.client_id)
        if new:  # a resend of a stored message is acknowledged again, never broadcast again
            self.socketio.emit("message", message.payload(), to=req.room)
        return ack_ok(message.id, message.ts)

    def on_private_message(self, conn: Connection, *args: Any) -> dict[str, Any]:
        req = parse_private_message(args)
        sender = self._require_username(conn)
        if not self.store.nickname_online(nickname_key(req.to)):
            raise ChatError(UNKNOWN_USER, f"no user '{req.to}' is online")
        message_id, ts, new = self.store.record_private(sender, req.client_id)
        if new:
            payload = private_message_payload(message_id, sender, req.to, req.text, ts, req.client_id)
            # One emit to both users' rooms: Socket.IO delivers once per connection, so a message to
            # yourself is not doubled, and nobody else's connection is in either room.
            self.socketio.emit("private_message", payload, to=[user_room(req.to), user_room(sender)])
        return ack_ok(message_id, ts)

    def on_typing(self, conn: Connection, *args: Any) -> None:
        # Advisory and frequent: over the limit we drop the ping without a word (and without even
        # parsing it), rather than answer every keystroke with an error.
        if not conn.typing_bucket.try_take():
            return
        room = parse_typing(args)
        self._require_room(conn, room)
        self.socketio.emit("typing", {"room": room, "username": conn.username}, to=room,
                           skip_sid=conn.sid)

    def on_unknown_event(self, conn: Connection, event: Any = None) -> None:
        raise ChatError(UNKNOWN_EVENT, f"unknown event {str(event)[:40]!r}; a client may send only "
                                       f"{', '.join(sorted(CLIENT_EVENTS))}")

    # ---- helpers -------------------------------------------------------------------------------

    def _require_username(self, conn: Connection) -> str:
        if conn.username is None:
            raise ChatError(NOT_JOINED, "join a room with a nickname first")
        return conn.username

    def _require_room(self, conn: Connection, room: str) -> None:
        self._require_username(conn)
        if room not in conn.rooms:
            raise ChatError(NOT_IN_ROOM, f"you are not in #{room}; join it first")

    def _change_presence(self, room: str, username: str, joined: bool, at_once: bool = False) -> None:
        """Record a join or leave now; broadcast the room's list now or within PRESENCE_COALESCE_S."""
        if joined:
            self.store.add_to_room(room, username)
        else:
            self.store.remove_from_room(room, username)
        if at_once:
            self._broadcast_presence(room)
            return
        # Coalescing: a full list to every member on every change costs O(N) per change and O(N^2)
        # when N people arrive together (a class logging in, a reconnect storm after a deploy).
        # One broadcast per room per window, of the list as it is *then*, costs O(N) per window.
        with self._lock:
            if room in self._presence_pending:
                return
            self._presence_pending.add(room)
        self.socketio.start_background_task(self._broadcast_presence_later, room)

    def _broadcast_presence_later(self, room: str) -> None:
        self.socketio.sleep(PRESENCE_COALESCE_S)
        with self._lock:
            # Cleared *before* reading the list: a change after this point schedules another
            # broadcast, so the last broadcast always carries the final state.
            self._presence_pending.discard(room)
        try:
            self._broadcast_presence(room)
        except Exception:
            log.exception("presence broadcast for #%s failed", room)

    def _broadcast_presence(self, room: str) -> None:
        # Under the room's presence lock, so snapshots go out in the order they were read.
        with self.store.presence_lock(room):
            self.socketio.emit("presence", {"room": room, "users": self.store.presence(room)}, to=room)

def fan_out_through(redis_url: str) -> socketio.RedisManager:
    """Flask-SocketIO's Redis message queue, failing fast when Redis is unreachable.

    redis-py's default retries with exponential backoff (about 7 s per call, twice per publish);
    during a partition that froze every handler that emits for many seconds, holding its
    connection's lock. One quick retry, then the publish is given up (the message is stored; the
    others catch up with `since`). No read timeout: the subscriber waits for messages on purpose.
    """
    fail_fast = {"socket_connect_timeout": 2.0, "retry": Retry(NoBackoff(), 1)}
    return socketio.RedisManager(redis_url, channel="chat-socketio", redis_options=fail_fast)


def create_app(store: ChatStore, redis_url: str | None = None, cors_origins: list[str] | None = None,
               rate: float = 10.0, burst: int = 20,
               async_mode: str = "threading") -> tuple[Flask, SocketIO, ChatServer]:
    """Build the Flask app, its SocketIO server and the chat handlers around `store`.

    `async_mode` "gevent" needs the standard library monkey-patched first (see the top of app.py).
    """
    app = Flask(__name__)
    # Never a constant in the source: from the environment, else random for this run.
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY") or secrets.token_hex(32)
    socketio = SocketIO(
        app,
        async_mode=async_mode,
        # None: one instance; with Redis, every emit is published and each instance delivers it to
        # its own connections.
        client_manager=fan_out_through(redis_url) if redis_url else None,
        # Default: only the page's own origin may open a connection (a foreign page cannot make a
        # visitor's browser chat on their behalf). Non-browser clients send no Origin at all.
        cors_allowed_origins=own_origin_or(cors_origins) if cors_origins else None,
        async_handlers=False,
        max_http_buffer_size=MAX_PACKET_BYTES,
        logger=False,
        engineio_logger=False,
    )
    chat = ChatServer(store, socketio, rate=rate, burst=burst)
    chat.register()

    @app.get("/")
    def index():
        return render_template("index.html")

    @app.after_request
    def security_headers(response):
        # Defence in depth behind textContent: no inline scripts, nothing from other origins.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return app, socketio, chat


def own_origin_or(extra: list[str]):
    """Engine.IO origin check: the page's own origin (from the Host header) plus `extra`.

    Passing a fixed list to Engine.IO would drop the own-origin default, so we keep it ourselves.
    """
    allowed = set(extra)

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
        return origin is None or origin == own or origin in allowed
    return check


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m RealTimeChat.app",
                                description="Real-time chat server (Flask + Flask-SocketIO).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=cli.port, default=5000, help="port (default 5000)")
    parser.add_argument("--redis", metavar="URL", type=cli.redis_url,
                        help="scale-out mode: share rooms, presence and history through this Redis")
    parser.add_argument("--db", type=cli.writable_path, default=DEFAULT_DB,
                        help="SQLite history file when not using --redis "
                             "(default out/RealTimeChat/chat.sqlite3)")
    parser.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                        help="also allow this browser origin (repeatable); default: own origin only")
    # Checked here, not at the first connection: a bad value must stop the start, not every client.
    parser.add_argument("--rate", type=cli.positive_float, default=10.0,
                        help="events/s per connection (default 10)")
    parser.add_argument("--burst", type=cli.positive_int, default=20, help="rate-limit burst (default 20)")
    parser.add_argument("--heartbeat-ttl", type=cli.positive_float, default=10.0,
                        help="scale-out: seconds after which a silent instance's users count as gone")
    parser.add_argument("--tcp-nodelay", action=argparse.BooleanOptionalAction, default=True,
                        help="turn Nagle's algorithm off on every connection (default on; "
                             "--no-tcp-nodelay is there for the benchmark's before/after)")
    parser.add_argument("--async-mode", choices=ASYNC_MODES, default="threading",
                        help="threading: a thread per connection (default); gevent: one thread, "
                             "a greenlet per connection (see README, Measured)")
    parser.add_argument("--debug", action="store_true", help="Flask debug mode (never in production)")
    return parser.parse_args(argv)


def open_store(args: argparse.Namespace) -> tuple[ChatStore, str]:
    """The store the flags ask for, and a few words saying where the state lives."""
    try:
        if args.redis:
            store = RedisStore(args.redis, heartbeat_ttl=args.heartbeat_ttl)
            return store, f"redis {args.redis} (instance {store.instance_id})"
        return LocalStore(args.db), f"sqlite {args.db}"
    except (redis.RedisError, ValueError, OSError, sqlite3.Error) as exc:
        what = f"Redis at {args.redis}" if args.redis else f"the history database {args.db}"
        raise cli.UsageError(f"cannot use {what}: {exc}") from None


class NoDelayHandler(WSGIRequestHandler):
    """Werkzeug's handler with Nagle's algorithm off on every connection (TCP_NODELAY).

    A chat writes many small frames to one socket: with Nagle, a frame written while the previous
    one is unacknowledged waits for that ACK, and the receiver may delay its ACK (Linux: about
    40 ms). The bench's `one-nagle` set-up measured no consistent difference on loopback, where
    ACKs come back in microseconds; across a real network the wait is real, and the flag is free.
    """

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a busy port is one clear error, before any "serving".

    (Werkzeug's own bind prints two lines and calls sys.exit; given a socket, it just serves it.)
    """
    try:
        return socket.create_server((host, port), backlog=128)
    except OSError as exc:
        raise cli.bind_error(exc, host, port) from None


def stop_main_greenlet_on_signals() -> None:
    """Under gevent, deliver Ctrl-C and SIGTERM to the serving loop, and only there.

    With threads, Python runs a signal handler in the main thread, which is the serving loop. Under
    gevent every greenlet is the main thread, so the handler's exception lands in whichever
    greenlet happens to run, for instance Engine.IO's writer inside a bare `except:` that
    swallows it, and the server never stops. gevent's own handlers run in a greenlet of their
    own; from there the exception is thrown into the main greenlet, where `serve_forever` waits.
    """
    import signal

    import gevent

    main_greenlet = gevent.getcurrent()

    def stop_with(exception: type[BaseException]):
        return lambda: gevent.get_hub().loop.run_callback(main_greenlet.throw, exception())
    gevent.signal_handler(signal.SIGTERM, stop_with(cli.Terminated))
    gevent.signal_handler(signal.SIGINT, stop_with(KeyboardInterrupt))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # No line per HTTP request, and not the dev-server warning: README explains the server choice.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    if args.async_mode == "gevent":
        stop_main_greenlet_on_signals()
    store, where = open_store(args)
    try:
        app, socketio, chat = create_app(store, redis_url=args.redis, cors_origins=args.cors_origin,
                                         rate=args.rate, burst=args.burst, async_mode=args.async_mode)
        app.debug = args.debug
        handler = NoDelayHandler if args.tcp_nodelay else WSGIRequestHandler
        server = make_server(args.host, args.port, app, threaded=True, request_handler=handler,
                             fd=listen(args.host, args.port).detach())
        if args.redis:
            chat.start_reaper(interval=args.heartbeat_ttl / 3)
            store.on_presumed_dead = chat.disconnect_everyone
        log.info("serving http://%s:%d  state: %s", args.host, args.port, where)
        try:
            server.serve_forever()   # Ctrl-C or SIGTERM (cli.run) ends it with KeyboardInterrupt
        finally:
            server.server_close()
            chat.close_all()
            log.info("stopped")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
