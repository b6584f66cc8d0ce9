"""Interoperability over real sockets, both ways:
the `websockets` client against our server, and our client against a `websockets` server."""

from __future__ import annotations

import threading

import pytest
from websockets.exceptions import ConnectionClosed as LibConnectionClosed
from websockets.sync.client import connect as lib_connect
from websockets.sync.server import serve as lib_serve

from common import free_port, spawn_module
from WebSockets.client import connect
from WebSockets.protocol import ConnectionClosed, HandshakeError

SIZES = [0, 125, 126, 65535, 65536, 1 << 20]


@pytest.fixture(scope="module")
def our_server(tmp_path_factory):
    port = free_port()
    child = spawn_module("WebSockets.server", "--port", str(port), port=port,
                         log_dir=tmp_path_factory.mktemp("ws-ours"))
    yield f"ws://127.0.0.1:{port}/", child
    child.stop()


@pytest.fixture(scope="module")
def lib_server(tmp_path_factory):
    port = free_port()
    child = spawn_module("WebSockets.lib_server", "--port", str(port), port=port,
                         log_dir=tmp_path_factory.mktemp("ws-lib"))
    yield f"ws://127.0.0.1:{port}/"
    child.stop()


def payloads(size: int) -> tuple[str, bytes]:
    text = ("héllo wörld ✓ " * (size // 10 + 1)).encode()[:size].decode("utf-8", "ignore")
    return text, bytes(range(256)) * (size // 256) + bytes(range(size % 256))


# ------------------------------------------------------- websockets client -> our server


@pytest.mark.parametrize("size", SIZES)
def test_lib_client_to_our_server_text_and_binary(our_server, size):
    url, _ = our_server
    text, binary = payloads(size)
    with lib_connect(url, compression=None, proxy=None) as ws:
        ws.send(text)
        assert ws.recv(timeout=10) == text
        ws.send(binary)
        assert ws.recv(timeout=10) == binary


def test_lib_client_fragmented_message_and_ping(our_server):
    url, _ = our_server
    with lib_connect(url, compression=None, proxy=None) as ws:
        ws.send(["frag", "mented ", "ünïcode"])  # an iterable is sent as one fragmented message
        assert ws.recv(timeout=10) == "fragmented ünïcode"
        ws.send([b"\x00\x01", b"\x02"])
        assert ws.recv(timeout=10) == b"\x00\x01\x02"
        assert ws.ping(b"are you there").wait(10)


def test_lib_client_close_code_and_reason(our_server):
    url, child = our_server
    with lib_connect(url, compression=None, proxy=None) as ws:
        ws.send("before close")
        assert ws.recv(timeout=10) == "before close"
        ws.close(code=4321, reason="bye from websockets")
    assert ws.close_code == 4321
    assert ws.close_reason == ""  # our server echoes the code only (§5.5.1 lets it)


def test_lib_client_gets_1009_for_an_oversized_message(our_server):
    url, _ = our_server
    with lib_connect(url, compression=None, proxy=None, max_size=None) as ws:
        ws.send(b"x" * ((1 << 20) + 1))
        with pytest.raises(Exception):  # noqa: B017 - websockets raises ConnectionClosedError
            ws.recv(timeout=10)
    assert ws.protocol.close_rcvd.code == 1009


# ------------------------------------------------------- our client -> websockets server


@pytest.mark.parametrize("size", SIZES)
def test_our_client_to_lib_server_text_and_binary(lib_server, size):
    text, binary = payloads(size)
    with connect(lib_server) as ws:
        ws.send(text)
        assert ws.recv(timeout=10) == text
        ws.send(binary)
        assert ws.recv(timeout=10) == binary


def test_our_client_fragmented_message_and_ping(lib_server):
    with connect(lib_server) as ws:
        ws.send_fragments(["frag", "mented ", "ünïcode"])
        assert ws.recv(timeout=10) == "fragmented ünïcode"
        ws.send_fragments([b"\x00\x01", b"\x02"])
        assert ws.recv(timeout=10) == b"\x00\x01\x02"
        assert ws.ping(b"are you there", timeout=10) > 0


@pytest.fixture
def scripted_lib_server():
    """An in-process websockets server whose handler closes with a chosen code and reason."""

    def handler(websocket):
        try:
            for message in websocket:
                if message.startswith("close "):
                    _, code, reason = message.split(" ", 2)
                    websocket.close(int(code), reason)
                    return
                websocket.send(message)
        except LibConnectionClosed:
            pass  # iteration raises for close codes other than 1000/1001
        received = websocket.protocol.close_rcvd  # the client's close frame, as websockets parsed it
        closes_seen.append((received.code, received.reason))
        closed.set()

    closes_seen: list[tuple[int, str]] = []
    closed = threading.Event()

    port = free_port()
    with lib_serve(handler, "127.0.0.1", port, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"ws://127.0.0.1:{port}/", closes_seen, closed
        server.shutdown()
    thread.join(timeout=10)


def test_our_client_receives_server_close_code_and_reason(scripted_lib_server):
    url, _, _ = scripted_lib_server
    with connect(url) as ws:
        ws.send("close 4002 server says bye ✓")
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=10)
    assert (caught.value.code, caught.value.reason) == (4002, "server says bye ✓")
    assert ws.close_code == 4002


def test_our_client_close_code_and_reason_reach_the_server(scripted_lib_server):
    url, closes_seen, closed = scripted_lib_server
    with connect(url) as ws:
        ws.send("echo me")
        assert ws.recv(timeout=10) == "echo me"
        ws.close(4003, "client says bye ✓")
        assert ws.close_code == 4003  # the server's echo of our code
    assert closed.wait(10)
    assert closes_seen == [(4003, "client says bye ✓")]


def test_our_client_rejects_a_wrong_accept_key(free_port):
    """A fake server that answers 101 with a made-up accept key must be refused."""
    import socket

    listener = socket.create_server(("127.0.0.1", free_port))

    def fake_server():
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")

    thread = threading.Thread(target=fake_server, daemon=True)
    thread.start()
    try:
        with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
            connect(f"ws://127.0.0.1:{free_port}/")
    finally:
        thread.join(timeout=10)
        listener.close()


def test_our_client_and_our_server(our_server):
    url, _ = our_server
    with connect(url) as ws:
        for size in SIZES:
            text, binary = payloads(size)
            ws.send(text)
            ws.send(binary)
            assert ws.recv(timeout=10) == text
            assert ws.recv(timeout=10) == binary
        assert ws.ping(b"p") > 0
