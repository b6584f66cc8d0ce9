"""A real HTTP server on loopback that answers every request after a fixed delay (default 50 ms).

It stands in for the slow network service (a database, an API) of the I/O-bound experiment. While a
client waits for the answer, its thread is blocked in a socket read: CPython releases the GIL around
that system call, so other threads run in the meantime. The server is the stdlib's
ThreadingHTTPServer, one thread per request, so it can answer many waiting clients at once; its own
"work" is a sleep, which also releases the GIL, so the server never slows the clients down.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOOPBACK = "127.0.0.1"


class SlowHandler(BaseHTTPRequestHandler):
    """GET anything -> 200 "ok" after `server.delay` seconds."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        time.sleep(self.server.delay)  # type: ignore[attr-defined]
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # one log line per request would drown the experiment's table


class SlowHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many workers connect at once; the default backlog of 5 is too small

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.delay = delay
        super().__init__((host, port), SlowHandler)


@contextmanager
def slow_http_server(delay: float = 0.05, host: str = LOOPBACK, port: int = 0) -> Iterator[str]:
    """Run a SlowHTTPServer in a background thread; yield its URL; shut it down on exit.

    Port 0 lets the kernel choose a free port at bind time, so there is no window in which another
    program could take it.
    """
    server = SlowHTTPServer(host, port, delay)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fetch(url: str, timeout: float = 30.0) -> bytes:
    """One blocking HTTP GET; returns the body."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def fetch_many(url: str, count: int) -> int:
    """`count` GETs one after another (one task's share of the requests); returns how many said ok."""
    return sum(fetch(url) == b"ok" for _ in range(count))
