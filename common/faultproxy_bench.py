"""What does common.faultproxy cost on the healthy path? Latency and throughput, against no proxy.

    python -m common.faultproxy_bench

A small server (its own process) answers three ways: echo (round trips of a small message), send N
bytes (downstream throughput) and read N bytes (upstream throughput). The same client measures each
against three paths in the same run, interleaved, so machine noise hits them alike:

    direct            client -> server
    proxy process     client -> `python -m common.faultproxy` (its own process) -> server
    proxy thread      client -> fault_proxy() in a thread of the client's process -> server
                      (how tests and demos use it: it shares the client's interpreter and GIL)

The table shows medians over --repeats runs and the targets from issue 19: at most 0.2 ms added to
a round trip's median, and at least 200 MB/s through the proxy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path

from . import cli
from .faultproxy import fault_proxy
from .ports import LOOPBACK, free_port, wait_for_port
from .processes import REPO_ROOT, stop_process
from .trace import open_tracer

TARGET_ADDED_P50_MS = 0.2
TARGET_MB_PER_S = 200.0
CHUNK = 256 * 1024


# -- the server (runs in its own process: `--serve PORT`) ---------------------------------------

def serve(port: int) -> None:
    """Serve until killed. First byte of a connection: E echo, D send N bytes, U read N bytes."""
    listener = socket.create_server((LOOPBACK, port))
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def _serve_one(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn, contextlib.suppress(OSError):   # OSError: a port probe that connects and leaves
        mode = _recv_exactly(conn, 1)
        if mode == b"E":
            while data := conn.recv(65536):
                conn.sendall(data)
        elif mode == b"D":
            (remaining,) = struct.unpack("!Q", _recv_exactly(conn, 8))
            block = b"\0" * CHUNK
            while remaining > 0:
                sent = conn.send(block[: min(remaining, CHUNK)])
                remaining -= sent
        elif mode == b"U":
            (remaining,) = struct.unpack("!Q", _recv_exactly(conn, 8))
            while remaining > 0:
                data = conn.recv(min(remaining, 1 << 20))
                if not data:
                    return
                remaining -= len(data)
            conn.sendall(b"k")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


# -- the client's measurements ------------------------------------------------------------------

def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trips(port: int, count: int, payload_size: int) -> list[float]:
    """Seconds per request/response round trip of payload_size bytes, over one connection."""
    payload = b"x" * payload_size
    times = []
    with _connect(port) as sock:
        sock.sendall(b"E")
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(payload)
            received = 0
            while received < payload_size:
                received += len(sock.recv(65536))
            times.append(time.perf_counter() - started)
    return times


def downstream_mb_per_s(port: int, total: int) -> float:
    buffer = bytearray(1 << 20)
    with _connect(port) as sock:
        started = time.perf_counter()
        sock.sendall(b"D" + struct.pack("!Q", total))
        received = 0
        while received < total:
            n = sock.recv_into(buffer)
            if not n:
                raise ConnectionError("the server closed early")
            received += n
        return total / (time.perf_counter() - started) / 1e6


def upstream_mb_per_s(port: int, total: int) -> float:
    block = memoryview(b"\0" * CHUNK)
    with _connect(port) as sock:
        started = time.perf_counter()
        sock.sendall(b"U" + struct.pack("!Q", total))
        remaining = total
        while remaining > 0:
            remaining -= sock.send(block[: min(remaining, CHUNK)])
        _recv_exactly(sock, 1)
        return total / (time.perf_counter() - started) / 1e6


# -- the run -------------------------------------------------------------------------------------

def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(paths: dict[str, int], repeats: int, count: int, payload_size: int,
            total: int) -> dict[str, dict[str, list[float]]]:
    """For every path, repeats x (p50 ms, p99 ms, MB/s down, MB/s up), interleaved path by path."""
    results = {name: {"p50": [], "p99": [], "down": [], "up": []} for name in paths}
    for _ in cli.progress(range(repeats), label="runs"):
        for name, port in paths.items():
            times = round_trips(port, count, payload_size)
            results[name]["p50"].append(_percentile(times, 0.50) * 1000)
            results[name]["p99"].append(_percentile(times, 0.99) * 1000)
            results[name]["down"].append(downstream_mb_per_s(port, total))
            results[name]["up"].append(upstream_mb_per_s(port, total))
    return results


def format_table(results: dict[str, dict[str, list[float]]], payload_size: int) -> str:
    med = {name: {key: statistics.median(values) for key, values in row.items()}
           for name, row in results.items()}
    direct = med["direct"]
    lines = [f"{'path':<16} {'p50 ms':>8} {'added':>8} {'p99 ms':>8} "
             f"{'down MB/s':>10} {'up MB/s':>9}  targets (+{TARGET_ADDED_P50_MS} ms, "
             f"{TARGET_MB_PER_S:.0f} MB/s)"]
    for name, row in med.items():
        added = row["p50"] - direct["p50"]
        if name == "direct":
            verdict = ""
        else:
            ok = added <= TARGET_ADDED_P50_MS and min(row["down"], row["up"]) >= TARGET_MB_PER_S
            verdict = "met" if ok else "MISSED"
        lines.append(f"{name:<16} {row['p50']:>8.3f} {added:>+8.3f} {row['p99']:>8.3f} "
                     f"{row['down']:>10.0f} {row['up']:>9.0f}  {verdict}")
    lines.append(f"(round trips of {payload_size} B; throughput relative to direct: " + ", ".join(
        f"{name} {med[name]['down'] / direct['down']:.2f}x down, {med[name]['up'] / direct['up']:.2f}x up"
        for name in med if name != "direct") + ")")
    return "\n".join(lines)


def tracer_cost_us(repeats: int, events: int) -> tuple[float, float]:
    """Microseconds per traced event with tracing off (the no-op tracer) and on (a real file)."""
    with tempfile.TemporaryDirectory() as folder:
        tracers = {"off": open_tracer(None, "bench"), "on": open_tracer(Path(folder) / "t.jsonl", "bench")}
        best = {}
        for name, tracer in tracers.items():
            timings = timeit.repeat(lambda t=tracer: t.send("peer", "m1", "PREPARE tx7"),
                                    number=events, repeat=repeats)
            best[name] = min(timings) / events * 1e6
        tracers["on"].close()
    return best["off"], best["on"]


def _start_process(argv: list[str], port: int, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO_ROOT, stdin=stdin,
                               stdout=subprocess.DEVNULL)
    wait_for_port(port, still_alive=lambda: process.poll() is None)
    return process


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m common.faultproxy_bench",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=cli.positive_int, default=5,
                        help="runs per path; the table shows medians (default 5)")
    parser.add_argument("--round-trips", type=cli.positive_int, default=2000,
                        help="round trips per run (default 2000)")
    parser.add_argument("--payload", type=cli.bytes_size, default=64,
                        help="bytes per round-trip message (default 64)")
    parser.add_argument("--size", type=cli.bytes_size, default=128 * 1024 * 1024,
                        help="bytes per throughput run (default 128MiB)")
    parser.add_argument("--serve", type=cli.port, help=argparse.SUPPRESS)   # the server process
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0

    print(f"faultproxy overhead: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"median of {args.repeats} interleaved runs")
    server_port, proxy_port = free_port(), free_port()
    server = _start_process(["common.faultproxy_bench", "--serve", str(server_port)], server_port)
    proxy = None
    try:
        proxy = _start_process(["common.faultproxy", "--listen", f"{LOOPBACK}:{proxy_port}",
                                "--to", f"{LOOPBACK}:{server_port}"], proxy_port, stdin=subprocess.PIPE)
        with fault_proxy(upstream=(LOOPBACK, server_port)) as in_thread:
            paths = {"direct": server_port, "proxy process": proxy_port,
                     "proxy thread": in_thread.address[1]}
            results = measure(paths, args.repeats, args.round_trips, args.payload, args.size)
        print(format_table(results, args.payload))
        off, on = tracer_cost_us(args.repeats, events=10 * args.round_trips)
        print(f"trace event (common.trace): {off:.2f} us with tracing off, {on:.1f} us on "
              f"(best of {args.repeats})")
    finally:
        for process in (proxy, server):
            if process is not None:
                stop_process(process)
                if process.stdin:
                    process.stdin.close()
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
