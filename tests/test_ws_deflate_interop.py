"""permessage-deflate interop over real sockets, both ways, with `websockets` compression="deflate"
and its parameter settings: text and binary of 0 B to 1 MiB, compressible and random, fragmented
and not, several messages per connection (so context takeover is exercised across messages)."""

from __future__ import annotations

import functools
import random
import socket
import threading
import zlib

import pytest
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.sync.client import connect as lib_connect
from websockets.sync.server import serve as lib_serve

from common import free_port, spawn_module
from tests.ws_helpers import frame, peak_rss, raw_request, read_frames_until_close
from WebSockets.client import connect
from WebSockets.deflate import DeflateParameters

SIZES = [0, 1, 125, 64 * 1024, 1 << 20]


@functools.cache
def messages() -> tuple[str | bytes, ...]:
    """Every size as compressible text and binary, and as random binary (seeded); random text
    up to 64 KiB (its UTF-8 is what matters, not its size)."""
    rng = random.Random(7692)
    out: list[str | bytes] = []
    for size in SIZES:
        out.append(("status: ok, temperature: 21.5 °C; " * (size // 30 + 1)).encode()[:size]
                   .decode("utf-8", "ignore"))
        if size <= 64 * 1024:
            out.append("".join(chr(rng.randrange(0x20, 0x7FF)) for _ in range(size // 2))
                       .encode()[:size].decode("utf-8", "ignore"))
        out.append(bytes(i % 7 for i in range(size)))
        out.append(rng.randbytes(size))
    return tuple(out)


def fragments(message: str | bytes) -> list:
    third = max(1, len(message) // 3)
    return [message[i:i + third] for i in range(0, len(message), third)] or [message]


@pytest.fixture(scope="module")
def our_server(tmp_path_factory):
    port = free_port()
    child = spawn_module("WebSockets.server", "--port", str(port), port=port,
                         log_dir=tmp_path_factory.mktemp("ws-deflate"))
    yield f"ws://127.0.0.1:{port}/"
    child.stop()


# ----------------------------------------------------------- websockets client -> our server

LIB_CLIENT_SETTINGS = {
    "default": None,
    "no-context-takeover": ClientPerMessageDeflateFactory(server_no_context_takeover=True,
                                                          client_no_context_takeover=True),
    "small-windows": ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=10),
    "full-windows": ClientPerMessageDeflateFactory(server_max_window_bits=15, client_max_window_bits=15),
}


@pytest.mark.parametrize("setting", LIB_CLIENT_SETTINGS)
def test_lib_client_with_deflate_to_our_server(our_server, setting):
    factory = LIB_CLIENT_SETTINGS[setting]
    options = ({"compression": "deflate"} if factory is None
               else {"extensions": [factory], "compression": None})
    with lib_connect(our_server, proxy=None, **options) as ws:
        [extension] = ws.protocol.extensions
        assert isinstance(extension, PerMessageDeflate)
        if setting == "no-context-takeover":
            assert extension.local_no_context_takeover and extension.remote_no_context_takeover
        if setting == "small-windows":
            assert (extension.remote_max_window_bits, extension.local_max_window_bits) == (9, 10)
        for message in messages():
            ws.send(message)
            assert ws.recv(timeout=30) == message
            ws.send(fragments(message))
            assert ws.recv(timeout=30) == message


# ----------------------------------------------------------- our client -> websockets server


@pytest.fixture
def lib_deflate_server():
    """An in-process websockets echo server; the test picks its permessage-deflate factory."""
    started = []

    def start(factory: ServerPerMessageDeflateFactory | None) -> str:
        def echo(websocket):
            for message in websocket:
                websocket.send(message)

        port = free_port()
        options = {"compression": "deflate"} if factory is None else {"extensions": [factory],
                                                                       "compression": None}
        # max_size above our largest message: websockets 17 checks a compressed continuation
        # frame's wire length against what is left of the *inflated* budget, so a 1 MiB message
        # sent in compressed fragments ends with 1009 at its 3-byte last frame.
        server = lib_serve(echo, "127.0.0.1", port, max_size=2 << 20, **options)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return f"ws://127.0.0.1:{port}/"

    yield start
    for server, thread in started:
        server.shutdown()
        thread.join(timeout=10)


LIB_SERVER_SETTINGS = {
    "default": (None, DeflateParameters(client_max_window_bits=True), (12, 12)),
    "no-context-takeover": (ServerPerMessageDeflateFactory(server_no_context_takeover=True,
                                                           client_no_context_takeover=True),
                            DeflateParameters(client_max_window_bits=True), (15, 15)),
    "small-windows": (ServerPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=11),
                      DeflateParameters(client_max_window_bits=True), (11, 9)),
    # zlib cannot compress with 8 bits: our client then sends uncompressed messages.
    "client-window-8": (ServerPerMessageDeflateFactory(client_max_window_bits=8),
                        DeflateParameters(client_max_window_bits=True), (8, 15)),
    "our-offer-limits-the-server": (None, DeflateParameters(server_no_context_takeover=True,
                                                            server_max_window_bits=10,
                                                            client_max_window_bits=True), (12, 10)),
}


@pytest.mark.parametrize("setting", LIB_SERVER_SETTINGS)
def test_our_client_with_deflate_to_lib_server(lib_deflate_server, setting):
    factory, offer, (local_bits, remote_bits) = LIB_SERVER_SETTINGS[setting]
    with connect(lib_deflate_server(factory), compress=offer) as ws:
        assert ws.deflate is not None
        windows = (ws.deflate.local_max_window_bits, ws.deflate.remote_max_window_bits)
        assert windows == (local_bits, remote_bits)
        if setting == "no-context-takeover":
            assert ws.deflate.local_no_context_takeover and ws.deflate.remote_no_context_takeover
        for message in messages():
            ws.send(message)
            assert ws.recv(timeout=30) == message
            ws.send_fragments(fragments(message))
            assert ws.recv(timeout=30) == message


def test_our_client_without_compression_offers_nothing(lib_deflate_server):
    with connect(lib_deflate_server(None), compress=False) as ws:
        assert ws.deflate is None
        assert b"Sec-WebSocket-Extensions" not in ws.handshake_request
        ws.send("plain")
        assert ws.recv(timeout=10) == "plain"


def test_our_server_with_compression_none_declines(tmp_path):
    port = free_port()
    with spawn_module("WebSockets.server", "--port", str(port), "--compression", "none", port=port,
                      log_dir=tmp_path):
        with lib_connect(f"ws://127.0.0.1:{port}/", compression="deflate", proxy=None) as ws:
            assert ws.protocol.extensions == []
            ws.send("plain")
            assert ws.recv(timeout=10) == "plain"


def test_a_zip_bomb_closes_1009_and_the_server_never_holds_it(spawn, free_port):
    """~256 KB on the wire that inflates to 256 MiB: close 1009, and the server's peak RSS grows by
    less than 32 MiB (inflating first and checking after would take 256 MiB)."""
    server = spawn("WebSockets.server", "--port", free_port, port=free_port)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    zeros = b"\0" * (1 << 20)
    bomb = b"".join(compressor.compress(zeros) for _ in range(256))
    bomb = (bomb + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(bomb) < 300_000
    with lib_connect(f"ws://127.0.0.1:{free_port}/", proxy=None) as bystander:
        bystander.send("before")
        assert bystander.recv(timeout=10) == "before"
        baseline = peak_rss(server.pid)
        with socket.create_connection(("127.0.0.1", free_port), timeout=10) as sock:
            sock.sendall(raw_request(free_port, extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"))
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            assert b"Sec-WebSocket-Extensions: permessage-deflate" in head
            sock.sendall(frame(0x2, bomb, rsv=0b100))
            code, payload, _ = read_frames_until_close(sock, timeout=30)
        assert code == 1009, payload
        bystander.send("after")
        assert bystander.recv(timeout=10) == "after"
    growth = peak_rss(server.pid) - baseline
    assert growth < 32 << 20, f"peak RSS grew by {growth >> 20} MiB"
