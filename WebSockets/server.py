"""Our WebSocket server (echo or broadcast) on asyncio, on top of the sans-I/O `protocol` module.

    python -m WebSockets.server [--host 127.0.0.1] [--port 8765] [--mode echo|broadcast]
                                [--max-size BYTES] [--handshake-timeout SECONDS]
                                [--compression deflate|none]

Why asyncio and not a thread per client: a WebSocket server holds many long-lived, mostly idle
connections. A coroutine per connection costs a few KiB where a thread costs a stack and a
scheduler slot, and broadcast touches every connection from one thread with no locks. The price
is that nothing may block the event loop, so every wait on a peer is an `await` with a bound:

- a client that never finishes its handshake is dropped after `--handshake-timeout` seconds;
- a client that does not read its echoes only stalls its own coroutine (`await drain()`
  applies back-pressure to that one connection);
- in broadcast mode a client whose unsent backlog passes `SLOW_CLIENT_BACKLOG` is disconnected
  instead of letting its buffer grow without bound;
- a client that breaks the protocol gets a close frame with the right code (1002/1007/1009) and
  only its own connection ends;
- permessage-deflate (RFC 7692) is accepted when offered (`--compression none` declines it); the
  size limit applies to the inflated message, checked while inflating;
- on Ctrl-C or SIGTERM every client gets 1001 "going away" and `CLOSE_TIMEOUT` seconds to answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from .deflate import ServerDeflateConfig, accept_offer
from .protocol import (
    DEFAULT_MAX_SIZE,
    MAX_HEADER_BYTES,
    CloseCode,
    CloseReceived,
    ConnectionFailed,
    HandshakeError,
    Message,
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
READ_SIZE = 256 * 1024
SLOW_CLIENT_BACKLOG = 8 * DEFAULT_MAX_SIZE  # broadcast: bytes queued for one client before we drop it

DEFAULT_DEFLATE = ServerDeflateConfig()  # websockets' defaults: 12-bit windows, context takeover

log = logging.getLogger("WebSockets.server")


class Client:
    """One connected peer: its protocol state machine and its stream writer."""

    def __init__(self, connection: WebSocketConnection, writer: asyncio.StreamWriter, name: str):
        self.connection = connection
        self.writer = writer
        self.name = name

    def flush(self) -> None:
        """Hand the protocol's pending bytes to the transport (non-blocking; drain() waits)."""
        data = self.connection.data_to_send()
        if data:
            self.writer.write(data)

    def backlog(self) -> int:
        return self.writer.transport.get_write_buffer_size()


