"""Helpers for the SimpleCDN tests: a scriptable origin process, an edge process, raw HTTP calls,
and a misbehaving origin.

The origin is the real `python -m SimpleCDN.origin` on loopback; each test scripts the exact
response headers of its own path (`Origin.script`) and reads the origin's per-path request counter
(`Origin.count`) as the oracle for "did the edge go to the origin?".

The misbehaving origin (`python -m tests.cdn_helpers --port N`, started by `start_rogue_origin`) is
a raw-socket server that writes exactly the bytes a broken or hostile origin would: 1xx before the
final response, bytes after it, CR/LF/NUL in header values, status 000, Content-Length together with
Transfer-Encoding. See ROGUE_RESPONSES.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import itertools
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import quote

from common import free_port, spawn_module

TIMEOUT = 30.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]       # lower-case names; repeated fields joined with ", "
    raw_headers: list[tuple[str, str]]
    body: bytes

    @property
    def x_cache(self) -> str | None:
        return self.headers.get("x-cache")


def request(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> Reply:
    """One request on a fresh connection (http.client), returning the whole response."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.putrequest(method, path, skip_host="Host" in (headers or {}),
                              skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        raw = response.getheaders()
        merged: dict[str, str] = {}
        for name, value in raw:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return Reply(response.status, merged, raw, data)
    finally:
        connection.close()


def raw_exchange(port: int, data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def http_date(offset_seconds: float = 0.0) -> str:
    return formatdate(time.time() + offset_seconds, usegmt=True)


class Origin:
    """A running SimpleCDN.origin process with script/count helpers."""

    def __init__(self, child, port: int):
        self.child = child
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def script(self, path: str, headers: list[tuple[str, str]] | None = None, body: str = "body {n}",
               status: int = 200, **options) -> None:
        payload = {"status": status, "headers": headers or [], "body": body, **options}
        reply = request(self.port, f"/__script?path={quote(path, safe='')}", "PUT",
                        body=json.dumps(payload).encode())
        assert reply.status == 200, reply.body

    def stats(self) -> dict:
        return json.loads(request(self.port, "/__stats").body)

    def count(self, path: str, method: str = "GET") -> int:
        return self.stats()["methods"].get(f"{method} {path}", 0)

    def not_modified(self, path: str) -> int:
        return self.stats()["not_modified"].get(path, 0)

    def wait_for_count(self, path: str, expected: int, timeout: float = TIMEOUT) -> int:
        """Poll the counter until it reaches `expected` (for background work such as SWR)."""
        deadline = time.monotonic() + timeout
        while (value := self.count(path)) < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        return value


def start_origin(spawn=None, latency_ms: float = 0) -> Origin:
    port = free_port()
    args = ("--port", str(port), "--latency-ms", str(latency_ms))
    child = spawn("SimpleCDN.origin", *args, port=port) if spawn else \
        spawn_module("SimpleCDN.origin", *args, port=port, timeout=30)
    return Origin(child, port)


def start_edge(origin_url: str, *extra: str, spawn=None):
    """Start an edge for `origin_url`; returns (child, port)."""
    port = free_port()
    args = ("--port", str(port), "--origin", origin_url, *extra)
    child = spawn("SimpleCDN.cdn_server", *args, port=port) if spawn else \
        spawn_module("SimpleCDN.cdn_server", *args, port=port, timeout=30)
    return child, port


def edge_stats(port: int) -> dict:
    return json.loads(request(port, "/__stats").body)


_PATH_NUMBERS = itertools.count(1)


class UniquePaths:
    """Hands out a fresh path per call so tests sharing one edge never see each other's cache."""

    def __call__(self, stem: str) -> str:
        return f"/t/{stem}-{next(_PATH_NUMBERS)}"


# ------------------------------------------------------------------------- the misbehaving origin

def _response(body: bytes, *fields: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", *fields, f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def own_body(path: str, n: int) -> bytes:
    """What the rogue origin answers for an ordinary path: names the path and the fetch count."""
    return f"own body of {path} (fetch {n})".encode()


POISON = _response(b"POISON: not the answer to this request", "Cache-Control: max-age=300")
CACHEABLE = "Cache-Control: max-age=300"

# name (first path segment) -> (raw bytes of the answer, does the origin consider the connection
# desynchronised afterwards?). A desynchronised connection answers every later request with POISON:
# that is what a client that reused it would read.
ROGUE_RESPONSES: dict[str, tuple[bytes, bool]] = {
    # 1xx before the final response (RFC 9110 §15.2): the final 200 is the answer.
    "interim": (b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
                + _response(b"the final answer after two interim responses", CACHEABLE), False),
    "switching": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
                  + _response(b"after an unsolicited 101", CACHEABLE), True),
    # More bytes than the framing says: a whole second response after a 5-byte body.
    "extra": (_response(b"hello", CACHEABLE) + POISON, False),
    # Both framings (RFC 9112 §6.3): chunked says "hello", Content-Length says 3 bytes.
    "clte": (b"HTTP/1.1 200 OK\r\n" + CACHEABLE.encode() + b"\r\nContent-Length: 3\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", True),
    # CR / LF / NUL inside a header value (RFC 9110 §5.5): a hidden Set-Cookie line.
    "lf-in-value": (_response(b"x", CACHEABLE, "X-A: a\nSet-Cookie: pwned=1"), True),
    "cr-in-value": (_response(b"x", CACHEABLE, "X-A: a\rSet-Cookie: pwned=1"), True),
    "nul-in-value": (_response(b"x", CACHEABLE, "X-A: a\0b"), True),
    "folded": (_response(b"x", CACHEABLE, "X-A: a", " Set-Cookie: pwned=1"), True),
    "vt-length": (b"HTTP/1.1 200 OK\r\n" + CACHEABLE.encode() + b"\r\nContent-Length: 1\x0b\r\n\r\nx",
                  True),
    "status-000": (_response(b"x", CACHEABLE, status="000 Zero"), True),
    "status-600": (_response(b"x", CACHEABLE, status="600 Beyond"), True),
    "lf-in-reason": (_response(b"x", CACHEABLE, status="200 OK\nSet-Cookie: pwned=1"), True),
    # Transfer codings (RFC 9112 §6.3): not chunked-final -> the body ends at the close; chunked
    # after a coding the edge cannot decode -> untrustworthy framing.
    "te-gzip": (b"HTTP/1.1 200 OK\r\n" + CACHEABLE.encode() + b"\r\nTransfer-Encoding: gzip\r\n\r\n"
                + gzip.compress(b"coded body", mtime=0), True),
    "te-gzip-chunked": (b"HTTP/1.1 200 OK\r\n" + CACHEABLE.encode() + b"\r\nTransfer-Encoding: gzip, chunked"
                        b"\r\n\r\n0\r\n\r\n", True),
    # RFC 2616's "identity" coding, removed by RFC 9112: the body ends at the close.
    "te-identity": (b"HTTP/1.1 200 OK\r\n" + CACHEABLE.encode() + b"\r\nTransfer-Encoding: identity"
                    b"\r\n\r\nplain body to the close", True),
    # A cacheable 204 sent with "Content-Length: 0", which a server MUST NOT send (RFC 9110 §8.6).
    "no-content": (b"HTTP/1.1 204 No Content\r\n" + CACHEABLE.encode() + b"\r\nContent-Length: 0\r\n\r\n",
                   False),
    # A bare LF inside a chunk extension (RFC 9112 §7.1.1).
    "chunk-ext-lf": (b"HTTP/1.1 200 OK\r\n" + CACHEABLE.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5;a=b\nc\r\nhello\r\n0\r\n\r\n", True),
}


def _serve_rogue_connection(connection: socket.socket, counts: dict[str, int], lock: threading.Lock):
    desynchronised = False
    buffer = b""
    with connection:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = connection.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")  # the edge sends no body with GET
            path = head.split(b" ", 2)[1].decode("latin-1")
            with lock:
                counts[path] = counts.get(path, 0) + 1
                n = counts[path]
            if desynchronised:
                connection.sendall(POISON)
                continue
            name = path.split("/")[1]
            if name in ROGUE_RESPONSES:
                wire, desynchronised = ROGUE_RESPONSES[name]
            else:
                wire = _response(own_body(path, n), CACHEABLE)
            connection.sendall(wire)  # one send: the extra bytes arrive with the framed ones
            if name in ("te-gzip", "te-identity"):
                return  # its body ends when the connection closes


def serve_rogue_origin(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port))
    counts: dict[str, int] = {}
    lock = threading.Lock()
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=_serve_rogue_connection, args=(connection, counts, lock),
                         daemon=True).start()


