"""Raw-socket helpers for the WebSockets tests: speak RFC 6455 by hand, independently of our codec,
so the tests can send exactly the malformed bytes they want and read exactly what came back."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def raw_request(port: int, *, key: str | None = None, version: str = "13", extra: str = "",
                method: str = "GET", upgrade: bool = True) -> bytes:
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [f"{method} / HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    if key:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version:
        lines.append(f"Sec-WebSocket-Version: {version}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def http_exchange(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send a request head, read the whole answer until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def open_raw(port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP socket that has completed the opening handshake (and checked the accept key)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(raw_request(port, key=key))
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "server closed during the handshake"
        data += chunk
    head = data.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 101"), head
    expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    assert f"Sec-WebSocket-Accept: {expected}" in head, head
    return sock


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True,
          length: int | None = None) -> bytes:
    """Build a frame byte by byte. `length` lets a test lie about the payload length."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([first, mask_bit | n])
    elif n < 65536:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_frames_until_close(sock: socket.socket, timeout: float = 10.0) -> tuple[int | None, bytes, list]:
    """Read server frames until a close frame: (close code or None, close payload, frames before it).

    Asserts the server frames are unmasked (§5.1). Also waits for the server to close TCP.
    """
    sock.settimeout(timeout)
    buffer = b""
    frames = []
    while True:
        while len(buffer) >= 2:
            opcode, masked, n = buffer[0] & 0x0F, buffer[1] & 0x80, buffer[1] & 0x7F
            assert not masked, "a server must never mask its frames"
            offset = 2
            if n == 126:
                n, offset = struct.unpack("!H", buffer[2:4])[0], 4
            elif n == 127:
                n, offset = struct.unpack("!Q", buffer[2:10])[0], 10
            if len(buffer) < offset + n:
                break
            payload, buffer = buffer[offset:offset + n], buffer[offset + n:]
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                _wait_for_eof(sock)
                return code, payload, frames
            frames.append((opcode, payload))
        chunk = sock.recv(65536)
        if not chunk:
            return None, b"", frames
        buffer += chunk


def _wait_for_eof(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def peak_rss(pid: int) -> int:
    """A process's peak resident set size (VmHWM), in bytes (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
