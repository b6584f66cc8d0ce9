"""Chaos: concurrent orders while random processes are SIGKILLed and restarted; then recovery and audit.

    python -m TwoPhaseCommit.chaos [--orders 200] [--crashes 20] [--seed 1]

Client threads place orders continuously. A supervisor SIGKILLs a random process (coordinator,
inventory or delivery) at a random moment, spread over the run, and restarts it on the same port with
the same SQLite file; half of the restarts are armed with a random crash point of that process kind
(e.g. after-prepare-recorded, mid-phase2), so the process later kills itself exactly inside the
protocol, which random timing rarely hits. Couriers deliver committed orders, so couriers come back.

At the end every process is restarted unarmed, recovery runs to completion, and the invariant audit
(audit.py) checks that every transaction has one outcome everywhere, no stock was lost or invented, no
courier carries two orders and every answer a client got is true. Exit status 1 if any check fails.
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from common import SpawnError, cli, wait_for_port

from .audit import AuditReport, audit, settle
from .cluster import PARTICIPANTS, Cluster
from .crash import COORDINATOR_POINTS, PARTICIPANT_POINTS
from .httpjson import Unreachable, call_json

NODES = ("coordinator", *PARTICIPANTS)
PARTITIONABLE = tuple(f"coordinator->{name}" for name in PARTICIPANTS)
CHAOS_STOCK = "burger=80,fries=100,drink=80,pizza=25"
ITEMS = ("burger", "fries", "drink", "pizza")


@dataclass
class ChaosConfig:
    orders: int = 200
    crashes: int = 20
    seed: int = 1
    workers: int = 4
    couriers: int = 6
    rpc_timeout: float = 1.0
    decision_timeout: float = 3.0
    protocol: str = "pa"
    partitions: int = 0     # network partitions of a coordinator->participant link (common/faultproxy)
    verbose: bool = True
    progress: bool = False  # one progress line on stderr (the CLI turns it on)


@dataclass
class ChaosResult:
    answers: dict[str, str] = field(default_factory=dict)   # txid -> outcome told to the client
    no_answer: int = 0                                       # the coordinator died or timed out
    abort_reasons: Counter = field(default_factory=Counter)  # why the aborted orders aborted
    kills: Counter = field(default_factory=Counter)          # node -> external SIGKILLs
    partitions: Counter = field(default_factory=Counter)     # "link mode" -> partitions
    crash_points: Counter = field(default_factory=Counter)   # "node:point" -> self-inflicted crashes
    elapsed: float = 0.0
    recovery_seconds: float = 0.0
    report: AuditReport | None = None

    @property
    def crashes(self) -> int:
        return sum(self.kills.values()) + sum(self.crash_points.values())


class Chaos:
    def __init__(self, config: ChaosConfig, workdir: str, spawner=None):
        self.config = config
        self.rng = random.Random(config.seed)
        couriers = ",".join(f"courier{i:02d}" for i in range(1, config.couriers + 1))
        extra = {"spawner": spawner} if spawner else {}
        self.cluster = Cluster(workdir, stock=CHAOS_STOCK, couriers=couriers, rpc_timeout=config.rpc_timeout,
                               retry_interval=0.2, decision_timeout=config.decision_timeout,
                               protocol=config.protocol, links=PARTITIONABLE if config.partitions else (),
                               resolve_interval=0.3, **extra)
        self.result = ChaosResult()
        self.armed: dict[str, str | None] = dict.fromkeys(NODES)
        self.lock = threading.Lock()          # guards the result and process restarts
        self.next_order = 0
        self.orders_done = threading.Event()
        self.supervisor_done = threading.Event()
        self.stopping = threading.Event()     # Ctrl-C or an error: start nothing new

    def say(self, text: str) -> None:
        if self.config.verbose:
            print(text, flush=True)

    # --- clients ------------------------------------------------------------------------------------

    def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        while True:
            self.keep_pace_with_crashes()
            with self.lock:
                if self.next_order >= self.config.orders:
                    return
                self.next_order += 1
            body = {"item": rng.choice(ITEMS), "quantity": rng.randint(1, 3), "address": f"street {seed}"}
            self.place(body)

    def keep_pace_with_crashes(self) -> None:
        """Do not run ahead of the supervisor: every planned crash must land while orders are flowing."""
        planned = self.config.crashes
        while not self.supervisor_done.is_set():
            with self.lock:
                kills = sum(self.result.kills.values())
            if kills >= planned or self.answered() < (kills + 1) * self.config.orders / (planned + 1):
                return
            time.sleep(0.01)

    def place(self, body: dict) -> None:
        try:
            # while the coordinator is down there is nobody to send the order to: wait for it
            wait_for_port(self.cluster.specs["coordinator"].port, timeout=30)
        except TimeoutError:
            pass
        try:
            # generous: prepare of 2 participants + phase 2 of 2, each bounded by the rpc timeout
            status, answer = call_json("POST", f"{self.cluster.coordinator_url}/orders", body,
                                       timeout=6 * self.config.rpc_timeout)
        except Unreachable:
            with self.lock:
                self.result.no_answer += 1
            return
        if status != 200:
            with self.lock:
                self.result.no_answer += 1
            return
        with self.lock:
            self.result.answers[answer["txid"]] = answer["outcome"]
            if answer["outcome"] == "aborted":
                self.result.abort_reasons[short_reason(answer["reason"])] += 1

    def couriers(self) -> None:
        """Couriers deliver what they carry and come back (or the roster would soon run dry).

        They deliver every committed order, including those whose client never got an answer.
        """
        url = self.cluster.url("delivery")
        while not self.orders_done.is_set():
            try:
                state = call_json("GET", f"{url}/state", timeout=self.config.rpc_timeout)[1]
                for tx in state.get("decided", []):
                    if tx["state"] == "committed" and not tx.get("delivered"):
                        call_json("POST", f"{url}/deliver", {"txid": tx["txid"]},
                                  timeout=self.config.rpc_timeout)
            except Unreachable:
                pass  # delivery is down: its couriers wait
            time.sleep(0.2)

    def answered_ticks(self, workers: list[threading.Thread]):
        """Yield once per order answered (or given up on), until the client threads are done."""
        seen = 0
        while seen < self.config.orders:
            now = self.answered()
            while seen < now:
                seen += 1
                yield seen
            if not any(thread.is_alive() for thread in workers):
                return
            time.sleep(0.1)

    def answered(self) -> int:
        with self.lock:
            return len(self.result.answers) + self.result.no_answer

    # --- crashes ------------------------------------------------------------------------------------

    def partitioner(self) -> None:
        """Spread `partitions` network partitions over the orders: a random coordinator->participant
        link goes dark (black hole or refused) for 0.3-1.2 s, then heals. The processes keep running."""
        rng = random.Random(self.config.seed + 1)
        planned = self.config.partitions
        for k in range(1, planned + 1):
            while self.answered() < k * self.config.orders / (planned + 1):
                if self.orders_done.is_set() or self.stopping.is_set():
                    return
                time.sleep(0.02)
            link, mode = rng.choice(PARTITIONABLE), rng.choice(("blackhole", "refuse"))
            proxy = self.cluster.proxies[link]
            proxy.partition(mode)
            self.say(f"chaos: partition {link} ({mode})")
            self.stopping.wait(rng.uniform(0.3, 1.2))
            proxy.heal()
            with self.lock:
                self.result.partitions[f"{link} {mode}"] += 1

    def supervisor(self) -> None:
        """Spread `crashes` SIGKILLs over the orders; restart whatever is dead (armed half the time)."""
        planned = self.config.crashes
        for k in range(1, planned + 1):
            threshold = k * self.config.orders / (planned + 1)
            while self.answered() < threshold and not self.orders_done.is_set():
                self.restart_dead()
                time.sleep(0.02)
            if self.stopping.is_set():
                return
            time.sleep(self.rng.uniform(0.0, 0.2))  # a random moment, not right after an answer
            victim = self.rng.choice(NODES)
            self.cluster.kill(victim)
            with self.lock:
                self.result.kills[victim] += 1
            self.say(f"chaos: SIGKILL {victim} (crash {self.result.crashes}, "
                     f"{self.answered()} orders answered)")
            time.sleep(self.rng.uniform(0.05, 0.4))  # downtime
            self.restart_dead()
        self.supervisor_done.set()
        while not self.orders_done.is_set():
            self.restart_dead()
            time.sleep(0.02)

    def restart_dead(self) -> None:
        for name in NODES:
            while not self.cluster.alive(name) and not self.stopping.is_set():
                self.count_self_crash(name)
                self.start(name, armed=self.rng.random() < 0.5)

    def count_self_crash(self, name: str) -> None:
        """A dead process that was armed may have reached its crash point (its last line says so)."""
        process = self.cluster.processes.get(name)
        if not self.armed[name] or process is None:
            return
        lines = process.output().strip().splitlines()
        if lines and lines[-1].startswith("CRASH: SIGKILL at"):
            with self.lock:
                self.result.crash_points[f"{name}:{self.armed[name].split(':')[0]}"] += 1
            self.say(f"chaos: {name} killed itself at {self.armed[name]}")
        self.armed[name] = None

    def start(self, name: str, armed: bool) -> None:
        points = COORDINATOR_POINTS if name == "coordinator" else PARTICIPANT_POINTS
        crash_at = f"{self.rng.choice(points)}:{self.rng.randint(1, 3)}" if armed else None
        self.armed[name] = crash_at
        try:
            self.cluster.start(name, crash_at=crash_at)
        except SpawnError as exc:
            # it reached its crash point during start-up recovery, before it listened: the caller's loop
            # starts it again
            self.armed[name] = None
            if "CRASH: SIGKILL at" in str(exc):
                with self.lock:
                    self.result.crash_points[f"{name}:{crash_at.split(':')[0]}"] += 1
                self.say(f"chaos: {name} killed itself at {crash_at} while recovering")

    # --- the run ------------------------------------------------------------------------------------

    def run(self) -> ChaosResult:
        start = time.monotonic()
        cluster = self.cluster
        supervisor: threading.Thread | None = None
        try:
            cluster.start_all()
            config = self.config
            self.say(f"chaos: {config.orders} orders from {config.workers} clients, {config.crashes} kills,"
                     f" protocol {config.protocol}, seed {config.seed}")
            supervisor = threading.Thread(target=self.supervisor, name="supervisor", daemon=True)
            supervisor.start()
            partitioner = threading.Thread(target=self.partitioner, name="partitioner", daemon=True)
            partitioner.start()
            couriers = threading.Thread(target=self.couriers, name="couriers", daemon=True)
            couriers.start()
            workers = [threading.Thread(target=self.worker, args=(self.config.seed * 1000 + i,), daemon=True)
                       for i in range(self.config.workers)]
            for thread in workers:
                thread.start()
            if self.config.progress:
                for _ in cli.progress(self.answered_ticks(workers), total=self.config.orders, label="orders"):
                    pass
            for thread in workers:
                thread.join()
            self.orders_done.set()
            supervisor.join()
            partitioner.join()
            for proxy in cluster.proxies.values():
                proxy.heal()
            couriers.join()
            self.say("chaos: orders finished; restarting every process unarmed and waiting for recovery")
            for name in NODES:
                if self.armed[name] or not cluster.alive(name):
                    cluster.processes[name].stop()
                    self.count_self_crash(name)
                    cluster.start(name)
            recovery_start = time.monotonic()
            settle(cluster.coordinator_url, cluster.participant_urls, timeout=60)
            self.result.recovery_seconds = time.monotonic() - recovery_start
            self.result.report = audit(cluster.coordinator_url, cluster.participant_urls, self.result.answers)
        finally:
            # stop the supervisor before the processes, or it would restart what we stop
            self.stopping.set()
            self.orders_done.set()
            self.supervisor_done.set()
            if supervisor is not None:
                supervisor.join(timeout=60)
            cluster.stop_all()
        self.result.elapsed = time.monotonic() - start
        return self.result


def short_reason(reason: str) -> str:
    """"inventory: not enough pizza: 3 wanted, 1 available" -> "inventory: not enough pizza"."""
    return ":".join(reason.split(":")[:2]).split(" (")[0].strip()


def summary_lines(config: ChaosConfig, result: ChaosResult) -> list[str]:
    outcomes = Counter(result.answers.values())
    lines = [
        f"orders: {config.orders} sent, {outcomes['committed']} committed, {outcomes['aborted']} aborted, "
        f"{result.no_answer} without an answer (coordinator down or timed out)",
        "abort reasons: " + ", ".join(f"{reason} {n}" for reason, n in result.abort_reasons.most_common()),
        f"crashes: {result.crashes} = {sum(result.kills.values())} external SIGKILLs "
        f"({', '.join(f'{k} {v}' for k, v in sorted(result.kills.items()))}) + "
        f"{sum(result.crash_points.values())} at crash points "
        f"({', '.join(f'{k} {v}' for k, v in sorted(result.crash_points.items())) or 'none'})",
        f"partitions: {sum(result.partitions.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(result.partitions.items())) or 'none'})",
        f"recovery after the last restart: {result.recovery_seconds:.1f}s; whole run {result.elapsed:.1f}s",
        "invariant checks:",
    ]
    return lines + (result.report.lines() if result.report else ["  (no audit: the run failed)"])


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m TwoPhaseCommit.chaos",
                                description="Concurrent orders under random SIGKILLs, then the audit.")
    parser.add_argument("--orders", type=cli.positive_int, default=200, help="orders to place (default 200)")
    parser.add_argument("--crashes", type=cli.non_negative_int, default=20,
                        help="external SIGKILLs to inflict (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--protocol", choices=("basic", "pa", "pc"), default="pa",
                        help="the coordinator's variant (default pa)")
    parser.add_argument("--partitions", type=cli.non_negative_int, default=0,
                        help="network partitions of a coordinator->participant link, through fault "
                             "proxies (default 0)")
    parser.add_argument("--workers", type=cli.positive_int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--couriers", type=cli.positive_int, default=6,
                        help="couriers on the roster (default 6)")
    parser.add_argument("--rpc-timeout", type=cli.positive_float, default=1.0,
                        help="timeout of each call (default 1.0 s)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary (and the progress line)")
    args = parser.parse_args(argv)
    config = ChaosConfig(orders=args.orders, crashes=args.crashes, seed=args.seed, workers=args.workers,
                         couriers=args.couriers, rpc_timeout=args.rpc_timeout, protocol=args.protocol,
                         partitions=args.partitions,
                         verbose=not args.quiet, progress=True)
    # Ctrl-C / SIGTERM: cli.run turns them into exit 130 / 143; Chaos.run's `finally` stops every process
    with tempfile.TemporaryDirectory(prefix="twopc-chaos-") as workdir:
        result = Chaos(config, workdir).run()
    for line in summary_lines(config, result):
        print(line)
    ok = result.report is not None and result.report.ok
    print(f"result: {config.protocol}, {config.orders} orders, {result.crashes} crashes, "
          f"{sum(result.partitions.values())} partitions, "
          f"{Counter(result.answers.values())['committed']} committed, invariant {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
