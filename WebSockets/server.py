"""Our WebSocket server (echo or broadcast) on asyncio, on top of the sans-I/O `protocol` module.

    python -m WebSockets.server [--host 127.0.0.1] [--port 8765] [--mode echo|broadcast]
                                [--max-size BYTES] [--handshake-timeout SECONDS]
                                [--compression deflate|none] [--ping-interval S] [--ping-timeout S]
                                [--read-timeout S] [--max-buffered BYTES] [--max-send-queue BYTES]

Why asyncio and not a thread per client: a WebSocket server holds many long-lived, mostly idle
connections. A coroutine per connection costs a few KiB where a thread costs a stack and a
scheduler slot, and broadcast touches every connection from one thread with no locks. The price
is that nothing may block the event loop, so every wait on a peer is an `await` with a bound:

- a client that never finishes its handshake is dropped after `--handshake-timeout` seconds;
- keepalive: every `--ping-interval` seconds we ping; no pong within `--ping-timeout` closes the
  connection with 1011 (a peer that vanished without a FIN, or stopped reading);
- a client that stops in the middle of a message is dropped after `--read-timeout` seconds;
- a client that does not read its echoes only stalls its own coroutine (`await drain()`
  applies back-pressure to that one connection);
- in broadcast mode a client whose unsent backlog passes `--max-send-queue` is disconnected
  instead of letting its buffer grow without bound;
- a global budget, `--max-buffered`, bounds the bytes of incoming messages being assembled and of
  outgoing data queued, across all connections: over it, the connection holding the most is
  closed with 1013 (Try Again Later), so one greedy client cannot starve the rest;
- a client that breaks the protocol gets a close frame with the right code (1002/1007/1009) and
  only its own connection ends;
- permessage-deflate (RFC 7692) is accepted when offered (`--compression none` declines it); the
  size limit applies to the inflated message, checked while inflating;
- on Ctrl-C or SIGTERM every client gets 1001 "going away" and `CLOSE_TIMEOUT` seconds to answer.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

from common import cli

from .deflate import ServerDeflateConfig, accept_offer
from .protocol import (
    DEFAULT_MAX_SIZE,
    MAX_HEADER_BYTES,
    CloseCode,
    CloseReceived,
    ConnectionFailed,
    HandshakeError,
    Message,
    Pong,
    Role,
    State,
    WebSocketConnection,
    build_error_response,
    build_server_response,
    validate_client_request,
)

DEFAULT_PORT = 8765
HANDSHAKE_TIMEOUT = 5.0  # seconds a client gets to send a complete opening handshake
CLOSE_TIMEOUT = 2.0  # seconds we wait for the peer to close TCP after the close handshake
# We stop reading a socket (TCP then pushes back on the peer) once 2 x STREAM_LIMIT bytes wait
# unread, and read again at STREAM_LIMIT.
STREAM_LIMIT = 256 * 1024
READ_SIZE = 2 << 20  # the most one socket read takes: a 1 MiB message and its header in one read
MIN_READ_SIZE = 64 * 1024
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """How much time and memory one client, and all of them together, may take."""

    max_size: int = DEFAULT_MAX_SIZE  # largest message, after inflating (1009 over it)
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    ping_interval: float | None = 20.0  # None: no keepalive pings (websockets' defaults: 20 s, 20 s)
    ping_timeout: float = 20.0
    read_timeout: float | None = 30.0  # a half-received message may stall this long between reads
    max_buffered: int | None = 256 * MiB  # all connections together: incoming + queued outgoing
    max_send_queue: int = 8 * MiB  # broadcast: unsent bytes one client may have waiting


DEFAULT_DEFLATE = ServerDeflateConfig()  # websockets' defaults: 12-bit windows, context takeover

log = logging.getLogger("WebSockets.server")


class Pump(asyncio.BufferedProtocol):
    """One TCP connection as the server's coroutines see it: `read()` what was received, in
    order; `write()`, `drain()`; back-pressure both ways.

    What asyncio's StreamReader/StreamWriter pair does, minus copying every byte into and out of
    the reader's buffer: measured, that costs ~1 ms per MiB, half of what the server spends on a
    1 MiB echo. Once the handshake is done (`attach`), received bytes are copied once, straight
    from the socket's buffer into the frame decoder's, and `read()` returns b"" to say "parse
    what the decoder holds".

    A BufferedProtocol, so that *we* choose how much one read takes: asyncio's plain Protocol
    reads at most 256 KiB at a time, so a 1 MiB message came in 5+ chunks and woke this
    connection's coroutine 5+ times, each wake-up with its read-timeout timer, flush and budget
    check. Reading up to READ_SIZE at once, and not waking the coroutine for bytes that only
    extend a binary frame still arriving, a 1 MiB message wakes it once or twice.
    """

    def __init__(self, server: WebSocketServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.connection: WebSocketConnection | None = None  # once the handshake is done
        self._chunks: collections.deque[bytes] = collections.deque()  # before the decoder takes over
        self._queued = 0  # bytes received that the coroutine has not read (chunks + in the decoder)
        self._in_decoder = 0  # of those, bytes appended to the decoder's buffer, unparsed
        self._loop = asyncio.get_running_loop()
        self.last_received = self._loop.time()  # when bytes last came, for the read timeout
        # Set by the server once the connection is open: handles what the decoder holds (parse,
        # answer, flush) right in buffer_updated while the coroutine has nothing else to do;
        # returns False when the coroutine must look (closed, back-pressure, over budget).
        self.handle_now: Callable[[], bool] | None = None
        self._reader_parked = False  # the coroutine waits in read() with nothing queued
        self._attention = False  # wake the coroutine with nothing new: handle_now said "look"
        self._eof = False
        self._data = asyncio.Event()  # set when the coroutine has something to read
        self._writable = asyncio.Event()  # cleared while the transport's write buffer is full
        self._writable.set()
        self._reading_paused = False

    def attach(self, connection: WebSocketConnection | None) -> None:
        """The handshake is done: from now on bytes go to `connection`'s frame decoder (None:
        back to plain chunks, e.g. while draining after the close)."""
        self.connection = connection

    # --- asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.start(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        # One buffer for every connection of the server: the event loop runs one callback at a
        # time and buffer_updated() copies the bytes out before the next read can reuse it.
        # Big reads only while the memory budget has room: 50 connections each reading 2 MiB
        # before their coroutines run would hold 100 MiB the budget never saw.
        return self.server.receive_buffer[:self.server.read_size()]

    def buffer_updated(self, nbytes: int) -> None:
        received = self.server.receive_buffer[:nbytes]
        self.last_received = self._loop.time()
        self._queued += nbytes
        self.server.unread_total += nbytes
        connection = self.connection
        if connection is None or self._chunks:
            self._chunks.append(bytes(received))  # handshake bytes, or behind bytes not yet fed
        else:
            connection.buffer_data(received)  # the one copy out of the shared buffer
            self._in_decoder += nbytes
            if connection.waiting_for_payload() and self.server.read_size() == READ_SIZE:
                # More of a frame still arriving, and the budget has room: nothing to do until
                # the frame is complete (the read timeout counts from last_received).
                return
            if (self._reader_parked and self._writable.is_set() and self.handle_now is not None
                    and connection.buffered_bytes() == nbytes):
                # The coroutine would wake only to parse, answer and flush, none of which waits:
                # do it here, a loop iteration and a task switch sooner (per message, that is a
                # good part of a small echo's cost). It is woken if something must be awaited.
                self._took(self._in_decoder)
                self._in_decoder = 0
                if self.handle_now():
                    return
                self._attention = True
        self._data.set()
        if self._queued > 2 * STREAM_LIMIT and not self._reading_paused:
            self.transport.pause_reading()  # the peer sends faster than we handle: TCP pushes back
            self._reading_paused = True

    def eof_received(self) -> bool:
        self._eof = True
        self._data.set()
        return True  # keep our half open: the close frame may still have to go out

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._data.set()
        self._writable.set()  # wake a drain(); it sees the transport closing

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- what the coroutines use

    async def read(self) -> bytes | None:
        """The next bytes received; b"" when they went to the frame decoder (parse them there;
        maybe nothing new, when buffer_updated handled them and asks the caller to look);
        None once the peer has closed its side and everything was read."""
        while not self._in_decoder and not self._chunks and not self._attention:
            if self._eof:
                return None
            self._data.clear()
            self._reader_parked = True
            try:
                await self._data.wait()
            finally:
                self._reader_parked = False
        self._attention = False
        if self._in_decoder or not self._chunks:  # the decoder's bytes come first: chunks
            data, size = b"", self._in_decoder   # only queue behind them
            self._in_decoder = 0
        else:
            data = self._chunks.popleft()
            size = len(data)
        self._took(size)
        return data

    def _took(self, size: int) -> None:
        """`size` received bytes are being handled: stop counting them as unread."""
        self._queued -= size
        self.server.unread_total -= size
        if self._reading_paused and self._queued <= STREAM_LIMIT:
            self._reading_paused = False
            self.transport.resume_reading()

    def unread(self, data: bytes) -> None:
        """Put back bytes read too far (frames that came right behind the handshake)."""
        if data:
            self._chunks.appendleft(data)
            self._queued += len(data)
            self.server.unread_total += len(data)

    def discard_unread(self) -> None:
        """The connection is over: drop what it never read (and stop counting it)."""
        self.server.unread_total -= self._queued
        self._chunks.clear()
        self._queued = self._in_decoder = 0

    async def read_head(self, limit: int) -> bytes | None:
        """An HTTP head up to and including the blank line; None at EOF; b"" if over `limit`."""
        head = b""
        while (end := head.find(b"\r\n\r\n")) < 0:
            if len(head) > limit:
                return b""
            chunk = await self.read()
            if chunk is None:
                return None
            head += chunk
        self.unread(head[end + 4:])
        return head[:end + 4]

    def write(self, data: bytes | memoryview) -> None:
        self.transport.write(data)

    def writable(self) -> bool:
        """Is the transport's write buffer under its high-water mark (drain() would not wait)?"""
        return self._writable.is_set()

    async def drain(self) -> None:
        """Wait while the write buffer is over its high-water mark (back-pressure on us)."""
        if self.transport.is_closing():
            raise ConnectionResetError("connection lost")
        await self._writable.wait()


