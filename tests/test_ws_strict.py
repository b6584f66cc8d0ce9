"""Strict to the letter, over real sockets: invalid UTF-8 fails while the frame is still arriving,
and our client delivers every complete message it read before failing on a later bad frame."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading

import pytest

from tests.ws_helpers import GUID, frame, open_raw, read_frames_until_close
from WebSockets.client import connect
from WebSockets.protocol import ConnectionClosed

TEXT = 0x1


def test_server_fails_a_text_frame_at_its_first_invalid_byte_without_waiting_for_the_rest(spawn, free_port):
    spawn("WebSockets.server", "--port", free_port, port=free_port)
    sock = open_raw(free_port)
    with sock:
        whole = frame(TEXT, b"ok \xff" + b"x" * 500_000)
        sock.sendall(whole[:64])  # the header announces 500 KB; only 64 bytes ever arrive
        code, payload, _ = read_frames_until_close(sock, timeout=10)
    assert code == 1007, payload


@pytest.fixture
def scripted_raw_server(free_port):
    """A hand-written server: completes the handshake, then sends the given bytes in ONE write:
    after the client's first byte, or (script[1] == "behind 101") in the same write as the 101."""
    listener = socket.create_server(("127.0.0.1", free_port))
    script: list = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            if script[1:] == ["behind 101"]:
                conn.sendall(response + script[0])  # frames in the handshake's own segment
            else:
                conn.sendall(response)
                conn.recv(1)  # the client's first byte: it is reading now
                conn.sendall(script[0])
            conn.shutdown(socket.SHUT_WR)  # then our FIN: the client needs not wait for a close
            try:
                while conn.recv(65536):  # until the client closes
                    pass
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    yield f"ws://127.0.0.1:{free_port}/", script, thread
    thread.join(timeout=10)
    listener.close()


BAD_FRAMES = {"masked": (frame(TEXT, b"masked!", masked=True), 1002),  # a server never masks, §5.1
              "invalid UTF-8": (frame(TEXT, b"caf\xc3(", masked=False), 1007)}


@pytest.mark.parametrize("when", ["after the client's first send", "behind 101"])
@pytest.mark.parametrize("bad", list(BAD_FRAMES))
def test_client_delivers_complete_messages_before_failing_on_a_later_bad_frame(scripted_raw_server, bad,
                                                                               when):
    """Two good messages and a bad frame in ONE TCP write, so one recv() returns all three.
    (The code before issue 17 passes this too: its decoder yielded frames one at a time and
    recv() returned the messages queued before reporting the failure.)"""
    url, script, thread = scripted_raw_server
    bad_frame, code = BAD_FRAMES[bad]
    script.append(frame(TEXT, b"first", masked=False) + frame(TEXT, b"second", masked=False) + bad_frame)
    if when == "behind 101":
        script.append(when)
    thread.start()
    with connect(url, compress=False) as ws:
        if when != "behind 101":
            ws.send("go")
        assert ws.recv(timeout=10) == "first"
        assert ws.recv(timeout=10) == "second"
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv(timeout=10)
    assert caught.value.code == code
