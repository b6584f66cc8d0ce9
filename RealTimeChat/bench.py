"""Fan-out benchmark: N clients in one room, each sending 1 message/s; one instance vs two over Redis.

    python -m RealTimeChat.bench                      N = 10, 50, 200, then the chaos run (a few minutes)
    python -m RealTimeChat.bench --clients 50 --setups one --repeats 3 --no-chaos

The load comes from outside the server's process and outside one GIL: `--workers` load-generator
processes, each holding its share of the N python-socketio clients. A sender puts its send time in
the message, read from CLOCK_MONOTONIC, which every process on one machine shares, so each receiver
computes send -> receive latency on its own, with no clock to synchronise and no central recorder.

Per round every client sends `--rate` messages/s for `--seconds` (start times spread evenly,
seeded). Reported per N and set-up, median over `--repeats` interleaved rounds:

  delivered/s   deliveries (message x other client) per second of the round
  p50, p99      send -> receive latency over every delivery that arrived
  lost          deliveries still missing when the round's drain time ran out
  CPU server    CPU seconds (user + system) the server process(es) used per second of the round
  wait server   seconds per second the server's threads were ready to run but waiting for a core
                (the kernel's run-queue delay, /proc/<pid>/task/*/schedstat): summed over threads,
                so it can exceed 1. When it dwarfs "CPU server", latency is the machine's queue
  CPU load      the same CPU figure for the load-generator processes together

  one          one app process, history in SQLite, Flask-SocketIO's threading mode
  one-gevent   the same app with `--async-mode gevent` (one OS thread, a greenlet per connection)
  one-nagle    threading with Nagle's algorithm left on (`--no-tcp-nodelay`); not run by default
  two          two app processes behind one redis-server; clients alternate between them, so half
               of every fan-out crosses Redis pub/sub

A round whose deliveries do not all arrive within the drain time is still reported, with its
`lost` count: the load was more than this machine could carry.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import cli, free_port, redis_server, spawn_module

from . import chaos
from .client import ChatClient

PREFIX = "bench"
ROOM = "bench"
DRAIN_S = 10.0      # after the last send, how long a round waits for the last deliveries
SETUPS = ("one", "one-gevent", "two", "one-nagle")
DEFAULT_SETUPS = ("one", "one-gevent", "two")


def now() -> float:
    """CLOCK_MONOTONIC, in seconds: one clock for every process on this machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# ---- the load-generator process ---------------------------------------------------------------------

class Receiver:
    """Latencies of the bench messages this process's clients receive (not their own echoes)."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.latencies: list[float] = []
        self.last_at = 0.0
        self.round = -1

    def listener(self, me: int):
        def on_event(event: str, data, _at: float) -> None:
            at = now()
            if event != "message" or not data["text"].startswith(PREFIX):
                return
            _, round_id, sender, sent_at = data["text"].split()
            if int(sender) == me:
                return
            with self.lock:
                if int(round_id) == self.round:
                    self.latencies.append(at - float(sent_at))
                    self.last_at = max(self.last_at, at)
                    self.lock.notify_all()
        return on_event


def handle_in_read_loop(client: ChatClient) -> ChatClient:
    """Run the client's handlers for received messages in its read loop, not in a new thread each.

    python-engineio's client starts an OS thread for every message it receives (so that a handler
    may block). A load-generator process receiving thousands of messages a second then spends its
    time creating threads, each one more wait for a core on a busy machine, and at N = 200 it runs
    out of them ("can't start new thread"). The bench's handlers only record a timestamp, so they
    can run inline. `_trigger_event` is python-engineio's (private) dispatch hook.
    """
    eio = client.sio.eio
    trigger = eio._trigger_event

    def inline(event: str, *args: Any, **kwargs: Any) -> Any:
        kwargs["run_async"] = False
        return trigger(event, *args, **kwargs)
    eio._trigger_event = inline
    return client


def load_worker(pipe, urls: list[str], mine: list[int]) -> None:
    """One load-generator process: connect `mine` clients, then run rounds on command."""
    import logging

    logging.getLogger("engineio.client").setLevel(logging.CRITICAL)   # an overload is reported below
    receiver = Receiver()
    clients = {}
    for i in mine:
        client = handle_in_read_loop(ChatClient(urls[i % len(urls)], f"u{i}", on_event=receiver.listener(i)))
        client.connect(timeout=60)
        client.joined(ROOM, f"u{i}", timeout=60)
        clients[i] = client
    pipe.send("ready")
    while True:
        command = pipe.recv()
        if command[0] == "stop":
            break
        _, round_id, start_at, schedule, expected = command
        with receiver.lock:
            receiver.latencies, receiver.last_at, receiver.round = [], 0.0, round_id
        cpu_before = time.process_time()
        for offset, i in schedule:
            delay = start_at + offset - now()
            if delay > 0:
                time.sleep(delay)   # pacing the senders: the schedule is the point of the benchmark
            clients[i].sio.emit("message", {"room": ROOM, "text": f"{PREFIX} {round_id} {i} {now():.6f}"})
        with receiver.lock:
            receiver.lock.wait_for(lambda want=expected: len(receiver.latencies) >= want, timeout=DRAIN_S)
            pipe.send((receiver.latencies, receiver.last_at, time.process_time() - cpu_before))
    for client in clients.values():
        client.drop()


# ---- the parent: servers, rounds, the table -------------------------------------------------------

class Overloaded(RuntimeError):
    """The machine could not carry this N: clients dropped or deliveries went missing."""


@dataclass
class RoundResult:
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    lost: float
    server_cpu: float     # CPU seconds per second of the round
    server_wait: float    # run-queue seconds per second of the round, summed over the server's threads
    load_cpu: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc: fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_seconds(pid: int) -> float:
    """Seconds the threads of a process have spent runnable but not running (waiting for a core).

    /proc/<pid>/task/<tid>/schedstat is "on-CPU ns, run-queue ns, timeslices". Threads that exit
    take their counts with them, so call it while the set of threads is stable (during a round).
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue   # the thread ended between listing and reading
    return total / 1e9


