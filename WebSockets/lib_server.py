"""The same echo/broadcast server with the `websockets` library: the production way, in a page.

    python -m WebSockets.lib_server [--host 127.0.0.1] [--port 8766] [--mode echo|broadcast]
                                    [--max-size BYTES] [--deflate]

Everything `server.py` does by hand (handshake, framing, fragments, UTF-8, close codes, limits,
back-pressure, permessage-deflate) is inside `websockets.asyncio.server.serve`. Compression is off
unless `--deflate`, so the benchmark chooses it explicitly for both servers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from common import cli

log = logging.getLogger("WebSockets.lib_server")


def make_handler(mode: str):
    clients: set[ServerConnection] = set()

    async def echo(websocket: ServerConnection) -> None:
        try:
            async for message in websocket:
                await websocket.send(message)
        except ConnectionClosed:
            pass  # the client closed before its echo went out: nothing left to answer

    async def fan_out(websocket: ServerConnection) -> None:
        clients.add(websocket)
        try:
            async for message in websocket:
                # broadcast() skips connections that are closing or too far behind.
                broadcast(clients, message)
        finally:
            clients.discard(websocket)

    return echo if mode == "echo" else fan_out


async def run(host: str, port: int, mode: str, max_size: int, deflate: bool) -> None:
    try:
        server_context = await serve(make_handler(mode), host, port, max_size=max_size,
                                     compression="deflate" if deflate else None, ping_interval=None)
    except OSError as error:
        raise cli.bind_error(error, host, port) from None
    async with server_context as server:
        log.info("listening on ws://%s:%d (websockets, mode=%s)", host, port, mode)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, server.close)
        await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m WebSockets.lib_server",
                                description="Echo/broadcast WebSocket server using the websockets library.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=cli.port, default=8766, help="port (default 8766)")
    parser.add_argument("--mode", choices=("echo", "broadcast"), default="echo")
    parser.add_argument("--max-size", type=cli.bytes_size, default=1 << 20,
                        help="largest message, e.g. 1048576 or 32MiB (default 1 MiB)")
    parser.add_argument("--deflate", action="store_true", help="negotiate permessage-deflate compression")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s lib_server %(message)s")
    try:
        asyncio.run(run(args.host, args.port, args.mode, args.max_size, args.deflate))
    except KeyboardInterrupt:  # Ctrl-C before the loop could turn it into a graceful stop
        log.info("stopped")
        raise  # cli.run: exit status 130
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
