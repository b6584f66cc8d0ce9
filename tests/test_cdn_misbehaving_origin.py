"""A misbehaving origin cannot make the edge serve one URL's body under another URL (issue 13).

The origin here (tests.cdn_helpers, ROGUE_RESPONSES) writes raw bytes: 1xx before the final
response, a second response after the framed one, CR/LF/NUL inside header values, status 000,
Content-Length together with Transfer-Encoding. After each, the connection it answered on is
"desynchronised" (it answers every later request on it with POISON), exactly what a client that
reused it would read. For each case the edge's client gets the right final response or a 502, and
the next request for another URL gets its own body, both on the MISS and on the HIT after it.
"""

from __future__ import annotations

import gzip
import itertools
import socket

import pytest

from tests.cdn_helpers import (
    own_body,
    raw_exchange,
    read_responses,
    request,
    start_edge,
    start_rogue_origin,
)

_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def edge():
    """One edge in front of the misbehaving origin, shared by every case (each uses fresh paths)."""
    origin, url = start_rogue_origin()
    child, port = start_edge(url)
    yield port
    child.stop()
    origin.stop()


def fresh(name: str) -> str:
    return f"/{name}/{next(_numbers)}"


def assert_next_url_gets_its_own_body(port: int) -> None:
    """The connection the bad response came on must not answer this request, MISS or HIT."""
    path = fresh("ok")
    miss = request(port, path)
    assert (miss.status, miss.body, miss.x_cache) == (200, own_body(path, 1), "MISS")
    hit = request(port, path)
    assert (hit.status, hit.body, hit.x_cache) == (200, own_body(path, 1), "HIT")


def test_interim_responses_are_relayed_and_the_final_one_is_the_answer(edge):
    path = fresh("interim")
    with socket.create_connection(("127.0.0.1", edge), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        responses = read_responses(sock)
        # RFC 9110 §15.2: a proxy MUST forward 1xx responses; the final 200 follows them.
        assert [status for status, _, _ in responses] == [100, 103, 200]
        assert responses[1][1]["link"] == "</style.css>; rel=preload; as=style"
        assert responses[2][2] == b"the final answer after two interim responses"
        assert responses[2][1]["x-cache"] == "MISS"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        (status, headers, body), = read_responses(sock)  # from the cache: no 1xx replayed
        assert (status, headers["x-cache"], body) == (200, "HIT",
                                                      b"the final answer after two interim responses")
    assert_next_url_gets_its_own_body(edge)


def test_no_interim_response_reaches_an_http_1_0_client(edge):
    path = fresh("interim")
    with socket.create_connection(("127.0.0.1", edge), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        responses = read_responses(sock)
    assert [status for status, _, _ in responses] == [200]  # RFC 9110 §15.2: never 1xx to HTTP/1.0
    assert_next_url_gets_its_own_body(edge)


def test_bytes_after_the_framed_body_are_not_the_next_response(edge):
    path = fresh("extra")
    reply = request(edge, path)
    assert (reply.status, reply.body) == (200, b"hello")
    assert_next_url_gets_its_own_body(edge)
    assert request(edge, path).body == b"hello"


def test_content_length_with_transfer_encoding_is_relayed_by_chunks_never_stored_never_reused(edge):
    path = fresh("clte")
    for _ in range(2):
        reply = request(edge, path)
        # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which is not forwarded.
        assert (reply.status, reply.body, reply.x_cache) == (200, b"hello", "BYPASS")
        assert "content-length" not in reply.headers
        assert_next_url_gets_its_own_body(edge)


@pytest.mark.parametrize("name", ["lf-in-value", "cr-in-value", "nul-in-value", "folded", "vt-length",
                                  "status-000", "status-600", "lf-in-reason", "chunk-ext-lf",
                                  "switching", "te-gzip-chunked"])
def test_a_malformed_origin_response_is_a_502_and_poisons_nothing(edge, name):
    path = fresh(name)
    for _ in range(2):  # and it was not stored either: the second request gets a 502 too
        reply = request(edge, path)
        assert reply.status == 502, (reply.status, reply.raw_headers, reply.body)
        assert "set-cookie" not in reply.headers and b"POISON" not in reply.body
        assert_next_url_gets_its_own_body(edge)


def test_a_transfer_coding_other_than_chunked_is_read_to_the_close_and_passed_on(edge):
    """RFC 9112 §6.3: the body of `Transfer-Encoding: gzip` ends when the origin closes; the edge
    relays it with its coding (re-chunked for an HTTP/1.1 client), never stores it, never reuses
    the connection."""
    path = fresh("te-gzip")
    for _ in range(2):
        # (http.client cannot read "gzip, chunked": it only knows "chunked" alone)
        raw = raw_exchange(edge, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head, _, chunked_body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nX-Cache: BYPASS" in head
        assert b"\r\nTransfer-Encoding: gzip, chunked" in head
        assert gzip.decompress(dechunk(chunked_body)) == b"coded body"
        assert_next_url_gets_its_own_body(edge)
    with socket.create_connection(("127.0.0.1", edge), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        (status, _, _), = read_responses(sock)
    assert status == 502  # HTTP/1.0 has no Transfer-Encoding to carry it


def dechunk(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2:]


def test_a_cached_204_is_replayed_without_content_length(edge):
    """RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204 — not on the MISS that relays
    the origin's (which sent one), not on the HIT that replays the stored one."""
    path = fresh("no-content")
    for expected in ("MISS", "HIT"):
        raw = raw_exchange(edge, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 204 ") and f"\r\nX-Cache: {expected}".encode() in head, head
        assert b"content-length" not in head.lower() and body == b""


def test_identity_is_not_a_transfer_coding_to_pass_on(edge):
    """RFC 9112 removed `identity`: the edge drops it, so the client sees a plain body framed by
    the edge (never "identity, chunked", which no client can decode)."""
    path = fresh("te-identity")
    raw = raw_exchange(edge, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"identity" not in head.lower(), head
    if b"\r\nTransfer-Encoding: chunked" in head:
        rest = dechunk(rest)
    assert rest == b"plain body to the close"
    assert_next_url_gets_its_own_body(edge)