class LoadGenerator:
    """`workers` processes holding N clients between them (client i lives in process i % workers)."""

    def __init__(self, urls: list[str], n: int, workers: int):
        context = multiprocessing.get_context("spawn")
        self.n = n
        self.owner = [i % workers for i in range(n)]
        self.pipes, self.processes = [], []
        for w in range(workers):
            parent_end, child_end = context.Pipe()
            mine = [i for i in range(n) if self.owner[i] == w]
            process = context.Process(target=load_worker, args=(child_end, urls, mine), daemon=True)
            process.start()
            self.pipes.append(parent_end)
            self.processes.append(process)
        for pipe in self.pipes:
            if not pipe.poll(120):
                self.close()
                raise Overloaded(f"could not connect {n} clients within 120 s")
            pipe.recv()

    def run_round(self, round_id: int, rate: float, seconds: float, rng: random.Random,
                  servers: list[int]) -> RoundResult:
        per_client = max(1, round(rate * seconds))
        sends = sorted((rng.uniform(0, 1 / rate) + k / rate, i)
                       for i in range(self.n) for k in range(per_client))
        start_at = now() + 0.5
        server_cpu_before = sum(cpu_seconds(pid) for pid in servers)
        server_wait_before = sum(run_queue_seconds(pid) for pid in servers)
        for w, pipe in enumerate(self.pipes):
            schedule = [(offset, i) for offset, i in sends if self.owner[i] == w]
            mine = self.owner.count(w)
            expected = len(sends) * mine - len(schedule)   # every message, to my clients but its sender
            pipe.send(("round", round_id, start_at, schedule, expected))
        latencies, last_at, load_cpu = [], start_at, 0.0
        deadline = now() + seconds + DRAIN_S + 60   # one deadline for all: not 60 s more per process
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - now())):
                raise Overloaded("a load generator stopped answering")
            lat, last, cpu = pipe.recv()
            latencies.extend(lat)
            last_at, load_cpu = max(last_at, last), load_cpu + cpu
        server_cpu = sum(cpu_seconds(pid) for pid in servers) - server_cpu_before
        server_wait = sum(run_queue_seconds(pid) for pid in servers) - server_wait_before
        elapsed = max(last_at - start_at, 1e-9)
        latencies.sort()
        expected_total = len(sends) * (self.n - 1)
        if not latencies:
            raise Overloaded(f"none of {expected_total} deliveries arrived")
        return RoundResult(
            deliveries_per_s=len(latencies) / elapsed,
            p50_ms=1000 * latencies[len(latencies) // 2],
            p99_ms=1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            lost=expected_total - len(latencies),
            server_cpu=server_cpu / elapsed,
            server_wait=max(0.0, server_wait) / elapsed,
            load_cpu=load_cpu / elapsed,
        )

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 10
        for process in self.processes:
            process.join(timeout=max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()


def median_result(results: list[RoundResult]) -> RoundResult:
    return RoundResult(*(statistics.median(getattr(r, f) for r in results)
                         for f in RoundResult.__dataclass_fields__))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m RealTimeChat.bench",
                                description="Chat fan-out, load from several processes: one instance vs "
                                            "two over Redis.")
    parser.add_argument("--clients", type=cli.int_range(2), nargs="+", default=[10, 50, 200],
                        help="N values (default 10 50 200)")
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(DEFAULT_SETUPS),
                        help=f"which set-ups to run (default {' '.join(DEFAULT_SETUPS)})")
    parser.add_argument("--rate", type=cli.positive_float, default=1.0,
                        help="messages/s per client (default 1)")
    parser.add_argument("--seconds", type=cli.positive_float, default=3.0,
                        help="sending time per round (default 3)")
    parser.add_argument("--repeats", type=cli.positive_int, default=3,
                        help="rounds per set-up and N, median taken (default 3)")
    parser.add_argument("--workers", type=cli.positive_int, default=4,
                        help="load-generator processes (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the send schedule")
    parser.add_argument("--chaos", action=argparse.BooleanOptionalAction, default=True,
                        help="also run `python -m RealTimeChat.chaos` with its defaults (default on)")
    return parser.parse_args(argv)


