"""permessage-deflate (RFC 7692), sans-I/O: the negotiation and the per-message codec.

Browsers offer it on every connection (`Sec-WebSocket-Extensions: permessage-deflate;
client_max_window_bits`). Text such as JSON shrinks several times, at the price of CPU and of a
compression state kept per connection. What lives here, with no sockets:

- the `Sec-WebSocket-Extensions` grammar (RFC 6455 §9.1): `parse_extension_header`;
- negotiation, both roles (RFC 7692 §7.1): `accept_offer` (server: take the first offer it can
  honour, decline the others) and `client_offer` / `accept_response` (client: offer, then fail
  the connection on any response that breaks the rules);
- `PerMessageDeflate`, the negotiated codec (§7.2): compress a message and strip the trailing
  `00 00 ff ff`; append it and inflate, checking the decompressed size as it grows.

DEFLATE itself is zlib's. Two zlib facts shape the code:
- raw DEFLATE (`wbits` < 0, no zlib header) is what goes on the wire;
- zlib cannot *compress* with an 8-bit (256-byte) window (`compressobj(wbits=-8)` raises; older
  zlib silently used 9, making streams a 256-byte-window peer could not inflate). It inflates with
  8 bits fine. So, like `websockets`, a server declines an offer that demands
  `server_max_window_bits=8`; and a client told `client_max_window_bits=8` sends its messages
  uncompressed (RSV1 clear), which RFC 7692 allows message by message (§6) — `websockets` fails
  the connection there instead.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

EXTENSION_NAME = "permessage-deflate"
# §7.2.1: a sync flush ends with an empty stored block, 00 00 ff ff: the sender strips it, the
# receiver appends it back before inflating.
EMPTY_STORED_BLOCK = b"\x00\x00\xff\xff"
MIN_WINDOW_BITS, MAX_WINDOW_BITS = 8, 15
# memLevel 5 and 12-bit windows are what `websockets` uses by default: a compressor then costs
# (1 << (12 + 2)) + (1 << (5 + 9)) = 32 KiB per connection instead of 256 KiB at 15/8.
DEFAULT_MEM_LEVEL = 5
DEFAULT_SERVER_WINDOW_BITS = 12


class NegotiationError(ValueError):
    """An offer or a response breaks RFC 7692 §7: a server declines the offer, a client fails."""


class DecompressionError(Exception):
    """The peer's message cannot be inflated (close 1007) or inflates too large (close 1009)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


# ------------------------------------------------------------------ Sec-WebSocket-Extensions

# RFC 6455 §9.1 / RFC 7230 token and quoted-string, with optional whitespace around separators.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_OWS = r"[ \t]*"
_PARAM = re.compile(rf"{_OWS};{_OWS}({_TOKEN})(?:{_OWS}={_OWS}({_TOKEN}|{_QUOTED}))?")
_NAME = re.compile(rf"{_OWS}({_TOKEN})")
_COMMA = re.compile(rf"{_OWS},")

Params = list[tuple[str, str | None]]


def parse_extension_header(value: str) -> list[tuple[str, Params]]:
    """`a; x=1, b` -> [("a", [("x", "1")]), ("b", [])]. Raises NegotiationError if malformed.

    §9.1: a quoted value must still be a token once unquoted (`"10"` is 10, `"1 0"` is invalid).
    """
    extensions: list[tuple[str, Params]] = []
    position = 0
    while True:
        name = _NAME.match(value, position)
        if name is None:
            raise NegotiationError(f"malformed Sec-WebSocket-Extensions: {value[:80]!r}")
        params: Params = []
        position = name.end()
        while (param := _PARAM.match(value, position)) is not None:
            raw = param.group(2)
            if raw is not None and raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                if not re.fullmatch(_TOKEN, raw):
                    raise NegotiationError(f"quoted parameter value {raw!r} is not a token")
            params.append((param.group(1).lower(), raw))
            position = param.end()
        extensions.append((name.group(1).lower(), params))
        comma = _COMMA.match(value, position)
        if comma is None:
            if value[position:].strip(" \t"):
                raise NegotiationError(f"malformed Sec-WebSocket-Extensions: {value[:80]!r}")
            return extensions
        position = comma.end()


