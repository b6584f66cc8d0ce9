"""Benchmark: our from-scratch server and client against the `websockets` library, side by side.

    python -m WebSockets.bench [--rounds 25] [--round-trips 400] [--big-messages 8]
                               [--deflate-messages 200]

Workloads, each sequential over one connection (send, wait for the echo, repeat):
- small: 64-byte text round trips per second (latency-bound: per-message overhead);
- large: 1 MiB binary messages echoed, in MiB/s (bandwidth-bound: masking and copying);
- deflate 1 KiB / 64 KiB: JSON-like text (distinct messages, so context takeover cannot just
  point back at the previous one) with permessage-deflate negotiated on both sides.

Two comparisons, each changing one side only:
- servers: our server vs the `websockets` server, with the same client (the `websockets` one);
  for the deflate rows the client asks for compression="deflate" and both servers run with
  the same parameters (12-bit windows, zlib memLevel 5: `websockets`' defaults, and ours);
- clients: our client vs the `websockets` client, against the same server (the `websockets` one).

Both servers run as separate processes; connections stay open and short batches alternate
(ours, theirs, ours, ...) so machine load hits both alike. The table shows the median rate per
batch, the ratio ours/theirs, and the CPU time each contender used per message: on a shared,
loaded machine wall-clock rates wander, CPU time per message much less. For the deflate rows it
also shows the compression ratio (plain bytes / compressed bytes on the wire: both servers call
zlib the same way, so their frames are the same size).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.sync.client import connect as lib_connect

from common import cli, free_port, spawn_module

from .client import connect
from .deflate import PerMessageDeflate

SMALL = "x" * 64
LARGE = os.urandom(1 << 20)
MiB = 1 << 20


def json_messages(size: int, count: int = 64, seed: int = 7692) -> list[str]:
    """`count` distinct JSON-like texts of `size` characters (seeded): what apps really send."""
    rng = random.Random(seed)
    messages = []
    for _ in range(count):
        records = []
        while sum(len(record) + 2 for record in records) < size:
            records.append(json.dumps({"id": rng.randrange(10**6), "user": f"user{rng.randrange(5000)}",
                                       "temperature": round(rng.uniform(-10, 40), 2),
                                       "status": rng.choice(["ok", "warning", "error"])}))
        messages.append(("[" + ", ".join(records) + "]")[:size])
    return messages


DEFLATE_SIZES = {"deflate-1k": 1024, "deflate-64k": 64 * 1024}


@functools.cache
def deflate_texts(name: str) -> list[str]:
    return json_messages(DEFLATE_SIZES[name])


def compression_ratio(texts: list[str]) -> float:
    """Plain bytes / bytes on the wire for these texts in a row, with the servers' parameters."""
    codec = PerMessageDeflate(local_max_window_bits=12, remote_max_window_bits=12)
    plain = wire = 0
    for text in texts * 2:
        data = text.encode()
        plain += len(data)
        wire += sum(len(part) for part in codec.compress_message([data]) or [data])
    return plain / wire


class LibClient:
    """The `websockets` threading client behind the same two calls as ours."""

    def __init__(self, url: str, compression: str | None = None):
        self._context = lib_connect(url, compression=compression, proxy=None, ping_interval=None,
                                    max_size=2 * MiB)
        self._ws = self._context.__enter__()

    def send(self, data: str | bytes) -> None:
        self._ws.send(data)

    def recv(self, timeout: float | None = None) -> str | bytes:
        return self._ws.recv(timeout=timeout)

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def open_ours(url: str):
    return connect(url, max_size=2 * MiB, compress=False, ping_interval=None)


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


def deflate_echoes(name: str) -> Callable:
    """Seconds for `count` sequential echoes of distinct compressible texts."""
    def measure(client, count: int) -> float:
        texts = deflate_texts(name)
        started = time.perf_counter()
        for index in range(count):
            text = texts[index % len(texts)]
            client.send(text)
            if client.recv(timeout=30) != text:
                raise AssertionError("wrong echo")
        return time.perf_counter() - started

    return measure


WORKLOADS: dict[str, Callable] = {"small": small_round_trips, "large": large_echoes,
                                  **{name: deflate_echoes(name) for name in DEFLATE_SIZES}}


