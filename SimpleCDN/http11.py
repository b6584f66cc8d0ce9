"""Just enough HTTP/1.1 (RFC 9112) on asyncio streams: read requests, write responses, talk to an origin.

Why our own instead of http.server or aiohttp: an edge must keep client connections alive (a new TCP
connection per request would dominate the cost of a cache hit), must refuse hostile framing
strictly (request smuggling lives in Content-Length/Transfer-Encoding ambiguity), and must stream a
large origin body to the client without holding it all. This module does those three things and
nothing else; the caching decisions live in cache_policy.py.

Limits are explicit: a request head over MAX_HEAD_BYTES gets 431, a malformed one 400, an unknown
version 505, a request body over MAX_REQUEST_BODY 413. Each raises HttpError, which the server turns
into a response and then closes that connection, while every other connection carries on.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import urlsplit

from .cache_policy import Fields, Headers, get_header, split_list, strip_ows

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_COUNT = 100
MAX_REQUEST_BODY = 16 * 2**20
READ_CHUNK = 64 * 1024

_TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # \Z: "$" would also match before a final LF
# The head most clients send, whole, in one regex pass (run on the head decoded as latin-1): a
# request line "token SP target SP HTTP/1.x" (the target without spaces or controls), then
# "name:value" lines whose names are tokens and whose values hold no control character but HTAB,
# every line ending in CRLF. A head this matches is one parse_head accepts line by line, with the
# same result; anything else (an error, or a rarer shape such as empty lines before the request
# line) takes that line-by-line parse, which names what is wrong. The value pattern is greedy and
# cannot end where a CR or LF is, so matching stays linear in the head's length.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SIMPLE_HEAD_RE = re.compile(rf"({_TOKEN}) ([^\x00-\x20\x7f]+) (HTTP/1\.[01])\r\n"
                             rf"((?:{_TOKEN}:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*)\r\n")
# The same for an origin's response head: "HTTP/1.x NNN reason" (a reason without controls), fields.
_SIMPLE_RESPONSE_HEAD_RE = re.compile(rf"HTTP/1\.[01] ([1-5][0-9][0-9]) ([^\x00-\x08\x0a-\x1f\x7f]*)\r\n"
                                      rf"((?:{_TOKEN}:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*)\r\n")
_STATUS_VERSION_RE = re.compile(rb"HTTP/1\.[01]")
_STATUS_CODE_RE = re.compile(rb"[1-5][0-9][0-9]")
# Every control character except HTAB (RFC 9110 §5.5: field-vchar is VCHAR or obs-text; HTAB and SP
# appear only between them). CR, LF and NUL are the ones that can split or end a header.
_CONTROL_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
MAX_INTERIM_RESPONSES = 16  # 1xx responses accepted before the final one (an endless 103 stream)


class HttpError(Exception):
    """A request the server refuses; `status` and the message become the response."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class OriginError(Exception):
    """The origin could not be reached or answered garbage. `timeout` tells 504 from 502;
    `unanswered` means the connection ended before any byte of a response (safe to retry)."""

    def __init__(self, message: str, timeout: bool = False, unanswered: bool = False):
        super().__init__(message)
        self.timeout = timeout
        self.unanswered = unanswered


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: Headers
    body: bytes
    # lower-case name -> every value, built once by parse_head: a hit asks for about ten fields,
    # and scanning the list (lower-casing every name) each time cost more than parsing the head.
    fields: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.fields and self.headers:  # built by hand (tests, tools): index it here
            self.fields = field_index(self.headers)

    def index_headers(self) -> None:
        """Make `headers` a Fields sharing the `fields` index: the policy functions read a request's
        fields about ten times a miss, each then a dict lookup instead of a scan of every name.
        (Not done for every request: a fast-path hit reads `fields` itself and never needs it.)"""
        if type(self.headers) is not Fields:
            self.headers = Fields.with_index(self.headers, self.fields)

    def get(self, name: str) -> str | None:
        """The combined value of field `name` (lower-case), or None — like cache_policy.get_header."""
        values = self.fields.get(name)
        return None if values is None else ", ".join(values)

    @property
    def keep_alive(self) -> bool:
        if "connection" not in self.fields:  # the usual case: HTTP/1.1 keeps it open, 1.0 does not
            return self.version != "HTTP/1.0"
        connection = self.get("connection")
        tokens = {token.lower() for token in split_list(connection)} if connection else set()
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


