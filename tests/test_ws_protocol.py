"""The sans-I/O protocol module alone: RFC examples, boundaries, roles, close codes, UTF-8, properties."""

from __future__ import annotations

import base64
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from WebSockets.protocol import (
    CloseReceived,
    ConnectionClosed,
    ConnectionFailed,
    Frame,
    FrameDecoder,
    HandshakeError,
    Message,
    Opcode,
    Ping,
    Pong,
    ProtocolError,
    Role,
    State,
    WebSocketConnection,
    accept_key,
    apply_mask,
    build_client_request,
    build_server_response,
    encode_frame,
    is_valid_close_code,
    validate_client_request,
    validate_server_response,
)

PROPERTIES = settings(max_examples=150, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow])


def pair(max_size: int | None = 1 << 20) -> tuple[WebSocketConnection, WebSocketConnection]:
    return (WebSocketConnection(Role.CLIENT, max_size=max_size),
            WebSocketConnection(Role.SERVER, max_size=max_size))


def deliver(sender: WebSocketConnection, receiver: WebSocketConnection) -> list:
    return list(receiver.receive_data(sender.data_to_send()))


# ----------------------------------------------------------------------------- handshake


def test_accept_key_matches_the_rfc_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3


def test_client_request_validates_and_the_response_carries_the_accept_key():
    key = base64.b64encode(os.urandom(16)).decode()
    request = build_client_request("example.com", "/chat?room=1", key)
    parsed = validate_client_request(request[:-4])
    assert (parsed.path, parsed.key) == ("/chat?room=1", key)
    response = build_server_response(parsed)
    head, codec = validate_server_response(response[:-4], key)
    assert head.header("Upgrade") == "websocket" and codec is None
    with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
        validate_server_response(response[:-4], base64.b64encode(os.urandom(16)).decode())


