"""The headline demo: the real WebSocket protocol on the wire, and interop with `websockets`.

    python -m WebSockets.demo

1. starts our server (echo) and connects our client, printing the real opening handshake and one
   small frame each way in hex with every field labelled (RFC 6455 §5.2);
2. connects again offering permessage-deflate (RFC 7692): the offer, the server's answer, and a
   compressed frame (RSV1 set) beside the same message uncompressed;
3. connects a `websockets` client to the same server, then a raw socket that sends an unmasked
   frame and gets close 1002 while another client keeps being served;
4. starts our server in broadcast mode and shows a message from one client reaching two
   (ours and the `websockets` one).
The last line is a one-line result for the tour.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import zlib

from websockets.sync.client import connect as lib_connect

from common import cli, free_port, spawn_module

from .client import connect
from .deflate import EMPTY_STORED_BLOCK
from .protocol import Opcode, apply_mask, build_client_request, encode_frame, generate_key

MESSAGE = "hello, world"
REPEATED = "hello, world! " * 4  # compressible: DEFLATE replaces repeats with back-references


def label_frame(raw: bytes) -> list[str]:
    """One line per field of a single frame: header bits, length, masking key, payload."""
    first, second = raw[0], raw[1]
    fin, rsv, opcode = first >> 7, (first >> 4) & 0x7, first & 0x0F
    masked, length = second >> 7, second & 0x7F
    compressed = " (RSV1: compressed message, RFC 7692)" if rsv & 0b100 else ""
    lines = [f"  {first:02x}           FIN={fin} RSV1-3={rsv:03b} opcode={opcode:#x} "
             f"({Opcode(opcode).name}){compressed}",
             f"  {second:02x}           MASK={masked} payload length={length} (7-bit form: < 126)"]
    offset = 2
    payload = raw[offset + 4 * masked:offset + 4 * masked + length]
    if masked:
        key = raw[2:6]
        lines.append(f"  {key.hex(' ')}  masking key (fresh random per frame, §5.3)")
        lines.append(f"  {payload.hex(' ')}")
        payload = apply_mask(payload, key)
        how = "payload XOR key"
    else:
        lines.append(f"  {payload.hex(' ')}")
        how = "payload, unmasked (servers never mask)"
    if compressed:
        # The first message of a connection needs no earlier context: a fresh inflater will do.
        text = zlib.decompressobj(wbits=-15).decompress(payload + EMPTY_STORED_BLOCK).decode()
        lines.append(f"               {how} = DEFLATE data; + 00 00 ff ff, inflated -> {text!r}")
    else:
        lines.append(f"               {how} -> {payload.decode()!r}")
    return lines


def show_handshake_and_frames(url: str) -> bool:
    wire: list[tuple[str, bytes]] = []
    with connect(url, compress=False, trace=lambda direction, data: wire.append((direction, data))) as ws:
        print("\n--- opening handshake: our client -> our server (request) ---")
        print(ws.handshake_request.decode().rstrip())
        print("--- our server -> our client (response) ---")
        print(ws.handshake_response.decode().rstrip())
        print("    (Sec-WebSocket-Accept = base64(SHA-1(key + 258EAFA5-E914-47DA-95CA-C5AB0DC85B11)),"
              " checked by the client)")
        wire.clear()
        ws.send(MESSAGE)
        echo = ws.recv(timeout=10)
        sent = next(data for direction, data in wire if direction == "send")
        received = next(data for direction, data in wire if direction == "recv")
        print(f"\n--- client -> server: text frame {MESSAGE!r}, {len(sent)} bytes ---")
        print("  " + sent.hex(" "))
        print("\n".join(label_frame(sent)))
        print(f"--- server -> client: the echo, {len(received)} bytes ---")
        print("  " + received.hex(" "))
        print("\n".join(label_frame(received)))
    return echo == MESSAGE


def show_deflate(url: str) -> bool:
    """The same kind of exchange with permessage-deflate: offer, answer, a compressed frame."""
    wire: list[tuple[str, bytes]] = []
    with connect(url, trace=lambda direction, data: wire.append((direction, data))) as ws:
        offer = next(line for line in ws.handshake_request.decode().splitlines() if "Extensions" in line)
        answer = next((line for line in ws.handshake_response.decode().splitlines() if "Extensions" in line),
                      "(no Sec-WebSocket-Extensions: the server declined)")
        print("\n--- permessage-deflate (RFC 7692): our client offers, our server answers ---")
        print(f"  request:  {offer}")
        print(f"  response: {answer}")
        wire.clear()
        ws.send(REPEATED)
        echo = ws.recv(timeout=10)
        sent = next(data for direction, data in wire if direction == "send")
        received = next(data for direction, data in wire if direction == "recv")
        plain = encode_frame(Opcode.TEXT, REPEATED.encode())
        print(f"\n--- the text {REPEATED!r} ({len(REPEATED)} bytes) as an uncompressed server frame, "
              f"{len(plain)} bytes ---")
        print("  " + plain.hex(" "))
        print(f"--- client -> server, compressed: {len(sent)} bytes ---")
        print("  " + sent.hex(" "))
        print("\n".join(label_frame(sent)))
        print(f"--- server -> client, the compressed echo: {len(received)} bytes ---")
        print("  " + received.hex(" "))
        print("\n".join(label_frame(received)))
    return echo == REPEATED and ws.deflate is not None and bool(received[0] & 0x40)


def show_lib_client(url: str) -> bool:
    with lib_connect(url, compression="deflate", proxy=None) as ws:
        ws.send("from the websockets library")
        text_ok = ws.recv(timeout=10) == "from the websockets library"
        ws.send(b"\x00\x01\x02" * 50_000)
        binary_ok = ws.recv(timeout=10) == b"\x00\x01\x02" * 50_000
    print("\nwebsockets client (compression='deflate') -> our server: "
          f"text echo {'ok' if text_ok else 'WRONG'}, "
          f"150000-byte binary echo {'ok' if binary_ok else 'WRONG'}")
    return text_ok and binary_ok


def show_bad_client(port: int) -> bool:
    """A raw socket breaks §5.1 (an unmasked client frame): it gets close 1002, others carry on."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(build_client_request(f"127.0.0.1:{port}", "/", generate_key()))
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        sock.sendall(encode_frame(Opcode.TEXT, b"no mask"))  # mask=None: what only a server may do
        reply = answer.split(b"\r\n\r\n", 1)[1]
        while len(reply) < 2 or len(reply) < 2 + reply[1]:
            reply += sock.recv(4096)
    code = int.from_bytes(reply[2:4], "big")
    print(f"\nbad client sends an UNMASKED text frame -> server answers {reply.hex(' ')}")
    print(f"  = close frame, code {code}, reason {reply[4:].decode()!r}")
    with connect(f"ws://127.0.0.1:{port}/") as ws:
        ws.send("still serving?")
        alive = ws.recv(timeout=10) == "still serving?"
    print(f"  another client on the same server: echo {'ok' if alive else 'FAILED'}")
    return code == 1002 and alive