# ------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class DeflateParameters:
    """The four parameters of RFC 7692 §7.1, as offered or as agreed.

    `client_max_window_bits=True` is the value-less form a client offers ("I can limit my window
    if you tell me to"); in a response it always carries a number.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | bool | None = None

    def header_value(self) -> str:
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is True:
            parts.append("client_max_window_bits")
        elif self.client_max_window_bits:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


# §7.1.2.1: the value is "%x38-39 / "1" %x30-35": 8-15 in decimal, no leading zero, no sign.
_WINDOW_BITS = re.compile(r"[89]|1[0-5]")


def parse_parameters(params: Params, *, in_offer: bool) -> DeflateParameters:
    """Validate one permessage-deflate element. Raises NegotiationError (§7.1: unknown or repeated
    parameter, a value where none is allowed, a bad or missing window size)."""
    seen: dict[str, str | None] = {}
    for name, value in params:
        if name in seen:
            raise NegotiationError(f"{name} given twice")
        seen[name] = value
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise NegotiationError(f"{name} takes no value, got {value!r}")
        elif name == "server_max_window_bits" or name == "client_max_window_bits":
            # Only a client's offer may leave client_max_window_bits without a value (§7.1.2.2).
            if value is None and not (in_offer and name == "client_max_window_bits"):
                raise NegotiationError(f"{name} needs a value from 8 to 15")
            if value is not None and not _WINDOW_BITS.fullmatch(value):
                raise NegotiationError(f"{name} must be 8-15, got {value!r}")
        else:
            raise NegotiationError(f"unknown parameter {name!r}")
    client_bits = seen.get("client_max_window_bits", False)
    return DeflateParameters(
        server_no_context_takeover="server_no_context_takeover" in seen,
        client_no_context_takeover="client_no_context_takeover" in seen,
        server_max_window_bits=(int(seen["server_max_window_bits"]) if "server_max_window_bits" in seen
                                else None),
        client_max_window_bits=(None if client_bits is False else True if client_bits is None
                                else int(client_bits)),
    )


# ------------------------------------------------------------------------------ server side


@dataclass(frozen=True)
class ServerDeflateConfig:
    """What our server wants, whatever the client offers. Defaults: `websockets`' (12-bit windows,
    context takeover kept), which keep a connection's compression memory small."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = DEFAULT_SERVER_WINDOW_BITS
    client_max_window_bits: int | None = DEFAULT_SERVER_WINDOW_BITS
    mem_level: int = DEFAULT_MEM_LEVEL

    def __post_init__(self) -> None:
        if not 9 <= self.server_max_window_bits <= MAX_WINDOW_BITS:
            raise ValueError("server_max_window_bits must be 9-15 (zlib cannot compress with 8)")
        if self.client_max_window_bits is not None and not 8 <= self.client_max_window_bits <= 15:
            raise ValueError("client_max_window_bits must be 8-15")


def accept_offer(header: str | None, config: ServerDeflateConfig | None = None
                 ) -> tuple[str, PerMessageDeflate] | None:
    """Server side: (response header value, codec) for the first offer we can honour, or None.

    Offers come in the client's order of preference (§5.1); an offer we cannot accept is declined
    and the next one tried (§7.1: "the server MUST decline" an offer with an invalid parameter).
    A malformed header declines them all: we answer without the extension.
    """
    if not header:
        return None
    config = config or ServerDeflateConfig()
    try:
        offers = parse_extension_header(header)
    except NegotiationError:
        return None
    for name, params in offers:
        if name != EXTENSION_NAME:
            continue
        try:
            agreed = _agree(parse_parameters(params, in_offer=True), config)
        except NegotiationError:
            continue
        codec = PerMessageDeflate(
            local_no_context_takeover=agreed.server_no_context_takeover,
            remote_no_context_takeover=agreed.client_no_context_takeover,
            local_max_window_bits=agreed.server_max_window_bits or MAX_WINDOW_BITS,
            remote_max_window_bits=int(agreed.client_max_window_bits or MAX_WINDOW_BITS),
            mem_level=config.mem_level,
        )
        return agreed.header_value(), codec
    return None


def _agree(offer: DeflateParameters, config: ServerDeflateConfig) -> DeflateParameters:
    """The response to one valid offer (§7.1.1-§7.1.2), or NegotiationError to decline it."""
    # §7.1.2.1: we may always narrow our own window; a requested size is a maximum we must obey.
    server_bits = config.server_max_window_bits
    if offer.server_max_window_bits is not None:
        server_bits = min(server_bits, offer.server_max_window_bits)
    if server_bits == 8:
        raise NegotiationError("zlib cannot compress with server_max_window_bits=8")
    # §7.1.2.2: we may limit the client's window only if it said it can (the parameter is in its
    # offer); a number in the offer is the client's own maximum.
    client_bits: int | None = None
    if offer.client_max_window_bits is not None:
        limits = [bits for bits in (config.client_max_window_bits, offer.client_max_window_bits)
                  if bits is not None and bits is not True]
        client_bits = min(limits) if limits else None
    return DeflateParameters(
        # §7.1.1.1: a client's request for server_no_context_takeover must be granted.
        server_no_context_takeover=offer.server_no_context_takeover or config.server_no_context_takeover,
        client_no_context_takeover=offer.client_no_context_takeover or config.client_no_context_takeover,
        server_max_window_bits=server_bits if server_bits != MAX_WINDOW_BITS else None,
        client_max_window_bits=client_bits,
    )


