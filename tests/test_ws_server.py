"""Our server against malformed frames and handshakes sent over raw sockets.

Each case checks the exact close code (or HTTP status) AND that a second, well-behaved client
connected to the same server the whole time still gets its echo: one bad peer never hurts another.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import time

import pytest
from websockets.sync.client import connect as lib_connect

from common import free_port, spawn_module
from tests.ws_helpers import frame, http_exchange, open_raw, raw_request, read_frames_until_close
from WebSockets.protocol import ConnectionClosed

TEXT, BINARY, CONT, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9
MAX_SIZE = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One of our servers (echo, 1 MiB limit, 2 s handshake timeout) for the whole module."""
    port = free_port()
    child = spawn_module("WebSockets.server", "--port", str(port), "--handshake-timeout", "2",
                         port=port, log_dir=tmp_path_factory.mktemp("ws-server"))
    yield port, child
    child.stop()


@pytest.fixture(scope="module")
def bystander(server):
    """A well-behaved websockets client that stays connected across every malformed case."""
    port, _ = server
    with lib_connect(f"ws://127.0.0.1:{port}/", compression=None, proxy=None, ping_interval=None) as ws:
        yield ws


def assert_bystander_ok(bystander, label: str) -> None:
    message = f"still here after {label}"
    bystander.send(message)
    assert bystander.recv(timeout=10) == message


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


# (label, bytes the client sends after the handshake, expected close code)
MALFORMED = [
    ("unmasked client frame", frame(TEXT, b"hi", masked=False), 1002),
    ("RSV1 set", frame(TEXT, b"hi", rsv=0b100), 1002),
    ("RSV2 set", frame(TEXT, b"hi", rsv=0b010), 1002),
    ("RSV3 set", frame(BINARY, b"hi", rsv=0b001), 1002),
    ("reserved data opcode 0x3", frame(0x3, b"hi"), 1002),
    ("reserved data opcode 0x7", frame(0x7), 1002),
    ("reserved control opcode 0xB", frame(0xB), 1002),
    ("reserved control opcode 0xF", frame(0xF, b"x"), 1002),
    ("16-bit length for a 5-byte payload (not the shortest form)",
     b"\x82\xfe\x00\x05" + b"mask" + b"hello", 1002),
    ("ping of 126 bytes", frame(PING, b"p" * 126), 1002),
    ("close of 126 bytes", frame(CLOSE, close_payload(1000, b"r" * 124)), 1002),
    ("fragmented ping", frame(PING, b"p", fin=False), 1002),
    ("continuation with no message started", frame(CONT, b"orphan"), 1002),
    ("new data frame inside a fragmented message",
     frame(TEXT, b"part one", fin=False) + frame(TEXT, b"intruder"), 1002),
    ("invalid UTF-8 in a whole message", frame(TEXT, b"caf\xc3\x28"), 1007),
    ("UTF-8 sequence split across fragments, invalid",
     frame(TEXT, b"caf\xc3", fin=False) + frame(CONT, b"\x28"), 1007),
    ("lone surrogate in UTF-8", frame(TEXT, b"\xed\xa0\x80"), 1007),
    ("1-byte close payload", frame(CLOSE, b"\x03"), 1002),
    ("close reason not UTF-8", frame(CLOSE, close_payload(1000, b"\xff\xfe")), 1007),
    *[(f"close code {code}", frame(CLOSE, close_payload(code)), 1002)
      for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)],
    ("message over the size limit (header alone)", frame(BINARY, length=MAX_SIZE + 1), 1009),
    ("fragmented message over the size limit",
     frame(BINARY, b"a" * 65536, fin=False) + frame(CONT, length=MAX_SIZE), 1009),
]


@pytest.mark.parametrize(("label", "data", "code"), MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_input_closes_with_the_right_code(server, bystander, label, data, code):
    port, _ = server
    with open_raw(port) as sock:
        sock.sendall(data)
        received, _, frames = read_frames_until_close(sock)
    assert received == code, f"{label}: expected close {code}, got {received}"
    assert frames == [], f"{label}: nothing should be echoed before the close"
    assert_bystander_ok(bystander, label)


def test_invalid_utf8_fails_fast_before_the_message_ends(server, bystander):
    """The first fragment can never become valid UTF-8: close 1007 without waiting for FIN."""
    port, _ = server
    with open_raw(port) as sock:
        sock.sendall(frame(TEXT, b"ok so far \xf8\x88\x80", fin=False))
        received, _, _ = read_frames_until_close(sock)  # no further fragment is ever sent
    assert received == 1007
    assert_bystander_ok(bystander, "fail-fast UTF-8")


def test_valid_utf8_split_inside_a_character_is_reassembled(server, bystander):
    port, _ = server
    text = "κόσμε 🌍".encode()
    with open_raw(port) as sock:
        # Split inside the 4-byte emoji and inside a 2-byte Greek letter.
        sock.sendall(frame(TEXT, text[:3], fin=False) + frame(CONT, text[3:-2], fin=False)
                     + frame(PING, b"interleaved") + frame(CONT, text[-2:])
                     + frame(CLOSE, close_payload(1000)))
        code, _, frames = read_frames_until_close(sock)
    assert frames == [(0xA, b"interleaved"), (TEXT, text)]
    assert code == 1000


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 1012, 3000, 4999])
def test_valid_close_codes_are_echoed(server, code):
    port, _ = server
    with open_raw(port) as sock:
        sock.sendall(frame(CLOSE, close_payload(code, "au revoir ✓".encode())))
        received, _, _ = read_frames_until_close(sock)
    assert received == code


