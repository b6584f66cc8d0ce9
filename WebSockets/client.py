"""Our WebSocket client: a blocking `connect(url) -> Connection` API and an interactive line client.

    python -m WebSockets.client ws://127.0.0.1:8765     (stdin lines out, received messages printed)

    from WebSockets.client import connect
    with connect("ws://127.0.0.1:8765") as ws:
        ws.send("hello")
        print(ws.recv(timeout=5))

Why blocking sockets rather than asyncio: a client usually has one connection and wants to call
`recv()` where it needs an answer. The caller's thread reads the socket itself (no background
thread), so a round trip costs one `sendall` and one `recv`. The protocol work (masking with a
fresh random key per frame, checking `Sec-WebSocket-Accept`, answering pings, the close
handshake) is all in the sans-I/O `protocol` module.

Keepalive: while the caller waits in `recv()` (or `ping()`, `close()`), the connection pings the
server every `ping_interval` seconds and fails with 1011 if no pong comes within `ping_timeout`;
`latency` is the round trip of the last keepalive pong. With no background thread, a connection
nobody reads from does not ping: it has nobody to tell either.

Threads: one thread may read (`recv`, `ping`, `close`) while others `send`; reads are serialised
by a lock, writes by another.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from common import cli

from .deflate import DEFAULT_CLIENT_OFFER, DeflateParameters, PerMessageDeflate
from .protocol import (
    DEFAULT_MAX_SIZE,
    MAX_HEADER_BYTES,
    CloseCode,
    CloseReceived,
    ConnectionClosed,
    ConnectionFailed,
    HandshakeError,
    Message,
    Pong,
    Role,
    State,
    WebSocketConnection,
    build_client_request,
    generate_key,
    validate_server_response,
)

READ_SIZE = 64 * 1024
PING_INTERVAL = PING_TIMEOUT = 20.0  # seconds, as in websockets
Trace = Callable[[str, bytes], None]  # called with ("send" | "recv", raw bytes) for every socket I/O


class Connection:
    """An open client WebSocket. Use `connect()` to make one."""

    def __init__(self, sock: socket.socket, leftover: bytes, *, max_size: int | None,
                 handshake_request: bytes, handshake_response: bytes, trace: Trace | None = None,
                 deflate: PerMessageDeflate | None = None, ping_interval: float | None = PING_INTERVAL,
                 ping_timeout: float = PING_TIMEOUT):
        self.handshake_request = handshake_request  # the exact bytes, for teaching and debugging
        self.handshake_response = handshake_response
        self._sock = sock
        self._protocol = WebSocketConnection(Role.CLIENT, max_size=max_size, deflate=deflate)
        self._trace = trace
        self._messages: collections.deque[str | bytes] = collections.deque()
        self._pongs: list[bytes] = []
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._eof = False
        # Keepalive: the outstanding ping (payload, sent at), when the next one is due, its result.
        self._ping_interval, self._ping_timeout = ping_interval, ping_timeout
        self._keepalive_ping: tuple[bytes, float] | None = None
        self._next_ping_at = time.monotonic() + (ping_interval or 0)
        self.latency: float | None = None  # seconds, from the last keepalive pong
        if leftover:  # frames the server sent right behind its 101 answer
            self._process(leftover)

    # --- public API

    @property
    def close_code(self) -> int | None:
        """None while open; afterwards the code the connection ended with (1006: dropped)."""
        return self._protocol.close_code if self._protocol.state is State.CLOSED else None

    @property
    def close_reason(self) -> str:
        return self._protocol.close_reason

    @property
    def deflate(self) -> PerMessageDeflate | None:
        """The permessage-deflate codec the server agreed to, or None (no compression)."""
        return self._protocol.deflate

    def send(self, data: str | bytes) -> None:
        """Send one message: text for str, binary for bytes. Raises ConnectionClosed once closed."""
        with self._write_lock:
            self._protocol.send(data)
            self._flush()

    def send_fragments(self, parts: list[str] | list[bytes]) -> None:
        """Send one message split into len(parts) frames (§5.4)."""
        with self._write_lock:
            self._protocol.send_fragments(parts)
            self._flush()

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message. Raises TimeoutError after `timeout` seconds, ConnectionClosed at the end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._read_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("another thread is reading this connection")
        try:
            while not self._messages:
                if self._protocol.state is State.CLOSED or self._eof:
                    raise ConnectionClosed(self._protocol.close_code, self._protocol.close_reason)
                self._read_once(deadline)
            return self._messages.popleft()
        finally:
            self._read_lock.release()

    def ping(self, payload: bytes = b"", timeout: float = 10.0) -> float:
        """Send a ping and wait for its pong; returns the round-trip time in seconds.

        Messages that arrive meanwhile are kept for `recv()`.
        """
        started = time.monotonic()
        deadline = started + timeout
        with self._write_lock:
            self._protocol.send_ping(payload)
            self._flush()
        if not self._read_lock.acquire(timeout=timeout):
            raise TimeoutError("another thread is reading this connection")
        try:
            while payload not in self._pongs:
                if self._protocol.state is State.CLOSED or self._eof:
                    raise ConnectionClosed(self._protocol.close_code, self._protocol.close_reason)
                self._read_once(deadline)
            self._pongs.remove(payload)
            return time.monotonic() - started
        finally:
            self._read_lock.release()

    def close(self, code: int = CloseCode.NORMAL, reason: str = "", timeout: float = 5.0) -> None:
        """The close handshake (§7.1.2): send close, wait for the server's close, then its TCP FIN."""
        deadline = time.monotonic() + timeout
        try:
            with self._write_lock:
                if self._protocol.state is State.OPEN:
                    self._protocol.send_close(code, reason)
                    self._flush()
            if self._read_lock.acquire(timeout=timeout):
                try:
                    # §7.1.1: the server closes TCP first; reading to EOF also drains its close frame.
                    while not self._eof:
                        self._read_once(deadline)
                finally:
                    self._read_lock.release()
        except (OSError, TimeoutError):
            pass  # the peer is gone or too slow: closing the socket below is all that is left
        finally:
            self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing

    def _flush(self) -> None:
        data = self._protocol.data_to_send()
        if data:
            if self._trace:
                self._trace("send", data)
            self._sock.sendall(data)

    def _read_once(self, deadline: float | None) -> None:
        """Read once from the socket, waking up for keepalive duties on the way."""
        while True:
            wake = self._keepalive_duty()
            if deadline is not None:
                wake = deadline if wake is None else min(wake, deadline)
            if self._eof:
                return
            if wake is None:
                self._sock.settimeout(None)
            else:
                remaining = wake - time.monotonic()
                if remaining <= 0 and wake == deadline:
                    raise TimeoutError("no message before the timeout")
                self._sock.settimeout(max(remaining, 0.001))
            try:
                data = self._sock.recv(READ_SIZE)
                break
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError("no message before the timeout") from None
            except ConnectionResetError:
                data = b""
                break
        if self._trace and data:
            self._trace("recv", data)
        if not data:
            self._eof = True
            if self._protocol.state is not State.CLOSED:
                # §7.1.5: TCP closed without a close frame: "abnormal closure", never sent on the wire.
                self._protocol.state = State.CLOSED
                self._protocol.close_code = CloseCode.ABNORMAL
            return
        self._process(data)

    def _keepalive_duty(self) -> float | None:
        """Send a ping when one is due; fail with 1011 when the last one went unanswered.
        Returns when to wake up next for keepalive (None: keepalive off or connection over)."""
        if not self._ping_interval or self._protocol.state is not State.OPEN:
            return None
        now = time.monotonic()
        if self._keepalive_ping is not None:
            due = self._keepalive_ping[1] + self._ping_timeout
            if now < due:
                return due
            with self._write_lock:
                self._protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                with contextlib.suppress(OSError):
                    self._flush()
            self._eof = True  # the server is gone or hung: do not wait for its close
            return None
        if now < self._next_ping_at:
            return self._next_ping_at
        payload = os.urandom(4)
        with self._write_lock, contextlib.suppress(OSError):  # a dead peer shows as EOF next
            self._protocol.send_ping(payload)
            self._flush()
        self._keepalive_ping = (payload, now)
        return now + self._ping_timeout

    def _process(self, data: bytes) -> None:
        # Under the write lock: reading queues frames too (pongs, the close echo) and changes the
        # state. Without the lock, a pong queued while a sender's _flush() sits between joining
        # and clearing the outgoing queue would be cleared unsent. No socket wait happens here.
        with self._write_lock:
            for event in self._protocol.receive_data(data):
                kind = type(event)
                if kind is Message:
                    self._messages.append(event.data)
                elif kind is Pong:
                    if self._keepalive_ping is not None and event.payload == self._keepalive_ping[0]:
                        now = time.monotonic()
                        self.latency = now - self._keepalive_ping[1]
                        self._keepalive_ping = None
                        self._next_ping_at = now + (self._ping_interval or 0)
                    else:
                        self._pongs.append(event.payload)
                elif kind is CloseReceived or kind is ConnectionFailed:
                    pass  # the protocol queued our close frame; the server will close TCP
            # Pong answers to pings and close frames the protocol queued while reading.
            try:
                self._flush()
            except OSError:
                pass  # the peer may already have closed: the close is being completed anyway


