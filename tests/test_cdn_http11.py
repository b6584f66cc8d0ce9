"""The HTTP/1.1 layer alone (parse_head never fails with anything but HttpError) and the live edge
under seeded random garbage: every connection gets a 4xx/5xx or is closed, the edge keeps serving."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from SimpleCDN.http11 import (
    HttpError,
    OriginPool,
    parse_content_length,
    parse_head,
    parse_response_head,
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
                                  b"HTTP/1.1 200 OK\r\nX y: z", b"HTTP/1.1 200 OK\r\nX: a\nSet-Cookie: b"])
def test_parse_response_head_refuses(head):
    with pytest.raises(ValueError):
        parse_response_head(head + b"\r\n\r\n")


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
