"""The same interactive line client with the `websockets` library (its threading API).

    python -m WebSockets.lib_client ws://127.0.0.1:8765

`websockets.sync.client.connect` does what `client.py` does by hand, plus TLS (wss://),
proxies, compression, keepalive pings and redirects.
"""

from __future__ import annotations

import sys
import threading

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from common import cli


def print_messages(websocket: ClientConnection) -> None:
    try:
        for message in websocket:
            shown = message if isinstance(message, str) else f"<{len(message)} bytes> {message[:32]!r}"
            print(f"< {shown}", flush=True)
    except ConnectionClosed:
        pass
    print(f"connection closed: code {websocket.close_code} {websocket.close_reason!r}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m WebSockets.lib_client",
                                description="Interactive WebSocket client using the websockets library.")
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8765", help="ws:// or wss:// URL")
    args = parser.parse_args(argv)
    try:
        with connect(args.url, compression="deflate", proxy=None) as websocket:
            print(f"connected to {args.url}; type lines to send, Ctrl-D to close", flush=True)
            reader = threading.Thread(target=print_messages, args=(websocket,), daemon=True)
            reader.start()
            for line in sys.stdin:
                websocket.send(line.rstrip("\n"))
        reader.join(timeout=5)
    except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI) as error:
        raise cli.UsageError(f"{args.url}: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