def parse_ws_url(url: str) -> tuple[str, int, str]:
    """ws://host[:port][/path][?query] -> (host, port, resource name)."""
    parts = urlsplit(url)
    if parts.scheme == "wss":
        raise ValueError("wss:// needs TLS, which this teaching client leaves out: use WebSockets.lib_client")
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"expected a ws://host:port/path URL, got {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or 80, path


def connect(url: str, *, timeout: float = 10.0, max_size: int | None = DEFAULT_MAX_SIZE,
            compress: bool | DeflateParameters = True, ping_interval: float | None = PING_INTERVAL,
            ping_timeout: float = PING_TIMEOUT, trace: Trace | None = None) -> Connection:
    """Open a WebSocket: TCP connect, opening handshake, check Sec-WebSocket-Accept.

    `compress=True` offers permessage-deflate as browsers do (`client_max_window_bits`); pass
    DeflateParameters for another offer, False to offer nothing. Raises HandshakeError if the
    server refuses or answers wrongly, OSError if it is unreachable. `ping_interval=None` turns
    keepalive pings off.
    """
    offer = DEFAULT_CLIENT_OFFER if compress is True else compress or None
    host, port, path = parse_ws_url(url)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        # Small frames must leave at once, not wait for Nagle's algorithm to batch them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = generate_key()
        host_header = host if port == 80 else f"{host}:{port}"
        request = build_client_request(host_header, path, key, offer.header_value() if offer else None)
        if trace:
            trace("send", request)
        sock.sendall(request)
        head, leftover = _read_response_head(sock)
        if trace:
            trace("recv", head)
        _, codec = validate_server_response(head[:-4], key, offer)
        sock.settimeout(None)
        return Connection(sock, leftover, max_size=max_size, handshake_request=request,
                          handshake_response=head, trace=trace, deflate=codec,
                          ping_interval=ping_interval, ping_timeout=ping_timeout)
    except BaseException:
        sock.close()
        raise


