"""Benchmark: our from-scratch server and client against the `websockets` library, side by side.

    python -m WebSockets.bench [--rounds 25] [--round-trips 400] [--big-messages 8]

Two workloads, both sequential over one connection (send, wait for the echo, repeat):
- small: 64-byte text round trips per second (latency-bound: per-message overhead);
- large: 1 MiB binary messages echoed, in MiB/s (bandwidth-bound: masking and copying).

Two comparisons, each changing one side only:
- servers: our server vs the `websockets` server, with the same client (the `websockets` one);
- clients: our client vs the `websockets` client, against the same server (the `websockets` one).

Both servers run as separate processes; connections stay open and short batches alternate
(ours, theirs, ours, ...) so machine load hits both alike. The table shows the median rate per
batch, the ratio ours/theirs, and the CPU time each contender used per message: on a shared,
loaded machine wall-clock rates wander, CPU time per message much less.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

from websockets.sync.client import connect as lib_connect

from common import cli, free_port, spawn_module

from .client import connect

SMALL = "x" * 64
LARGE = os.urandom(1 << 20)
MiB = 1 << 20


class LibClient:
    """The `websockets` threading client behind the same two calls as ours."""

    def __init__(self, url: str):
        self._context = lib_connect(url, compression=None, proxy=None, ping_interval=None,
                                    max_size=2 * MiB)
        self._ws = self._context.__enter__()

    def send(self, data: str | bytes) -> None:
        self._ws.send(data)

    def recv(self, timeout: float | None = None) -> str | bytes:
        return self._ws.recv(timeout=timeout)

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def open_ours(url: str):
    return connect(url, max_size=2 * MiB)


def small_round_trips(client, count: int) -> float:
    """Seconds for `count` sequential 64-byte echoes."""
    started = time.perf_counter()
    for _ in range(count):
        client.send(SMALL)
        if client.recv(timeout=30) != SMALL:
            raise AssertionError("wrong echo")
    return time.perf_counter() - started


def large_echoes(client, count: int) -> float:
    """Seconds for `count` sequential 1 MiB binary echoes."""
    started = time.perf_counter()
    for _ in range(count):
        client.send(LARGE)
        if len(client.recv(timeout=30)) != MiB:
            raise AssertionError("wrong echo")
    return time.perf_counter() - started


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc (Linux), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Side:
    """One contender in one comparison: a connected client and whose CPU time to charge."""

    def __init__(self, client, cpu: Callable[[], float]):
        self.client = client
        self.cpu = cpu
        self.rates: dict[str, list[float]] = {"small": [], "large": []}
        self.cpu_used: dict[str, float] = {"small": 0.0, "large": 0.0}

    def run(self, workload: str, count: int) -> None:
        measure = small_round_trips if workload == "small" else large_echoes
        cpu_before = self.cpu()
        elapsed = measure(self.client, count)
        self.cpu_used[workload] += self.cpu() - cpu_before
        self.rates[workload].append(count / elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m WebSockets.bench",
                                description="Our WebSocket server and client vs the websockets library.")
    parser.add_argument("--rounds", type=cli.positive_int, default=25,
                        help="interleaved rounds (medians are taken; default 25)")
    parser.add_argument("--round-trips", type=cli.positive_int, default=400,
                        help="64-byte echoes per side per round (default 400)")
    parser.add_argument("--big-messages", type=cli.positive_int, default=8,
                        help="1 MiB echoes per side per round (default 8)")
    args = parser.parse_args(argv)

    ours_port, lib_port = free_port(), free_port()
    print(f"starting our server on :{ours_port} and the websockets server on :{lib_port} (echo)")
    with contextlib.ExitStack() as stack:
        ours_server = stack.enter_context(spawn_module(
            "WebSockets.server", "--port", str(ours_port), "--max-size", str(2 * MiB), port=ours_port))
        lib_server = stack.enter_context(spawn_module(
            "WebSockets.lib_server", "--port", str(lib_port), "--max-size", str(2 * MiB), port=lib_port))
        ours_url, lib_url = f"ws://127.0.0.1:{ours_port}/", f"ws://127.0.0.1:{lib_port}/"
        comparisons = {
            # servers: the same (websockets) client, CPU charged to the server process
            "server": (Side(LibClient(ours_url), lambda: process_cpu_seconds(ours_server.pid)),
                       Side(LibClient(lib_url), lambda: process_cpu_seconds(lib_server.pid))),
            # clients: the same (websockets) server, CPU charged to this (client) process
            "client": (Side(open_ours(lib_url), time.process_time),
                       Side(LibClient(lib_url), time.process_time)),
        }
        sides = [side for pair in comparisons.values() for side in pair]
        for side in sides:  # warm-up, not measured
            side.run("small", 50)
            side.run("large", 1)
            side.rates = {"small": [], "large": []}
            side.cpu_used = {"small": 0.0, "large": 0.0}
        for _ in cli.progress(range(args.rounds), label="rounds"):
            for side in sides:  # ours, theirs, ours, theirs: load hits both alike
                side.run("small", args.round_trips)
                side.run("large", args.big_messages)
        for side in sides:
            side.client.close()

    counts = {"small": args.round_trips * args.rounds, "large": args.big_messages * args.rounds}
    units = {"small": ("64 B text round trips", "msg/s", "us/msg"),
             "large": ("1 MiB binary echo", "MiB/s", "ms/MiB")}
    print(f"\nPython {platform.python_version()}, {os.cpu_count()} CPUs, {args.rounds} interleaved rounds, "
          f"medians. Servers compared with the websockets client; clients compared against the "
          f"websockets server. CPU = CPU time of the side being compared (server process or client).")
    print("| workload | ours | websockets | ours/websockets "
          "| CPU ours | CPU websockets | CPU websockets/ours |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, (ours, theirs) in comparisons.items():
        for workload in ("small", "large"):
            name, unit, cpu_unit = units[workload]
            ours_rate, theirs_rate = (statistics.median(side.rates[workload]) for side in (ours, theirs))
            scale = 1e6 if workload == "small" else 1e3
            ours_cpu, theirs_cpu = (side.cpu_used[workload] / counts[workload] * scale
                                    for side in (ours, theirs))
            cpu_ratio = f"{theirs_cpu / ours_cpu:.2f}x" if ours_cpu > 0 else "n/a"
            print(f"| {kind}, {name} | {ours_rate:,.0f} {unit} | {theirs_rate:,.0f} {unit} | "
                  f"**{ours_rate / theirs_rate:.2f}x** | {ours_cpu:,.1f} {cpu_unit} | "
                  f"{theirs_cpu:,.1f} {cpu_unit} | {cpu_ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
