"""The fault proxy and the message diagram together: a client with timeouts and retries, a server,
and the network between them failing on cue. Draws the run as a Lamport diagram.

    python -m common.faultproxy_demo      # out/common/faultproxy_demo.png and .jsonl

Four scenes, all real: the server is its own process, every byte goes through common.faultproxy,
and both processes append to one trace file.

1. healthy: a request and its reply.
2. partition (blackhole): the request vanishes, the client times out and gives up on the connection.
   On heal the held request is delivered after all, late, to a client that has moved on: its
   reply is lost, and the retry runs the request a second time. (That is what TCP does after a
   short partition; it is why a retried request must be idempotent.)
3. cut after 0 response bytes: the server does the work, the reply is reset on the way back;
   the client sees ECONNRESET and retries.
4. the server is SIGKILLed: the proxy cannot reach it and resets the client; the server restarts
   and the retry succeeds.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import cli
from .faultproxy import fault_proxy
from .ports import LOOPBACK, free_port, wait_for_port
from .processes import REPO_ROOT, stop_process
from .trace import Tracer, layout, read_trace
from .trace import draw as draw_diagram

CLIENT_TIMEOUT = 0.4   # seconds the client waits for a reply before it gives up on a connection


# -- the server (its own process: --serve PORT --trace FILE) ---------------------------------------

def serve(port: int, trace_path: Path) -> None:
    """Answer each line `ID REQUEST` with `r-ID OK`, one connection at a time, tracing both."""
    tracer = Tracer(trace_path, process="server")
    listener = socket.create_server((LOOPBACK, port))
    while True:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError), conn.makefile("rwb", buffering=0) as stream:
            for line in stream:
                msg_id, _, request = line.decode().strip().partition(" ")
                tracer.recv("client", msg_id, request)
                tracer.send("client", f"r-{msg_id}", "OK")
                stream.write(f"r-{msg_id} OK\n".encode())


# -- the client --------------------------------------------------------------------------------

class Client:
    """Sends `ID REQUEST` lines through the proxy; a timeout or a reset closes the connection."""

    def __init__(self, address: tuple[str, int], tracer: Tracer):
        self.address = address
        self.tracer = tracer
        self.sock: socket.socket | None = None
        self.replies = None   # one buffered reader per connection: a reader made per request
                              # could read ahead past its line, and those bytes would be lost

    def request(self, msg_id: str, request: str) -> str:
        """One attempt: 'ok', 'timeout' or 'reset'. Traced either way."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.address, timeout=CLIENT_TIMEOUT)
                self.replies = self.sock.makefile("rb")
            self.tracer.send("server", msg_id, request)
            self.sock.sendall(f"{msg_id} {request}\n".encode())
            reply = self.replies.readline().decode().split()
            if not reply:
                raise ConnectionResetError("closed without a reply")
            self.tracer.recv("server", reply[0], reply[1])
            return "ok"
        except TimeoutError:
            self.tracer.timeout("server", f"timeout ({CLIENT_TIMEOUT * 1000:.0f} ms)", msg_id)
            self.close()
            return "timeout"
        except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError):
            self.tracer.local("ECONNRESET")
            self.close()
            return "reset"

    def close(self) -> None:
        if self.sock is not None:
            self.replies.close()
            self.sock.close()
            self.sock, self.replies = None, None


# -- the run -----------------------------------------------------------------------------------

def start_server(port: int, trace_path: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "common.faultproxy_demo", "--serve", str(port), "--trace", str(trace_path)],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    wait_for_port(port, still_alive=lambda: process.poll() is None)
    return process


def run_scenes(trace_path: Path) -> list[str]:
    """Run the four scenes; return the transcript lines."""
    transcript = []

    def say(line: str) -> None:
        transcript.append(line)
        print(line, flush=True)

    network = Tracer(trace_path, process="faultproxy")   # the faults, as marks on their own line
    server_port = free_port()
    server = start_server(server_port, trace_path)
    try:
        with fault_proxy(upstream=(LOOPBACK, server_port)) as proxy:
            client = Client(proxy.address, Tracer(trace_path, process="client"))
            say(f"1. healthy: PUT x=1 -> {client.request('c1', 'PUT x=1')}")

            proxy.partition("blackhole")
            network.local("partition (blackhole)")
            say(f"2. partition: PUT x=2 -> {client.request('c2', 'PUT x=2')}")
            proxy.heal()
            network.local("heal")
            # The held request reaches the server now; its reply meets a closed connection.
            proxy.wait_until(lambda s: s.connections_active == 0)
            say(f"   after heal, retry PUT x=2 -> {client.request('c2b', 'PUT x=2 (retry)')}")

            proxy.cut_after(0, once=True)
            network.local("cut after 0 response bytes")
            say(f"3. cut: GET x -> {client.request('c3', 'GET x')}")
            say(f"   retry GET x -> {client.request('c3b', 'GET x (retry)')}")

            server.send_signal(signal.SIGKILL)
            server.wait()
            Tracer(trace_path, process="server").crash("SIGKILL")   # the dead cannot say it
            say(f"4. server killed: PUT y=1 -> {client.request('c4', 'PUT y=1')}")
            server = start_server(server_port, trace_path)
            Tracer(trace_path, process="server").restart()
            say(f"   server restarted, retry PUT y=1 -> {client.request('c4b', 'PUT y=1 (retry)')}")
            client.close()
    finally:
        stop_process(server)
    return transcript


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m common.faultproxy_demo",
                                description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=cli.writable_path,
                        default=cli.output_path("common", "faultproxy_demo.png"),
                        help="the diagram, .png or .svg (default out/common/faultproxy_demo.png)")
    parser.add_argument("--trace", type=cli.writable_path,
                        default=cli.output_path("common", "faultproxy_demo.jsonl"),
                        help="the trace file, rewritten each run (default out/common/faultproxy_demo.jsonl)")
    parser.add_argument("--serve", type=cli.port, help=argparse.SUPPRESS)    # the server process
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.trace)
        return 0
    if args.out.suffix.lower() not in (".png", ".svg"):
        raise cli.UsageError(f"--out: the diagram is written as .png or .svg, got {str(args.out)!r}")

    trace_path = cli.ensure_parent(args.trace)
    trace_path.unlink(missing_ok=True)       # a fresh trace per run (tracers append)
    started = time.monotonic()
    run_scenes(trace_path)
    diagram = layout(read_trace(trace_path), processes=["client", "faultproxy", "server"])
    draw_diagram(diagram, args.out, title="a client, a server, and the network failing between them")
    print(f"trace: {_shown(trace_path)}\ndiagram: {_shown(args.out)} ({diagram.count('message')} messages, "
          f"{diagram.count('lost')} lost, {diagram.count('timeout')} timeout, "
          f"{diagram.count('crash')} crash; {time.monotonic() - started:.1f} s)")
    return 0


def _shown(path: Path) -> str:
    """A path as the reader typed it: relative to the current folder when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(cli.run(main))