def _read_response_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read up to and including the blank line; return (head, bytes after it)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEADER_BYTES:
            raise HandshakeError(502, "the server's answer head is too large")
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError(502, "the server closed the connection during the handshake")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    return buffer[:end], buffer[end:]


def interactive(url: str, compress: bool = True) -> int:
    """Send stdin lines as text messages; print what arrives, from a background reader thread."""
    connection = connect(url, compress=compress)
    print(f"connected to {url}; type lines to send, Ctrl-D to close", flush=True)

    def print_messages() -> None:
        try:
            while True:
                message = connection.recv()
                shown = message if isinstance(message, str) else f"<{len(message)} bytes> {message[:32]!r}"
                print(f"< {shown}", flush=True)
        except ConnectionClosed as closed:
            print(f"connection closed: code {closed.code} {closed.reason!r}", flush=True)
        except OSError:
            pass

    reader = threading.Thread(target=print_messages, daemon=True)
    reader.start()
    try:
        for line in sys.stdin:
            connection.send(line.rstrip("\n"))
    except ConnectionClosed:
        pass
    connection.close()
    reader.join(timeout=5)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m WebSockets.client",
                                description="Interactive WebSocket client written from scratch: "
                                            "stdin lines are sent, received messages printed.")
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8765", help="ws:// URL of the server")
    parser.add_argument("--no-compression", action="store_true",
                        help="do not offer permessage-deflate (offered by default, as browsers do)")
    args = parser.parse_args(argv)
    try:
        return interactive(args.url, compress=not args.no_compression)
    except (HandshakeError, ValueError, OSError) as error:
        # A wrong URL, nothing listening, a refused handshake: the user's to fix, in one line.
        raise cli.UsageError(f"{args.url}: {error}") from None


if __name__ == "__main__":
    sys.exit(cli.run(main))
