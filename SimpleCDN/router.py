"""Request routing across edges: send each client to the nearest *healthy* edge.

    python -m SimpleCDN.router --port 8080 \\
        --edge tokyo=http://127.0.0.1:8001@5 --edge frankfurt=http://127.0.0.1:8002@30

Real CDNs steer with GeoDNS or anycast: the client's resolver is answered with the address of a
close edge, and an edge that fails its health checks is withdrawn. This router plays that role with
HTTP redirects so it is visible: `GET /any/path` answers `307 Location: <edge>/any/path`, and
`GET /__route` says which edge it would pick now. Distances are configured (milliseconds of
simulated round trip); health comes from polling each edge's `/__stats` in a background thread.

`choose_edge` is the pure decision; `HealthChecker` and the HTTP server are the I/O around it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from common import cli


class NoHealthyEdge(RuntimeError):
    """Every edge failed its health check: the router answers 503 until one recovers."""


@dataclass
class EdgeInfo:
    name: str
    url: str
    distance_ms: float
    healthy: bool = True


def choose_edge(edges: Sequence[EdgeInfo]) -> EdgeInfo:
    """The healthy edge with the smallest distance (ties: the first configured)."""
    healthy = [edge for edge in edges if edge.healthy]
    if not healthy:
        raise NoHealthyEdge("no healthy edge: every health check failed; start or repair an edge")
    return min(healthy, key=lambda edge: edge.distance_ms)


def parse_edge(spec: str) -> EdgeInfo:
    """An argparse type: 'name=http://host:port@distance_ms' -> EdgeInfo."""
    try:
        name, rest = spec.split("=", 1)
        url, distance_text = rest.rsplit("@", 1)
        parts = urlsplit(url)
        distance = float(distance_text)
        if not name or parts.scheme not in ("http", "https") or not parts.hostname or not (
                0 <= distance < float("inf")):
            raise ValueError("not an http(s) URL and a distance >= 0")
        return EdgeInfo(name, url.rstrip("/"), distance)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected name=http://127.0.0.1:8001@25 (distance in ms, >= 0), got {spec!r}") from None


class HealthChecker:
    """Polls every edge's /__stats; `failures_to_down` consecutive failures mark it unhealthy,
    one success marks it healthy again (fast recovery, cautious removal)."""

    def __init__(self, edges: Sequence[EdgeInfo], interval: float = 0.5, timeout: float = 1.0,
                 failures_to_down: int = 2):
        self.edges = list(edges)
        self.interval = interval
        self.timeout = timeout
        self.failures_to_down = failures_to_down
        self._failures = {edge.name: 0 for edge in edges}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-checker", daemon=True)

    def start(self) -> HealthChecker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def check_once(self) -> None:
        for edge in self.edges:
            ok = self._probe(edge)
            self._failures[edge.name] = 0 if ok else self._failures[edge.name] + 1
            was_healthy = edge.healthy
            edge.healthy = ok or self._failures[edge.name] < self.failures_to_down
            if was_healthy != edge.healthy:
                print(f"[router] edge {edge.name} is now {'healthy' if edge.healthy else 'DOWN'}", flush=True)

    def _probe(self, edge: EdgeInfo) -> bool:
        try:
            with urllib.request.urlopen(f"{edge.url}/__stats", timeout=self.timeout) as response:
                return response.status == 200
        except (OSError, http.client.HTTPException):  # refused, timed out, or not HTTP at all
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check_once()


def make_server(host: str, port: int, edges: Sequence[EdgeInfo]) -> ThreadingHTTPServer:
    class RouterHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
            pass

        def do_GET(self) -> None:
            try:
                edge = choose_edge(edges)
            except NoHealthyEdge as exc:
                self._reply(503, {"error": str(exc)})
                return
            if self.path.split("?")[0] == "/__route":
                self._reply(200, {"edge": edge.name, "url": edge.url, "distance_ms": edge.distance_ms,
                                  "healthy": [e.name for e in edges if e.healthy]})
                return
            self.send_response(307)
            self.send_header("Location", edge.url + self.path)
            self.send_header("X-Edge", edge.name)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, port), RouterHandler)
    server.daemon_threads = True
    return server


DEFAULT_EDGE = "edge=http://127.0.0.1:8000@5"


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m SimpleCDN.router", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=cli.port, default=8080)
    parser.add_argument("--edge", type=parse_edge, action="append",
                        help="name=http://127.0.0.1:8001@DISTANCE_MS (repeat for each edge; "
                             f"default: {DEFAULT_EDGE}, the edge's own default port)")
    parser.add_argument("--check-interval", type=cli.positive_float, default=0.5,
                        help="seconds between health checks")
    args = parser.parse_args(argv)
    args.edge = args.edge or [parse_edge(DEFAULT_EDGE)]
    try:
        server = make_server(args.host, args.port, args.edge)
    except OSError as exc:
        raise cli.bind_error(exc, args.host, args.port) from None
    checker = HealthChecker(args.edge, interval=args.check_interval)
    checker.check_once()
    checker.start()
    print(f"[router] on http://{args.host}:{args.port}: " + ", ".join(
        f"{e.name}@{e.distance_ms:g}ms" for e in args.edge), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:  # Ctrl-C and SIGTERM arrive here as KeyboardInterrupt (cli.run)
        checker.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
