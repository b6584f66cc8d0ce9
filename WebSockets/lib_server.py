"""The same echo/broadcast server with the `websockets` library: the production way, in a page.

    python -m WebSockets.lib_server [--host 127.0.0.1] [--port 8766] [--mode echo|broadcast]
                                    [--max-size BYTES] [--deflate]

Everything `server.py` does by hand (handshake, framing, fragments, UTF-8, close codes, limits,
back-pressure) is inside `websockets.asyncio.server.serve`. Compression (permessage-deflate) is
off by default so the benchmark compares like with like: our server does not implement it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve

log = logging.getLogger("WebSockets.lib_server")


def make_handler(mode: str):
    clients: set[ServerConnection] = set()

    async def echo(websocket: ServerConnection) -> None:
        async for message in websocket:
            await websocket.send(message)

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
    async with serve(make_handler(mode), host, port, max_size=max_size,
                     compression="deflate" if deflate else None, ping_interval=None) as server:
        log.info("listening on ws://%s:%d (websockets, mode=%s)", host, port, mode)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, server.close)
        await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Echo/broadcast WebSocket server using the websockets library.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--mode", choices=("echo", "broadcast"), default="echo")
    parser.add_argument("--max-size", type=int, default=1 << 20, help="largest message in bytes (1 MiB)")
    parser.add_argument("--deflate", action="store_true", help="negotiate permessage-deflate compression")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s lib_server %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.host, args.port, args.mode, args.max_size, args.deflate))
    log.info("stopped")


if __name__ == "__main__":
    main()
