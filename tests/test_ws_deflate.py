"""permessage-deflate (RFC 7692), sans-I/O: the negotiation table both ways, the codec, the RSV1
rules, the inflated-size limit, and properties (round trips; any bytes give a clean 1007/1009)."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from WebSockets.deflate import (
    EMPTY_STORED_BLOCK,
    DecompressionError,
    DeflateParameters,
    NegotiationError,
    PerMessageDeflate,
    ServerDeflateConfig,
    accept_offer,
    accept_response,
    parse_extension_header,
)
from WebSockets.protocol import (
    ConnectionFailed,
    Message,
    Opcode,
    Role,
    WebSocketConnection,
    encode_frame,
)

# ------------------------------------------------------------------ header grammar


def test_several_offers_parameters_and_quoted_values():
    assert parse_extension_header('permessage-deflate; client_max_window_bits="10" ,  foo;bar, x-y') == [
        ("permessage-deflate", [("client_max_window_bits", "10")]), ("foo", [("bar", None)]), ("x-y", [])]


@pytest.mark.parametrize("header", ["", "permessage-deflate;", "a,,b", "a; b=", 'a; b="1 0"', "a b", "a; =1"])
def test_malformed_headers_are_refused(header):
    with pytest.raises(NegotiationError):
        parse_extension_header(header)


# ------------------------------------------------------------------ server side (§7.1)

PMD = "permessage-deflate"

# (client's Sec-WebSocket-Extensions, our server's answer with the default config, or None: declined)
SERVER_TABLE = [
    (PMD, f"{PMD}; server_max_window_bits=12"),
    (f"{PMD}; client_max_window_bits", f"{PMD}; server_max_window_bits=12; client_max_window_bits=12"),
    (f"{PMD}; client_max_window_bits=10", f"{PMD}; server_max_window_bits=12; client_max_window_bits=10"),
    (f"{PMD}; client_max_window_bits=15", f"{PMD}; server_max_window_bits=12; client_max_window_bits=12"),
    (f'{PMD}; client_max_window_bits="9"', f"{PMD}; server_max_window_bits=12; client_max_window_bits=9"),
    (f"{PMD}; server_max_window_bits=10", f"{PMD}; server_max_window_bits=10"),
    (f"{PMD}; server_max_window_bits=15", f"{PMD}; server_max_window_bits=12"),
    (f"{PMD}; server_no_context_takeover", f"{PMD}; server_no_context_takeover; server_max_window_bits=12"),
    (f"{PMD}; client_no_context_takeover", f"{PMD}; client_no_context_takeover; server_max_window_bits=12"),
    # zlib cannot compress in a 256-byte window: decline, and take the next offer if any.
    (f"{PMD}; server_max_window_bits=8", None),
    (f"{PMD}; server_max_window_bits=8, {PMD}", f"{PMD}; server_max_window_bits=12"),
    # Each invalid offer is declined (§7.1: "the server MUST decline"); a later valid one is taken.
    (f"{PMD}; foo", None),
    (f"{PMD}; server_no_context_takeover; server_no_context_takeover", None),
    (f"{PMD}; server_no_context_takeover=1", None),
    (f"{PMD}; client_no_context_takeover=yes", None),
    (f"{PMD}; server_max_window_bits", None),
    (f"{PMD}; server_max_window_bits=7", None),
    (f"{PMD}; server_max_window_bits=16", None),
    (f"{PMD}; server_max_window_bits=08", None),
    (f"{PMD}; client_max_window_bits=abc", None),
    (f"{PMD}; client_max_window_bits=10; client_max_window_bits=11", None),
    (f"{PMD}; foo, {PMD}; client_no_context_takeover",
     f"{PMD}; client_no_context_takeover; server_max_window_bits=12"),
    ("x-webkit-deflate-frame, permessage-deflate", f"{PMD}; server_max_window_bits=12"),
    ("x-webkit-deflate-frame", None),
    (f"{PMD};;", None),  # malformed header: decline everything
    (None, None),
]


@pytest.mark.parametrize(("offer", "answer"), SERVER_TABLE)
def test_server_negotiation_table(offer, answer):
    accepted = accept_offer(offer)
    assert (accepted[0] if accepted else None) == answer


def test_server_config_full_windows_and_no_context_takeover_imposed():
    config = ServerDeflateConfig(server_max_window_bits=15, client_max_window_bits=None,
                                 server_no_context_takeover=True, client_no_context_takeover=True)
    answer, codec = accept_offer(f"{PMD}; client_max_window_bits", config)
    assert answer == f"{PMD}; server_no_context_takeover; client_no_context_takeover"
    assert codec.local_no_context_takeover and codec.remote_no_context_takeover
    assert (codec.local_max_window_bits, codec.remote_max_window_bits) == (15, 15)


def test_server_config_refuses_window_bits_8_for_itself():
    with pytest.raises(ValueError, match="zlib"):
        ServerDeflateConfig(server_max_window_bits=8)


# ------------------------------------------------------------------ client side (§7.1)

OFFER = DeflateParameters(client_max_window_bits=True)  # what browsers and our client send


@pytest.mark.parametrize(("offer", "response", "local_bits", "remote_bits"), [
    (OFFER, PMD, 15, 15),
    (OFFER, f"{PMD}; client_max_window_bits=10", 10, 15),
    (OFFER, f"{PMD}; server_max_window_bits=9", 15, 9),
    (OFFER, f"{PMD}; server_max_window_bits=8", 15, 8),  # we inflate with 8 bits fine
    (DeflateParameters(client_max_window_bits=11), PMD, 11, 15),  # our own limit holds
    (DeflateParameters(server_max_window_bits=10), f"{PMD}; server_max_window_bits=9", 15, 9),
])
def test_client_accepts_valid_responses(offer, response, local_bits, remote_bits):
    codec = accept_response(response, offer)
    assert (codec.local_max_window_bits, codec.remote_max_window_bits) == (local_bits, remote_bits)


@pytest.mark.parametrize(("offer", "response"), [
    (OFFER, "x-webkit-deflate-frame"),  # an extension we never offered
    (OFFER, f"{PMD}, {PMD}"),  # the extension twice
    (OFFER, f"{PMD}; foo"),
    (OFFER, f"{PMD}; server_no_context_takeover; server_no_context_takeover"),
    (OFFER, f"{PMD}; client_max_window_bits"),  # a response must give a value
    (OFFER, f"{PMD}; server_max_window_bits=16"),
    (OFFER, f"{PMD}; client_no_context_takeover=1"),
    (DeflateParameters(), f"{PMD}; client_max_window_bits=10"),  # not offered
    (DeflateParameters(client_max_window_bits=10), f"{PMD}; client_max_window_bits=11"),
    (DeflateParameters(server_no_context_takeover=True), PMD),  # requested, must be granted
    (DeflateParameters(server_max_window_bits=10), PMD),  # requested, must be answered
    (DeflateParameters(server_max_window_bits=10), f"{PMD}; server_max_window_bits=11"),
    (OFFER, f"{PMD};"),
])
def test_client_fails_on_invalid_responses(offer, response):
    with pytest.raises(NegotiationError):
        accept_response(response, offer)


def test_client_told_window_8_sends_uncompressed_messages_the_server_reads():
    client_codec = accept_response(f"{PMD}; client_max_window_bits=8", OFFER)
    assert not client_codec.compresses
    _, server_codec = accept_offer(f"{PMD}; client_max_window_bits=8")
    client, server = pair(client_codec, server_codec)
    client.send_text("not compressed")
    wire = client.data_to_send()
    assert wire[0] & 0x40 == 0  # RSV1 clear: an uncompressed message (§6)
    assert list(server.receive_data(wire)) == [Message("not compressed")]


# ------------------------------------------------------------------ the codec on connections


def pair(client_codec: PerMessageDeflate, server_codec: PerMessageDeflate, max_size: int | None = 1 << 20):
    return (WebSocketConnection(Role.CLIENT, deflate=client_codec, max_size=max_size),
            WebSocketConnection(Role.SERVER, deflate=server_codec, max_size=max_size))


def negotiated(offer: str = f"{PMD}; client_max_window_bits", config: ServerDeflateConfig | None = None,
               max_size: int | None = 1 << 20):
    answer, server_codec = accept_offer(offer, config)
    client_codec = accept_response(answer, DeflateParameters(**_offer_kwargs(offer)))
    return pair(client_codec, server_codec, max_size)


def _offer_kwargs(offer: str) -> dict:
    from WebSockets.deflate import parse_parameters
    params = parse_parameters(parse_extension_header(offer)[0][1], in_offer=True)
    return {name: getattr(params, name) for name in DeflateParameters.__dataclass_fields__}


def test_rsv1_on_the_first_frame_only_and_the_trailer_stripped():
    client, server = negotiated()
    server.send_fragments(["abc" * 20, "def" * 20])
    wire = server.data_to_send()
    first_length = wire[1] & 0x7F
    assert wire[0] == 0x41  # FIN=0, RSV1=1, TEXT
    second = wire[2 + first_length:]
    assert second[0] == 0x80  # FIN=1, RSV1=0, CONTINUATION
    assert not second[2:].endswith(EMPTY_STORED_BLOCK)
    assert list(client.receive_data(wire)) == [Message("abc" * 20 + "def" * 20)]


def test_context_takeover_makes_a_repeated_message_smaller():
    text = "the quick brown fox jumps over the lazy dog " * 5
    for offer, shrinks in [(f"{PMD}", True), (f"{PMD}; client_no_context_takeover", False)]:
        client, server = negotiated(offer)
        sizes = []
        for _ in range(2):
            client.send_text(text)
            wire = client.data_to_send()
            sizes.append(len(wire))
            assert list(server.receive_data(wire)) == [Message(text)]
        assert (sizes[1] < sizes[0] // 2) is shrinks, (offer, sizes)


@pytest.mark.parametrize(("frame_bytes", "why"), [
    (encode_frame(Opcode.PING, b"", rsv=0b100, mask=b"abcd"), "RSV1 set on a control frame"),
    (encode_frame(Opcode.TEXT, b"", fin=False, mask=b"abcd")
     + encode_frame(Opcode.CONTINUATION, b"", rsv=0b100, mask=b"abcd"), "RSV1 set on a continuation frame"),
    (encode_frame(Opcode.TEXT, b"", rsv=0b010, mask=b"abcd"), "RSV bits 010"),
])
def test_rsv_rules_with_deflate_negotiated(frame_bytes, why):
    _, server = negotiated()
    events = list(server.receive_data(frame_bytes))
    assert isinstance(events[-1], ConnectionFailed) and events[-1].code == 1002
    assert why in events[-1].reason


def test_rsv1_without_the_extension_is_a_protocol_error():
    server = WebSocketConnection(Role.SERVER)
    [event] = server.receive_data(encode_frame(Opcode.TEXT, b"\x00", rsv=0b100, mask=b"abcd"))
    assert event == ConnectionFailed(1002, "RSV bits 100 set without an extension")


def test_an_uncompressed_message_on_a_deflate_connection_is_delivered():
    _, server = negotiated()
    assert list(server.receive_data(encode_frame(Opcode.TEXT, b"plain", mask=b"abcd"))) == [Message("plain")]


def test_bad_deflate_data_closes_with_1007():
    _, server = negotiated()
    [event] = server.receive_data(encode_frame(Opcode.BINARY, b"\xff\xff\xff", rsv=0b100, mask=b"abcd"))
    assert isinstance(event, ConnectionFailed) and event.code == 1007


def test_compressed_text_that_is_not_utf8_closes_with_1007():
    client, server = negotiated()
    client._send_message(Opcode.TEXT, [b"ok \xff"])  # bypass send_text's encoding
    [event] = server.receive_data(client.data_to_send())
    assert isinstance(event, ConnectionFailed) and event.code == 1007


def bomb(inflated: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    chunk = b"\0" * (1 << 20)
    data = b"".join(compressor.compress(chunk) for _ in range(inflated >> 20))
    return (data + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_zip_bomb_closes_with_1009_without_inflating_it():
    payload = bomb(64 << 20)  # ~64 KB on the wire, 64 MiB inflated
    assert len(payload) < 100_000
    _, server = negotiated(max_size=1 << 20)
    frame = encode_frame(Opcode.BINARY, payload, rsv=0b100, mask=b"abcd")
    tracemalloc.start()
    try:
        events = list(server.receive_data(frame))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(events[-1], ConnectionFailed) and events[-1].code == 1009
    # A few copies of the ~64 KB frame and at most max_size + 1 inflated bytes: under 8 MiB,
    # where inflating first and checking after would peak at 64 MiB.
    assert peak < 8 << 20, peak


def test_limit_counts_inflated_bytes_across_fragments():
    client, server = negotiated(max_size=1000)
    client.send_fragments([b"\0" * 600, b"\0" * 600])  # ~10 bytes on the wire, 1200 inflated
    events = list(server.receive_data(client.data_to_send()))
    assert isinstance(events[-1], ConnectionFailed) and events[-1].code == 1009


def test_a_message_exactly_at_the_limit_passes_even_incompressible():
    client, server = negotiated(max_size=70_000)
    data = bytes(range(256)) * 273 + bytes(range(112))  # 70,000 bytes that barely compress
    client.send_binary(data)
    assert list(server.receive_data(client.data_to_send())) == [Message(data)]


def test_a_stream_ended_with_bfinal_keeps_its_window_for_the_next_message():
    """§7.2.3.4: a sender may close each message's DEFLATE stream with a BFINAL block."""
    _, server = negotiated(f"{PMD}; client_max_window_bits=15")
    compressor = zlib.compressobj(wbits=-15)
    first = compressor.compress(b"abcdefghij" * 3) + compressor.flush(zlib.Z_FINISH) + b"\x00"
    again = zlib.compressobj(wbits=-15, zdict=b"abcdefghij" * 3)
    second = (again.compress(b"abcdefghij" * 3) + again.flush(zlib.Z_SYNC_FLUSH))[:-4]
    wire = (encode_frame(Opcode.TEXT, first, rsv=0b100, mask=b"abcd")
            + encode_frame(Opcode.TEXT, second, rsv=0b100, mask=b"abcd"))
    assert list(server.receive_data(wire)) == [Message("abcdefghij" * 3)] * 2