def print_table(rows: list[tuple[int, str, RoundResult]], args: argparse.Namespace) -> None:
    print(f"\nPython {platform.python_version()}, {os.cpu_count()} CPUs, {args.rate:g} msg/s per client, "
          f"{args.seconds:g} s rounds, median of {args.repeats} rounds, load from {args.workers} processes")
    header = (f"{'N':>4}  {'set-up':<10} {'delivered/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'lost':>6} "
              f"{'CPU server':>10} {'wait server':>11} {'CPU load':>9}")
    print(header)
    print("-" * len(header))
    for n, name, r in rows:
        print(f"{n:>4}  {name:<10} {r.deliveries_per_s:>11.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
              f"{r.lost:>6.0f} {r.server_cpu:>10.2f} {r.server_wait:>11.2f} {r.load_cpu:>9.2f}")
    print("(CPU: seconds of CPU per second of the round; 2.00 would be both cores. wait: seconds the "
          "server's threads waited for a core, per second)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="chat-bench-"))
        redis_url = stack.enter_context(redis_server()) if "two" in args.setups else None
        setups: dict[str, tuple[list[str], list[int]]] = {}
        for name in args.setups:
            urls, pids = [], []
            for _ in range(2 if name == "two" else 1):
                port = free_port()
                state = ["--redis", redis_url] if name == "two" else ["--db", f"{tmp}/{name}.sqlite3"]
                nagle = ["--no-tcp-nodelay"] if name == "one-nagle" else []
                mode = ["--async-mode", "gevent"] if name == "one-gevent" else []
                server = stack.enter_context(spawn_module(
                    "RealTimeChat.app", "--port", str(port), *state, *nagle, *mode,
                    "--rate", "1000", "--burst", "1000", port=port))
                urls.append(f"http://127.0.0.1:{port}")
                pids.append(server.pid)
            setups[name] = (urls, pids)
        print(f"set-ups: {', '.join(f'{k} {v[0]}' for k, v in setups.items())}", flush=True)
        round_id = 0
        skipped = []
        # One set-up at a time holds its N clients (several sets of idle clients would load the
        # machine for nothing); the set-ups still alternate for every N.
        for n in args.clients:
            for name, (urls, pids) in setups.items():
                print(f"N={n} '{name}': connecting {n} clients from {min(args.workers, n)} processes",
                      flush=True)
                generator = None
                try:
                    generator = LoadGenerator(urls, n, min(args.workers, n))
                    results = []
                    for _ in cli.progress(range(args.repeats), label=f"N={n} {name} rounds"):
                        round_id += 1
                        results.append(generator.run_round(round_id, args.rate, args.seconds, rng, pids))
                    rows.append((n, name, median_result(results)))
                except Overloaded as exc:
                    print(f"  N={n} '{name}': not measured, overloaded: {exc}", flush=True)
                    skipped.append(f"{n} {name}")
                finally:
                    if generator is not None:
                        generator.close()
    print_table(rows, args)
    if skipped:
        print(f"not measured (the machine could not carry them): {', '.join(skipped)}")
    if args.chaos:
        print("\nDelivery under failure (python -m RealTimeChat.chaos):", flush=True)
        return chaos.main([])
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