# ------------------------------------------------------------------------------------ server side

async def read_request(reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter | None = None) -> Request | None:
    """Read one request; None when the client closed the connection cleanly between requests.

    The reader must have been created with limit=MAX_HEAD_BYTES so readuntil enforces the bound.
    With `writer`, a client that sent `Expect: 100-continue` is told to send its body (RFC 9110
    §10.1.1) instead of waiting a second for a 100 that never comes (curl does this for POSTs).
    """
    head = await _read_head(reader)
    if head is None:
        return None
    method, target, version, headers = parse_head(head)
    fields = field_index(headers)
    hosts = fields.get("host", ())
    if len(hosts) > 1 or (version == "HTTP/1.1" and not hosts):
        # RFC 9112 §3.2 (a MUST): two Host fields are how a front end and a back end are made to
        # disagree about which site a request is for.
        raise HttpError(400, "an HTTP/1.1 request needs exactly one Host header field")
    if version == "HTTP/1.0" and "transfer-encoding" in fields:
        # RFC 9112 §6.1: HTTP/1.0 has no chunked coding, so such framing MUST be treated as faulty
        # (an HTTP/1.0 front end would read the body by Content-Length or to the close: smuggling).
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request: the body's framing is faulty")
    if "expect" in fields:
        expect = ", ".join(fields["expect"])
        if expect.lower() != "100-continue":
            raise HttpError(417, f"unsupported Expect: {expect!r} (only 100-continue is)")
        if writer is not None and version == "HTTP/1.1":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = await _read_request_body(reader, headers) if (
        "content-length" in fields or "transfer-encoding" in fields) else b""
    return Request(method, target, version, headers, body, fields)


def field_index(headers: Headers) -> dict[str, list[str]]:
    """Lower-case field name -> its values in order (repeats kept, RFC 9110 §5.3)."""
    index: dict[str, list[str]] = {}
    for name, value in headers:
        index.setdefault(name.lower(), []).append(value)
    return index


