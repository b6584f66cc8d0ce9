"""Adversarial review of the SimpleCDN framing fixes (issue 13): variants the first tests leave out.

An origin written for these tests (a raw-socket server in a thread on a free loopback port) writes
exactly the bytes a broken or hostile origin would: 1xx responses that carry a Content-Length, a
long train of 103s, 204/304 responses with a body, `Transfer-Encoding` lists the edge must refuse,
chunk sizes that a lenient parser would read differently (`+5`, `0x5`, ` 5`, 17 digits), a body cut
short of its Content-Length. After each such answer its connection is "desynchronised": it answers
every later request on it with POISON, exactly what an edge that reused the connection would read.
For every case the edge's client gets the right answer or a 502, and the next request for another
URL gets its own body, on the MISS and on the HIT after it.

The client side: smuggling shapes (CL.TE, TE.CL, whitespace before the colon, TE lists, chunk
sizes) get a prompt 400/501, the connection is closed, nothing reaches the origin, and the edge
keeps serving.
"""

from __future__ import annotations

import itertools
import socket
import threading

import pytest

from common import free_port
from tests.cdn_helpers import raw_exchange, read_responses, request, start_edge

CACHEABLE = b"Cache-Control: max-age=300\r\n"


def _response(body: bytes, head: bytes = b"HTTP/1.1 200 OK\r\n", fields: bytes = CACHEABLE) -> bytes:
    return head + fields + b"Content-Length: %d\r\n\r\n" % len(body) + body


POISON = _response(b"POISON: not the answer to this request")
_CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\n" + CACHEABLE + b"Transfer-Encoding: chunked\r\n\r\n"

# name (first path segment) -> (raw answer, is the connection desynchronised afterwards?,
# close the connection after sending?)
SCRIPTS: dict[str, tuple[bytes, bool, bool]] = {
    # A 1xx has no content whatever its fields say (RFC 9110 §15.2, RFC 9112 §6.3 (1)): the bytes
    # after its blank line are the next response's status line, not 5 bytes of body.
    "interim-cl": (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 5\r\n\r\n"
                   + _response(b"final after a 103 with Content-Length"), False, False),
    "interim-16": (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" * 16
                   + _response(b"final after sixteen 103s"), False, False),
    "interim-flood": (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" * 40
                      + _response(b"final after forty 103s"), True, False),
    # 101 to a request that asked for no upgrade: after it the bytes are another protocol's.
    "switching-close": (b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"
                        + POISON, True, False),
    # 204 and 304 never have content (RFC 9112 §6.3 (1)); here "hello" and a whole second response
    # follow, which must not become the next request's answer.
    "no-content-body": (b"HTTP/1.1 204 No Content\r\n" + CACHEABLE + b"Content-Length: 5\r\n\r\nhello"
                        + POISON, True, False),
    "not-modified-body": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello" + POISON,
                          True, False),
    # Transfer-Encoding lists: chunked must be the final coding, applied once (RFC 9112 §6.1, §7).
    "te-chunked-identity": (b"HTTP/1.1 200 OK\r\n" + CACHEABLE
                            + b"Transfer-Encoding: chunked, identity\r\n\r\n"
                            + b"5\r\nhello\r\n0\r\n\r\n" + POISON, True, False),
    "te-repeated": (b"HTTP/1.1 200 OK\r\n" + CACHEABLE + b"Transfer-Encoding: chunked\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + POISON, True, False),
    # Chunk sizes are 1*HEXDIG (RFC 9112 §7.1); int(x, 16) would take "+5", "0x5" and " 5".
    "chunk-plus": (_CHUNKED_HEAD + b"+5\r\nhello\r\n0\r\n\r\n" + POISON, True, False),
    "chunk-0x": (_CHUNKED_HEAD + b"0x5\r\nhello\r\n0\r\n\r\n" + POISON, True, False),
    "chunk-space": (_CHUNKED_HEAD + b" 5\r\nhello\r\n0\r\n\r\n" + POISON, True, False),
    "chunk-overflow": (_CHUNKED_HEAD + b"10000000000000005\r\nhello\r\n0\r\n\r\n" + POISON, True, False),
    "chunk-underscore": (_CHUNKED_HEAD + b"0_5\r\nhello\r\n0\r\n\r\n" + POISON, True, False),
    # A body shorter than its Content-Length, then the close: truncated, never a cached answer.
    "short-body": (b"HTTP/1.1 200 OK\r\n" + CACHEABLE + b"Content-Length: 100\r\n\r\nonly ten b", True, True),
    # obs-fold in an origin header (RFC 9112 §5.2: a proxy MUST reject with 502 or unfold).
    "fold-tab": (b"HTTP/1.1 200 OK\r\n" + CACHEABLE + b"X-A: a\r\n\tSet-Cookie: pwned=1\r\n"
                 b"Content-Length: 1\r\n\r\nx", True, False),
}