def test_empty_close_gets_an_empty_close(server):
    port, _ = server
    with open_raw(port) as sock:
        sock.sendall(frame(CLOSE))
        received, payload, _ = read_frames_until_close(sock)
    assert (received, payload) == (None, b"")


def test_close_reason_reaches_the_server(server):
    port, child = server
    with lib_connect(f"ws://127.0.0.1:{port}/", compression=None, proxy=None) as ws:
        ws.close(code=4001, reason="done for today")
        assert ws.close_code == 4001
    deadline = time.monotonic() + 10
    while "closed: code 4001 'done for today'" not in child.output():
        assert time.monotonic() < deadline, child.output()[-2000:]
        time.sleep(0.05)


# ------------------------------------------------------------------------------- handshakes


def test_wrong_version_gets_426_with_the_version_we_speak(server, bystander):
    port, _ = server
    status, headers, body = http_exchange(port, raw_request(port, version="8"))
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    # RFC 9110 §15.5.22: "The server MUST send an Upgrade header field in a 426 response".
    assert headers["upgrade"] == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert body
    assert_bystander_ok(bystander, "wrong version")


@pytest.mark.parametrize("key", ["", "not base64!", "c2hvcnQ=", "AAAAAAAAAAAAAAAAAAAAAAAA"],
                         ids=["missing", "not-base64", "too-short", "18-bytes"])
def test_missing_or_invalid_key_gets_400(server, bystander, key):
    port, _ = server
    status, _, body = http_exchange(port, raw_request(port, key=key))
    assert status == 400
    assert b"Sec-WebSocket-Key" in body
    assert_bystander_ok(bystander, f"key {key!r}")


def test_plain_get_gets_an_http_error_with_a_short_body(server, bystander):
    port, _ = server
    status, headers, body = http_exchange(port, raw_request(port, upgrade=False))
    assert status == 426
    assert headers["upgrade"] == "websocket"
    assert 0 < len(body) < 200 and b"WebSocket" in body
    assert int(headers["content-length"]) == len(body)
    assert_bystander_ok(bystander, "plain GET")


def test_post_gets_405(server):
    port, _ = server
    status, headers, _ = http_exchange(port, raw_request(port, method="POST"))
    assert status == 405 and headers["allow"] == "GET"


def test_upgrade_and_connection_are_token_lists(server):
    port, _ = server
    request = raw_request(port, upgrade=False,
                          extra="Upgrade: foo, WebSocket\r\nConnection: keep-alive, upgrade\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")


def test_client_that_never_finishes_the_handshake_is_dropped(server, bystander):
    port, child = server
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
        assert_bystander_ok(bystander, "a stalled handshake")  # served while the other one stalls
        started = time.monotonic()
        assert sock.recv(4096) == b""  # the server closed it (timeout is 2 s in this fixture)
        assert time.monotonic() - started < 15
    assert "no complete handshake within 2.0s" in child.output()


# ------------------------------------------------------------------------- concurrency


def test_broadcast_reaches_every_client(spawn):
    port = free_port()
    spawn("WebSockets.server", "--port", port, "--mode", "broadcast", port=port)
    url = f"ws://127.0.0.1:{port}/"
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(lib_connect(url, compression=None, proxy=None)) for _ in range(5)]
        clients[0].send("to everyone")
        clients[3].send(b"\x00binary")
        for ws in clients:
            assert {ws.recv(timeout=10), ws.recv(timeout=10)} == {"to everyone", b"\x00binary"}


def test_client_that_never_reads_does_not_block_others(server, bystander):
    """Flood echoes at a client that never reads them: only its own coroutine waits (back-pressure)."""
    port, _ = server
    with open_raw(port) as hog:
        hog.settimeout(0.2)
        payload = frame(BINARY, b"z" * 65536)
        sent = 0
        try:
            # ~100 MiB: far more than the buffers on the way hold. On loopback the kernel's
            # autotuned buffers (our send and receive, the server's) take 15-25 MiB before the
            # server even has to stop reading, so a smaller flood made this test flaky.
            for _ in range(1600):
                hog.sendall(payload)
                sent += 1
        except TimeoutError:
            pass  # our send buffer is full too: the server stopped reading from us
        assert sent < 1600, "the server kept reading from a client that does not read its echoes"
        for round_ in range(20):
            assert_bystander_ok(bystander, f"a client that never reads (round {round_})")


