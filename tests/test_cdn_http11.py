"""The HTTP/1.1 layer alone (parse_head never fails with anything but HttpError) and the live edge
under seeded random garbage: every connection gets a 4xx/5xx or is closed, the edge keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from SimpleCDN.http11 import (
    HttpError,
    OriginError,
    OriginPool,
    parse_content_length,
    parse_head,
    parse_head_by_lines,
    parse_response_head,
    parse_response_head_by_lines,
    parse_simple_head,
    unread_bytes,
)
from tests.cdn_helpers import raw_exchange, request, start_edge, start_origin


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.binary(max_size=300))
def test_parse_head_accepts_or_raises_http_error_only(data):
    try:
        method, target, version, headers = parse_head(data + b"\r\n\r\n")
    except HttpError as exc:
        assert 400 <= exc.status < 600
    else:
        assert version in ("HTTP/1.0", "HTTP/1.1") and method and target


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=200))
def test_parse_response_head_accepts_only_clean_heads_and_raises_value_error_otherwise(data):
    try:
        status, reason, headers = parse_response_head(b"HTTP/1.1 200 OK\r\n" + data + b"\r\n\r\n")
    except ValueError:
        return
    assert status == 200
    for name, value in headers:  # nothing that could split a header line downstream survives
        assert not any(ord(char) < 0x20 and char != "\t" for char in name + value)


@pytest.mark.parametrize("head", [b"HTTP/1.1 000 Zero", b"HTTP/1.1 600 X", b"HTTP/1.1 99 X",
                                  b"HTTP/2 200 OK", b"HTTP/1.1 200 O\nK", b"HTTP/1.1 200 OK\r\nX: a\rb",
                                  b"HTTP/1.1 200 OK\r\nX: a\x00b", b"HTTP/1.1 200 OK\r\nX: a\r\n folded",
                                  b"HTTP/1.1 200 OK\r\nX y: z", b"HTTP/1.1 200 OK\r\nX: a\nSet-Cookie: b",
                                  b"HTTP/1.1 200 OK\r\nX-A\n: v"])
def test_parse_response_head_refuses(head):
    with pytest.raises(ValueError):
        parse_response_head(head + b"\r\n\r\n")


# Heads made of the pieces that decide a parse: tokens, separators, whitespace, controls, bare CR
# and LF, obs-text. Many are valid; the rest fail in every place a head can.
_PIECES = [b"GET", b"HEAD", b"G(T", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 200", b"404",
           b" ", b"  ", b"\t", b"/", b"/a?b=c", b":", b"Host", b"X-A", b"a", b"1", b"\r", b"\n",
           b"\r\n", b"\x00", b"\x0b", b"\x7f", b"\x85", b"\xe9"]
_LINE = st.lists(st.sampled_from(_PIECES), max_size=7).map(b"".join)
_BENIGN = st.lists(st.sampled_from([b"a", b"1", b" ", b"\t", b":", b"/", b",", b"\x85", b"\xe9"]),
                   max_size=6).map(b"".join)
_FIELD = st.tuples(st.sampled_from([b"Host", b"X-A", b"a", b"X y", b"", b" X", b"X\n"]),
                   st.sampled_from([b":", b": ", b" :"]), st.one_of(_BENIGN, _BENIGN, _LINE)).map(b"".join)
_GOOD_FIELD = st.tuples(st.sampled_from([b"Host", b"X-A", b"user-agent"]), st.sampled_from([b":", b": "]),
                        _BENIGN).map(b"".join)
_FIELDS = st.one_of(st.lists(_GOOD_FIELD, max_size=5), st.lists(st.one_of(_FIELD, _LINE), max_size=5))


@settings(max_examples=800, deadline=None, derandomize=True)
@given(st.one_of(st.sampled_from([b"GET /x HTTP/1.1", b"HEAD /a?b=%41\xe9 HTTP/1.0"]), _LINE,
                 st.sampled_from([b"\r\nGET / HTTP/1.1", b"GET /\t HTTP/1.1", b"GET  / HTTP/1.1"])), _FIELDS)
def test_the_one_pass_request_parse_agrees_with_the_line_by_line_one(request_line, fields):
    """parse_simple_head (the fast path's) accepts only heads the strict line-by-line parse accepts,
    and reads them the same; whatever it does not accept is left to that parse."""
    head = b"\r\n".join([request_line, *fields]) + b"\r\n\r\n"
    simple = parse_simple_head(head)
    if simple is not None:
        assert parse_head_by_lines(head) == simple
        assert parse_head(head) == simple


@settings(max_examples=800, deadline=None, derandomize=True)
@given(st.one_of(_LINE, st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 404 Not  Found", b"HTTP/1.1 204 ",
                                         b"HTTP/1.1 200", b"HTTP/1.1 200 \tOK\x85"])), _FIELDS)
def test_the_one_pass_response_parse_agrees_with_the_line_by_line_one(status_line, fields):
    head = b"\r\n".join([status_line, *fields]) + b"\r\n\r\n"
    try:
        expected = parse_response_head_by_lines(head)
    except ValueError:
        expected = None
    try:
        assert parse_response_head(head) == expected
    except ValueError:
        assert expected is None


@pytest.mark.parametrize("head", [b"GET /x HTTP/1.1\r\nHost: a\r\nUser-Agent: b c \t\r\n\r\n",
                                  b"HEAD /a?b=%41 HTTP/1.0\r\n\r\n",
                                  b"GET / HTTP/1.1\r\nX:\r\nY:\xe9\r\n\r\n"])
def test_common_heads_take_the_one_pass_parse(head):
    """The equivalence tests above would pass with a one-pass parse that accepts nothing at all."""
    assert parse_simple_head(head) == parse_head_by_lines(head)


def test_a_field_name_ending_in_a_bare_lf_is_refused():
    """A token check with "$" also matches before a final LF, so "Host<LF>" passed as a name."""
    with pytest.raises(HttpError):
        parse_head(b"GET / HTTP/1.1\r\nHost\n: x\r\n\r\n")
    with pytest.raises(HttpError):
        parse_head_by_lines(b"GET / HTTP/1.1\r\nHost: x\r\nX-A\n: x\r\n\r\n")


def test_parse_response_head_removes_only_optional_whitespace():
    _, _, headers = parse_response_head(b"HTTP/1.1 200 OK\r\nA : \t1 \r\nB:\x852\r\n\r\n")
    assert headers == [("A", "1"), ("B", "\x852")]


def test_parse_head_keeps_repeated_fields_in_order():
    _, _, _, headers = parse_head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\na: 3\r\n\r\n")
    assert headers == [("A", "1"), ("B", "2"), ("a", "3")]


@pytest.mark.parametrize("value, expected", [("5", 5), ("5, 5", 5), ("5, 6", None), ("-1", None),
                                             ("0x10", None), ("", None), ("9" * 30, None),
                                             ("\xb2", None), ("0\x0b", None), ("\x0c5", None),
                                             ("5\x85", None), (" 5\t", 5)])
def test_content_length_parsing(value, expected):
    assert parse_content_length(value) == expected


def test_random_garbage_never_takes_the_edge_down(spawn):
    origin = start_origin(spawn)
    child, port = start_edge(origin.url, spawn=spawn)
    rng = random.Random(8)
    prefixes = [b"", b"GET ", b"GET / HTTP/1.1\r\n", b"POST / HTTP/1.1\r\nContent-Length: 3\r\n"]
    for _ in range(60):
        payload = rng.choice(prefixes) + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
        reply = raw_exchange(port, payload + b"\r\n\r\n", timeout=5)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 "), reply[:60]
        if reply:
            assert int(reply.split(b" ", 2)[1]) in (200, 400, 404, 405, 413, 417, 431, 501, 505)
    assert child.alive()
    assert request(port, "/__stats").status == 200


def test_expect_100_continue_is_answered(spawn):
    origin = start_origin(spawn)
    _, port = start_edge(origin.url, spawn=spawn)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"data")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert b"HTTP/1.1 200 OK" in rest and rest.endswith(b"POST /form ok\n")
    assert origin.count("/form", "POST") == 1


def test_slow_loris_connection_is_closed_after_the_idle_timeout(spawn):
    origin = start_origin(spawn)
    _, port = start_edge(origin.url, "--idle-timeout", "1", spawn=spawn)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
        started = time.monotonic()
        assert sock.recv(100) == b""                      # the edge closed the connection
        assert time.monotonic() - started < 20
    assert request(port, "/__stats").status == 200


def test_a_pooled_connection_on_which_bytes_arrived_while_idle_is_not_reused():
    """The leftover check on release catches bytes that came with the response; this is the other
    half: bytes that arrive after the connection went back to the pool are not the next answer."""

    async def scenario() -> None:
        connections = 0
        released = asyncio.Event()
        late_bytes_sent = asyncio.Event()

        async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            number = connections
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                path = head.split(b" ")[1]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))
                if number == 1:  # then, once it is back in the pool, an unasked second response
                    await released.wait()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
                    await writer.drain()
                    late_bytes_sent.set()
            writer.close()

        server = await asyncio.start_server(origin, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = OriginPool(f"http://127.0.0.1:{port}")
        first = await pool.request("GET", "/first", [])
        assert await first.read_body() == b"/first"
        assert len(pool._idle) == 1  # clean: it went back to the pool
        released.set()
        await late_bytes_sent.wait()
        while not unread_bytes(pool._idle[0].reader):  # until the late bytes have arrived
            await asyncio.sleep(0.01)
        second = await pool.request("GET", "/second", [])
        assert await second.read_body() == b"/second"
        assert connections == 2
        pool.close_idle()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_origin_reads_time_out_and_a_timed_out_connection_is_never_reused():
    """Each origin read has its own timer (OriginConnection.read_within): a stalled body is a
    timeout (504), not a hang; and a connection whose timer fired, even in the same loop turn as
    its read completed, is closed instead of going back to the pool with a failed reader."""

    async def scenario() -> None:
        connections = 0

        async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    if b"/stall" in head:  # the head and half the body, then nothing
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
                    else:
                        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(origin, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = OriginPool(f"http://127.0.0.1:{port}", timeout=0.3)
        stalled = await pool.request("GET", "/stall", [])
        with pytest.raises(OriginError) as caught:
            await stalled.read_body()
        assert caught.value.timeout and pool._idle == []
        answered = await pool.request("GET", "/empty", [])  # a 204: no body read, released at once
        answered.connection._expire()  # its timer's callback, as if it ran in the read's last turn
        answered.release()
        assert pool._idle == []  # closed: pooled, its failed reader would fail the next request
        again = await pool.request("GET", "/empty", [])
        assert again.status == 204 and connections == 3
        again.release()
        pool.close_idle()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
