"""Adversarial review of the WebSocket handshake (issue 13): the 426, header injection, size, pacing.

A 426 MUST carry Upgrade (RFC 9110 §15.5.22) and, for a version mismatch, the version we speak
(RFC 6455 §4.4). A value with a bare CR or LF inside (RFC 9110 §5.5) must never come back as a
header line of its own in the answer. An oversize head gets 431; a head that arrives one byte at a
time is still a valid handshake. Throughout, a well-behaved client on the same server stays served.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket

import pytest
from websockets.sync.client import connect as lib_connect

from common import free_port, spawn_module
from tests.ws_helpers import GUID, http_exchange, raw_request


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    child = spawn_module("WebSockets.server", "--port", str(port), "--handshake-timeout", "5",
                         port=port, log_dir=tmp_path_factory.mktemp("ws-attacks"))
    yield port
    child.stop()


@pytest.fixture(scope="module")
def bystander(server):
    with lib_connect(f"ws://127.0.0.1:{server}/", compression=None, proxy=None, ping_interval=None) as ws:
        yield ws


def assert_bystander_served(bystander) -> None:
    bystander.send("still here?")
    assert bystander.recv(timeout=10) == "still here?"


@pytest.mark.parametrize("request_kind", ["version-8", "no-version", "no-upgrade"])
def test_every_426_names_the_upgrade_and_the_version(server, bystander, request_kind):
    wire = {"version-8": raw_request(server, version="8"),
            "no-version": raw_request(server, version=""),
            "no-upgrade": raw_request(server, upgrade=False)}[request_kind]
    status, headers, _ = http_exchange(server, wire)
    assert status == 426
    assert headers["upgrade"].lower() == "websocket"                        # RFC 9110 §15.5.22
    assert "upgrade" in [t.strip().lower() for t in headers["connection"].split(",")]  # §7.8
    if request_kind != "no-upgrade":
        assert headers["sec-websocket-version"] == "13"                     # RFC 6455 §4.4
    assert_bystander_served(bystander)


@pytest.mark.parametrize("field", ["Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"])
@pytest.mark.parametrize("separator", ["\r", "\n", "\x00"])
def test_cr_lf_nul_in_a_handshake_value_never_becomes_a_header_of_the_answer(server, bystander, field,
                                                                             separator):
    value = f"permessage-deflate{separator}X-Injected: 1{separator}Set-Cookie: pwned=1"
    wire = raw_request(server, extra=f"{field}: {value}\r\n")
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(wire)
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0]
    assert head.startswith((b"HTTP/1.1 101 ", b"HTTP/1.1 400 ")), head
    lines = [line.lower() for line in head.split(b"\r\n")]
    assert not any(line.startswith((b"x-injected", b"set-cookie")) for line in lines), head
    assert b"\n" not in head.replace(b"\r\n", b"") and b"\x00" not in head, head
    assert_bystander_served(bystander)


def test_an_oversize_handshake_gets_431_and_others_stay_served(server, bystander):
    wire = raw_request(server, extra="".join(f"X-Pad-{i}: {'a' * 1000}\r\n" for i in range(40)))
    status, _, _ = http_exchange(server, wire)
    assert status == 431
    assert_bystander_served(bystander)


def test_a_handshake_sent_one_byte_at_a_time_is_accepted(server, bystander):
    key = base64.b64encode(os.urandom(16)).decode()
    wire = raw_request(server, key=key)
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(wire)):
            sock.send(wire[index:index + 1])
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 101 "), head
    accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    assert f"Sec-WebSocket-Accept: {accept}" in head
    assert_bystander_served(bystander)