# ------------------------------------------------------------------------------ client side

# What browsers send: "I can limit my window if you ask", nothing else.
DEFAULT_CLIENT_OFFER = DeflateParameters(client_max_window_bits=True)


def client_offer(offer: DeflateParameters = DEFAULT_CLIENT_OFFER) -> str:
    """The Sec-WebSocket-Extensions value of a client's request."""
    return offer.header_value()


def accept_response(header: str | None, offer: DeflateParameters = DEFAULT_CLIENT_OFFER, *,
                    mem_level: int = DEFAULT_MEM_LEVEL) -> PerMessageDeflate | None:
    """Client side: the codec the server's response agreed to, None if it declined.

    Raises NegotiationError for anything the client MUST fail the connection on (§7.1): an
    extension we did not offer, twice the extension, a bad parameter, or a parameter that
    contradicts our offer.
    """
    if not header:
        return None
    extensions = parse_extension_header(header)
    if len(extensions) != 1 or extensions[0][0] != EXTENSION_NAME:
        raise NegotiationError(f"the server answered with extensions we did not offer: {header[:80]!r}")
    agreed = parse_parameters(extensions[0][1], in_offer=False)
    if offer.server_no_context_takeover and not agreed.server_no_context_takeover:
        raise NegotiationError("we asked for server_no_context_takeover and the server left it out")
    wanted, got = offer.server_max_window_bits, agreed.server_max_window_bits
    if wanted is not None and (got is None or got > wanted):
        raise NegotiationError("the server's window is larger than our server_max_window_bits")
    client_bits = agreed.client_max_window_bits
    if client_bits is not None:
        if offer.client_max_window_bits is None:
            raise NegotiationError("client_max_window_bits in the response but not in our offer")
        if offer.client_max_window_bits is not True and client_bits > offer.client_max_window_bits:
            raise NegotiationError("client_max_window_bits larger than we offered")
    elif isinstance(offer.client_max_window_bits, int) and offer.client_max_window_bits is not True:
        client_bits = offer.client_max_window_bits  # our offer was our own limit: keep to it
    return PerMessageDeflate(
        local_no_context_takeover=agreed.client_no_context_takeover or offer.client_no_context_takeover,
        remote_no_context_takeover=agreed.server_no_context_takeover,
        local_max_window_bits=int(client_bits or MAX_WINDOW_BITS),
        remote_max_window_bits=agreed.server_max_window_bits or MAX_WINDOW_BITS,
        mem_level=mem_level,
    )


# ------------------------------------------------------------------------------ the codec


def compressed_size_bound(size: int) -> int:
    """The largest payload `size` bytes of message can take on the wire once deflated: zlib's
    conservative `deflateBound` for any settings (incompressible data costs block headers, more
    of them with a small memLevel: websockets' memLevel 5 adds 0.25 % at 1 MiB). The frame
    decoder refuses larger compressed frames from their header; the real limit is on the
    inflated size."""
    return size + (size >> 3) + (size >> 8) + (size >> 9) + 64


# Messages smaller than this are always compressed: the few bytes lost on random data are not
# worth a copy of the compressor state.
_WORTH_CHECKING = 4096


