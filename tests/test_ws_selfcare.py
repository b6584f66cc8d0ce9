"""A server that looks after itself, and a client that notices a dead server: keepalive pings,
the read timeout, the global memory budget (with 50 greedy clients), all while a well-behaved
client keeps being served."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import threading
import time

import pytest
from websockets.sync.client import connect as lib_connect

from tests.ws_helpers import GUID, frame, open_raw, peak_rss, read_frames_until_close
from WebSockets.client import connect
from WebSockets.protocol import ConnectionClosed

TEXT, BINARY, PING = 0x1, 0x2, 0x9
MiB = 1 << 20


def echo_ok(ws, label: str) -> None:
    ws.send(label)
    assert ws.recv(timeout=20) == label


# ------------------------------------------------------------------------------ keepalive


def test_server_pings_and_closes_1011_a_client_that_never_answers(spawn, free_port):
    spawn("WebSockets.server", "--port", free_port, "--ping-interval", "0.3", "--ping-timeout", "0.5",
          port=free_port)
    with lib_connect(f"ws://127.0.0.1:{free_port}/", proxy=None, ping_interval=None) as bystander:
        silent = open_raw(free_port)  # completes the handshake, then never reads nor answers
        with silent:
            code, payload, frames = read_frames_until_close(silent, timeout=20)
        assert code == 1011 and b"keepalive ping timeout" in payload
        assert [opcode for opcode, _ in frames] == [PING]  # one ping, unanswered
        # The bystander answers pings (websockets does so by itself) and outlives several intervals.
        time.sleep(1.5)
        echo_ok(bystander, "still here after the silent one was closed")


def test_client_keepalive_measures_latency_and_fails_1011_on_a_silent_server(spawn, free_port):
    spawn("WebSockets.server", "--port", free_port, port=free_port)
    with connect(f"ws://127.0.0.1:{free_port}/", ping_interval=0.2, ping_timeout=5) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1)  # nothing to receive; keepalive pings go out meanwhile
        assert ws.latency is not None and 0 < ws.latency < 5

    # A "server" that completes the handshake (in the kernel's backlog) but never reads or answers.
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    answered = threading.Event()

    def handshake_then_hang():
        conn, _ = silent.accept()
        request = conn.recv(4096)
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        answered.wait(30)
        conn.close()

    thread = threading.Thread(target=handshake_then_hang, daemon=True)
    thread.start()
    try:
        ws = connect(f"ws://127.0.0.1:{port}/", ping_interval=0.2, ping_timeout=0.5, compress=False)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=20)
        assert caught.value.code == 1011 and time.monotonic() - started < 10
        ws.close()
    finally:
        answered.set()
        thread.join(timeout=10)
        silent.close()


# ------------------------------------------------------------------------------ read timeout


def test_a_client_stalled_inside_a_frame_is_dropped_after_the_read_timeout(spawn, free_port):
    spawn("WebSockets.server", "--port", free_port, "--read-timeout", "1", "--ping-interval", "0",
          port=free_port)
    stalled = [open_raw(free_port) for _ in range(20)]
    with lib_connect(f"ws://127.0.0.1:{free_port}/", proxy=None) as bystander:
        started = time.monotonic()
        for sock in stalled:
            sock.sendall(frame(BINARY, b"x" * 10_000)[:5000])  # half a frame, then silence
        echo_ok(bystander, "served while 20 clients stall")
        for sock in stalled:
            with sock:
                code, _, _ = read_frames_until_close(sock, timeout=20)
            assert code == 1008
        assert time.monotonic() - started < 15
        echo_ok(bystander, "served after they were dropped")


def test_a_big_frame_that_keeps_arriving_is_not_a_stall(spawn, free_port):
    """The read timeout bounds a *stall*, not a frame's total time: bytes that only extend a
    binary frame do not wake the server, so it must count them before calling a frame stalled.
    Here a 512 KiB frame trickles in for ~3 s (a piece every 0.25 s, read timeout 1 s)."""
    spawn("WebSockets.server", "--port", free_port, "--read-timeout", "1", "--ping-interval", "0",
          port=free_port)
    payload = bytes(range(256)) * 2048
    wire = frame(BINARY, payload)
    pieces = [wire[start:start + 44_000] for start in range(0, len(wire), 44_000)]
    with open_raw(free_port) as sock:
        started = time.monotonic()
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.25)  # the pace of the trickle itself, not a synchronisation
        assert time.monotonic() - started > 2.5
        sock.settimeout(20)
        received = b""
        while len(received) < len(payload) + 10:  # the echo: a 10-byte header, then the payload
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed the connection instead of echoing"
            received += chunk
        assert received[0] == 0x82 and received[10:] == payload


def test_time_spent_waiting_on_a_client_that_does_not_read_is_not_its_stall(spawn, free_port):
    """A frame half-received while the server waits for the client to read its echo: the read
    timeout starts once the server listens again, not from the frame's last byte (else the
    client is dropped the moment it reads, for a "stall" the server imposed)."""
    spawn("WebSockets.server", "--port", free_port, "--read-timeout", "1", "--ping-interval", "0",
          "--max-size", "16MiB", port=free_port)
    big = bytes(range(256)) * (32 * 1024)  # 8 MiB: its echo cannot fit in the socket buffers
    second = frame(BINARY, b"second message")
    with open_raw(free_port) as sock:
        sock.sendall(frame(BINARY, big) + second[:6])  # all of one message, half of the next
        time.sleep(2.5)  # not reading: the server waits on us (back-pressure) past its read timeout
        sock.settimeout(20)
        echo = b""
        while len(echo) < len(big) + 10:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed instead of echoing"
            echo += chunk
        sock.sendall(second[6:])
        rest = echo[len(big) + 10:]
        while len(rest) < 16:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed: it took its own wait for a stall"
            rest += chunk
        assert echo[10:len(big) + 10] == big and rest == bytes([0x82, 14]) + b"second message"


# ------------------------------------------------------------------------------ memory budget


def wait_until_the_server_read_everything(port: int, timeout: float = 60) -> None:
    """Poll /proc/net/tcp until no byte sent to `port` waits in a kernel queue: the clients' send
    queues and the server's receive queues are empty, so the server process has read it all."""
    deadline = time.monotonic() + timeout
    port_hex = f"{port:04X}"
    while time.monotonic() < deadline:
        queued = 0
        with open("/proc/net/tcp") as table:
            for line in list(table)[1:]:
                fields = line.split()
                local, remote, state = fields[1], fields[2], fields[3]
                tx_queue, rx_queue = (int(part, 16) for part in fields[4].split(":"))
                if state == "0A":  # LISTEN
                    continue
                if local.endswith(":" + port_hex):
                    queued += rx_queue
                elif remote.endswith(":" + port_hex):
                    queued += tx_queue
        if queued == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"{queued} bytes still queued for the server after {timeout} s")


