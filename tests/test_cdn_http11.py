"""The HTTP/1.1 layer alone (parse_head never fails with anything but HttpError) and the live edge
under seeded random garbage: every connection gets a 4xx/5xx or is closed, the edge keeps serving."""

from __future__ import annotations

import random
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from SimpleCDN.http11 import HttpError, parse_content_length, parse_head
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


def test_parse_head_keeps_repeated_fields_in_order():
    _, _, _, headers = parse_head(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\na: 3\r\n\r\n")
    assert headers == [("A", "1"), ("B", "2"), ("a", "3")]


@pytest.mark.parametrize("value, expected", [("5", 5), ("5, 5", 5), ("5, 6", None), ("-1", None),
                                             ("0x10", None), ("", None), ("9" * 30, None),
                                             ("\xb2", None)])
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
