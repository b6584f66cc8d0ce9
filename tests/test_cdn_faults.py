"""Network faults between the edge and its origin, through common.faultproxy (issue 19).

The edge is started with the proxy as its origin (edge -> proxy -> origin); the test scripts the
origin directly and breaks the link on cue: a slow link (delay) and a connection cut in the middle
of a response. Invariants: a slow origin is a 504 shared by every coalesced waiter (one origin
request, not a stampede), and the link heals by itself; a cut response is never stored, never served
as if whole, and a stale copy covers for it only where stale-if-error allows.
"""

from __future__ import annotations

import socket

from common.faultproxy import fault_proxy
from tests.cdn_helpers import request, start_edge, start_origin
from tests.test_cdn_edge import concurrent_gets

BIG = 200_000  # bytes: a response the proxy can cut well after its head


def edge_behind(proxy, spawn, *extra: str) -> int:
    host, port = proxy.address
    return start_edge(f"http://{host}:{port}", *extra, spawn=spawn)[1]


def test_a_slow_link_is_one_504_for_all_coalesced_waiters_and_heals(spawn):
    origin = start_origin(spawn, latency_ms=0)
    with fault_proxy(upstream=("127.0.0.1", origin.port)) as proxy:
        edge = edge_behind(proxy, spawn, "--origin-timeout", "1")
        origin.script("/slow", [("Cache-Control", "max-age=100")], body="late {n}")
        proxy.delay(3000)  # every chunk, each way, 3 s late: longer than the edge waits
        replies = concurrent_gets(edge, "/slow", 10)
        assert [r.status for r in replies] == [504] * 10
        assert b"did not answer" in replies[0].body
        assert proxy.stats().connections_accepted == 1  # one origin connection for the ten: coalesced
        proxy.heal()
        recovered = request(edge, "/slow")  # the failed fetch was released: the next one goes out
        assert (recovered.status, recovered.x_cache) == (200, "MISS")
        assert recovered.body.startswith(b"late ")


def test_a_response_cut_mid_body_is_never_stored_nor_served_whole(spawn):
    origin = start_origin(spawn, latency_ms=0)
    with fault_proxy(upstream=("127.0.0.1", origin.port)) as proxy:
        edge = edge_behind(proxy, spawn)
        origin.script("/big", [("Cache-Control", "max-age=100")], body_size=BIG)
        origin.script("/kept", [("Cache-Control", "max-age=10, stale-if-error=3600"), ("Age", "20")],
                      body_size=BIG)
        origin.script("/mine", [("Cache-Control", "private")], body_size=BIG)
        assert request(edge, "/kept").x_cache == "MISS"  # stored, already stale (Age 20 > 10)
        proxy.cut_after(BIG // 4)

        cut = request(edge, "/big")  # storable: the edge reads it all before answering ...
        assert cut.status == 502     # ... so the client gets an honest 502, not 50 KB of 200
        rescued = request(edge, "/kept")  # a cut revalidation: stale-if-error covers it
        assert (rescued.status, rescued.x_cache, len(rescued.body)) == (200, "STALE", BIG)
        streamed = raw_get(edge, "/mine")  # not storable: streamed, so the head has gone out ...
        head, _, body = streamed.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and f"Content-Length: {BIG}".encode() in head
        assert len(body) < BIG       # ... and the edge closes early: the only honest signal left

        proxy.heal()
        whole = request(edge, "/big")
        assert (whole.status, whole.x_cache, len(whole.body)) == (200, "MISS", BIG)  # nothing was kept
        assert request(edge, "/big").x_cache == "HIT"


def raw_get(port: int, path: str) -> bytes:
    """Everything the edge sends for one GET, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
