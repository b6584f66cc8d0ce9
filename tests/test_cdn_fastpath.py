"""The hit path without a coroutine (cdn_server.EdgeConnection / Edge.answer_hit): fresh hits are
answered as their bytes arrive; anything else hands the connection to the general path. These tests
mix both on one connection and check that nothing changes for the client: pipelined requests are
answered in order, Connection: close and a half-close end the connection after the answers, and a
bad request after some hits still gets its specific error."""

from __future__ import annotations

import contextlib
import random
import socket
import time

import pytest

from tests.cdn_helpers import TIMEOUT, UniquePaths, edge_stats, request, start_edge

# `origin` and `edge` (module-scoped, one pair per file) come from tests/cdn_fixtures.py.

paths = UniquePaths()


def cached(origin, edge, stem: str) -> str:
    """A path whose response (body 'stem n=1') is stored in the edge."""
    path = paths(stem)
    origin.script(path, [("Cache-Control", "max-age=600")], body=f"{stem} n={{n}}")
    assert request(edge, path).x_cache == "MISS"
    return path


def exchange(port: int, wire: bytes, half_close: bool = False) -> list[tuple[int, dict, bytes]]:
    """Send `wire` at once, read every response until the edge closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(wire)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return split_responses(data)


def split_responses(data: bytes) -> list[tuple[int, dict, bytes]]:
    responses = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {name.lower(): value.strip() for name, _, value in
                  (line.partition(":") for line in lines[1:])}
        length = int(fields.get("content-length", "0"))
        responses.append((int(lines[0].split(" ")[1]), fields, data[:length]))
        data = data[length:]
    return responses


def get(path: str, *extra: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{e}\r\n" for e in extra) + "\r\n").encode()


def test_pipelined_hits_misses_and_a_post_are_answered_in_order(origin, edge):
    hit, other = cached(origin, edge, "hit"), cached(origin, edge, "other")
    cold = paths("cold")
    origin.script(cold, [("Cache-Control", "max-age=600")], body="cold n={n}")
    post = paths("post")
    origin.script(post, [("Cache-Control", "no-store")], body="posted")
    wire = (get(hit) + get(other) + get(cold) + get(hit)
            + f"POST {post} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".encode()
            + get(other, "Connection: close"))
    replies = exchange(edge, wire)
    assert [(status, fields["x-cache"], body) for status, fields, body in replies] == [
        (200, "HIT", b"hit n=1"), (200, "HIT", b"other n=1"), (200, "MISS", b"cold n=1"),
        (200, "HIT", b"hit n=1"), (200, "BYPASS", b"posted"), (200, "HIT", b"other n=1")]


def test_hits_whose_heads_arrive_in_random_pieces_are_answered_in_order(origin, edge):
    """The fast path answers a head only once all of it has arrived, keeps the start of the next
    one, and answers several heads that arrive together in order (seeded random cut points)."""
    first, second = cached(origin, edge, "pieces-a"), cached(origin, edge, "pieces-b")
    wire = (get(first) + get(second)) * 10 + get(first, "Connection: close")
    rng = random.Random(16)
    with socket.create_connection(("127.0.0.1", edge), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        at = 0
        while at < len(wire):
            step = rng.choice([1, 2, 7, 30, 90, 200])
            sock.sendall(wire[at:at + step])
            at += step
            time.sleep(0.001)  # let most pieces arrive apart: this is what the test is about
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    replies = split_responses(data)
    assert [(fields["x-cache"], body) for _, fields, body in replies] == \
        [("HIT", b"pieces-a n=1"), ("HIT", b"pieces-b n=1")] * 10 + [("HIT", b"pieces-a n=1")]


def test_connection_close_on_a_hit_ends_the_connection_after_its_answer(origin, edge):
    hit = cached(origin, edge, "close")
    replies = exchange(edge, get(hit, "Connection: close") + get(hit))
    assert [(status, body) for status, _, body in replies] == [(200, b"close n=1")]
    http10 = exchange(edge, f"GET {hit} HTTP/1.0\r\n\r\n".encode() + get(hit))
    assert [(status, body) for status, _, body in http10] == [(200, b"close n=1")]


def test_a_half_closed_connection_gets_its_answers_then_is_closed(origin, edge):
    hit = cached(origin, edge, "half")
    replies = exchange(edge, get(hit) + get(hit), half_close=True)  # returns only when the edge closes
    assert [(status, body) for status, _, body in replies] == [(200, b"half n=1")] * 2


def test_half_a_request_after_a_hit_then_eof_gets_400(origin, edge):
    hit = cached(origin, edge, "half-request")
    replies = exchange(edge, get(hit) + b"GET / HTTP/1.1\r\nHost: x\r\n", half_close=True)
    assert [status for status, _, _ in replies] == [200, 400]


@pytest.mark.parametrize("bad, status", [
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),                        # bare LF
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),          # two Host fields
    (b"GET / HTTP/1.1\r\n\r\n", 400),                              # no Host
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
])
def test_a_bad_request_after_hits_gets_its_specific_error(origin, edge, bad, status):
    hit = cached(origin, edge, "then-bad")
    replies = exchange(edge, get(hit) + get(hit) + bad)
    assert [s for s, _, _ in replies] == [200, 200, status]


def test_hits_on_the_fast_path_are_counted(origin, edge):
    hit = cached(origin, edge, "counted")
    before = edge_stats(edge)
    exchange(edge, get(hit) * 3 + get(hit, "Connection: close"))
    after = edge_stats(edge)
    assert (after["hits"] - before["hits"], after["requests"] - before["requests"]) == (4, 5)  # + /__stats


def test_the_same_with_uvloop(origin):
    """uvloop's transports are not asyncio's classes: the fast path must not care."""
    pytest.importorskip("uvloop")
    child, port = start_edge(origin.url, "--loop", "uvloop")
    try:
        hit = paths("uvloop")
        origin.script(hit, [("Cache-Control", "max-age=600")], body="uv n={n}")
        replies = exchange(port, get(hit) + get(hit) + get(hit, "Connection: close"))
        assert [(fields["x-cache"], body) for _, fields, body in replies] == [
            ("MISS", b"uv n=1"), ("HIT", b"uv n=1"), ("HIT", b"uv n=1")]
    finally:
        child.stop()


def test_a_client_that_pipelines_hits_and_reads_nothing_is_cut_off(origin):
    """Answers written straight from data_received must not pile up without bound for a client that
    never reads them: past 256 KB unsent, the general path takes over and bounds the wait."""
    child, port = start_edge(origin.url, "--idle-timeout", "1")
    try:
        path = paths("unread")
        origin.script(path, [("Cache-Control", "max-age=600")], body_size=100_000)
        assert request(port, path).x_cache == "MISS"
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            sock.sendall(get(path) * 200)  # 20 MB of answers asked for
            time.sleep(3)  # the scenario itself: reading nothing for longer than the idle timeout
            received = 0
            with contextlib.suppress(ConnectionError):
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
        assert received < 200 * 100_000 // 2
        assert request(port, "/__stats").status == 200
    finally:
        child.stop()


def test_after_a_miss_the_connection_returns_to_the_fast_path(origin, edge):
    """One keep-alive connection, one request at a time: a miss (the general path), then hits,
    which the fast path answers again once the general path has read everything the client sent."""
    hit = cached(origin, edge, "back")
    cold = paths("back-cold")
    origin.script(cold, [("Cache-Control", "max-age=600")], body="cold n={n}")
    before = edge_stats(edge)
    with socket.create_connection(("127.0.0.1", edge), timeout=TIMEOUT) as sock:
        labels = []
        for path in (cold, hit, cold, hit):
            sock.sendall(get(path))
            data = b""
            while not (replies := split_complete(data)):
                data += sock.recv(65536)
            labels.append(replies[0][1]["x-cache"])
    assert labels == ["MISS", "HIT", "HIT", "HIT"]
    after = edge_stats(edge)
    assert after["fast_hits"] - before["fast_hits"] == 3
    # The miss was read and checked on the fast path and handed over parsed, not parsed again.
    assert after["heads_passed_on"] - before["heads_passed_on"] == 1


def split_complete(data: bytes) -> list[tuple[int, dict, bytes]]:
    """The responses in `data`, or [] while the first one is incomplete."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return []
    length = int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:]).get(b"Content-Length", b"0"))
    return split_responses(data) if len(rest) >= length else []


def test_a_kept_whole_answer_still_carries_the_current_age_and_label(origin, edge):
    """A stored response keeps its last GET answer whole (StoredResponse.answer) and sends it again
    to later hits: only within the same second of Age and with the same X-Cache label."""
    path = paths("kept")
    origin.script(path, [("Cache-Control", "max-age=600")], body="kept n={n}")
    first = request(edge, path)
    hits = [request(edge, path) for _ in range(3)]
    time.sleep(2.2)  # the scenario itself: the stored response grows older
    later = request(edge, path)
    head = request(edge, path, method="HEAD")
    assert (first.x_cache, first.headers["age"], first.body) == ("MISS", "0", b"kept n=1")
    assert [(hit.x_cache, hit.body) for hit in hits] == [("HIT", b"kept n=1")] * 3
    assert all(int(hit.headers["age"]) <= 1 for hit in hits)
    assert (later.x_cache, later.body) == ("HIT", b"kept n=1") and int(later.headers["age"]) >= 2
    assert later.headers["date"] == first.headers["date"]  # the origin's Date, replayed as stored
    assert (head.x_cache, head.body, head.headers["content-length"]) == ("HIT", b"", "8")
    assert origin.count(path) == 1
