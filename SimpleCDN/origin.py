"""The bundled origin: a small site whose resources carry the caching headers a CDN meets in practice.

    python -m SimpleCDN.origin --port 9000 --latency-ms 100

It is the offline default origin of the edge, and the test origin: `GET /__stats` counts the requests
it received per path (the oracle for "did the edge go to the origin?"), and tests *script* a path's
response with `PUT /__script?path=/x` (JSON: status, headers, body, body_size, delay_ms, chunked,
ranges: answer one `Range: bytes=a-b` / `a-` / `-n` with a 206, as an origin serving files does).

Resources (what a learner should see the edge do with each):
  /static/app.js   Cache-Control: public, max-age=31536000, immutable   -> HIT after the first MISS
  /static/style.css  max-age=86400 + Last-Modified                     -> HIT
  /index.html      no-cache + ETag                                       -> REVALIDATED (304) each time
  /account         private                                               -> BYPASS, never stored
  /api/time        no-store                                              -> BYPASS
  /vary            max-age=60, Vary: Accept-Encoding (gzip or identity)  -> one variant per encoding
  /news            max-age=2, stale-while-revalidate=30, stale-if-error=600
  /expires         Expires one minute after Date, no Cache-Control       -> HIT
  /login           Set-Cookie + max-age=60 (not public)                  -> BYPASS (cookie policy)
  /large.bin       12 MB, max-age=3600                                   -> streamed through, not stored
  /slow            1 s extra delay, max-age=60                           -> shows coalescing
  /bench/10k       10 KB, max-age=3600                                   -> the benchmark object
  /objects/<n>     1-4 KB, max-age=300                                   -> the Zipf workload
Threads (one per connection, HTTP/1.1 keep-alive) are plenty here: the origin is the slow part on
purpose (--latency-ms), and the edge in front of it is what is being measured.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import ssl
import sys
import threading
import time
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from common import cli

LARGE_FILE_BYTES = 12 * 2**20
STARTED = time.time()


def http_date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha1(body).hexdigest()[:16] + '"'


class OriginState:
    """Request counters and scripted responses, shared by the handler threads under one lock."""

    def __init__(self, latency_ms: float):
        self.latency_ms = latency_ms
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.method_counts: Counter[str] = Counter()
        self.not_modified: Counter[str] = Counter()  # 304s sent: proof the edge revalidated
        self.scripts: dict[str, dict] = {}
        self.large = (bytes(range(256)) * (LARGE_FILE_BYTES // 256 + 1))[:LARGE_FILE_BYTES]

    def count(self, method: str, target: str) -> int:
        with self.lock:
            self.counts[target] += 1
            self.method_counts[f"{method} {target}"] += 1
            return self.counts[target]

    def snapshot(self) -> dict:
        with self.lock:
            return {"total": sum(self.counts.values()), "paths": dict(self.counts),
                    "methods": dict(self.method_counts), "not_modified": dict(self.not_modified)}


class OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the edge reuses its connections to us
    server_version = "SimpleOrigin/1.0"
    # Headers and body go out in two writes; with Nagle on, the second waits for the peer's delayed
    # ACK (~40 ms on Linux) and every miss would look 40 ms slower than the origin really is.
    disable_nagle_algorithm = True
    state: OriginState  # set on the subclass made by make_server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        pass  # one line per request would drown the demo; /__stats is the record

    # ---------------------------------------------------------------------------------- dispatch

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def __getattr__(self, name: str):
        """Any other method (M-SEARCH, BREW ...) is dispatched too: the edge forwards methods it
        does not know, and the tests need an origin that answers them."""
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        request_body = self._read_request_body()
        path = urlsplit(self.path).path
        if path.startswith("/__"):
            self._admin(path, request_body)
            return
        hits = self.state.count(self.command, self.path)
        delay = self.state.latency_ms / 1000
        script = self.state.scripts.get(self.path)
        if script is not None:
            time.sleep(delay + script.get("delay_ms", 0) / 1000)
            self._send_script(script, hits)
            return
        time.sleep(delay)
        if self.command not in ("GET", "HEAD"):
            self._send(200, [("Content-Type", "text/plain")], f"{self.command} {self.path} ok\n".encode())
            return
        self._send_site_resource(path, hits)

    def _read_request_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length and length.isdigit() else b""

    # ----------------------------------------------------------------------------------- admin

    def _admin(self, path: str, body: bytes) -> None:
        if path == "/__stats":
            self._send_json(self.state.snapshot())
        elif path == "/__reset" and self.command == "POST":
            with self.state.lock:
                self.state.counts.clear()
                self.state.method_counts.clear()
                self.state.not_modified.clear()
                self.state.scripts.clear()
            self._send_json({"reset": True})
        elif path == "/__script" and self.command == "PUT":
            target = parse_qs(urlsplit(self.path).query).get("path", [""])[0]
            try:
                script = json.loads(body or b"{}")
            except ValueError:
                self._send(400, [("Content-Type", "text/plain")], b"script body must be JSON\n")
                return
            if not target.startswith("/"):
                self._send(400, [("Content-Type", "text/plain")], b"say which path: ?path=/x\n")
                return
            with self.state.lock:
                self.state.scripts[target] = script
            self._send_json({"scripted": target})
        else:
            self._send(404, [("Content-Type", "text/plain")], b"unknown admin path\n")

    def _send_json(self, payload: dict) -> None:
        self._send(200, [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
                   json.dumps(payload).encode())

    # ------------------------------------------------------------------------------- responses

    def _send_script(self, script: dict, hits: int) -> None:
        """A test-controlled response. '{n}' in the body becomes this path's request count, so a
        test can tell a fresh origin answer from a cached one."""
        status = int(script.get("status", 200))
        headers = [(str(k), str(v)) for k, v in script.get("headers", [])]
        headers = [(k, http_date(time.time()) if v == "{now}" else v) for k, v in headers]
        if "body_size" in script:
            body = (b"x" * int(script["body_size"]))
        elif script.get("echo_headers"):
            body = json.dumps({"target": self.path, "headers": list(self.headers.items())}).encode()
        else:
            body = str(script.get("body", "")).replace("{n}", str(hits)).encode()
        if not any(k.lower() == "date" for k, _ in headers):
            headers.append(("Date", http_date(time.time())))
        if status == 200 and self._not_modified(headers):
            self._send(304, [(k, v) for k, v in headers if k.lower() != "content-type"], b"")
            return
        if status == 200 and script.get("ranges"):
            part = self._requested_range(len(body))
            if part is not None:
                first, last = part
                headers.append(("Content-Range", f"bytes {first}-{last}/{len(body)}"))
                status, body = 206, body[first:last + 1]
        self._send(status, headers, body, chunked=bool(script.get("chunked")))

    def _requested_range(self, length: int) -> tuple[int, int] | None:
        """The one satisfiable byte range the request asks for (first, last), else None (whole body)."""
        match = re.fullmatch(r"bytes=([0-9]*)-([0-9]*)", self.headers.get("Range") or "")
        if not match or match.groups() == ("", ""):
            return None
        first, last = match.groups()
        if not first:  # a suffix: the last n bytes
            return (max(0, length - int(last)), length - 1) if int(last) and length else None
        end = length - 1 if not last else min(int(last), length - 1)
        return (int(first), end) if int(first) <= end else None

    def _send_site_resource(self, path: str, hits: int) -> None:
        now = time.time()
        day = 86_400
        if path in ("/", "/index.html"):
            body = b"<!doctype html><title>Home</title><h1>Welcome</h1>\n"
            self._conditional(body, [("Content-Type", "text/html"), ("Cache-Control", "no-cache"),
                                     ("ETag", etag_of(body))])
        elif path == "/static/app.js":
            body = b"console.log('app v1');\n" * 40
            self._conditional(body, [("Content-Type", "application/javascript"), ("ETag", etag_of(body)),
                                     ("Cache-Control", "public, max-age=31536000, immutable")])
        elif path == "/static/style.css":
            body = b"body { font-family: sans-serif; }\n" * 30
            self._conditional(body, [("Content-Type", "text/css"), ("Cache-Control", "max-age=86400"),
                                     ("Last-Modified", http_date(STARTED - 30 * day))])
        elif path == "/account":
            self._send(200, [("Content-Type", "text/html"), ("Cache-Control", "private, max-age=60")],
                       b"<p>Your account: alice</p>\n")
        elif path == "/api/time":
            self._send(200, [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
                       json.dumps({"time": now}).encode())
        elif path == "/vary":
            self._send_vary()
        elif path == "/news":
            self._send(200, [("Content-Type", "text/plain"),
                             ("Cache-Control", "max-age=2, stale-while-revalidate=30, stale-if-error=600")],
                       f"news edition {hits}\n".encode())
        elif path == "/expires":
            self._send(200, [("Content-Type", "text/plain"), ("Date", http_date(now)),
                             ("Expires", http_date(now + 60))], b"expires in a minute\n")
        elif path == "/login":
            self._send(200, [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60"),
                             ("Set-Cookie", f"session=user{hits}; HttpOnly; Path=/")], b"logged in\n")
        elif path == "/large.bin":
            self._send(200, [("Content-Type", "application/octet-stream"),
                             ("Cache-Control", "max-age=3600")], self.state.large)
        elif path == "/slow":
            time.sleep(1.0)
            self._send(200, [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")],
                       b"worth the wait\n")
        elif path == "/bench/10k":
            self._send(200, [("Content-Type", "application/octet-stream"), ("Cache-Control", "max-age=3600")],
                       b"b" * 10_240)
        elif path.startswith("/objects/") and path[9:].isdigit():
            number = int(path[9:])
            body = (f"object {number} ".encode() * 400)[: 1000 + (number * 997) % 3000]
            self._send(200, [("Content-Type", "text/plain"), ("Cache-Control", "max-age=300")], body)
        else:
            self._send(404, [("Content-Type", "text/plain")], f"no resource at {path}\n".encode())

    def _send_vary(self) -> None:
        body = b"this page varies on Accept-Encoding. " * 50
        headers = [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60"),
                   ("Vary", "Accept-Encoding")]
        if "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        self._send(200, headers, body)

    def _conditional(self, body: bytes, headers: list[tuple[str, str]]) -> None:
        headers.append(("Date", http_date(time.time())))
        if self._not_modified(headers):
            self._send(304, [(k, v) for k, v in headers if k.lower() != "content-type"], b"")
        else:
            self._send(200, headers, body)

    def _not_modified(self, headers: list[tuple[str, str]]) -> bool:
        """RFC 9110 §13.1.2 / §13.1.3 for the edge's revalidation requests."""
        fields = {k.lower(): v for k, v in headers}
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            etag = fields.get("etag")
            return etag is not None and etag.removeprefix("W/") in {
                tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        since = self.headers.get("If-Modified-Since")
        return since is not None and fields.get("last-modified") == since

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, chunked: bool = False) -> None:
        if status == 304:
            with self.state.lock:
                self.state.not_modified[self.path] += 1
        # send_response_only: plain send_response would add its own Date, and a test that scripts an
        # old Date must get exactly one, its own.
        self.send_response_only(status)
        self.send_header("Server", self.server_version)
        if not any(name.lower() == "date" for name, _ in headers):
            self.send_header("Date", http_date(time.time()))
        for name, value in headers:
            self.send_header(name, value)
        if status != 304:
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD" or status in (204, 304):
            return
        if chunked:
            for start in range(0, len(body), 65536):
                piece = body[start:start + 65536]
                self.wfile.write(f"{len(piece):X}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)


def make_server(host: str, port: int, latency_ms: float) -> ThreadingHTTPServer:
    handler = type("BoundOriginHandler", (OriginHandler,), {"state": OriginState(latency_ms)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m SimpleCDN.origin", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=cli.port, default=9000)
    parser.add_argument("--latency-ms", type=cli.non_negative_float, default=100.0,
                        help="added to every response: the origin is far away and slow")
    parser.add_argument("--tls-cert", help="PEM certificate: serve https instead of http")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    args = parser.parse_args(argv)
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise cli.UsageError(f"--tls-cert/--tls-key: cannot load {args.tls_cert}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        server = make_server(args.host, args.port, args.latency_ms)
    except OSError as exc:
        raise cli.bind_error(exc, args.host, args.port) from None
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if args.tls_cert else "http"
    print(f"[origin] serving on {scheme}://{args.host}:{args.port} (latency {args.latency_ms:g} ms)",
          flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:  # Ctrl-C and SIGTERM arrive here as KeyboardInterrupt (cli.run)
        server.server_close()
        print("[origin] stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
