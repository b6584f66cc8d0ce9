"""A small closed-loop HTTP/1.1 load generator for the benchmark: keep-alive connections, one GET in
flight per connection, latency of every request recorded.

    python -m SimpleCDN.loadgen --port 8000 --path /bench/10k --connections 32 --seconds 3

Why not a library: no C load generator (wrk, ab) is guaranteed to be installed, and measuring ours
and nginx with the *same* client is what makes the ratio meaningful. It prints one JSON line:
{"requests": n, "errors": e, "seconds": s, "latencies_ms": [...]}. The benchmark runs several of
these processes at once so the client is not limited to one core.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from common import cli


async def one_connection(port: int, request: bytes, deadline: float, latencies: list[float],
                         errors: list[int]) -> None:
    """Keep one request in flight until the deadline; reconnect if the server closes the connection."""
    while time.perf_counter() < deadline:
        await one_keep_alive_session(port, request, deadline, latencies, errors)


async def one_keep_alive_session(port: int, request: bytes, deadline: float, latencies: list[float],
                                 errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                end = lower.index(b"\r\n", at + 2)
                length = int(lower[at + 17:end])
            if length:
                await reader.readexactly(length)
            latencies.append((time.perf_counter() - start) * 1000)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(1)
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        errors.append(1)
        print(f"loadgen: connection failed: {exc}", file=sys.stderr)
    finally:
        writer.close()


async def run(port: int, path: str, connections: int, seconds: float) -> dict:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: loadgen\r\n\r\n".encode()
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(one_connection(port, request, deadline, latencies, errors)
                           for _ in range(connections)))
    elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "errors": len(errors), "seconds": elapsed,
            "latencies_ms": [round(value, 4) for value in latencies]}


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m SimpleCDN.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=cli.port, default=8000, help="the server to load (default 8000)")
    parser.add_argument("--path", default="/bench/10k")
    parser.add_argument("--connections", type=cli.positive_int, default=32)
    parser.add_argument("--seconds", type=cli.positive_float, default=3.0)
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(run(args.port, args.path, args.connections, args.seconds))
    except OSError as exc:
        raise cli.UsageError(f"cannot reach 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
