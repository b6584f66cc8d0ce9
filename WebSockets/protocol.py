"""RFC 6455 WebSocket protocol, sans-I/O: bytes in, events and bytes out, no sockets anywhere.

Why sans-I/O: the protocol is a pure function of the bytes seen so far, so it can be unit-tested and
property-tested without a network, and the same code serves the asyncio server and the blocking
client (the design of `websockets` and `wsproto`). What lives here:

- the opening handshake (§4): validating a client's request, computing `Sec-WebSocket-Accept`,
  building the client's request and checking the server's answer;
- frames (§5.2): `encode_frame` and the incremental `FrameDecoder` (FIN, RSV1-3, opcode,
  7/16/64-bit lengths, each in its shortest form, masking with a whole-buffer integer XOR);
- `WebSocketConnection`: message assembly from fragments (§5.4), control frames (§5.5), the close
  handshake with close-code validation (§7.4), incremental UTF-8 validation of text (§8.1), and
  the mapping of every failure to a close code: 1002 protocol error, 1007 invalid data, 1009 too big;
- with permessage-deflate negotiated (RFC 7692, see `deflate.py`), RSV1 marks a compressed
  message and the connection compresses and inflates messages through the negotiated codec.

Roles (§5.1, §5.3): a client masks every frame it sends with a fresh random key; a server never
masks. Each side fails the connection with 1002 when its peer breaks that rule.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import NamedTuple

from .deflate import (
    DecompressionError,
    DeflateParameters,
    NegotiationError,
    PerMessageDeflate,
    accept_response,
    compressed_size_bound,
)

# §1.3: the fixed GUID appended to the client's key before hashing.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_MAX_SIZE = 1 << 20  # 1 MiB: the largest message we accept by default
MAX_CONTROL_PAYLOAD = 125  # §5.5: control frames carry at most 125 bytes
MAX_HEADER_BYTES = 16 * 1024  # a request head larger than this is refused: it is not a browser's


class Opcode(IntEnum):
    """§5.2 opcodes. 0x3-0x7 and 0xB-0xF are reserved and fail the connection with 1002."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        return self >= 0x8


class CloseCode(IntEnum):
    """§7.4.1 close codes this module sends or names."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never on the wire: "the close frame had no code"
    ABNORMAL = 1006  # never on the wire: "the TCP connection dropped without a close frame"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # registered with IANA after RFC 6455: the server is overloaded


# §7.4.1-7.4.2: the codes a peer may put on the wire. 1004 is reserved, 1005/1006/1015 are only
# ever reported locally, 1016-2999 are reserved for future RFCs, 3000-4999 belong to
# libraries and applications. 1012-1014 were registered with IANA after the RFC.
_VALID_RECEIVED_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def is_valid_close_code(code: int) -> bool:
    """May a peer send this close code (RFC 6455 §7.4)?"""
    return code in _VALID_RECEIVED_CODES or 3000 <= code <= 4999


# ---------------------------------------------------------------------------------------- errors


class WebSocketError(Exception):
    """Base class of every error raised by this package."""


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455; `code` is the close code to fail the connection with."""

    def __init__(self, code: int, reason: str):
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


class HandshakeError(WebSocketError):
    """The opening handshake is invalid. `status` and `headers` are the HTTP answer to send."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


class ConnectionClosed(WebSocketError):
    """The connection is closed (or closing): open a new one. `code`/`reason` say how it ended."""

    def __init__(self, code: int | None, reason: str = ""):
        super().__init__(f"the WebSocket connection is closed (code {code}{', ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


# ------------------------------------------------------------------------------------ handshake


def accept_key(key: str) -> str:
    """§4.2.2: Sec-WebSocket-Accept = base64(SHA-1(key + GUID)). Proves the server read the key."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def generate_key() -> str:
    """A client's Sec-WebSocket-Key: a fresh random 16-byte nonce, base64-encoded (§4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


@dataclass(frozen=True)
class HttpMessage:
    """An HTTP request or response head. `headers` keys are lower-case; repeated headers are joined."""

    start_line: str
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def parse_http_head(head: bytes) -> HttpMessage:
    """Parse an HTTP/1.1 head (everything before the blank line). Raises HandshakeError(400)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HandshakeError(400, "the HTTP head is not ASCII") from None
    lines = text.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HandshakeError(400, f"malformed header line {line[:60]!r}")
        # RFC 9110 §5.5: a value is visible characters, SP and HTAB; a bare CR, LF, NUL or other
        # control character is refused, never passed on. §5.6.3: only SP and HTAB are optional
        # whitespace around it (str.strip() would also eat \x0b, \x0c, \x1c-\x1f).
        value = value.strip(" \t")
        if _BAD_VALUE_CHAR.search(value):
            raise HandshakeError(400, f"control character in the value of {name!r}")
        key = name.lower()
        # RFC 9110 §5.3: repeated fields are equivalent to one comma-separated field.
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return HttpMessage(lines[0], headers)