class PerMessageDeflate:
    """The negotiated codec of one connection (§7.2). `local` is how we compress, `remote` how the
    peer does. With context takeover, each message may refer back to earlier ones (one zlib
    stream per direction for the whole connection); without it, a fresh stream per message."""

    def __init__(self, *, local_no_context_takeover: bool = False, remote_no_context_takeover: bool = False,
                 local_max_window_bits: int = MAX_WINDOW_BITS, remote_max_window_bits: int = MAX_WINDOW_BITS,
                 mem_level: int = DEFAULT_MEM_LEVEL):
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_max_window_bits = local_max_window_bits
        self.remote_max_window_bits = remote_max_window_bits
        self.mem_level = mem_level
        # zlib cannot deflate in a 256-byte window: then we send uncompressed messages (§6).
        self.compresses = local_max_window_bits >= 9
        self._compressor = self._new_compressor() if self.compresses else None
        self._decompressor = zlib.decompressobj(wbits=-remote_max_window_bits)
        # The peer's last 2**bits bytes of output, kept only to survive a BFINAL block (§7.2.3.4).
        self._window_size = 1 << remote_max_window_bits
        self._window = b""

    def __repr__(self) -> str:
        return (f"PerMessageDeflate(local: window {self.local_max_window_bits} bits"
                f"{', no context takeover' if self.local_no_context_takeover else ''}; remote: window "
                f"{self.remote_max_window_bits} bits"
                f"{', no context takeover' if self.remote_no_context_takeover else ''})")

    def _new_compressor(self):
        return zlib.compressobj(wbits=-self.local_max_window_bits, memLevel=self.mem_level)

    # --- sending

    def compress(self, payload: bytes, *, fin: bool = True) -> bytes:
        """Compress one frame's worth of a message. Call with fin=True for the last (or only) part.

        Each part ends with a sync flush, so everything sent so far can be inflated; only the
        message's last part has the final `00 00 ff ff` stripped (§7.2.1).
        """
        assert self._compressor is not None, "check `compresses` first"
        data = self._compressor.compress(payload) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        if not fin:
            return data
        if self.local_no_context_takeover:
            self._compressor = self._new_compressor()
        return data[:-4]  # always EMPTY_STORED_BLOCK after a sync flush

    def compress_message(self, parts: list[bytes]) -> list[bytes] | None:
        """A whole message (one part per frame) compressed, or None when it does not shrink:
        then send it plain, RSV1 clear.

        Random or already-compressed data grows a little under DEFLATE (block headers), and a peer
        that checks its size limit on the wire (`websockets` does) would refuse a 1 MiB message
        that became 1.003 MiB. With context takeover the compressor has already taken the message
        into its window, which the peer will never see: restore the state from before.
        """
        size = sum(len(part) for part in parts)
        if size < _WORTH_CHECKING:
            return [self.compress(part, fin=index == len(parts) - 1) for index, part in enumerate(parts)]
        snapshot = None if self.local_no_context_takeover else self._compressor.copy()
        compressed = [self.compress(part, fin=index == len(parts) - 1) for index, part in enumerate(parts)]
        if sum(len(part) for part in compressed) < size:
            return compressed
        if snapshot is not None:
            self._compressor = snapshot
        return None

    # --- receiving

    def decompress(self, payload: bytes, *, fin: bool, limit: int | None) -> bytes:
        """Inflate one frame of a compressed message; `limit` is what the message may still grow by.

        The limit is enforced while inflating: zlib is asked for at most limit + 1 bytes, so a
        1 KiB frame that would inflate to 1 GiB costs limit + 1 bytes of memory, then 1009.
        """
        data = payload + EMPTY_STORED_BLOCK if fin else payload
        out = self._inflate(data, limit)
        # §7.2.3.4: a sender may end its DEFLATE stream with a BFINAL block. zlib then stops and
        # keeps the rest as unused_data: go on with a new stream that still sees the old window.
        while self._decompressor.eof:
            rest = self._decompressor.unused_data
            self._decompressor = self._new_decompressor(out)
            if rest:
                out += self._inflate(rest, None if limit is None else limit - len(out))
        if self.remote_no_context_takeover:
            if fin:
                self._decompressor = self._new_decompressor(b"")
        else:
            self._window = (self._window + out[-self._window_size:])[-self._window_size:]
        return out

    def _inflate(self, data: bytes, limit: int | None) -> bytes:
        decompressor = self._decompressor
        try:
            if limit is None:
                return decompressor.decompress(data)
            out = decompressor.decompress(data, limit + 1)
        except zlib.error as error:
            raise DecompressionError(1007, f"invalid compressed data ({error})") from None
        if len(out) > limit or decompressor.unconsumed_tail:
            raise DecompressionError(1009, "the message inflates past the size limit")
        return out

    def _new_decompressor(self, latest: bytes):
        """A fresh inflater; with context takeover, primed with the last window of output."""
        if self.remote_no_context_takeover:
            return zlib.decompressobj(wbits=-self.remote_max_window_bits)
        window = (self._window + latest[-self._window_size:])[-self._window_size:]
        return zlib.decompressobj(wbits=-self.remote_max_window_bits, zdict=window)