class Client:
    """One connected peer: its protocol state machine and its TCP connection."""

    def __init__(self, connection: WebSocketConnection, pump: Pump, name: str):
        self.connection = connection
        self.pump = pump
        self.name = name
        self.counted = 0  # this client's share of the global budget, as last counted
        self.pings: dict[bytes, float] = {}  # keepalive pings awaiting their pong: payload -> sent at
        self.latency: float | None = None  # seconds, from the last keepalive pong
        self.pong_seen = asyncio.Event()

    def flush(self) -> None:
        """Hand the protocol's pending bytes to the transport (non-blocking; drain() waits)."""
        for chunk in self.connection.data_to_send_chunks():
            self.pump.write(chunk)

    def backlog(self) -> int:
        return self.pump.transport.get_write_buffer_size()

    def buffered(self) -> int:
        """Bytes this client makes us hold: incoming message data plus unsent outgoing data."""
        return self.connection.buffered_bytes() + self.backlog()

    def fail(self, code: int, reason: str) -> None:
        """Close with `code` without waiting for the peer: a best-effort close frame, then abort.

        Used when the peer is the problem (silent, stalled, greedy): a close handshake would
        wait on the very peer we are giving up on.
        """
        if self.connection.state is State.OPEN:
            self.connection.send_close(code, reason)
            self.flush()
        self.pump.transport.abort()