# RFC 9110 §5.6.2: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _tokens(value: str | None) -> set[str]:
    """A comma-separated header as a set of lower-case tokens ("keep-alive, Upgrade" -> both)."""
    return {token.strip().lower() for token in (value or "").split(",") if token.strip()}


@dataclass(frozen=True)
class HandshakeRequest:
    """A valid client opening handshake."""

    path: str
    key: str
    headers: dict[str, str]


def validate_client_request(head: bytes) -> HandshakeRequest:
    """Check a client's opening handshake (§4.2.1). Raises HandshakeError with the status to send.

    400 for anything malformed, 405 for a method other than GET, 426 when the request is not a
    WebSocket upgrade or asks for another protocol version (§4.4: answer with the version we speak).
    """
    request = parse_http_head(head)
    parts = request.start_line.split(" ")
    if len(parts) != 3:
        raise HandshakeError(400, f"malformed request line {request.start_line[:60]!r}")
    method, path, version = parts
    if version != "HTTP/1.1":
        raise HandshakeError(400, f"WebSocket needs HTTP/1.1, got {version[:20]!r}")
    if method != "GET":
        raise HandshakeError(405, f"WebSocket handshakes use GET, not {method[:20]}", (("Allow", "GET"),))
    if request.header("host") is None:
        raise HandshakeError(400, "missing Host header")
    # RFC 9110 §15.5.22: every 426 MUST carry Upgrade naming the protocol we would switch to
    # (build_error_response adds the "Upgrade" connection option §7.8 asks for beside it).
    upgrade_required = (("Upgrade", "websocket"),)
    if "websocket" not in _tokens(request.header("upgrade")):
        raise HandshakeError(426, "this is a WebSocket server: send Upgrade: websocket", upgrade_required)
    if "upgrade" not in _tokens(request.header("connection")):
        raise HandshakeError(426, "missing Connection: Upgrade", upgrade_required)
    if request.header("sec-websocket-version") != "13":
        # §4.4: also say which version we speak, so the client can retry with it.
        raise HandshakeError(426, "unsupported Sec-WebSocket-Version: this server speaks 13",
                             upgrade_required + (("Sec-WebSocket-Version", "13"),))
    key = request.header("sec-websocket-key")
    if key is None:
        raise HandshakeError(400, "missing Sec-WebSocket-Key")
    try:
        nonce = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        nonce = b""
    if len(nonce) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key must be a base64-encoded 16-byte nonce")
    return HandshakeRequest(path, key, request.headers)


def build_server_response(request: HandshakeRequest, extensions: str | None = None) -> bytes:
    """The 101 answer to a valid request (§4.2.2), with the extensions we accepted, if any.

    No subprotocol: we never choose one, and a client must not assume one we did not name.
    """
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Accept: {accept_key(request.key)}"]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


_STATUS_TEXT = {400: "Bad Request", 405: "Method Not Allowed", 426: "Upgrade Required",
                431: "Request Header Fields Too Large", 408: "Request Timeout"}