def test_many_concurrent_clients(server):
    port, _ = server
    from WebSockets.client import connect

    clients = [connect(f"ws://127.0.0.1:{port}/") for _ in range(50)]
    try:
        for index, ws in enumerate(clients):
            ws.send(f"client {index}")
        for index, ws in enumerate(clients):
            assert ws.recv(timeout=10) == f"client {index}"
    finally:
        for ws in clients:
            ws.close()


def test_broadcast_drops_a_client_that_stops_reading(spawn):
    """A broadcast receiver that never reads is disconnected once its backlog passes the limit;
    the sender and a reading client keep receiving every broadcast."""
    port = free_port()
    server = spawn("WebSockets.server", "--port", port, "--mode", "broadcast", port=port)
    from WebSockets.client import connect

    big = bytes(range(256)) * 4096  # 1 MiB
    with open_raw(port) as hog, connect(f"ws://127.0.0.1:{port}/") as sender, \
            connect(f"ws://127.0.0.1:{port}/") as reader:
        sender.ping(), reader.ping()  # both registered before the flood
        for number in range(64):  # up to 64 MiB: far past socket buffers (~10 MiB) + 8 MiB backlog
            sender.send(big)
            assert sender.recv(timeout=30) == big, f"sender lost broadcast {number}"
            assert reader.recv(timeout=30) == big, f"reader lost broadcast {number}"
            if "unread" in server.output():
                break
        assert "broadcasts unread" in server.output()
        hog.settimeout(30)
        with contextlib.suppress(ConnectionResetError):
            while hog.recv(1 << 20):  # the server aborted it: draining ends in EOF or RST
                pass
        sender.send("after the drop")
        assert sender.recv(timeout=10) == "after the drop"
        assert reader.recv(timeout=10) == "after the drop"


def test_shutdown_sends_1001_going_away(spawn):
    port = free_port()
    server = spawn("WebSockets.server", "--port", port, port=port)
    from WebSockets.client import connect

    with connect(f"ws://127.0.0.1:{port}/") as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"
        server.stop()  # SIGTERM
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=10)
    assert (caught.value.code, caught.value.reason) == (1001, "server shutting down")
    assert "Traceback" not in server.output()


def test_shutdown_does_not_wait_forever_for_a_client_that_never_answers_the_close(spawn):
    """SIGTERM: the polite client gets 1001, a silent one is cut after the close timeout, and the
    server exits by itself (from Python 3.12.1 a server that awaited serve_forever() here waited for
    every connection to end before it had told anyone to close)."""
    port = free_port()
    server = spawn("WebSockets.server", "--port", port, port=port)
    from WebSockets.client import connect

    with open_raw(port) as silent, connect(f"ws://127.0.0.1:{port}/") as polite:
        polite.ping()  # both connections are established before the signal
        silent.sendall(frame(PING, b"registered"))
        assert read_frame_opcode(silent) == 0xA
        server.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as caught:
            polite.recv(timeout=10)
        assert caught.value.code == 1001
        server.popen.wait(timeout=15)  # no SIGKILL needed: the stop() grace period is not used
    assert server.popen.returncode == 0 and "Traceback" not in server.output()


def read_frame_opcode(sock: socket.socket) -> int:
    sock.settimeout(10)
    header = sock.recv(2)
    sock.recv(header[1] & 0x7F)
    return header[0] & 0x0F


def test_a_finished_connection_frees_its_buffers_without_waiting_for_the_cyclic_gc():
    """The server's per-connection objects must not form a reference cycle: a cycle kept every
    closed client's frame decoder (and a half-received frame of up to --max-size) alive until the
    cyclic GC ran, and 50 clients closed for the memory budget held 30+ MiB more than counted."""
    import asyncio
    import gc
    import threading
    import weakref

    from WebSockets.client import connect
    from WebSockets.server import Limits, WebSocketServer, serve

    async def scenario() -> list[weakref.ref]:
        server = WebSocketServer("echo", Limits(ping_interval=None))
        ready = asyncio.Event()
        port = free_port()
        serving = asyncio.create_task(serve("127.0.0.1", port, server, ready))
        await ready.wait()
        seen: list[weakref.ref] = []

        def talk() -> None:
            with connect(f"ws://127.0.0.1:{port}/", compress=False) as ws:
                ws.send(b"x" * 100_000)
                assert ws.recv(timeout=10) == b"x" * 100_000
                seen.extend(weakref.ref(client.connection) for client in list(server.clients))
                ws.send_fragments([b"half a message"] * 2)  # then close mid-conversation

        await asyncio.to_thread(talk)
        await asyncio.gather(*list(server.tasks))  # each handler ends with its connection
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        return seen

    # In a thread of its own: a browser test earlier in the session may leave an event loop
    # running in this one, and asyncio.run() refuses to start inside it.
    refs: list[weakref.ref] = []
    gc.disable()
    try:
        runner = threading.Thread(target=lambda: refs.extend(asyncio.run(scenario())))
        runner.start()
        runner.join(timeout=60)
        assert refs and all(ref() is None for ref in refs), "a closed connection outlived its handler"
    finally:
        gc.enable()