def start_rogue_origin(spawn=None) -> tuple[object, str]:
    """Start the misbehaving origin; returns (child, url)."""
    port = free_port()
    args = ("--port", str(port))
    child = spawn("tests.cdn_helpers", *args, port=port) if spawn else \
        spawn_module("tests.cdn_helpers", *args, port=port, timeout=30)
    return child, f"http://127.0.0.1:{port}"


def read_responses(sock: socket.socket) -> list[tuple[int, dict[str, str], bytes]]:
    """The 1xx responses and the final one from a raw socket, framed as RFC 9112 §6.3 says: no
    body for 1xx, 204 and 304 whatever their fields claim; otherwise by Content-Length."""
    buffer, responses = b"", []
    while True:
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed after {responses!r} + {buffer!r}")
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines[1:])}
        length = 0 if status < 200 or status in (204, 304) else int(headers.get("content-length", "0"))
        while len(buffer) < length:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed in the body of {status}: {buffer!r}")
            buffer += data
        responses.append((status, headers, buffer[:length]))
        if status >= 200:
            assert buffer == buffer[:length], f"bytes after the response: {buffer[length:]!r}"
            return responses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.cdn_helpers",
                                     description="A misbehaving origin for the SimpleCDN tests.")
    parser.add_argument("--port", type=int, required=True)
    serve_rogue_origin(parser.parse_args().port)
    sys.exit(0)