def build_error_response(error: HandshakeError) -> bytes:
    """An HTTP error answer with a short plain-text body that says what went wrong."""
    body = (error.reason + "\n").encode("utf-8")
    # RFC 9110 §7.8: whoever sends Upgrade also lists "Upgrade" in Connection. We close anyway:
    # the client retries the handshake on a new connection.
    offers_upgrade = any(name.lower() == "upgrade" for name, _ in error.headers)
    lines = [f"HTTP/1.1 {error.status} {_STATUS_TEXT.get(error.status, 'Error')}",
             "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}",
             "Connection: Upgrade, close" if offers_upgrade else "Connection: close"]
    lines += [f"{name}: {value}" for name, value in error.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def build_client_request(host: str, path: str, key: str, extensions: str | None = None) -> bytes:
    """A client's opening handshake (§4.1), offering `extensions` if given."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def validate_server_response(head: bytes, key: str, offer: DeflateParameters | None = None
                             ) -> tuple[HttpMessage, PerMessageDeflate | None]:
    """Check the server's answer (§4.1, "the client MUST validate"). Raises HandshakeError.

    Returns the response and the permessage-deflate codec the server agreed to (None if it
    declined `offer`, or if we offered nothing).
    """
    response = parse_http_head(head)
    parts = response.start_line.split(" ", 2)
    if len(parts) < 2 or parts[1] != "101":
        raise HandshakeError(502, f"the server refused the upgrade: {response.start_line[:80]!r}")
    if "websocket" not in _tokens(response.header("upgrade")):
        raise HandshakeError(502, "the server's answer lacks Upgrade: websocket")
    if "upgrade" not in _tokens(response.header("connection")):
        raise HandshakeError(502, "the server's answer lacks Connection: Upgrade")
    if response.header("sec-websocket-accept") != accept_key(key):
        raise HandshakeError(502, "wrong Sec-WebSocket-Accept: the server did not read our key")
    if response.header("sec-websocket-protocol"):
        raise HandshakeError(502, "the server chose a subprotocol we never offered")
    extensions = response.header("sec-websocket-extensions")
    if extensions and offer is None:
        raise HandshakeError(502, "the server chose an extension we never offered")
    try:
        # RFC 7692 §7.1: an invalid or contradicting answer fails the connection.
        codec = accept_response(extensions, offer) if offer is not None else None
    except NegotiationError as error:
        raise HandshakeError(502, f"invalid permessage-deflate response: {error}") from None
    return response, codec


# --------------------------------------------------------------------------------------- frames


class Frame(NamedTuple):
    """One frame (§5.2). `payload` is always unmasked; `mask` records the key it travelled with."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0  # RSV1-3 as a 3-bit number; non-zero only with a negotiated extension
    mask: bytes | None = None


def apply_mask(payload: bytes, mask: bytes) -> bytes:
    """XOR `payload` with the 4-byte `mask` repeated (§5.3). Masking and unmasking are the same.

    Never byte by byte in Python: a loop costs ~100 ns per byte, 100 ms for a 1 MiB message.
    """
    if _numpy is not None and len(payload) >= _NUMPY_XOR_THRESHOLD:
        buffer = bytearray(payload)
        _mask_in_place(buffer, 0, mask)
        return bytes(buffer)
    return _mask_as_integer(payload, mask)


def _mask_as_integer(payload: bytes, mask: bytes) -> bytes:
    """The whole payload XORed as one big integer with the key repeated to its length: runs in C."""
    length = len(payload)
    if length == 0:
        return b""
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")


def _mask_in_place(buffer: bytearray, start: int, mask: bytes, end: int | None = None) -> None:
    """XOR buffer[start:end] with the key, in place, with numpy.

    The same whole-buffer XOR as `_mask_as_integer`, many times faster: int.from_bytes and
    to_bytes convert to 30-bit digits and back, numpy XORs the bytes where they lie.
    """
    end = len(buffer) if end is None else end
    length = end - start
    if length < _BYTE_XOR_LIMIT:
        # Byte by byte against the key repeated to the payload's length: one numpy call, and
        # bytes have no alignment to worry about (measured: ~3 us at 10 KiB, 10 for 8-byte words).
        view = _numpy.frombuffer(buffer, dtype=_numpy.uint8, count=length, offset=start)
        view ^= _numpy.frombuffer(mask * (length // 4 + 1), dtype=_numpy.uint8, count=length)
        del view  # release the buffer export
        return
    # Large: 8-byte words, and only at 8-byte-aligned addresses: on unaligned ones numpy copies
    # every word into a scratch buffer and back (measured: the XOR then costs three passes over
    # the payload). The few bytes before the first aligned address are XORed on their own, and the
    # key rotates by as many bytes for the rest (§5.3: byte i of the payload uses key[i % 4]).
    address = _numpy.frombuffer(buffer, dtype=_numpy.uint8).ctypes.data + start
    head = (-address) % 8
    if head:
        buffer[start:start + head] = _mask_as_integer(bytes(buffer[start:start + head]), mask)
        start += head
        mask = mask[head % 4:] + mask[:head % 4]
    words = (end - start) // 8
    # mask * 2 read as one native uint64 lines up with every 8-byte word of the payload, whatever
    # the machine's byte order, because both are read the same way.
    view = _numpy.frombuffer(buffer, dtype=_numpy.uint64, count=words, offset=start)
    view ^= _numpy.frombuffer(mask * 2, dtype=_numpy.uint64)[0]
    del view  # release the buffer export
    tail = start + words * 8  # the key restarts here: 8 * words is a multiple of 4
    if tail < end:
        buffer[tail:end] = _mask_as_integer(bytes(buffer[tail:end]), mask)


try:
    import numpy as _numpy
except ImportError:  # the big-integer XOR alone is correct, just slower on large messages
    _numpy = None
# Below this size the single big-integer XOR beats numpy's per-call overhead.
_NUMPY_XOR_THRESHOLD = 512
# From this size on, XORing 8-byte words beats building a key as long as the payload.
_BYTE_XOR_LIMIT = 256 * 1024


# Server payloads at least this big are queued apart from their header (see data_to_send_chunks).
_SEPARATE_CHUNK = 64 * 1024
_PACK_16 = struct.Struct("!BBH")
_PACK_64 = struct.Struct("!BBQ")


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
                 mask: bytes | None = None, length: int | None = None) -> bytes:
    """Serialise one frame. Pass a 4-byte `mask` when sending as a client, None as a server.

    With `length` (unmasked only), return just the header for a payload of that many bytes,
    for a caller that writes the payload separately.
    """
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask is not None else 0
    length = len(payload) if length is None else length
    # §5.2: the shortest length encoding is mandatory: 7 bits, else 16, else 64.
    if length < 126:
        head = bytes((first, mask_bit | length))
    elif length < 1 << 16:
        head = _PACK_16.pack(first, mask_bit | 126, length)
    else:
        head = _PACK_64.pack(first, mask_bit | 127, length)
    if mask is None:
        return head + payload
    if _numpy is not None and length >= _NUMPY_XOR_THRESHOLD:
        frame = bytearray(head + mask)  # one buffer for the frame: mask the payload where it lies
        frame += payload
        _mask_in_place(frame, len(head) + 4, mask)
        return bytes(frame)
    return head + mask + _mask_as_integer(payload, mask)


class FrameDecoder:
    """Incremental frame parser: feed it bytes as they arrive, get whole frames out.

    `expect_masked` is the role rule: a server requires masked frames, a client requires
    unmasked ones. `max_payload` lets the caller reject an oversized frame from its header alone,
    before the payload arrives (1009). Violations raise ProtocolError.
    """

    def __init__(self, *, expect_masked: bool, max_payload: int | None = None, rsv1_allowed: bool = False):
        self.expect_masked = expect_masked
        self.max_payload = max_payload  # the connection lowers it while a fragmented message grows
        self.message_limit = max_payload  # the configured limit, quoted in error messages
        # permessage-deflate negotiated: RSV1 may mark the first frame of a compressed message,
        # whose size limit then applies once inflated (the wire may carry a little more).
        self.rsv1_allowed = rsv1_allowed
        self.in_compressed_message = False  # set by the connection between fragments
        # The frame whose header is parsed but whose payload is still arriving:
        # (its number, opcode, rsv, mask, payload offset in the buffer), for `peek_payload`.
        self.partial: tuple[int, int, int, bytes | None, int] | None = None
        self._partial_end = 0  # where the partial frame ends in the buffer
        self.frames_parsed = 0
        self._buffer = bytearray()

    def append(self, data: bytes) -> None:
        """Add bytes without parsing them: the next `feed` (even of b"") parses them."""
        self._buffer += data

    def feed(self, data: bytes) -> Iterator[Frame]:
        """Add bytes; yield every frame now complete. Incomplete bytes wait for the next feed."""
        buffer = self._buffer
        buffer += data
        while True:
            frame, consumed = self._parse_one(buffer)
            if frame is None:
                return
            # Deleting from the front of a bytearray is cheap (CPython moves a start offset).
            del buffer[:consumed]
            yield frame

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames (a frame still arriving)."""
        return len(self._buffer)

    def frame_incomplete(self) -> bool:
        """Is the first frame buffered known (header parsed) and still short of its payload?

        Then bytes appended meanwhile are more of that payload: parsing them can wait."""
        return self.partial is not None and len(self._buffer) < self._partial_end

    def peek_payload(self, start: int) -> bytes:
        """The unmasked payload bytes of the partial frame from `start` to what has arrived.

        Lets the connection validate a text frame's UTF-8 before the frame is complete. Nothing is
        consumed; only the new bytes are unmasked (the key rotates with the offset, §5.3).
        """
        assert self.partial is not None
        _, _, _, mask, offset = self.partial
        with memoryview(self._buffer)[offset + start:] as body:
            if mask is None:
                return bytes(body)
            shift = start % 4
            return apply_mask(body, mask[shift:] + mask[:shift])

    def _parse_one(self, buffer: bytearray) -> tuple[Frame | None, int]:
        self.partial = None
        available = len(buffer)
        if available < 2:
            return None, 0
        first, second = buffer[0], buffer[1]
        fin, rsv, opcode = bool(first & 0x80), (first >> 4) & 0x7, first & 0x0F
        masked, length = bool(second & 0x80), second & 0x7F
        self._check_header(rsv, opcode, fin, masked, length)
        offset = 2
        if length == 126:
            if available < 4:
                return None, 0
            length = int.from_bytes(buffer[2:4], "big")
            if length < 126:  # §5.2: "the minimal number of bytes MUST be used"
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"length {length} not in its shortest form")
            offset = 4
        elif length == 127:
            if available < 10:
                return None, 0
            length = int.from_bytes(buffer[2:10], "big")
            if length >> 63:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "64-bit length with the top bit set")
            if length < 1 << 16:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"length {length} not in its shortest form")
            offset = 10
        limit = self.max_payload
        if limit is not None and (rsv or self.in_compressed_message):
            limit = compressed_size_bound(limit)
        if limit is not None and length > limit and opcode < 0x8:
            # Rejected from the header alone: we never buffer a payload we would refuse anyway.
            raise ProtocolError(CloseCode.TOO_BIG, f"a {length}-byte frame takes the message over "
                                                   f"the {self.message_limit} byte limit")
        mask = None
        if masked:
            if available < offset + 4:
                return None, 0
            mask = bytes(buffer[offset:offset + 4])
            offset += 4
        end = offset + length
        if available < end:
            self.partial = (self.frames_parsed, opcode, rsv, mask, offset)
            self._partial_end = end
            return None, 0
        self.frames_parsed += 1
        # A view, so the payload is copied out of the buffer once; released before `del buffer[...]`.
        if mask is not None and _numpy is not None and length >= _NUMPY_XOR_THRESHOLD:
            # Unmask where the bytes lie (the buffer is ours and about to drop them): one copy
            # out, instead of copy, unmask, copy.
            _mask_in_place(buffer, offset, mask, end)
            mask_left = None
        else:
            mask_left = mask
        with memoryview(buffer)[offset:end] as body:
            payload = bytes(body) if mask_left is None else apply_mask(body, mask_left)
        return Frame(opcode, payload, fin, rsv, mask), end

    def _check_header(self, rsv: int, opcode: int, fin: bool, masked: bool, length: int) -> None:
        """Everything that can be rejected from the first two bytes, before waiting for more."""
        if rsv & 0b011 or (rsv and not self.rsv1_allowed):
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"RSV bits {rsv:03b} set without an extension")
        if opcode not in _KNOWN_OPCODES:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if rsv and opcode >= 0x8:
            # RFC 7692 §6: control frames are never compressed.
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "RSV1 set on a control frame")
        if rsv and opcode == Opcode.CONTINUATION:
            # RFC 7692 §6: only a message's first frame carries the "compressed" bit.
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "RSV1 set on a continuation frame")
        if opcode >= 0x8:
            if not fin:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "control frame payload over 125 bytes")
        if masked != self.expect_masked:
            who = "client frame is not masked" if self.expect_masked else "server frame is masked"
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, who)


_KNOWN_OPCODES = frozenset(int(op) for op in Opcode)


# ------------------------------------------------------------------------------- the connection


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class State(Enum):
    OPEN = "open"
    CLOSING = "closing"  # we sent a close frame and wait for the peer's
    CLOSED = "closed"  # both close frames exchanged, or the connection failed


class Message(NamedTuple):
    """A complete data message: str for text, bytes for binary."""

    data: str | bytes


class Ping(NamedTuple):
    payload: bytes


class Pong(NamedTuple):
    payload: bytes


class CloseReceived(NamedTuple):
    """The peer's close frame. `code` is 1005 when it carried none (§7.1.5)."""

    code: int
    reason: str


class ConnectionFailed(NamedTuple):
    """We failed the connection (§7.1.7) and queued a close frame with `code`; close the TCP now."""

    code: int
    reason: str


Event = Message | Ping | Pong | CloseReceived | ConnectionFailed


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Decode a close frame's body (§5.5.1) and validate it (§7.4). Raises ProtocolError."""
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not is_valid_close_code(code):
        raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CloseCode.INVALID_DATA, "close reason is not valid UTF-8") from None
    return code, reason


def build_close_payload(code: int, reason: str = "") -> bytes:
    """The body of a close frame we send. 1005 means "no code": an empty body."""
    if code == CloseCode.NO_STATUS:
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4): use 1000-1003, "
                         f"1007-1014 or an application code in 3000-4999")
    payload = code.to_bytes(2, "big") + reason.encode("utf-8")
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError("close reason too long: code + reason must fit in 125 bytes")
    return payload