class WebSocketServer:
    """Accepts connections, runs the handshake, then echoes or broadcasts every message."""

    def __init__(self, mode: str = "echo", limits: Limits = Limits(),
                 deflate: ServerDeflateConfig | None = DEFAULT_DEFLATE):
        if mode not in ("echo", "broadcast"):
            raise ValueError(f"mode must be 'echo' or 'broadcast', not {mode!r}")
        self.mode = mode
        self.limits = limits
        self.max_size = limits.max_size
        self.handshake_timeout = limits.handshake_timeout
        self.deflate = deflate  # None: decline permessage-deflate offers
        self.clients: set[Client] = set()
        self.tasks: set[asyncio.Task] = set()  # one per TCP connection
        self.buffered_total = 0  # the sum of every client's `counted`: the global budget's use
        self.receive_buffer = memoryview(bytearray(READ_SIZE))  # shared by all reads: see Pump
        self.unread_total = 0  # bytes every Pump received that its coroutine has not read yet

    def read_size(self) -> int:
        """How much the next socket read may take: READ_SIZE, less when the budget is nearly used
        (never below MIN_READ_SIZE, so every connection still makes progress)."""
        budget = self.limits.max_buffered
        if budget is None:
            return READ_SIZE
        room = budget - self.buffered_total - self.unread_total
        return max(MIN_READ_SIZE, min(READ_SIZE, room))

    def start(self, pump: Pump) -> None:
        """A new TCP connection: run its life in a task of its own (kept, so it is not collected)."""
        task = asyncio.get_running_loop().create_task(self.handle(pump))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, pump: Pump) -> None:
        """The life of one TCP connection: handshake, messages, close."""
        host, port = pump.transport.get_extra_info("peername")[:2]
        name = f"{host}:{port}"
        try:
            try:
                connection = await asyncio.wait_for(self._handshake(pump, name), self.handshake_timeout)
            except TimeoutError:
                log.info("%s dropped: no complete handshake within %.1fs", name, self.handshake_timeout)
                return
            if connection is None:
                return
            pump.attach(connection)
            client = Client(connection, pump, name)
            self.clients.add(client)
            log.info("%s connected (%d clients%s)", name, len(self.clients),
                     ", permessage-deflate" if connection.deflate else "")
            keepalive = (asyncio.create_task(self._keepalive(client))
                         if self.limits.ping_interval else None)
            try:
                await self._serve_messages(client)
            finally:
                if keepalive is not None:
                    keepalive.cancel()
                self.clients.discard(client)
                self.buffered_total -= client.counted
                # handle_now's closure holds the client, which holds the pump: a cycle that
                # would keep the decoder's buffer (up to --max-size) alive until the cyclic
                # GC ran. Measured: 50 clients closed for the budget held 30+ MiB more.
                pump.handle_now = None
                pump.attach(None)
            if not pump.transport.is_closing():
                await self._finish_close(pump)
        except (ConnectionError, OSError) as error:
            log.info("%s connection lost: %s", name, error)
        except asyncio.CancelledError:
            # Server shutdown cancels every handler. The task ends here on purpose: Python 3.11's
            # start_server logs a cancelled handler task as an "Exception in callback" traceback.
            pass
        finally:
            pump.transport.close()
            pump.discard_unread()

    async def _handshake(self, pump: Pump, name: str) -> WebSocketConnection | None:
        """Read and answer the opening handshake; the open connection, or None if refused."""
        head = await pump.read_head(MAX_HEADER_BYTES)
        if head is None:
            return None  # the peer went away before finishing its request
        try:
            if not head or len(head) > MAX_HEADER_BYTES:
                raise HandshakeError(431, f"request head larger than {MAX_HEADER_BYTES} bytes")
            request = validate_client_request(head[:-4])
        except HandshakeError as error:
            log.info("%s handshake refused: %s", name, error)
            pump.write(build_error_response(error))
            await pump.drain()
            return None
        # RFC 7692: accept the first permessage-deflate offer we can honour, or none.
        accepted = None
        if self.deflate is not None:
            accepted = accept_offer(request.headers.get("sec-websocket-extensions"), self.deflate)
        extensions, codec = accepted if accepted is not None else (None, None)
        pump.write(build_server_response(request, extensions))
        await pump.drain()
        return WebSocketConnection(Role.SERVER, max_size=self.max_size, deflate=codec)

    async def _serve_messages(self, client: Client) -> None:
        connection, pump = client.connection, client.pump
        pump.handle_now = lambda: self._handle(client, b"") and self._nothing_to_await(client)
        while True:
            data = await self._read(client)
            if data is None:
                return
            if not self._handle(client, data):
                return
            await pump.drain()  # back-pressure: a client that does not read waits alone
            if connection.state is State.CLOSED or pump.transport.is_closing():
                return

    def _handle(self, client: Client, data: bytes) -> bool:
        """Parse `data` (and what the decoder holds), act on each event, flush our answers.
        False when the client was closed for going over the memory budget."""
        for event in client.connection.receive_data(data):
            kind = type(event)
            if kind is Message:
                self._on_message(client, event.data)
            elif kind is Pong:
                self._on_pong(client, event.payload)
            elif kind is ConnectionFailed:
                log.info("%s failed: close %d (%s)", client.name, event.code, event.reason)
            elif kind is CloseReceived:
                log.info("%s closed: code %d %r", client.name, event.code, event.reason)
        client.flush()  # our answers: echoes, pongs, the close frame
        return self._within_budget(client)

    @staticmethod
    def _nothing_to_await(client: Client) -> bool:
        """Still open, our answers went out without filling the transport's buffer, and no frame
        is half-received (the coroutine, parked without a read timeout, must arm one)?"""
        pump = client.pump
        return (client.connection.state is State.OPEN and not pump.transport.is_closing()
                and pump.writable() and not client.connection.buffered_bytes())

    async def _read(self, client: Client) -> bytes | None:
        """The next bytes from the client (b"": parse what its decoder holds); None once it is
        gone or was dropped for stalling.

        Between messages a client may stay silent (keepalive watches it); in the middle of one
        it has `read_timeout` seconds to send more, or it is holding our buffer hostage. More
        means any byte: bytes that only extend a frame do not wake us, so the deadline counts
        from the pump's last reception, and a timeout re-checks it before giving up.
        """
        pump, timeout = client.pump, self.limits.read_timeout
        loop = asyncio.get_running_loop()
        while True:
            # From when we start waiting, or the last byte if later: bytes may have stopped
            # coming while *we* were not reading (back-pressure), which is no stall of theirs.
            waiting_since = loop.time()
            try:
                if timeout is None or not client.connection.buffered_bytes():
                    data = await pump.read()
                else:
                    async with asyncio.timeout_at(max(waiting_since, pump.last_received) + timeout):
                        data = await pump.read()
                break
            except TimeoutError:
                if loop.time() >= pump.last_received + timeout:
                    log.info("%s dropped: a frame stalled for %.1fs (read timeout)", client.name, timeout)
                    client.fail(CloseCode.POLICY_VIOLATION, "read timeout")
                    return None
        if data is None:
            if not pump.transport.is_closing():
                log.info("%s vanished without a close frame (1006)", client.name)
            return None
        return data

    def _within_budget(self, client: Client) -> bool:
        """Recount this client's share of the global budget; over the budget, close the biggest.

        Choice: the client holding the most memory goes (1013 Try Again Later), not the one that
        happened to ask last, so a few greedy clients cannot get small, polite ones refused. The
        count is refreshed after every read, so the budget is exceeded by at most one read.
        """
        share = client.buffered()
        self.buffered_total += share - client.counted
        client.counted = share
        budget = self.limits.max_buffered
        while budget is not None and self.buffered_total > budget and self.clients:
            biggest = max(self.clients, key=lambda each: each.counted)
            log.info("%s closed: holds %d bytes, all clients %d > --max-buffered %d (1013)",
                     biggest.name, biggest.counted, self.buffered_total, budget)
            biggest.fail(CloseCode.TRY_AGAIN_LATER, "server memory budget exceeded")
            self.clients.discard(biggest)
            self.buffered_total -= biggest.counted
            biggest.counted = 0
            if biggest is client:
                return False
        return True

    async def _keepalive(self, client: Client) -> None:
        """Ping every `ping_interval`; no pong within `ping_timeout` closes with 1011.

        TCP alone never notices a peer that vanished without a FIN (a cable pulled, a NAT entry
        expired): writes succeed into the kernel buffer for minutes. An unanswered ping does.
        """
        interval, timeout = self.limits.ping_interval, self.limits.ping_timeout
        while client.connection.state is State.OPEN:
            await asyncio.sleep(interval)
            if client.connection.state is not State.OPEN:
                return
            payload = os.urandom(4)
            client.pings[payload] = asyncio.get_running_loop().time()
            client.pong_seen.clear()
            client.connection.send_ping(payload)
            client.flush()
            try:
                async with asyncio.timeout(timeout):
                    while payload in client.pings:
                        await client.pong_seen.wait()
                        client.pong_seen.clear()
            except TimeoutError:
                log.info("%s closed: no pong within %.1fs (1011)", client.name, timeout)
                client.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                return

    def _on_pong(self, client: Client, payload: bytes) -> None:
        sent = client.pings.pop(payload, None)
        if sent is not None:
            # §5.5.3: a pong answers the most recent ping; earlier ones are answered too.
            client.latency = asyncio.get_running_loop().time() - sent
            client.pings.clear()
            client.pong_seen.set()

    def _on_message(self, sender: Client, data: str | bytes) -> None:
        # Only an OPEN connection may still send data: nothing may follow our close frame (§5.5.1),
        # and a broadcast can find other clients mid-close.
        if self.mode == "echo":
            if sender.connection.state is State.OPEN:
                sender.connection.send(data)
            return
        for client in list(self.clients):
            if client.connection.state is not State.OPEN:
                continue
            client.connection.send(data)
            client.flush()
            if client is not sender and client.backlog() > self.limits.max_send_queue:
                # Without this a client that stops reading makes us buffer every broadcast forever.
                log.info("%s dropped: %d bytes of broadcasts unread", client.name, client.backlog())
                client.pump.transport.abort()

    def say_goodbye(self) -> None:
        """On shutdown, tell every client why (§7.4.1: 1001 going away) instead of just vanishing."""
        for client in list(self.clients):
            if client.connection.state is State.OPEN:
                client.connection.send_close(CloseCode.GOING_AWAY, "server shutting down")
                client.flush()

    async def shut_down(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Send 1001 to every client, give them `timeout` seconds to answer, then cut the rest."""
        self.say_goodbye()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.clients and loop.time() < deadline:
            await asyncio.sleep(0.05)  # each handler leaves `clients` once the close handshake ends
        for client in list(self.clients):
            client.pump.transport.abort()

    async def _finish_close(self, pump: Pump) -> None:
        """§7.1.1: the server closes TCP first. Half-close, then wait briefly for the peer's EOF.

        Closing outright while unread bytes sit in our receive buffer makes the kernel send RST,
        which can destroy the close frame before the peer reads it; draining avoids that.
        """
        with contextlib.suppress(OSError):
            if pump.transport.can_write_eof():
                pump.transport.write_eof()
        pump.attach(None)  # what still comes is read and dropped, never parsed
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                while await pump.read() is not None:
                    pass


async def serve(host: str, port: int, server: WebSocketServer,
                ready: asyncio.Event | None = None) -> None:
    """Listen until cancelled (Ctrl-C or SIGTERM)."""
    try:
        listener = await asyncio.get_running_loop().create_server(lambda: Pump(server), host, port)
    except OSError as error:  # port in use, not allowed, not an address here: one line, not a traceback
        raise cli.bind_error(error, host, port) from None
    log.info("listening on ws://%s:%d (mode=%s, max message %d bytes, ping every %ss, "
             "max buffered %s bytes)", host, port, server.mode, server.max_size,
             server.limits.ping_interval, server.limits.max_buffered)
    if ready is not None:
        ready.set()
    async with listener:  # create_server is already accepting connections
        try:
            await asyncio.get_running_loop().create_future()  # serve until cancelled
        finally:
            # Not serve_forever(): from Python 3.12.1, a cancelled serve_forever() and the exit of
            # `async with` wait for every connection to end, and clients only end once they have
            # our close frame. So say goodbye first, and bound the wait.
            await server.shut_down()


def build_parser() -> argparse.ArgumentParser:
    # Limits must be > 0: 0 bytes would refuse every message, 0 s every handshake.
    parser = cli.ArgumentParser(prog="python -m WebSockets.server",
                                description="RFC 6455 WebSocket server written from scratch "
                                            "(echo or broadcast).")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=cli.port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--mode", choices=("echo", "broadcast"), default="echo",
                        help="echo each message to its sender, or send it to every client")
    parser.add_argument("--max-size", type=cli.bytes_size, default=DEFAULT_MAX_SIZE,
                        help="largest message accepted (after inflating), e.g. 1048576 or 32MiB; "
                             "larger closes with 1009 (default 1 MiB)")
    parser.add_argument("--handshake-timeout", type=cli.positive_float, default=HANDSHAKE_TIMEOUT,
                        help=f"seconds to complete the opening handshake (default {HANDSHAKE_TIMEOUT})")
    defaults = Limits()
    parser.add_argument("--ping-interval", type=cli.non_negative_float, default=defaults.ping_interval,
                        help="seconds between keepalive pings; 0 turns them off (default 20)")
    parser.add_argument("--ping-timeout", type=cli.positive_float, default=defaults.ping_timeout,
                        help="seconds to answer a ping before we close with 1011 (default 20)")
    parser.add_argument("--read-timeout", type=cli.positive_float, default=defaults.read_timeout,
                        help="seconds a half-received message may stall before we drop the client "
                             "(default 30)")
    parser.add_argument("--max-buffered", type=cli.bytes_size, default=defaults.max_buffered,
                        help="bytes of message data held for all clients together; over it the "
                             "client holding the most is closed with 1013 (default 256MiB)")
    parser.add_argument("--max-send-queue", type=cli.bytes_size, default=defaults.max_send_queue,
                        help="broadcast: unsent bytes one client may have queued before it is "
                             "dropped (default 8MiB)")
    parser.add_argument("--compression", choices=("deflate", "none"), default="deflate",
                        help="accept permessage-deflate (RFC 7692) when a client offers it (default), "
                             "or decline it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s server %(message)s")
    limits = Limits(max_size=args.max_size, handshake_timeout=args.handshake_timeout,
                    ping_interval=args.ping_interval or None, ping_timeout=args.ping_timeout,
                    read_timeout=args.read_timeout, max_buffered=args.max_buffered,
                    max_send_queue=args.max_send_queue)
    server = WebSocketServer(args.mode, limits, DEFAULT_DEFLATE if args.compression == "deflate" else None)

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(args.host, args.port, server)

    try:
        asyncio.run(run())  # Ctrl-C and SIGTERM end it normally (exit 0), after saying goodbye
    except KeyboardInterrupt:  # Ctrl-C before the loop could turn it into a graceful stop
        log.info("stopped")
        raise  # cli.run: exit status 130
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