class RogueOrigin:
    """Answers `/<name>/...` with SCRIPTS[name]; any other path with its own body, `own(path, n)`.

    `connection_of[path]` records which TCP connection (numbered in accept order) carried the
    request for `path`, to tell a reused pooled connection from a new one.
    """

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.counts: dict[str, int] = {}
        self.connection_of: dict[str, int] = {}
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._numbers = itertools.count(1)
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def own(path: str, n: int) -> bytes:
        return f"own body of {path} (fetch {n})".encode()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection, next(self._numbers)), daemon=True).start()

    def _serve(self, connection: socket.socket, number: int) -> None:
        buffer, desynchronised = b"", False
        with connection:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = connection.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                method, path = head.decode("latin-1").split(" ", 2)[:2]
                for line in head.split(b"\r\n")[1:]:  # skip a request body (the edge sends Content-Length)
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        buffer = buffer[int(value):]
                with self._lock:
                    self.counts[path] = n = self.counts.get(path, 0) + 1
                    self.connection_of[path] = number
                if desynchronised:
                    connection.sendall(POISON)
                    continue
                name = path.split("/")[1]
                close = False
                if name in SCRIPTS:
                    wire, desynchronised, close = SCRIPTS[name]
                elif method == "HEAD":  # the head a GET would get: Content-Length and no body
                    wire = _response(self.own(path, n))[:-len(self.own(path, n))]
                else:
                    wire = _response(self.own(path, n))
                connection.sendall(wire)  # one send: the extra bytes arrive with the framed ones
                if close:
                    return

    def stop(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def rogue():
    origin = RogueOrigin()
    yield origin
    origin.stop()


@pytest.fixture(scope="module")
def edge(rogue):
    child, port = start_edge(rogue.url, "--origin-timeout", "5", "--idle-timeout", "5")
    yield port
    child.stop()


_numbers = itertools.count(1)


def fresh(name: str) -> str:
    return f"/{name}/{next(_numbers)}"


def assert_next_url_gets_its_own_body(port: int) -> None:
    path = fresh("ok")
    miss = request(port, path)
    assert (miss.status, miss.body, miss.x_cache) == (200, RogueOrigin.own(path, 1), "MISS")
    hit = request(port, path)
    assert (hit.status, hit.body, hit.x_cache) == (200, RogueOrigin.own(path, 1), "HIT")


def get_all(port: int, path: str) -> list[tuple[int, dict[str, str], bytes]]:
    """GET `path` on a fresh raw connection: every response, 1xx included (http.client would take
    a 103 for the final answer: it skips only 100 Continue)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return read_responses(sock)


# ------------------------------------------------------------------------------ origin side

def test_a_1xx_with_content_length_has_no_body_and_is_relayed_without_that_field(edge):
    path = fresh("interim-cl")
    responses = get_all(edge, path)
    assert [status for status, _, _ in responses] == [103, 200]
    # RFC 9110 §8.6: a server MUST NOT send Content-Length in a 1xx; a client that believed it would
    # take the first 5 bytes of the 200's status line for the 103's body.
    assert "content-length" not in responses[0][1]
    assert responses[1][2] == b"final after a 103 with Content-Length"
    assert_next_url_gets_its_own_body(edge)


def test_sixteen_103s_are_relayed_and_the_final_answer_cached(edge):
    path = fresh("interim-16")
    responses = get_all(edge, path)
    assert [status for status, _, _ in responses] == [103] * 16 + [200]
    assert responses[-1][2] == b"final after sixteen 103s"
    hit = request(edge, path)
    assert (hit.status, hit.x_cache, hit.body) == (200, "HIT", b"final after sixteen 103s")
    assert_next_url_gets_its_own_body(edge)


@pytest.mark.parametrize("name", ["interim-flood", "switching-close", "te-chunked-identity",
                                  "te-repeated", "chunk-plus", "chunk-0x", "chunk-space",
                                  "chunk-overflow", "chunk-underscore", "fold-tab"])
def test_untrustworthy_framing_from_the_origin_is_a_502_that_poisons_nothing(edge, name):
    path = fresh(name)
    for _ in range(2):  # not stored either: the second request is a 502 again
        *interim, (status, headers, body) = get_all(edge, path)
        assert status == 502, (interim, status, headers, body)
        assert "set-cookie" not in headers and b"POISON" not in body
        assert_next_url_gets_its_own_body(edge)


@pytest.mark.parametrize("name, status", [("no-content-body", 204), ("not-modified-body", 304)])
def test_a_204_or_304_has_no_body_whatever_follows_it(edge, name, status):
    path = fresh(name)
    with socket.create_connection(("127.0.0.1", edge), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        (got, headers, _), = read_responses(sock)
        assert got == status
        if status == 204:
            # RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204.
            assert "content-length" not in headers, headers
        # The same client connection is still in step: its next answer is its own.
        other = fresh("ok")
        sock.sendall(f"GET {other} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        (got, _, body), = read_responses(sock)
        assert (got, body) == (200, RogueOrigin.own(other, 1))
    assert_next_url_gets_its_own_body(edge)


def test_a_head_response_with_content_length_leaves_the_connection_reusable(edge, rogue):
    path = fresh("ok")
    reply = request(edge, path, "HEAD")
    assert (reply.status, reply.body) == (200, b"")
    assert reply.headers["content-length"] == str(len(RogueOrigin.own(path, 1)))
    nxt = fresh("ok")
    assert request(edge, nxt).body == RogueOrigin.own(nxt, 1)
    # The edge did not wait for a body that a HEAD response never has, and did not discard a
    # healthy connection: the next request went out on the same one.
    assert rogue.connection_of[nxt] == rogue.connection_of[path]
    assert_next_url_gets_its_own_body(edge)


def test_a_body_cut_short_of_its_content_length_is_a_502_never_cached(edge, rogue):
    path = fresh("short-body")
    for fetch in (1, 2):
        reply = request(edge, path)
        assert reply.status == 502 and b"only ten b" not in reply.body
        assert rogue.counts[path] == fetch  # not served from the store the second time
    assert_next_url_gets_its_own_body(edge)


# ------------------------------------------------------------------------------ client side

SMUGGLED = b"GET /smuggled/1 HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("wire, expected", [
    # RFC 9112 §5.1: whitespace between a field name and the colon MUST get a 400.
    (b"GET /ok/a HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", 400),
    (b"POST /ok/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, 400),
    (b"POST /ok/c HTTP/1.1\r\nHost: x\r\nContent-Length\t: 3\r\n\r\nabc", 400),
    # obs-fold (RFC 9112 §5.2), by SP and by HTAB.
    (b"GET /ok/d HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n", 400),
    (b"POST /ok/e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    # CL.TE and TE.CL (RFC 9112 §6.3: both present -> may reject; this edge does).
    (b"POST /ok/f HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + SMUGGLED, 400),
    (b"POST /ok/g HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
     b"5c\r\n" + SMUGGLED + b"\r\n0\r\n\r\n", 400),
    (b"POST /ok/h HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n" + SMUGGLED, 400),
    (b"POST /ok/i HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400),
    # Transfer-Encoding lists this edge cannot frame: 501 (RFC 9112 §6.1).
    (b"POST /ok/j HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 501),
    (b"POST /ok/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n" + SMUGGLED, 501),
    (b"POST /ok/l HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 501),
    # Chunk sizes: 1*HEXDIG only.
    (b"POST /ok/m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST /ok/n HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST /ok/o HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST /ok/p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"10000000000000005\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST /ok/q HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0_5\r\nhello\r\n0\r\n\r\n", 400),
])
def test_client_smuggling_shapes_get_a_prompt_error_and_reach_nothing(edge, rogue, wire, expected):
    raw = raw_exchange(edge, wire, timeout=4)  # the edge closes after an error: no idle wait
    assert raw.startswith(b"HTTP/1.1 %d " % expected), raw[:120]
    assert raw.count(b"HTTP/1.1 ") == 1, raw  # one answer, nothing for a smuggled request
    assert rogue.counts.get("/smuggled/1", 0) == 0
    path = wire.split(b" ")[1].decode()
    assert rogue.counts.get(path, 0) == 0
    assert_next_url_gets_its_own_body(edge)