class WebSocketConnection:
    """One endpoint of an open WebSocket, after the handshake. No I/O: the caller moves the bytes.

    - `receive_data(data)` -> iterator of events (Message, Ping, Pong, CloseReceived, ConnectionFailed);
    - `send_text / send_binary / send_ping / send_pong / send_close` queue frames;
    - `data_to_send()` returns (and clears) the bytes the caller must write to the socket.

    Pings are answered automatically (§5.5.2) and a peer's close is echoed (§5.5.1), so a caller
    only has to write `data_to_send()` after each call.
    """

    def __init__(self, role: Role, *, max_size: int | None = DEFAULT_MAX_SIZE,
                 deflate: PerMessageDeflate | None = None):
        self.role = role
        self.max_size = max_size
        self.deflate = deflate  # the permessage-deflate codec, if the handshake negotiated it
        self.state = State.OPEN
        self.close_code: int | None = None  # the code the connection ended with, once closed
        self.close_reason = ""
        self._decoder = FrameDecoder(expect_masked=role is Role.SERVER, max_payload=max_size,
                                     rsv1_allowed=deflate is not None)
        self._outgoing: list[bytes] = []
        # Fragmented message in progress: its opcode, parts, size, and the UTF-8 decoder for text.
        self._message_opcode: int | None = None
        self._message_compressed = False
        # Fail-fast UTF-8 check of a text frame still arriving: (frame number, decoder, bytes checked).
        self._partial_checker: tuple[int, codecs.IncrementalDecoder, int] | None = None
        self._parts: list[bytes] | list[str] = []
        self._message_size = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")

    # --- sending

    def send_text(self, text: str) -> None:
        self._send_message(Opcode.TEXT, [text.encode("utf-8")])

    def send_binary(self, data: bytes) -> None:
        self._send_message(Opcode.BINARY, [bytes(data)])

    def send(self, data: str | bytes) -> None:
        """Text for str, binary for bytes-like."""
        if isinstance(data, str):
            self.send_text(data)
        else:
            self.send_binary(data)

    def send_fragments(self, parts: list[str] | list[bytes]) -> None:
        """Send one message as several frames (§5.4), e.g. to stream it. Text parts may split runes."""
        if not parts:
            raise ValueError("a fragmented message needs at least one part")
        opcode = Opcode.TEXT if isinstance(parts[0], str) else Opcode.BINARY
        self._send_message(opcode, [part.encode("utf-8") if isinstance(part, str) else bytes(part)
                                    for part in parts])

    def send_ping(self, payload: bytes = b"") -> None:
        self._send_control(Opcode.PING, payload)

    def send_pong(self, payload: bytes = b"") -> None:
        self._send_control(Opcode.PONG, payload)

    def send_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the close handshake (§7.1.2). Further sends raise ConnectionClosed."""
        if self.state is not State.OPEN:
            return
        self._send_frame(Opcode.CLOSE, build_close_payload(code, reason))
        self.state = State.CLOSING
        self.close_code, self.close_reason = code, reason

    def buffered_bytes(self) -> int:
        """Memory this connection holds for incoming data: a frame still arriving plus the parts
        of a fragmented message assembled so far (what a server's global budget counts)."""
        assembling = self._message_size if self._message_opcode is not None else 0
        return self._decoder.buffered + assembling

    def data_to_send(self) -> bytes:
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    def data_to_send_chunks(self) -> list[bytes | memoryview]:
        """Like data_to_send, but large payloads stay separate objects: writing them one by one
        saves copying a 1 MiB payload behind its header (small pieces are joined: one syscall)."""
        chunks: list[bytes | memoryview] = []
        small: list[bytes] = []
        for piece in self._outgoing:
            if len(piece) < _SEPARATE_CHUNK:
                small.append(piece)
                continue
            if small:
                chunks.append(b"".join(small))
                small = []
            chunks.append(piece)
        if small:
            chunks.append(b"".join(small))
        self._outgoing.clear()
        return chunks

    def _send_control(self, opcode: Opcode, payload: bytes) -> None:
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"{opcode.name} payload is {len(payload)} bytes; the limit is 125")
        self._send_frame(opcode, bytes(payload))

    def _send_message(self, opcode: int, parts: list[bytes]) -> None:
        """One message, one frame per part; compressed when permessage-deflate is on and it shrinks
        (RFC 7692 §6: RSV1 on the first frame only)."""
        if self.state is not State.OPEN:  # before compressing: a refused message must not touch the context
            raise ConnectionClosed(self.close_code, self.close_reason)
        deflate = self.deflate
        compressed = deflate.compress_message(parts) if deflate is not None and deflate.compresses else None
        last = len(parts) - 1
        for index, part in enumerate(compressed or parts):
            rsv = 0b100 if compressed is not None and index == 0 else 0
            self._send_frame(opcode if index == 0 else Opcode.CONTINUATION, part, index == last, rsv)

    def _send_frame(self, opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> None:
        if self.state is not State.OPEN:
            raise ConnectionClosed(self.close_code, self.close_reason)
        # §5.3: a client picks a fresh, unpredictable key per frame; a server never masks.
        if self.role is Role.SERVER and len(payload) >= _SEPARATE_CHUNK:
            # The header goes out with the payload's first 64 KiB (a 10-byte segment of its own
            # would wake the peer for nothing; measured, ~15 % more CPU per 1 MiB echo), the rest
            # as a view: copying 1 MiB behind a header costs more than a second send().
            head = encode_frame(opcode, b"", fin=fin, rsv=rsv, length=len(payload))
            self._outgoing += (head + payload[:_SEPARATE_CHUNK], memoryview(payload)[_SEPARATE_CHUNK:])
            return
        mask = os.urandom(4) if self.role is Role.CLIENT else None
        self._outgoing.append(encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask))

    # --- receiving

    def receive_data(self, data: bytes) -> Iterator[Event]:
        """Feed bytes from the socket; yield the events they complete, one at a time.

        Lazy on purpose: the next frame is parsed only after the caller has handled the previous
        event, so replies keep the order of requests: the echo of a message goes out before the
        close frame answering a close that arrived right behind it. Consume the iterator fully.
        After a ConnectionFailed or once CLOSED, later bytes are ignored: the caller writes
        `data_to_send()` (the close frame) and closes the TCP connection.
        """
        if self.state is State.CLOSED:
            return
        try:
            for frame in self._decoder.feed(data):
                event = self._handle_frame(frame)
                if event is not None:
                    yield event
                if self.state is State.CLOSED:
                    return
            self._check_partial_text()
        except ProtocolError as error:
            yield self._fail(error.code, error.reason)

    def buffer_data(self, data: bytes) -> None:
        """Keep received bytes without parsing them yet; the next `receive_data` (of b"" if
        nothing else came) parses them. For an I/O layer that is handed bytes in a callback which
        must not block (and whose buffer it must copy before returning) but handles events
        later: one copy, straight into the frame decoder's buffer."""
        self._decoder.append(data)

    def waiting_for_payload(self) -> bool:
        """Is a frame's payload still arriving, with nothing to check until it is complete?

        True while the bytes buffered since the last `receive_data` only extend a binary (or
        compressed) frame whose header was parsed: parsing them would yield no event. Not for an
        uncompressed text frame, whose UTF-8 is checked as it arrives (§8.1 fail fast)."""
        return self._decoder.frame_incomplete() and not self._partial_is_plain_text()

    def _partial_is_plain_text(self) -> bool:
        """Is the frame still arriving uncompressed text (whose UTF-8 we check as it comes)?"""
        partial = self._decoder.partial
        if partial is None:
            return False
        _, opcode, rsv, _, _ = partial
        continues_text = opcode == Opcode.CONTINUATION and self._message_opcode == Opcode.TEXT
        compressed = rsv or (continues_text and self._message_compressed)
        return (opcode == Opcode.TEXT or continues_text) and not compressed

    def _check_partial_text(self) -> None:
        """§8.1 fail fast: validate the UTF-8 of a text frame still arriving, as its bytes come.

        A frame of 1 MiB whose second byte is invalid fails now, not when the rest arrives. The
        check runs on a copy of the message's decoder state and only over bytes not yet checked;
        the frame is decoded for real once complete. (A compressed frame is checked when it can
        be inflated, i.e. when complete.)
        """
        if not self._partial_is_plain_text():
            return
        number, opcode, _, _, _ = self._decoder.partial
        if self._partial_checker is None or self._partial_checker[0] != number:
            checker = codecs.getincrementaldecoder("utf-8")("strict")
            if opcode == Opcode.CONTINUATION:
                checker.setstate(self._utf8.getstate())  # continue where the message stands
            self._partial_checker = (number, checker, 0)
        _, checker, checked = self._partial_checker
        fresh = self._decoder.peek_payload(checked)
        if not fresh:
            return
        try:
            checker.decode(fresh)
        except UnicodeDecodeError:
            raise ProtocolError(CloseCode.INVALID_DATA, "text message is not valid UTF-8") from None
        _reject_pending_surrogate(checker)
        self._partial_checker = (number, checker, checked + len(fresh))

    def fail(self, code: int, reason: str) -> ConnectionFailed:
        """Fail the connection for a reason found outside the byte stream (e.g. a keepalive
        timeout): queue a close frame with `code` and stop. Write `data_to_send()`, then close TCP."""
        return self._fail(code, reason)

    def _fail(self, code: int, reason: str) -> ConnectionFailed:
        """§7.1.7 Fail the WebSocket Connection: send a close frame (if we still may), then stop."""
        if self.state is State.OPEN:
            # Close reasons are limited to 123 bytes; ours are short ASCII messages.
            self._send_frame(Opcode.CLOSE, build_close_payload(code, reason[:120]))
        self.state = State.CLOSED
        self.close_code, self.close_reason = code, reason
        return ConnectionFailed(code, reason)

    def _handle_frame(self, frame: Frame) -> Event | None:
        opcode = frame.opcode
        if opcode == Opcode.TEXT or opcode == Opcode.BINARY or opcode == Opcode.CONTINUATION:
            return self._handle_data(frame)
        if opcode == Opcode.PING:
            if self.state is State.OPEN:
                self.send_pong(frame.payload)
            return Ping(frame.payload)
        if opcode == Opcode.PONG:
            return Pong(frame.payload)
        return self._handle_close(frame)

    def _handle_close(self, frame: Frame) -> CloseReceived:
        code, reason = parse_close_payload(frame.payload)
        if self.state is State.OPEN:
            # §5.5.1: echo the status code back; then the handshake is complete on our side.
            self._send_frame(Opcode.CLOSE, frame.payload[:2])
        # §7.1.5: the connection's close code is the one in the close frame we *received*.
        self.close_code, self.close_reason = code, reason
        self.state = State.CLOSED
        return CloseReceived(code, reason)

    def _handle_data(self, frame: Frame) -> Message | None:
        # Data still arrives while CLOSING (we sent close, the peer has not answered yet): it was
        # sent before the peer saw our close, so it is delivered, not dropped.
        if frame.opcode == Opcode.CONTINUATION:
            if self._message_opcode is None:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "continuation frame with no message started")
        elif self._message_opcode is not None:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, "new data frame inside a fragmented message")
        else:
            self._message_compressed = bool(frame.rsv)  # RSV1: the decoder allowed nothing else
            if frame.fin:
                return self._whole_message(frame.opcode, self._inflate(frame))  # the common case
            self._message_opcode, self._parts, self._message_size = frame.opcode, [], 0
            self._utf8.reset()
            self._decoder.in_compressed_message = self._message_compressed
        self._add_fragment(self._inflate(frame), frame.fin)
        if not frame.fin:
            return None
        data = "".join(self._parts) if self._message_opcode == Opcode.TEXT else b"".join(self._parts)
        self._message_opcode, self._parts = None, []
        self._decoder.max_payload = self.max_size
        self._decoder.in_compressed_message = False
        return Message(data)

    def _inflate(self, frame: Frame) -> bytes:
        """The frame's payload, inflated if its message is compressed (RFC 7692 §7.2.2)."""
        if not self._message_compressed:
            return frame.payload
        assert self.deflate is not None  # RSV1 is refused unless deflate was negotiated
        fragment_start = 0 if frame.opcode != Opcode.CONTINUATION else self._message_size
        limit = None if self.max_size is None else self.max_size - fragment_start
        try:
            return self.deflate.decompress(frame.payload, fin=frame.fin, limit=limit)
        except DecompressionError as error:
            raise ProtocolError(error.code, error.reason) from None

    def _whole_message(self, opcode: int, payload: bytes) -> Message:
        if opcode == Opcode.BINARY:
            return Message(payload)
        try:
            return Message(payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(CloseCode.INVALID_DATA, "text message is not valid UTF-8") from None

    def _add_fragment(self, payload: bytes, fin: bool) -> None:
        self._message_size += len(payload)
        if self.max_size is not None:
            # The decoder refused any frame that would overflow (it parses lazily, one frame at a
            # time, so this limit applies to the very next header).
            self._decoder.max_payload = self.max_size - self._message_size
        if self._message_opcode == Opcode.BINARY:
            self._parts.append(payload)
            return
        # The incremental decoder keeps an incomplete trailing sequence for the next fragment but
        # raises as soon as a sequence cannot become valid: fail fast, before the message ends.
        try:
            self._parts.append(self._utf8.decode(payload, final=fin))
        except UnicodeDecodeError:
            raise ProtocolError(CloseCode.INVALID_DATA, "text message is not valid UTF-8") from None
        _reject_pending_surrogate(self._utf8)


def _reject_pending_surrogate(decoder: codecs.IncrementalDecoder) -> None:
    """CPython rejects E0 80, F0 8F, F4 90 at their second byte but keeps ED A0..BF (the start of a
    UTF-16 surrogate, never valid in UTF-8) waiting for a third: reject it now."""
    pending = decoder.getstate()[0]
    if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
        raise ProtocolError(CloseCode.INVALID_DATA, "text message is not valid UTF-8")