def test_the_memory_budget_holds_against_50_greedy_clients(spawn, free_port):
    """50 clients each push most of a 3 MiB frame (150 MiB in all) and stop; an 8 MiB budget keeps
    the server's peak RSS within 8 MiB + 40 MiB of overhead, closing the biggest with 1013.
    (Without the budget the server holds all 150 MiB.)"""
    server = spawn("WebSockets.server", "--port", free_port, "--max-size", "4MiB", "--max-buffered", "8MiB",
                   "--ping-interval", "0", "--read-timeout", "60", port=free_port)
    with lib_connect(f"ws://127.0.0.1:{free_port}/", proxy=None) as bystander:
        echo_ok(bystander, "warm-up")
        baseline = peak_rss(server.pid)
        greedy = [open_raw(free_port) for _ in range(50)]
        body = frame(BINARY, b"\0" * (3 * MiB))[: 3 * MiB - 1000]  # never complete: held in the buffer

        def push(sock: socket.socket) -> None:
            with contextlib.suppress(OSError):  # reset mid-send: the server closed this one
                sock.sendall(body)

        threads = [threading.Thread(target=push, args=(sock,)) for sock in greedy]
        for thread in threads:
            thread.start()
        echo_ok(bystander, "served during the flood")
        for thread in threads:
            thread.join(timeout=120)
        wait_until_the_server_read_everything(free_port)
        echo_ok(bystander, "served after the flood")
        growth = peak_rss(server.pid) - baseline
        for sock in greedy:
            sock.close()
    assert growth < 48 * MiB, f"peak RSS grew by {growth / MiB:.0f} MiB"
    closed = server.output().count("> --max-buffered 8388608 (1013)")
    # The server read every byte: at most 8 MiB is held, so at most a few of the 50 greedy clients
    # (3 MiB each at most) are still connected; the others were closed.
    assert closed >= 40, server.output()[-3000:]