class WebSocketServer:
    """Accepts connections, runs the handshake, then echoes or broadcasts every message."""

    def __init__(self, mode: str = "echo", max_size: int = DEFAULT_MAX_SIZE,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 deflate: ServerDeflateConfig | None = DEFAULT_DEFLATE):
        if mode not in ("echo", "broadcast"):
            raise ValueError(f"mode must be 'echo' or 'broadcast', not {mode!r}")
        self.mode = mode
        self.max_size = max_size
        self.handshake_timeout = handshake_timeout
        self.deflate = deflate  # None: decline permessage-deflate offers
        self.clients: set[Client] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The life of one TCP connection: handshake, messages, close."""
        host, port = writer.get_extra_info("peername")[:2]
        name = f"{host}:{port}"
        try:
            try:
                connection = await asyncio.wait_for(self._handshake(reader, writer, name),
                                                    self.handshake_timeout)
            except TimeoutError:
                log.info("%s dropped: no complete handshake within %.1fs", name, self.handshake_timeout)
                return
            if connection is None:
                return
            client = Client(connection, writer, name)
            self.clients.add(client)
            log.info("%s connected (%d clients%s)", name, len(self.clients),
                     ", permessage-deflate" if connection.deflate else "")
            try:
                await self._serve_messages(client, reader)
            finally:
                self.clients.discard(client)
            await self._finish_close(reader, writer)
        except (ConnectionError, OSError) as error:
            log.info("%s connection lost: %s", name, error)
        except asyncio.CancelledError:
            # Server shutdown cancels every handler. The task ends here on purpose: Python 3.11's
            # start_server logs a cancelled handler task as an "Exception in callback" traceback.
            pass
        finally:
            writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         name: str) -> WebSocketConnection | None:
        """Read and answer the opening handshake; the open connection, or None if refused."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the peer went away before finishing its request
        except asyncio.LimitOverrunError:
            head = b""
        try:
            if not head or len(head) > MAX_HEADER_BYTES:
                raise HandshakeError(431, f"request head larger than {MAX_HEADER_BYTES} bytes")
            request = validate_client_request(head[:-4])
        except HandshakeError as error:
            log.info("%s handshake refused: %s", name, error)
            writer.write(build_error_response(error))
            await writer.drain()
            return None
        # RFC 7692: accept the first permessage-deflate offer we can honour, or none.
        accepted = None
        if self.deflate is not None:
            accepted = accept_offer(request.headers.get("sec-websocket-extensions"), self.deflate)
        extensions, codec = accepted if accepted is not None else (None, None)
        writer.write(build_server_response(request, extensions))
        await writer.drain()
        return WebSocketConnection(Role.SERVER, max_size=self.max_size, deflate=codec)

    async def _serve_messages(self, client: Client, reader: asyncio.StreamReader) -> None:
        connection = client.connection
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                log.info("%s vanished without a close frame (1006)", client.name)
                return
            for event in connection.receive_data(data):
                if type(event) is Message:
                    self._on_message(client, event.data)
                elif type(event) is ConnectionFailed:
                    log.info("%s failed: close %d (%s)", client.name, event.code, event.reason)
                elif type(event) is CloseReceived:
                    log.info("%s closed: code %d %r", client.name, event.code, event.reason)
            client.flush()  # our answers: echoes, pongs, the close frame
            await client.writer.drain()  # back-pressure: a client that does not read waits alone
            if connection.state is State.CLOSED:
                return

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
            if client is not sender and client.backlog() > SLOW_CLIENT_BACKLOG:
                # Without this a client that stops reading makes us buffer every broadcast forever.
                log.info("%s dropped: %d bytes of broadcasts unread", client.name, client.backlog())
                client.writer.transport.abort()

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
            client.writer.transport.abort()

    async def _finish_close(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """§7.1.1: the server closes TCP first. Half-close, then wait briefly for the peer's EOF.

        Closing outright while unread bytes sit in our receive buffer makes the kernel send RST,
        which can destroy the close frame before the peer reads it; draining avoids that.
        """
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                while await reader.read(READ_SIZE):
                    pass


async def serve(host: str, port: int, server: WebSocketServer,
                ready: asyncio.Event | None = None) -> None:
    """Listen until cancelled (Ctrl-C or SIGTERM)."""
    # `limit` bounds what readuntil() buffers while looking for the end of the handshake (the head
    # itself must fit in MAX_HEADER_BYTES); the reader also pauses the socket at twice this much
    # unread data, so a small value would throttle large messages.
    listener = await asyncio.start_server(server.handle, host, port, limit=READ_SIZE)
    log.info("listening on ws://%s:%d (mode=%s, max message %d bytes)", host, port, server.mode,
             server.max_size)
    if ready is not None:
        ready.set()
    async with listener:  # start_server is already accepting connections
        try:
            await asyncio.get_running_loop().create_future()  # serve until cancelled
        finally:
            # Not serve_forever(): from Python 3.12.1, a cancelled serve_forever() and the exit of
            # `async with` wait for every connection to end, and clients only end once they have
            # our close frame. So say goodbye first, and bound the wait.
            await server.shut_down()


def _positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a number > 0 (0 bytes would refuse every message, 0 s every handshake)."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not value > 0 or value == float("inf"):  # `not >` also refuses NaN
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="RFC 6455 WebSocket server written from scratch "
                                                 "(echo or broadcast).")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--mode", choices=("echo", "broadcast"), default="echo",
                        help="echo each message to its sender, or send it to every client")
    parser.add_argument("--max-size", type=_positive(int), default=DEFAULT_MAX_SIZE,
                        help="largest message accepted, in bytes; larger closes with 1009 (default 1 MiB)")
    parser.add_argument("--handshake-timeout", type=_positive(float), default=HANDSHAKE_TIMEOUT,
                        help=f"seconds to complete the opening handshake (default {HANDSHAKE_TIMEOUT})")
    parser.add_argument("--compression", choices=("deflate", "none"), default="deflate",
                        help="accept permessage-deflate (RFC 7692) when a client offers it (default), "
                             "or decline it")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s server %(message)s")
    server = WebSocketServer(args.mode, args.max_size, args.handshake_timeout,
                             DEFAULT_DEFLATE if args.compression == "deflate" else None)

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(args.host, args.port, server)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    log.info("stopped")


if __name__ == "__main__":
    main()