def _request(**overrides: str | None) -> bytes:
    headers = {"Host": "h", "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    start = overrides.pop("start", "GET / HTTP/1.1")
    for name, value in overrides.items():
        headers[name.replace("_", "-")] = value
    lines = [start] + [f"{name}: {value}" for name, value in headers.items() if value is not None]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(("overrides", "status"), [
    ({"start": "POST / HTTP/1.1"}, 405),
    ({"start": "GET / HTTP/1.0"}, 400),
    ({"start": "GET /"}, 400),
    ({"Host": None}, 400),
    ({"Upgrade": None}, 426),
    ({"Upgrade": "h2c"}, 426),
    ({"Connection": "keep-alive"}, 426),
    ({"Sec_WebSocket_Version": "8"}, 426),
    ({"Sec_WebSocket_Version": None}, 426),
    ({"Sec_WebSocket_Key": None}, 400),
    ({"Sec_WebSocket_Key": "dG9vIHNob3J0"}, 400),
    ({"Sec_WebSocket_Key": "!!!!not-base64!!!!!!!!=="}, 400),
])
def test_invalid_requests_map_to_statuses(overrides, status):
    with pytest.raises(HandshakeError) as caught:
        validate_client_request(_request(**overrides))
    assert caught.value.status == status
    if overrides.get("Sec_WebSocket_Version", "13") != "13":
        assert ("Sec-WebSocket-Version", "13") in caught.value.headers
    if status == 426:
        # RFC 9110 §15.5.22: a 426 MUST carry Upgrade naming the protocol to switch to.
        assert ("Upgrade", "websocket") in caught.value.headers


@pytest.mark.parametrize("value", ["13\x0b", "\x0c13", "13\x00", "1\n3", "13\x1f", "13\x7f"])
def test_control_characters_and_non_ows_whitespace_in_a_value_are_refused(value):
    # RFC 9110 §5.5 (CR, LF, NUL in a value: reject) and §5.6.3 (only SP and HTAB are OWS):
    # str.strip() would have turned "13\x0b" into an accepted "13".
    with pytest.raises(HandshakeError) as caught:
        validate_client_request(_request(Sec_WebSocket_Version=value))
    assert caught.value.status == 400


@pytest.mark.parametrize("line", ["Host : h", "Ho st: h", "\tHost: h", "Host\x0b: h"])
def test_a_header_name_must_be_a_token(line):
    head = _request() + b"\r\n" + line.encode()
    with pytest.raises(HandshakeError) as caught:
        validate_client_request(head)
    assert caught.value.status == 400


def test_sp_and_htab_around_a_value_are_optional_whitespace():
    validate_client_request(_request(Sec_WebSocket_Version=" \t13\t "))


def test_header_tokens_are_case_insensitive_lists():
    validate_client_request(_request(Upgrade="WebSocket", Connection="keep-alive, UPGRADE"))


# -------------------------------------------------------------------------------- frames


def test_rfc_5_7_examples():
    assert encode_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert encode_frame(Opcode.TEXT, b"Hello", mask=bytes.fromhex("37fa213d")) == \
        bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(Opcode.TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert encode_frame(Opcode.CONTINUATION, b"lo") == bytes.fromhex("80026c6f")
    assert encode_frame(Opcode.BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert encode_frame(Opcode.BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")


@pytest.mark.parametrize(("size", "header_length"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_length_encoding_boundaries(size, header_length):
    encoded = encode_frame(Opcode.BINARY, b"x" * size)
    assert len(encoded) == header_length + size
    assert list(FrameDecoder(expect_masked=False).feed(encoded)) == [Frame(Opcode.BINARY, b"x" * size)]


def test_apply_mask_is_a_bytewise_xor_and_its_own_inverse():
    rng = random.Random(6455)
    for length in (0, 1, 3, 4, 5, 1000, 4095, 4096, 4097, 4099, 65537):
        payload = rng.randbytes(length)
        mask = rng.randbytes(4)
        masked = apply_mask(payload, mask)
        assert masked == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert apply_mask(masked, mask) == payload


def test_masking_in_place_is_right_at_every_alignment():
    """The numpy path XORs the bytes before the first 8-byte-aligned address on their own and
    rotates the key for the rest: every start offset and length must still give §5.3's XOR."""
    rng = random.Random(5003)
    for length in (512, 4097, 4103, 65536 + 5, 256 * 1024, 256 * 1024 + 7):
        for start in range(9):  # every alignment of the payload's first byte, and then some
            payload, mask = rng.randbytes(length), rng.randbytes(4)
            frame = encode_frame(Opcode.BINARY, payload, mask=mask)
            assert apply_mask(frame[-length:], mask) == payload  # the client side, masked in place
            buffer = bytearray(rng.randbytes(start)) + frame
            decoded = list(FrameDecoder(expect_masked=True).feed(bytes(buffer[start:])))
            assert decoded[0].payload == payload  # the server side, unmasked in place


def test_bytes_kept_with_buffer_data_parse_like_bytes_fed_at_once():
    """An I/O layer may stash bytes as they arrive (`buffer_data`) and parse later with
    receive_data(b""): the same events, in the same order, as feeding them directly."""
    rng = random.Random(7)
    client, _ = pair()
    for size in (0, 5, 126, 70_000):
        client.send_binary(rng.randbytes(size))
    client.send_text("é" * 100)
    client.send_ping(b"p")
    wire = client.data_to_send()
    direct = list(WebSocketConnection(Role.SERVER).receive_data(wire))
    stashed = WebSocketConnection(Role.SERVER)
    events = []
    for start in range(0, len(wire), 1000):
        stashed.buffer_data(wire[start:start + 1000])
        if rng.random() < 0.3:
            events += stashed.receive_data(b"")
    events += stashed.receive_data(b"")
    assert events == direct and len(direct) == 6


def test_waiting_for_payload_only_while_a_binary_frame_is_incomplete():
    """The server skips waking up for bytes that only extend a binary frame; text is checked as it
    arrives (§8.1 fail fast), so a text frame never counts as "just waiting"."""
    client, server = pair()
    client.send_binary(b"b" * 10_000)
    wire = client.data_to_send()
    assert list(server.receive_data(wire[:100])) == []
    assert server.waiting_for_payload()
    server.buffer_data(wire[100:-1])
    assert server.waiting_for_payload()  # still one byte short
    server.buffer_data(wire[-1:])
    assert not server.waiting_for_payload()  # complete: time to parse
    assert list(server.receive_data(b"")) == [Message(b"b" * 10_000)]
    client.send_text("t" * 10_000)
    wire = client.data_to_send()
    assert list(server.receive_data(wire[:100])) == []
    assert not server.waiting_for_payload()


def test_roles_server_rejects_unmasked_and_client_rejects_masked():
    with pytest.raises(ProtocolError, match="not masked") as caught:
        list(FrameDecoder(expect_masked=True).feed(encode_frame(Opcode.TEXT, b"hi")))
    assert caught.value.code == 1002
    with pytest.raises(ProtocolError, match="masked") as caught:
        list(FrameDecoder(expect_masked=False).feed(encode_frame(Opcode.TEXT, b"hi", mask=b"abcd")))
    assert caught.value.code == 1002


def test_client_masks_every_frame_with_a_fresh_key_and_server_never_masks():
    client, server = pair()
    for _ in range(20):
        client.send_text("same text")
    wire = client.data_to_send()
    frames = list(FrameDecoder(expect_masked=True).feed(wire))
    assert len({f.mask for f in frames}) == 20
    server.send_text("reply")
    assert server.data_to_send()[1] & 0x80 == 0


def test_oversized_frame_is_refused_from_its_header_alone():
    decoder = FrameDecoder(expect_masked=False, max_payload=1000)
    header_only = encode_frame(Opcode.BINARY, bytes(1001))[:4]
    with pytest.raises(ProtocolError) as caught:
        list(decoder.feed(header_only))
    assert caught.value.code == 1009



@pytest.mark.parametrize(("header", "length"), [(b"\x82\x7e\x00\x05", 5), (b"\x82\x7e\x00\x7d", 125),
                                                (b"\x82\x7f" + (65535).to_bytes(8, "big"), 65535),
                                                (b"\x82\x7f" + (5).to_bytes(8, "big"), 5)])
def test_a_length_not_in_its_shortest_form_is_a_protocol_error(header, length):
    """§5.2: "the minimal number of bytes MUST be used to encode the length" (wsproto enforces it too)."""
    with pytest.raises(ProtocolError, match="shortest") as caught:
        list(FrameDecoder(expect_masked=False).feed(header + bytes(length)))
    assert caught.value.code == 1002


# ---------------------------------------------------------------------------- connection


def test_fragments_assemble_and_control_frames_interleave():
    client, server = pair()
    client.send_fragments(["Hel", "lo ", "wörld"])
    wire = client.data_to_send()
    client.send_ping(b"in between")
    ping = client.data_to_send()
    first_frame_end = 2 + 4 + 3
    events = list(server.receive_data(wire[:first_frame_end] + ping + wire[first_frame_end:]))
    assert events == [Ping(b"in between"), Message("Hello wörld")]
    assert deliver(server, client) == [Pong(b"in between")]  # pings are answered automatically


def test_utf8_fails_fast_on_the_first_fragment():
    _, server = pair()
    first_fragment = encode_frame(Opcode.TEXT, b"valid \xc0\xaf", fin=False, mask=b"\x00\x01\x02\x03")
    events = list(server.receive_data(first_fragment))  # no FIN: an overlong encoding is already fatal
    assert events == [ConnectionFailed(1007, "text message is not valid UTF-8")]
    assert server.state is State.CLOSED
    reply = server.data_to_send()
    assert reply[0] == 0x88 and reply[2:4] == (1007).to_bytes(2, "big")  # our close frame, code 1007



@pytest.mark.parametrize("tail", [b"\xed\xa0", b"\xed\xbf", b"\xf4\x90", b"\xe0\x80", b"\xf0\x8f"])
def test_utf8_fails_fast_on_the_second_byte_of_an_impossible_sequence(tail):
    """A fragment ending in the first two bytes of a surrogate (ED A0..BF) or of another sequence
    no third byte can save must fail at once. CPython's incremental decoder catches E0/F0/F4
    at the second byte but buffers ED A0 until the third, so the connection checks that itself."""
    _, server = pair()
    first_fragment = encode_frame(Opcode.TEXT, b"ok " + tail, fin=False, mask=b"\x00\x01\x02\x03")
    events = list(server.receive_data(first_fragment))
    assert events == [ConnectionFailed(1007, "text message is not valid UTF-8")]


def test_incomplete_utf8_at_the_end_of_a_message_is_invalid():
    _, server = pair()
    wire = encode_frame(Opcode.TEXT, "é".encode()[:1], mask=b"abcd")
    assert list(server.receive_data(wire)) == [ConnectionFailed(1007, "text message is not valid UTF-8")]


def test_fragmented_message_over_max_size_fails_at_the_header_of_the_fragment_that_overflows():
    _, server = pair(max_size=100)
    first = encode_frame(Opcode.BINARY, bytes(60), fin=False, mask=b"abcd")
    second_header = encode_frame(Opcode.CONTINUATION, bytes(41), mask=b"abcd")[:6]
    events = list(server.receive_data(first + second_header))
    assert [type(e) for e in events] == [ConnectionFailed] and events[0].code == 1009


def test_close_handshake_initiated_by_client():
    client, server = pair()
    client.send_close(4000, "bye")
    assert client.state is State.CLOSING
    with pytest.raises(ConnectionClosed):
        client.send_text("too late")
    assert deliver(client, server) == [CloseReceived(4000, "bye")]
    assert server.state is State.CLOSED
    assert deliver(server, client) == [CloseReceived(4000, "")]
    assert client.state is State.CLOSED and client.close_code == 4000


def test_empty_close_means_1005_and_is_answered_with_an_empty_close():
    client, server = pair()
    client._outgoing.append(encode_frame(Opcode.CLOSE, b"", mask=b"abcd"))
    assert deliver(client, server) == [CloseReceived(1005, "")]
    assert server.data_to_send() == b"\x88\x00"


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_invalid_received_close_codes_fail_with_1002(code):
    assert not is_valid_close_code(code)
    _, server = pair()
    events = list(server.receive_data(encode_frame(Opcode.CLOSE, code.to_bytes(2, "big"), mask=b"abcd")))
    assert events[0].code == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 3000, 4999])
def test_valid_close_codes(code):
    assert is_valid_close_code(code)


def test_bytes_after_failure_are_ignored():
    _, server = pair()
    events = list(server.receive_data(b"\x81\x02hi"))  # unmasked
    assert events[0].code == 1002
    assert list(server.receive_data(encode_frame(Opcode.TEXT, b"x", mask=b"abcd"))) == []


# ------------------------------------------------------------------------------ properties

OPCODES = st.sampled_from([Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY, Opcode.CLOSE, Opcode.PING,
                           Opcode.PONG])


@st.composite
def frames(draw):
    opcode = draw(OPCODES)
    if opcode >= 0x8:
        payload = draw(st.binary(max_size=125))
        fin = True
    else:
        size = draw(st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]) | st.integers(0, 300))
        payload = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
        fin = draw(st.booleans())
    return Frame(opcode, payload, fin, 0, draw(st.none() | st.binary(min_size=4, max_size=4)))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@PROPERTIES
@given(st.lists(frames(), min_size=1, max_size=6), st.booleans(), st.lists(st.integers(0, 10**6), max_size=8))
def test_encode_then_decode_returns_the_same_frames_in_any_chunking(original, masked, cuts):
    sent = [f._replace(mask=(f.mask or b"\x00\x00\x00\x00") if masked else None) for f in original]
    wire = b"".join(encode_frame(f.opcode, f.payload, fin=f.fin, mask=f.mask) for f in sent)
    decoder = FrameDecoder(expect_masked=masked)
    received = [f for chunk in split(wire, cuts) for f in decoder.feed(chunk)]
    assert received == sent


@PROPERTIES
@given(st.text(max_size=300) | st.binary(max_size=3000), st.lists(st.integers(0, 10**6), max_size=6),
       st.lists(st.integers(0, 10**6), max_size=8))
def test_any_message_survives_any_fragmentation_and_chunking(message, fragment_cuts, chunk_cuts):
    client, server = pair()
    raw = message.encode() if isinstance(message, str) else message
    # Fragment the *bytes*: text fragments may split a multi-byte character (§5.6 allows it).
    parts = split(raw, fragment_cuts)
    opcode = Opcode.TEXT if isinstance(message, str) else Opcode.BINARY
    wire = b"".join(
        encode_frame(opcode if i == 0 else Opcode.CONTINUATION, part, fin=i == len(parts) - 1,
                     mask=os.urandom(4))
        for i, part in enumerate(parts))
    events = [e for chunk in split(wire, chunk_cuts) for e in server.receive_data(chunk)]
    assert events == [Message(message)]


@PROPERTIES
@given(st.binary(max_size=2000), st.booleans())
def test_arbitrary_bytes_give_frames_or_a_protocol_error_never_another_exception(data, masked):
    decoder = FrameDecoder(expect_masked=masked, max_payload=1 << 20)
    try:
        for frame in decoder.feed(data):
            assert isinstance(frame, Frame)
    except ProtocolError as error:
        assert error.code in (1002, 1009)
    connection = WebSocketConnection(Role.SERVER if masked else Role.CLIENT)
    for event in connection.receive_data(data):  # the connection turns every error into an event
        assert isinstance(event, Message | Ping | Pong | CloseReceived | ConnectionFailed)
        if isinstance(event, ConnectionFailed):
            assert event.code in (1002, 1007, 1009)


@pytest.mark.parametrize("code", [0, 999, 1004, 1006, 1015, 5000])
def test_we_refuse_to_send_a_close_code_the_rfc_forbids(code):
    client, _ = pair()
    with pytest.raises(ValueError, match="may not be sent"):
        client.send_close(code)
    assert client.state is State.OPEN


def test_messages_sent_before_the_peer_saw_our_close_are_still_delivered():
    client, server = pair()
    server.send_text("in flight")
    in_flight = server.data_to_send()
    client.send_close(1000)
    assert list(client.receive_data(in_flight)) == [Message("in flight")]
    assert client.state is State.CLOSING


def test_client_reader_and_writer_threads_never_lose_a_queued_frame():
    """One thread sends while another reads (the client's documented use). The reader answers a
    ping by queueing a pong in the protocol; if it did so while the writer was between reading and
    clearing the outgoing queue, the pong would vanish. Force exactly that interleaving."""
    import socket
    import threading

    from WebSockets.client import Connection

    ours, peer = socket.socketpair()
    with ours, peer:
        connection = Connection(ours, b"", max_size=1 << 20, handshake_request=b"", handshake_response=b"")
        protocol = connection._protocol
        inside_flush, resume = threading.Event(), threading.Event()

        def data_to_send_with_a_pause() -> bytes:  # the real method, paused between its two steps
            data = b"".join(protocol._outgoing)
            inside_flush.set()
            resume.wait(10)
            protocol._outgoing.clear()
            return data

        protocol.data_to_send = data_to_send_with_a_pause
        writer = threading.Thread(target=connection.send, args=("from the writer",))
        writer.start()
        assert inside_flush.wait(10)
        ping = encode_frame(Opcode.PING, b"are you there")
        reader = threading.Thread(target=connection._process, args=(ping,))
        reader.start()
        reader.join(0.5)  # with the fix it waits for the writer's lock; without, it queued the pong
        resume.set()
        writer.join(10)
        reader.join(10)
        assert not writer.is_alive() and not reader.is_alive()
        peer.settimeout(10)
        decoder, frames = FrameDecoder(expect_masked=True), []
        while len(frames) < 2:
            frames += decoder.feed(peer.recv(65536))
        assert [(f.opcode, f.payload) for f in frames] == [(Opcode.TEXT, b"from the writer"),
                                                          (Opcode.PONG, b"are you there")]


# --------------------------------------------------------- UTF-8 checked as a frame arrives


def _split_frame(payload: bytes, opcode: int = Opcode.TEXT, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask=b"\x01\x02\x03\x04")


def test_invalid_utf8_early_in_a_frame_fails_before_the_frame_is_complete():
    server = WebSocketConnection(Role.SERVER)
    frame = _split_frame(b"ab\xff" + b"x" * 100_000)
    # Only the header and the first bytes have arrived; the rest is "still on its way".
    [event] = server.receive_data(frame[:20])
    assert event == ConnectionFailed(1007, "text message is not valid UTF-8")


def test_a_valid_prefix_waits_and_the_whole_frame_is_delivered():
    server = WebSocketConnection(Role.SERVER)
    text = "héllo ✓ wörld " * 1000
    frame = _split_frame(text.encode())
    events = []
    for start in range(0, len(frame), 997):  # chunks that split multi-byte characters and the mask
        events += server.receive_data(frame[start:start + 997])
    assert events == [Message(text)]


def test_a_continuation_is_checked_as_it_arrives_from_where_the_message_stands():
    server = WebSocketConnection(Role.SERVER)
    assert list(server.receive_data(_split_frame("ok €".encode()[:-1], fin=False))) == []  # ends mid-€
    bad = _split_frame(b"A" + b"x" * 50_000, opcode=Opcode.CONTINUATION)  # 'A' cannot end the €
    [event] = server.receive_data(bad[:16])
    assert event.code == 1007


def test_a_surrogate_start_in_a_partial_frame_fails_at_once():
    server = WebSocketConnection(Role.SERVER)
    [event] = server.receive_data(_split_frame(b"ok\xed\xa0" + b"x" * 1000)[:12])
    assert event.code == 1007


def test_binary_frames_are_not_checked_as_text():
    server = WebSocketConnection(Role.SERVER)
    frame = _split_frame(b"\xff" * 1000, opcode=Opcode.BINARY)
    assert list(server.receive_data(frame[:100])) == []
    assert list(server.receive_data(frame[100:])) == [Message(b"\xff" * 1000)]