def show_broadcast(url: str) -> int:
    with connect(url) as ours, lib_connect(url, compression=None, proxy=None) as theirs:
        ours.ping()  # both clients are registered before anyone speaks
        theirs.ping().wait(10)
        theirs.send("broadcast from the websockets client")
        got = [ours.recv(timeout=10), theirs.recv(timeout=10)]
    reached = sum(message == "broadcast from the websockets client" for message in got)
    print(f"broadcast server: one message from the websockets client reached {reached}/2 clients "
          f"(our client got {got[0]!r})")
    return reached


def main(argv: list[str] | None = None) -> int:
    cli.ArgumentParser(prog="python -m WebSockets.demo",
                       description="Show the WebSocket handshake and frames on the wire, permessage-deflate, "
                                   "interop with the websockets library, and a broadcast.").parse_args(argv)
    echo_port, broadcast_port = free_port(), free_port()
    print(f"starting our server (echo) on 127.0.0.1:{echo_port} "
          f"and (broadcast) on 127.0.0.1:{broadcast_port}")
    with contextlib.ExitStack() as stack:
        stack.enter_context(spawn_module("WebSockets.server", "--port", str(echo_port), port=echo_port))
        stack.enter_context(spawn_module("WebSockets.server", "--port", str(broadcast_port),
                                         "--mode", "broadcast", port=broadcast_port))
        echo_ok = show_handshake_and_frames(f"ws://127.0.0.1:{echo_port}/chat")
        deflate_ok = show_deflate(f"ws://127.0.0.1:{echo_port}/chat")
        lib_ok = show_lib_client(f"ws://127.0.0.1:{echo_port}/")
        bad_ok = show_bad_client(echo_port)
        reached = show_broadcast(f"ws://127.0.0.1:{broadcast_port}/")
    ok = echo_ok and deflate_ok and lib_ok and bad_ok and reached == 2
    print(f"result: handshake + accept key verified, echo {'ok' if echo_ok else 'FAILED'} (our client), "
          f"compressed echo {'ok' if deflate_ok else 'FAILED'}, "
          f"{'ok' if lib_ok else 'FAILED'} (websockets client), bad frame -> "
          f"{'1002' if bad_ok else 'WRONG CODE'}, broadcast reached {reached}/2 clients")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
