"""Fan-out benchmark: N clients in one room, each sending at a fixed rate; one instance vs two.

    python -m RealTimeChat.bench                   default: N = 10, 50 (about a minute)
    python -m RealTimeChat.bench --full            N = 10, 50, 200 (200 at 1 msg/s saturates 2 cores)
    python -m RealTimeChat.bench --clients 200 --rate 0.05 --seconds 20    N = 200, below saturation
    python -m RealTimeChat.bench --clients 20 --rate 2 --seconds 3 --repeats 7

For each N, two set-ups run side by side, interleaved (one, two, one, two, ...), `--repeats` rounds
each, and the table shows the median of the rounds:

  one   one app process, state in memory + SQLite, no Redis
  two   two app processes behind one redis-server (Flask-SocketIO message queue + Redis state);
        clients alternate between them, so half of every fan-out crosses Redis pub/sub

Per round, every client sends `--rate` messages/s for `--seconds` (start times spread evenly, seeded).
We measure, for every message and every *other* client, send -> receive latency (one clock: all
clients live in this process), then report p50/p99 of those, the p50 of "received by everyone"
(the slowest receiver of each message), delivered messages/s, and deliveries lost. The clients share
this process and its GIL with each other, so at high N the client side is part of what is measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import socketio

from common import cli, free_port, redis_server, spawn_module

from .client import ChatClient, ChatTimeout

PREFIX = "bench"


class Overloaded(RuntimeError):
    """Clients lost their connections (missed pings): the machine could not keep up with this N."""


@dataclass
class RoundResult:
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    all_received_p50_ms: float
    lost: int


class Recorder:
    """Receive times of bench messages, keyed by (sender, seq); thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[tuple[int, int], float] = {}
        self.received: dict[tuple[int, int], list[float]] = defaultdict(list)
        self.all_in = threading.Condition(self.lock)
        self.expected = 0
        self.count = 0
        self.round = -1

    def reset(self, round_id: int, expected: int) -> None:
        with self.lock:
            self.sent.clear()
            self.received.clear()
            self.expected, self.count, self.round = expected, 0, round_id

    def listener(self, me: int):
        def on_event(event: str, data, at: float) -> None:
            if event != "message" or not data["text"].startswith(PREFIX):
                return
            _, round_id, sender, seq = data["text"].split()
            if int(sender) == me:
                return  # the sender's own echo is not part of the fan-out
            with self.lock:
                if int(round_id) != self.round:
                    return  # a straggler from an earlier round
                self.received[(int(sender), int(seq))].append(at)
                self.count += 1
                if self.count >= self.expected:
                    self.all_in.notify_all()
        return on_event


def connect_clients(urls: list[str], n: int, room: str, recorder: Recorder) -> list[ChatClient]:
    """n clients, alternating over `urls`, joined to `room`; returns once everyone sees n users."""
    def connect(i: int) -> ChatClient:
        client = ChatClient(urls[i % len(urls)], f"u{i}", on_event=recorder.listener(i)).connect(timeout=60)
        client.joined(room, f"u{i}", timeout=60)
        return client
    with ThreadPoolExecutor(max_workers=16) as pool:
        clients = list(pool.map(connect, range(n)))
    for client in clients:  # the presence storm of n joins has settled
        client.wait_for("presence", lambda p: len(p["users"]) == n, timeout=120)
    return clients