def process_cpu_seconds(pid: int) -> float:
    """CPU time of another process's threads, in seconds, from /proc (Linux).

    schedstat counts nanoseconds; /proc/<pid>/stat counts 10 ms ticks, too coarse for a batch of
    a few milliseconds (a bias-free but large error per batch). Falls back to ticks without it.
    """
    try:
        total = 0
        for thread in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{thread}/schedstat") as stat:
                total += int(stat.read().split()[0])
        return total / 1e9
    except (FileNotFoundError, ValueError):
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Side:
    """One contender in one comparison: a connected client and whose CPU time to charge."""

    client: object
    cpu: Callable[[], float]
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu_used: dict[str, float] = field(default_factory=dict)

    def run(self, workload: str, count: int) -> None:
        cpu_before = self.cpu()
        elapsed = WORKLOADS[workload](self.client, count)
        self.cpu_used[workload] = self.cpu_used.get(workload, 0.0) + self.cpu() - cpu_before
        self.rates.setdefault(workload, []).append(count / elapsed)

    def reset(self) -> None:
        self.rates, self.cpu_used = {}, {}


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m WebSockets.bench",
                                description="Our WebSocket server and client vs the websockets library.")
    parser.add_argument("--rounds", type=cli.positive_int, default=25,
                        help="interleaved rounds (medians are taken; default 25)")
    parser.add_argument("--round-trips", type=cli.positive_int, default=400,
                        help="64-byte echoes per side per round (default 400)")
    parser.add_argument("--big-messages", type=cli.positive_int, default=8,
                        help="1 MiB echoes per side per round (default 8)")
    parser.add_argument("--deflate-messages", type=cli.positive_int, default=400,
                        help="1 KiB compressed text echoes per side per round; a tenth as many of "
                             "64 KiB (default 400)")
    args = parser.parse_args(argv)
    per_round = {"small": args.round_trips, "large": args.big_messages,
                 "deflate-1k": args.deflate_messages, "deflate-64k": max(1, args.deflate_messages // 10)}

    ours_port, lib_port = free_port(), free_port()
    lib_deflate_port = free_port()
    print(f"starting our server on :{ours_port} and the websockets server on :{lib_port} "
          f"(and :{lib_deflate_port} with --deflate), echo")
    with contextlib.ExitStack() as stack:
        ours_server = stack.enter_context(spawn_module(
            "WebSockets.server", "--port", str(ours_port), "--max-size", str(2 * MiB),
            "--ping-interval", "0", port=ours_port))
        lib_server = stack.enter_context(spawn_module(
            "WebSockets.lib_server", "--port", str(lib_port), "--max-size", str(2 * MiB), port=lib_port))
        lib_deflate = stack.enter_context(spawn_module(
            "WebSockets.lib_server", "--port", str(lib_deflate_port), "--max-size", str(2 * MiB),
            "--deflate", port=lib_deflate_port))
        ours_url, lib_url = f"ws://127.0.0.1:{ours_port}/", f"ws://127.0.0.1:{lib_port}/"
        lib_deflate_url = f"ws://127.0.0.1:{lib_deflate_port}/"

        def server_cpu(child) -> Callable[[], float]:
            return lambda: process_cpu_seconds(child.pid)

        # (row label, workload, ours, theirs)
        comparisons = [
            # servers: the same (websockets) client, CPU charged to the server process
            *[("server", workload, Side(LibClient(ours_url), server_cpu(ours_server)),
               Side(LibClient(lib_url), server_cpu(lib_server))) for workload in ("small", "large")],
            *[("server", workload, Side(LibClient(ours_url, "deflate"), server_cpu(ours_server)),
               Side(LibClient(lib_deflate_url, "deflate"), server_cpu(lib_deflate)))
              for workload in DEFLATE_SIZES],
            # clients: the same (websockets) server, CPU charged to this (client) process
            *[("client", workload, Side(open_ours(lib_url), time.process_time),
               Side(LibClient(lib_url), time.process_time)) for workload in ("small", "large")],
        ]
        for _, workload, ours, theirs in comparisons:  # warm-up, not measured
            for side in (ours, theirs):
                side.run(workload, max(1, per_round[workload] // 8))
                side.reset()
        for _ in cli.progress(range(args.rounds), label="rounds"):
            for _, workload, ours, theirs in comparisons:
                for side in (ours, theirs):  # ours, theirs, ours, theirs: load hits both alike
                    side.run(workload, per_round[workload])
        for _, _, ours, theirs in comparisons:
            ours.client.close()
            theirs.client.close()

    units = {"small": ("64 B text round trips", "msg/s", "us/msg", 1e6),
             "large": ("1 MiB binary echo", "MiB/s", "ms/MiB", 1e3),
             "deflate-1k": ("deflate, 1 KiB JSON text", "msg/s", "us/msg", 1e6),
             "deflate-64k": ("deflate, 64 KiB JSON text", "msg/s", "us/msg", 1e6)}
    print(f"\nPython {platform.python_version()}, {os.cpu_count()} CPUs, {args.rounds} interleaved rounds, "
          f"medians. Servers compared with the websockets client; clients compared against the "
          f"websockets server. CPU = CPU time of the side being compared (server process or client).")
    print("| workload | ours | websockets | ours/websockets "
          "| CPU ours | CPU websockets | CPU websockets/ours |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, workload, ours, theirs in comparisons:
        name, unit, cpu_unit, scale = units[workload]
        count = per_round[workload] * args.rounds
        ours_rate, theirs_rate = (statistics.median(side.rates[workload]) for side in (ours, theirs))
        ours_cpu, theirs_cpu = (side.cpu_used[workload] / count * scale for side in (ours, theirs))
        cpu_ratio = f"{theirs_cpu / ours_cpu:.2f}x" if ours_cpu > 0 else "n/a"
        print(f"| {kind}, {name} | {ours_rate:,.0f} {unit} | {theirs_rate:,.0f} {unit} | "
              f"**{ours_rate / theirs_rate:.2f}x** | {ours_cpu:,.1f} {cpu_unit} | "
              f"{theirs_cpu:,.1f} {cpu_unit} | {cpu_ratio} |")
    for workload in DEFLATE_SIZES:
        print(f"{units[workload][0]}: compression ratio {compression_ratio(deflate_texts(workload)):.2f} "
              f"(plain bytes / bytes on the wire, both servers)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