# ------------------------------------------------------------------ properties

OFFERS = st.builds(
    lambda *values: DeflateParameters(*values).header_value(), st.booleans(), st.booleans(),
    st.sampled_from([None, 9, 10, 12, 15]), st.sampled_from([None, True, 8, 9, 11, 15]))
REPEATS = st.builds(lambda word, n: word * n, st.text(min_size=1, max_size=8), st.integers(1, 300))
MESSAGES = st.one_of(st.binary(max_size=3000), st.text(max_size=1000), REPEATS)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(offer=OFFERS, messages=st.lists(st.tuples(MESSAGES, st.integers(1, 4)), min_size=1, max_size=6))
def test_round_trips_for_any_parameters_messages_and_fragmentation(offer, messages):
    client, server = negotiated(offer, max_size=None)
    for sender, receiver in [(client, server), (server, client)]:
        for message, pieces in messages:
            step = max(1, len(message) // pieces)
            parts = [message[i:i + step] for i in range(0, len(message), step)] or [message]
            sender.send_fragments(parts) if len(parts) > 1 else sender.send(message)
            assert list(receiver.receive_data(sender.data_to_send())) == [Message(message)]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.binary(max_size=200), fin=st.booleans(), bits=st.integers(8, 15))
def test_random_bytes_into_the_inflater_give_bytes_or_a_clean_close_code(data, fin, bits):
    codec = PerMessageDeflate(remote_max_window_bits=bits)
    try:
        out = codec.decompress(data, fin=fin, limit=10_000)
    except DecompressionError as error:
        assert error.code in (1007, 1009)
    else:
        assert len(out) <= 10_000