def run_round(clients: list[ChatClient], room: str, recorder: Recorder, round_id: int, rate: float,
              seconds: float, rng: random.Random) -> RoundResult:
    n = len(clients)
    per_client = max(1, round(rate * seconds))
    schedule = sorted((rng.uniform(0, 1 / rate) + k / rate, i, k)
                      for i in range(n) for k in range(per_client))
    recorder.reset(round_id, expected=len(schedule) * (n - 1))
    start = time.perf_counter()
    for offset, i, k in schedule:
        delay = start + offset - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the senders: the schedule is the point of the benchmark
        with recorder.lock:
            recorder.sent[(i, k)] = time.perf_counter()
        try:
            clients[i].sio.emit("message", {"room": room, "text": f"{PREFIX} {round_id} {i} {k}"})
        except socketio.exceptions.SocketIOError as exc:
            raise Overloaded(f"client {i} lost its connection ({exc})") from None
    with recorder.lock:
        recorder.all_in.wait_for(lambda: recorder.count >= recorder.expected, timeout=30)
        latencies, slowest, last = [], [], start
        for key, times in recorder.received.items():
            sent = recorder.sent[key]
            latencies.extend(t - sent for t in times)
            slowest.append(max(times) - sent)
            last = max(last, max(times))
        count, expected = recorder.count, recorder.expected
    latencies.sort()
    return RoundResult(
        deliveries_per_s=count / (last - start),
        p50_ms=1000 * latencies[len(latencies) // 2],
        p99_ms=1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        all_received_p50_ms=1000 * statistics.median(slowest),
        lost=expected - count,
    )


def median_result(results: list[RoundResult]) -> RoundResult:
    return RoundResult(*(statistics.median(getattr(r, f) for r in results)
                         for f in ("deliveries_per_s", "p50_ms", "p99_ms", "all_received_p50_ms", "lost")))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m RealTimeChat.bench",
                                description="Chat fan-out: one instance vs two over Redis.")
    parser.add_argument("--clients", type=cli.int_range(2), nargs="+", default=[10, 50],
                        help="N values (default 10 50)")
    parser.add_argument("--full", action="store_true",
                        help="N = 10 50 200 (several minutes; at N=200 and 1 msg/s per client the "
                             "offered ~40,000 deliveries/s saturate a 2-core machine)")
    parser.add_argument("--rate", type=cli.positive_float, default=1.0,
                        help="messages/s per client (default 1)")
    parser.add_argument("--seconds", type=cli.positive_float, default=2.0,
                        help="sending time per round (default 2)")
    parser.add_argument("--repeats", type=cli.positive_int, default=5,
                        help="rounds per set-up, median taken (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the send schedule")
    args = parser.parse_args(argv)
    if args.full:
        args.clients = [10, 50, 200]
    return args


def print_table(rows: list[tuple[int, RoundResult, RoundResult]], args: argparse.Namespace) -> None:
    print(f"\nPython {platform.python_version()}, {os.cpu_count()} CPUs, {args.rate:g} msg/s per client, "
          f"{args.seconds:g} s rounds, median of {args.repeats} interleaved rounds")
    header = (f"{'N':>4}  {'set-up':<16} {'delivered/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'all-recv p50':>12} {'lost':>5}")
    print(header)
    print("-" * len(header))
    for n, one, two in rows:
        for name, r in (("one instance", one), ("two + Redis", two)):
            print(f"{n:>4}  {name:<16} {r.deliveries_per_s:>11.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
                  f"{r.all_received_p50_ms:>12.2f} {r.lost:>5.0f}")
        print(f"{'':>4}  {'ratio two/one':<16} {two.deliveries_per_s / one.deliveries_per_s:>11.2f} "
              f"{two.p50_ms / one.p50_ms:>8.2f} {two.p99_ms / one.p99_ms:>8.2f} "
              f"{two.all_received_p50_ms / one.all_received_p50_ms:>12.2f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="chat-bench-"))
        redis_url = stack.enter_context(redis_server())
        ports = [free_port() for _ in range(3)]
        print(f"starting: one instance on :{ports[0]}, two instances on :{ports[1]} :{ports[2]} "
              f"sharing {redis_url}")
        servers = [spawn_module("RealTimeChat.app", "--port", str(ports[0]), "--db", f"{tmp}/one.sqlite3",
                                port=ports[0])]
        servers += [spawn_module("RealTimeChat.app", "--port", str(p), "--redis", redis_url, port=p)
                    for p in ports[1:]]
        for server in servers:
            stack.callback(server.stop)
        setups = {"one": [f"http://127.0.0.1:{ports[0]}"],
                  "two": [f"http://127.0.0.1:{p}" for p in ports[1:]]}
        round_id = 0
        overloaded: list[int] = []
        for n in args.clients:
            recorders = {name: Recorder() for name in setups}
            clients: dict[str, list[ChatClient]] = {}
            results = defaultdict(list)
            try:
                for name, urls in setups.items():
                    print(f"N={n}: connecting {n} clients to '{name}'", flush=True)
                    clients[name] = connect_clients(urls, n, f"room{n}", recorders[name])
                for _ in cli.progress(range(args.repeats), label=f"N={n} rounds"):
                    for name in setups:   # interleaved: one, two, one, two, ...
                        round_id += 1
                        result = run_round(clients[name], f"room{n}", recorders[name], round_id,
                                           args.rate, args.seconds, rng)
                        results[name].append(result)
                rows.append((n, median_result(results["one"]), median_result(results["two"])))
            except (Overloaded, ChatTimeout, socketio.exceptions.SocketIOError) as exc:
                print(f"  N={n}: stopped, overloaded: {exc}", flush=True)
                overloaded.append(n)
            for group in clients.values():
                for client in group:
                    client.drop()
    print_table(rows, args)
    if overloaded:
        print(f"not measured (clients dropped, machine overloaded): N = {', '.join(map(str, overloaded))}")
    print("(measured on a shared machine: compare the ratios, not the absolute figures)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