async def _read_line_crlf(reader: asyncio.StreamReader) -> bytes | None:
    """One line ending in CRLF; None if the client closed cleanly before sending anything."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip(b"\r\n"):
            return None
        raise HttpError(400, "the connection closed in the middle of the request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"request head larger than {MAX_HEAD_BYTES} bytes") from None
    if len(line) < 2 or line[-2] != 0x0D or b"\r" in line[:-2]:
        raise HttpError(400, "a line of the request head does not end in CRLF (bare LF or CR)")
    return line


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request line and header lines, each ending in CRLF, up to and including the blank line.

    Read line by line so that a line ending in a bare LF is refused (400) the moment it arrives:
    waiting for CRLF CRLF would leave an LF-only client hanging until the idle timeout. RFC 9112
    §2.2 lets a recipient accept a bare LF as a line end; this edge refuses it, because a front end
    and a back end that disagree about where a line ends can be made to disagree about where a
    request ends (request smuggling). None: the client closed cleanly between requests.
    """
    first = await _read_line_crlf(reader)
    if first is None:
        return None
    if first != b"\r\n":
        # The common case: the rest of the head has arrived with the request line, so take it in
        # one piece and check it has no bare CR or LF, instead of one await per header line.
        buffered = reader._buffer  # noqa: SLF001 - see unread_bytes
        end = buffered.find(b"\r\n\r\n")
        if buffered.startswith(b"\r\n"):
            await reader.readexactly(2)
            return first + b"\r\n"
        if 0 <= end < MAX_HEAD_BYTES - len(first):
            rest = await reader.readexactly(end + 4)
            if rest.count(b"\n") != rest.count(b"\r\n") or rest.count(b"\r") != rest.count(b"\r\n"):
                raise HttpError(400, "a line of the request head does not end in CRLF (bare LF or CR)")
            if rest.count(b"\r\n") - 1 > MAX_HEADER_COUNT:
                raise HttpError(431, f"more than {MAX_HEADER_COUNT} header fields")
            return first + rest
    lines: list[bytes] = [] if first == b"\r\n" else [first]
    size = len(first)
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if not lines and not exc.partial.strip(b"\r\n"):
                return None
            raise HttpError(400, "the connection closed in the middle of the request head") from None
        except asyncio.LimitOverrunError:
            raise HttpError(431, f"request head larger than {MAX_HEAD_BYTES} bytes") from None
        size += len(line)
        if size > MAX_HEAD_BYTES:
            raise HttpError(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
        if len(line) < 2 or line[-2] != 0x0D or b"\r" in line[:-2]:
            raise HttpError(400, "a line of the request head does not end in CRLF (bare LF or CR)")
        if line == b"\r\n":
            if lines:
                return b"".join(lines) + b"\r\n"
            continue  # §2.2: a server SHOULD ignore empty lines received before the request line
        if len(lines) > MAX_HEADER_COUNT:
            raise HttpError(431, f"more than {MAX_HEADER_COUNT} header fields")
        lines.append(line)


def parse_head(head: bytes) -> tuple[str, str, str, Headers]:
    """Parse the request line and header fields strictly (RFC 9112 §3, §5; RFC 9110 §5.5)."""
    simple = parse_simple_head(head)
    return simple if simple is not None else parse_head_by_lines(head)


def parse_simple_head(head: bytes) -> tuple[str, str, str, Headers] | None:
    """parse_head for a head in the common shape (see _SIMPLE_HEAD_RE), checked by one regex pass
    instead of a check per line (those were a third of the fast hit path's own work); None for any
    other head, valid or not: parse_head_by_lines then decides. No bare CR or LF can be in a head
    this accepts."""
    text = head.decode("latin-1")
    match = _SIMPLE_HEAD_RE.fullmatch(text)
    if match is None:
        return None
    method, target, version, block = match.groups()
    headers = _split_checked_fields(block)
    if len(headers) > MAX_HEADER_COUNT:
        return None  # parse_head_by_lines refuses it with its 431
    return method, target, version, headers


def _split_checked_fields(block: str) -> Headers:
    """The (name, value) pairs of field lines a _SIMPLE_*_RE has checked: every line "token:value"
    ending in CRLF, so the first colon ends the name and only OWS needs stripping."""
    headers = []
    for line in block.split("\r\n")[:-1]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return headers


def parse_head_by_lines(head: bytes) -> tuple[str, str, str, Headers]:
    """The strict parse, one line at a time, with a specific error for each way a head is bad."""
    lines = head[:-4].split(b"\r\n")
    while lines and lines[0] == b"":  # §2.2: a server SHOULD ignore empty lines before the request
        lines.pop(0)
    if not lines:
        raise HttpError(400, "empty request")
    if _CONTROL_RE.search(lines[0]):
        raise HttpError(400, "control characters in the request line")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line: expected 'METHOD target HTTP/1.1'")
    method, target, version = parts
    if not _TOKEN_RE.match(method):
        raise HttpError(400, "malformed method in the request line")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if re.match(rb"^HTTP/\d\.\d$", version):
            raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise HttpError(400, "malformed HTTP version in the request line")
    if len(lines) - 1 > MAX_HEADER_COUNT:
        raise HttpError(431, f"more than {MAX_HEADER_COUNT} header fields")
    headers: Headers = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding in a header field is not accepted")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN_RE.match(name):
            raise HttpError(400, "malformed header field (expected 'Name: value')")
        if _CONTROL_RE.search(value):
            # RFC 9110 §5.5: CR, LF and NUL in a field value MUST be rejected (or replaced by SP);
            # the other controls make a value invalid too. "Content-Length: 0\x0b" is one of them.
            raise HttpError(400, "control characters in a header value")
        headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return method.decode("ascii"), target.decode("latin-1"), version.decode("ascii"), headers


async def _read_request_body(reader: asyncio.StreamReader, headers: Headers) -> bytes:
    transfer_encoding = get_header(headers, "transfer-encoding")
    content_length = get_header(headers, "content-length")
    if transfer_encoding is not None:
        # §6.3: both present is how request smuggling works; refuse instead of picking one.
        if content_length is not None:
            raise HttpError(400, "both Transfer-Encoding and Content-Length: refusing an ambiguous body")
        if [t.lower() for t in split_list(transfer_encoding)] != ["chunked"]:
            raise HttpError(501, "only Transfer-Encoding: chunked is supported")
        return await _read_chunked(reader, MAX_REQUEST_BODY)
    if content_length is None:
        return b""
    length = parse_content_length(content_length)
    if length is None:
        raise HttpError(400, "invalid Content-Length")
    if length > MAX_REQUEST_BODY:
        raise HttpError(413, f"request body larger than {MAX_REQUEST_BODY} bytes")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise HttpError(400, "the connection closed before the whole request body arrived") from None


def parse_content_length(value: str) -> int | None:
    """Content-Length, allowing identical repeats ('5, 5'); None if invalid or inconsistent."""
    values = {strip_ows(part) for part in value.split(",")}
    if len(values) != 1:
        return None
    (single,) = values
    # isascii(): str.isdigit() also accepts "²", which int() then refuses (a 500 instead of a 400).
    return int(single) if single.isascii() and single.isdigit() and len(single) < 19 else None


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = bytearray()
    async for chunk in _chunks(reader, limit):
        body += chunk
    return bytes(body)


async def _chunks(reader: asyncio.StreamReader, limit: int | None = None) -> AsyncIterator[bytes]:
    """Decode chunked transfer coding (RFC 9112 §7.1); trailers are read and dropped.

    A chunk's data is yielded in pieces of at most READ_CHUNK bytes, and a chunk that would take the
    body over `limit` is refused *before* it is read: the size line is attacker-controlled, and
    reading a declared 4 GB chunk in one go would hold it all in memory first.
    """
    total = 0
    while True:
        size_line = await _read_line(reader, "malformed chunked body")
        size_text = size_line.split(b";", 1)[0].rstrip(b" \t\r\n")
        if _CONTROL_RE.search(size_line, 0, len(size_line) - 2):
            # A bare LF inside a chunk extension ends the line for a lenient parser and not for a
            # strict one: the two then read different bodies (RFC 9112 §7.1.1 allows no controls).
            raise HttpError(400, "control characters in a chunk size line")
        if not size_text or len(size_text) > 16 or not re.match(rb"^[0-9A-Fa-f]+$", size_text):
            raise HttpError(400, "malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            while (line := await _read_line(reader, "malformed trailer section")) != b"\r\n":
                if _CONTROL_RE.search(line, 0, len(line) - 2):
                    raise HttpError(400, "control characters in a trailer field")
                # trailer fields are read and dropped: not forwarded
            return
        total += size
        if limit is not None and total > limit:
            raise HttpError(413, f"request body larger than {limit} bytes")
        remaining = size
        try:
            while remaining:
                piece = await reader.readexactly(min(remaining, READ_CHUNK))
                remaining -= len(piece)
                yield piece
            crlf = await reader.readexactly(2)
        except asyncio.IncompleteReadError:
            raise HttpError(400, "chunked body ended early") from None
        if crlf != b"\r\n":
            raise HttpError(400, "chunk not followed by CRLF")


async def _read_line(reader: asyncio.StreamReader, problem: str) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise HttpError(400, problem) from None


def response_head(status: int, reason: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason or reason_phrase(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def simple_response(status: int, message: str, extra: Sequence[tuple[str, str]] = (),
                    close: bool = False) -> bytes:
    """A complete small text/plain response, e.g. for 400 and 502."""
    body = (message.rstrip("\n") + "\n").encode()
    headers = [("Date", formatdate(usegmt=True)), ("Content-Type", "text/plain; charset=utf-8"),
               ("Content-Length", str(len(body))), *extra]
    if close:
        headers.append(("Connection", "close"))
    return response_head(status, reason_phrase(status), headers) + body


# ------------------------------------------------------------------------------------ client side

class OriginResponse:
    """Status and headers of an origin response; the body is read with read_body / iter_body."""

    def __init__(self, connection: OriginConnection, status: int, reason: str, headers: Headers,
                 method: str, timeout: float):
        self.connection = connection
        self.status = status
        self.reason = reason
        self.headers = headers
        self._timeout = timeout
        self._done = False
        self._iterator: AsyncIterator[bytes] | None = None
        tokens = {t.lower() for t in split_list(get_header(headers, "connection"))}
        self.reusable = "close" not in tokens
        te = get_header(headers, "transfer-encoding")
        self.content_length: int | None = None
        self.transfer_codings: str | None = None  # codings other than chunked, to pass on
        if method == "HEAD" or status in (204, 304):
            self._mode = "none"
            cl = get_header(headers, "content-length")
            self.content_length = parse_content_length(cl) if cl else None
        elif te is not None:
            codings = [coding.lower() for coding in split_list(te)]
            if codings == ["chunked"]:
                self._mode = "chunked"
            elif "chunked" in codings:
                # chunked after another coding this edge cannot decode, or chunked twice (a sender
                # MUST NOT, RFC 9112 §7): its framing cannot be trusted.
                raise OriginError(f"the origin sent transfer codings this edge cannot decode: {te!r}")
            else:
                # RFC 9112 §6.3 (4): chunked is not the final coding, so the body ends when the
                # connection closes. The codings are passed on for the client to decode.
                self._mode = "close"
                self.reusable = False
                # "identity" (RFC 2616: no coding) was removed by RFC 9112: it is not passed on, so
                # the client never gets "identity, chunked". The framing above still counts it, so
                # "chunked, identity" stays untrustworthy.
                passed_on = [coding for coding in split_list(te) if coding.lower() != "identity"]
                self.transfer_codings = ", ".join(passed_on) or None
            if get_header(headers, "content-length") is not None:
                # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and the message "ought
                # to be handled as an error": the origin and a parser that trusted Content-Length
                # now disagree about where this response ends, so the connection is never reused.
                self.reusable = False
        elif get_header(headers, "content-length") is not None:
            self._mode = "length"
            self.content_length = parse_content_length(get_header(headers, "content-length") or "")
            if self.content_length is None:
                raise OriginError("the origin sent an invalid Content-Length")
        else:
            self._mode = "close"
            self.reusable = False

    @property
    def has_body(self) -> bool:
        return self._mode != "none"

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Yield the body in pieces; the connection goes back to the pool once it is all read."""
        reader = self.connection.reader
        try:
            if self._mode == "length":
                remaining = self.content_length or 0
                while remaining:
                    # When the rest has all arrived (the usual small body: it came with the head),
                    # the read returns at once and needs no timer (arming and cancelling one costs
                    # more than the read).
                    arrived = unread_bytes(reader) >= remaining
                    size = remaining if arrived else min(remaining, READ_CHUNK)
                    piece = await self._within_timeout(reader.read(size), timed=not arrived)
                    if not piece:
                        raise OriginError("the origin closed the connection mid-body")
                    remaining -= len(piece)
                    yield piece
            elif self._mode == "chunked":
                chunks = _chunks(reader).__aiter__()
                while True:
                    try:
                        piece = await self._within_timeout(chunks.__anext__())
                    except StopAsyncIteration:
                        break
                    except HttpError as exc:
                        raise OriginError(f"the origin sent a malformed chunked body: {exc}") from None
                    yield piece
            elif self._mode == "close":
                while piece := await self._within_timeout(reader.read(READ_CHUNK)):
                    yield piece
            self._done = True
        finally:
            self.release()

    def pieces(self) -> AsyncIterator[bytes]:
        """The one body iterator of this response: a second call continues where the first stopped,
        so a caller may read part of the body (to decide whether to cache it) and stream the rest."""
        if self._iterator is None:
            self._iterator = self.iter_body()
        return self._iterator

    async def read_arrived_body(self, limit: int) -> bytes | None:
        """The whole body, if it is framed by Content-Length, at most `limit` bytes, and has already
        arrived (a small body usually comes with the head); else None, and nothing is read. The
        quick way for the common miss: no iterator, no timer, no waiting."""
        length = self.content_length
        if (self._mode != "length" or self._iterator is not None or length is None or length > limit
                or unread_bytes(self.connection.reader) < length):
            return None
        self._iterator = _no_pieces()  # pieces() has nothing more to give
        try:
            body = await self.connection.reader.readexactly(length)  # returns at once: it is buffered
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            self.release()  # not done: closed, never pooled
            raise OriginError(f"the origin connection failed: {type(exc).__name__}") from None
        self._done = True
        self.release()
        return body

    async def read_body(self) -> bytes:
        return b"".join([piece async for piece in self.pieces()])

    def release(self) -> None:
        """Return the connection to the pool if exactly this response was read, else close it.

        Bytes already waiting after the framed end of the response are not the next response's:
        the next request has not been sent yet. Reusing the connection would hand them to the next
        request, for any URL, and the cache would store them under that URL. So: close it.
        """
        if self.connection.pool is None:
            return
        if (self._done or self._mode == "none") and self.reusable and not self.connection.expired \
                and not unread_bytes(self.connection.reader):
            self.connection.pool.give_back(self.connection)
        else:
            self.connection.close()
        self.connection.pool = None  # released exactly once

    async def _within_timeout(self, awaitable, timed: bool = True):
        try:
            if not timed:
                return await awaitable
            return await self.connection.read_within(awaitable, self._timeout)
        except TimeoutError:
            raise OriginError(f"the origin sent nothing for {self._timeout:g}s", timeout=True) from None
        except (ConnectionError, OSError) as exc:
            raise OriginError(f"the origin connection failed: {exc}") from None


async def _no_pieces() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that yields nothing


InterimHandler = Callable[[int, str, Headers], None]


class OriginConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pool: OriginPool):
        self.reader = reader
        self.writer = writer
        self.expired = False  # a read outlasted its timeout: the reader is failed, never reuse it
        self.pool: OriginPool | None = pool

    def close(self) -> None:
        self.writer.close()

    async def read_within(self, awaitable, timeout: float):
        """Await `awaitable`, a read from this connection; TimeoutError if it has not completed
        within `timeout` seconds. The timer fails the reader itself (StreamReader.set_exception):
        one timer handle per read, where asyncio.timeout costs more than the read it guards (its
        context manager, rescheduling and cancelling, profiled on the miss path) and wait_for more
        still (a Task per read)."""
        timer = asyncio.get_running_loop().call_later(timeout, self._expire)
        try:
            return await awaitable
        finally:
            timer.cancel()

    def _expire(self) -> None:
        # If the read completed in this same loop turn, the failure waits for the next read on
        # this connection, which `expired` keeps from ever being another request's.
        self.expired = True
        self.reader.set_exception(TimeoutError())


class OriginPool:
    """Keep-alive connections to one origin (http or https), reused across requests.

    `host_header` is always the configured origin's authority: what the client sent as Host never
    reaches this layer, so it cannot redirect the edge to another server.
    """

    def __init__(self, origin: str, timeout: float = 10.0, max_idle: int = 32, cafile: str | None = None):
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"origin must be an http:// or https:// URL, got {origin!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.host_header = parts.netloc
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: list[OriginConnection] = []
        # Certificates are always verified (system CAs, or `cafile` for a private CA): an edge that
        # accepted any certificate would cache whatever a network attacker served it.
        self._ssl = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None

    async def request(self, method: str, target: str, headers: Sequence[tuple[str, str]],
                      body: bytes = b"", on_interim: InterimHandler | None = None) -> OriginResponse:
        """Send one request and read the final response's head. Raises OriginError (502/504).

        Interim (1xx) responses before it are passed to `on_interim` (the edge relays them to the
        client, RFC 9110 §15.2) and are never returned: they are not the answer to the request.
        A pooled connection may have been closed by the origin while idle; for a request that is
        safe to repeat we then retry once on a fresh connection (RFC 9112 §9.3.1).
        """
        reused = bool(self._idle)
        try:
            return await self._attempt(method, target, headers, body, on_interim)
        except OriginError as exc:
            if reused and exc.unanswered and method in ("GET", "HEAD", "PURGE", "OPTIONS"):
                self.close_idle()
                return await self._attempt(method, target, headers, body, on_interim)
            raise

    async def _attempt(self, method: str, target: str, headers: Sequence[tuple[str, str]],
                       body: bytes, on_interim: InterimHandler | None) -> OriginResponse:
        connection = await self._connection()
        lines = [f"{method} {self.base_path}{target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        try:
            connection.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            status, reason, response_headers = await self._final_head(connection, on_interim)
        except (ConnectionError, OSError) as exc:
            connection.close()
            raise OriginError(f"the origin connection failed: {type(exc).__name__}",
                              unanswered=True) from None
        except OriginError:
            connection.close()
            raise
        fields = Fields(response_headers)
        if "date" not in fields.by_name:
            # RFC 9110 §6.6.1: a recipient with a clock MUST add the time it received a Date-less
            # response before caching or forwarding it (and RFC 9111's age calculation needs one).
            fields = Fields([*response_headers, ("Date", formatdate(usegmt=True))])
        try:
            return OriginResponse(connection, status, reason, fields, method, self.timeout)
        except OriginError:
            connection.close()  # its framing is unknown, so it can neither be reused nor left open
            raise

    async def _final_head(self, connection: OriginConnection,
                          on_interim: InterimHandler | None) -> tuple[int, str, Headers]:
        """Read response heads until the final (non-1xx) one; relay or skip the 1xx before it.

        An origin that sends 103 Early Hints before its 200 is normal (RFC 8297). Taking the 103
        for the answer would leave the real 200 unread on the connection, to be read as the answer
        to the *next* request on it — for another URL, and cached under that URL.
        """
        for count in range(MAX_INTERIM_RESPONSES + 1):
            try:
                head = await connection.read_within(connection.reader.readuntil(b"\r\n\r\n"), self.timeout)
            except TimeoutError:
                raise OriginError(f"the origin did not answer within {self.timeout:g}s",
                                  timeout=True) from None
            except asyncio.IncompleteReadError as exc:
                raise OriginError("the origin closed the connection without a complete response",
                                  unanswered=count == 0 and not exc.partial) from None
            except (asyncio.LimitOverrunError, ConnectionError, OSError) as exc:
                raise OriginError(f"the origin connection failed: {type(exc).__name__}",
                                  unanswered=count == 0 and isinstance(exc, ConnectionError)) from None
            try:
                status, reason, headers = parse_response_head(head)
            except ValueError as exc:
                raise OriginError(f"the origin sent a malformed response: {exc}") from None
            if status >= 200:
                return status, reason, headers
            if status == 101:  # this edge never asks to switch protocols (RFC 9110 §15.2.2)
                raise OriginError("the origin switched protocols (101) although nobody asked it to")
            if on_interim is not None:
                on_interim(status, reason, headers)
        raise OriginError(f"the origin sent more than {MAX_INTERIM_RESPONSES} interim (1xx) responses")

    async def _connection(self) -> OriginConnection:
        while self._idle:
            connection = self._idle.pop()
            if (not connection.reader.at_eof() and not connection.writer.is_closing()
                    and not connection.expired
                    and not unread_bytes(connection.reader)):  # bytes sent while idle: not ours
                connection.pool = self
                return connection
            connection.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=self._ssl, limit=MAX_HEAD_BYTES * 4),
                self.timeout)
        except TimeoutError:
            raise OriginError(f"connecting to the origin took over {self.timeout:g}s", timeout=True) from None
        except ssl.SSLError as exc:
            raise OriginError(f"TLS with the origin {self.host}:{self.port} failed: "
                              f"{exc.reason or exc}") from None
        except OSError as exc:
            raise OriginError(f"cannot connect to the origin {self.host}:{self.port}: "
                              f"{exc.strerror or exc}", unanswered=True) from None
        return OriginConnection(reader, writer, self)

    def give_back(self, connection: OriginConnection) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.close()

    def close_idle(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def parse_response_head(head: bytes) -> tuple[int, str, Headers]:
    """Status line and fields of an origin response, strictly. ValueError -> the edge answers 502.

    A head in the common shape is checked by one regex pass (_SIMPLE_RESPONSE_HEAD_RE: about a third
    of the line-by-line cost, on every miss); any other goes through the checks below, line by line.

    Refused: a status outside 100-599 (RFC 9110 §15: "invalid"; a client treats it as a 5xx), line
    folding (RFC 9112 §5.2: a proxy MUST answer 502 or unfold), and any control character in the
    reason phrase or a field value — a bare LF there would otherwise be replayed to every client
    as a header line of its own (`X-A: a<LF>Set-Cookie: ...`), from the cache (RFC 9110 §5.5).
    """
    match = _SIMPLE_RESPONSE_HEAD_RE.fullmatch(head.decode("latin-1"))
    if match is not None:
        status, reason, block = match.groups()
        return int(status), reason, _split_checked_fields(block)
    return parse_response_head_by_lines(head)


def parse_response_head_by_lines(head: bytes) -> tuple[int, str, Headers]:
    """parse_response_head's checks one line at a time, each with its own error message."""
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not _STATUS_VERSION_RE.fullmatch(status_line[0]) or \
            not _STATUS_CODE_RE.fullmatch(status_line[1]):
        raise ValueError(f"bad status line {lines[0][:60]!r}")
    reason = status_line[2] if len(status_line) > 2 else b""
    if _CONTROL_RE.search(reason):
        raise ValueError("control characters in the reason phrase")
    headers: Headers = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise ValueError("obsolete line folding in a header field")
        name, colon, value = line.partition(b":")
        # RFC 9112 §5.1: whitespace before the colon is not allowed; a proxy MUST remove it.
        name = name.rstrip(b" \t")
        if not colon or not _TOKEN_RE.match(name):
            raise ValueError(f"bad header line {line[:60]!r}")
        if _CONTROL_RE.search(value):
            raise ValueError(f"control characters (CR, LF, NUL ...) in the value of {name.decode()}")
        headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return int(status_line[1]), reason.decode("latin-1"), headers


def unread_bytes(reader: asyncio.StreamReader) -> int:
    """How many received bytes the reader holds that nobody has read yet.

    StreamReader offers no public way to ask, so this looks at its buffer (`_buffer`, the same name
    since asyncio's first release; the tests of leftover bytes would catch a rename).
    """
    return len(reader._buffer)  # noqa: SLF001
