"""Helpers for the SimpleCDN tests: a scriptable origin process, an edge process, raw HTTP calls.

The origin is the real `python -m SimpleCDN.origin` on loopback; each test scripts the exact
response headers of its own path (`Origin.script`) and reads the origin's per-path request counter
(`Origin.count`) as the oracle for "did the edge go to the origin?".
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
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
