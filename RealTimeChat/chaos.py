"""Delivery under failure: two instances behind one Redis; one is SIGKILLed, or cut off from Redis.

    python -m RealTimeChat.chaos                      20 clients, 20 s, 2 kills (about 40 s)
    python -m RealTimeChat.chaos --clients 6 --seconds 6 --kills 1 --interval 0.1
    python -m RealTimeChat.chaos --kills 0 --partitions 1      instance A partitioned from Redis

The clients are split between instances A and B and talk in one room, each sending about one
message per second through its outbox (`ChatClient.send`: a client_id, "sending" until
acknowledged). At evenly spaced moments instance A is SIGKILLed — no clean-up runs, whatever it was
doing is cut off — and restarted a moment later. Its clients notice the dropped connection and
reconnect to B (retrying while A's dead heartbeat still holds their nicknames), joining with
`since` to fill the gap and resending what was never acknowledged.

With `--partitions`, A is not killed: its connection to Redis goes through common.faultproxy
(see common/README.md), which refuses it for `--partition-seconds`. A keeps running, and its users
stay connected to it, but nothing they send can be stored (the acks say internal_error, and the
outbox retries), nothing the others say reaches them (A's pub/sub subscription is cut), and once
A's heartbeat expires, B's reaper removes them from presence and frees their nicknames. On heal, A
finds out it was presumed dead and disconnects its users; they reconnect, claim their nicknames
again, catch up with `since` and resend.

At the end every client catches up once more and we count, over what the clients *display*
(messages keyed by id):

  sent          messages the users typed
  acked         acknowledged by a server (stored before the ack: none of these may be lost)
  delivered     acked messages that every member displays
  lost          acked messages some member does not display (must be 0)
  duplicated    messages a member displays twice, under two ids (must be 0)
  longest gap   the longest time a user received nothing while the others kept talking
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit

import socketio

from common import ChildProcess, cli, free_port, redis_server, spawn_module
from common.faultproxy import fault_proxy

from .client import ChatClient

ROOM = "chaos"
HEARTBEAT_TTL = "1.5"     # how soon a killed instance's users count as gone (and can come back)


@dataclass
class Outcome:
    sent: int
    acked: int
    failed: int
    still_sending: int
    delivered: int
    lost: int
    duplicated: int
    longest_gap_s: float
    reconnects: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.failed == 0 and self.still_sending == 0


class Instance:
    """One app process on a fixed port, so that it can be killed and restarted at the same address."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.child: ChildProcess | None = None

    def start(self) -> None:
        self.child = spawn_module("RealTimeChat.app", "--port", str(self.port), "--redis", self.redis_url,
                                  "--heartbeat-ttl", HEARTBEAT_TTL, port=self.port)

    def kill(self) -> None:
        if self.child is not None:
            self.child.kill()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


class User:
    """One chat user: a client, the thread that types, and the reconnect logic."""

    def __init__(self, index: int, urls: list[str], rng: random.Random, interval: float):
        self.name = f"user{index}"
        self.urls = urls                       # own instance first, then the other
        self.rng = rng
        self.interval = interval               # mean seconds between two messages
        self.arrivals: list[float] = []
        self.reconnects = 0
        self.client = ChatClient(urls[0], self.name, on_event=self._on_event).connect()
        self.client.joined(ROOM, self.name)

    def _on_event(self, event: str, data, at: float) -> None:
        if event == "message":
            self.arrivals.append(time.monotonic())

    def run(self, until: float) -> None:
        seq = 0
        while time.monotonic() < until:
            if not self.client.connected:
                self.reconnect(until + 30)
            seq += 1
            self.client.send(ROOM, f"{self.name} #{seq}")
            time.sleep(self.rng.uniform(0.5, 1.5) * self.interval)

    def reconnect(self, give_up_at: float) -> None:
        """Back in, on whichever instance answers: the other one first (ours just died)."""
        attempt = 0
        while time.monotonic() < give_up_at:
            url = self.urls[(attempt + 1) % len(self.urls)]
            attempt += 1
            try:
                self.client.reconnect(url, timeout=5)
                self.reconnects += 1
                return
            except (socketio.exceptions.ConnectionError, AssertionError):
                # Refused (the nickname is still held by the dead instance until its heartbeat
                # expires) or the instance is down: try again shortly.
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} could not reconnect")

    def catch_up(self) -> None:
        """One last join with `since`: whatever this user missed, the server sends now."""
        if not self.client.connected:
            self.reconnect(time.monotonic() + 30)
        self.client.join(ROOM, self.name, since=self.client.since(ROOM))
        self.client.wait_for("history", lambda h: h["room"] == ROOM, timeout=15)

    def longest_gap(self, start: float, end: float) -> float:
        times = [start] + [t for t in self.arrivals if start <= t <= end] + [end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


def count(users: list[User], start: float, end: float) -> Outcome:
    outbox = [item for user in users for item in user.client.outbox.values()]
    acked = {item.client_id: item.id for item in outbox if item.state == "sent"}
    shown = [user.client.displayed(ROOM) for user in users]
    delivered = sum(all(message_id in view for view in shown) for message_id in acked.values())
    duplicated = 0
    for view in shown:
        ids_per_client_id: dict[str, set[int]] = {}
        for message in view.values():
            ids_per_client_id.setdefault(message["client_id"], set()).add(message["id"])
        duplicated += sum(len(ids) - 1 for ids in ids_per_client_id.values())
    return Outcome(
        sent=len(outbox), acked=len(acked),
        failed=sum(item.state == "failed" for item in outbox),
        still_sending=sum(item.state == "sending" for item in outbox),
        delivered=delivered, lost=len(acked) - delivered, duplicated=duplicated,
        longest_gap_s=max(user.longest_gap(start, end) for user in users),
        reconnects=sum(user.reconnects for user in users),
    )


def run_chaos(clients: int, seconds: float, kills: int, seed: int, interval: float = 1.0,
              progress: bool = True, redis_url: str | None = None, partitions: int = 0,
              partition_seconds: float = 4.0) -> Outcome:
    """The whole experiment; returns the counts. Starts a private redis-server unless given one."""
    rng = random.Random(seed)
    with ExitStack() as stack:
        redis_url = redis_url or stack.enter_context(redis_server())
        # A reaches Redis through a fault proxy (a partition is a fault of the link, not of A).
        host, port = urlsplit(redis_url).hostname, urlsplit(redis_url).port
        proxy = stack.enter_context(fault_proxy(upstream=(host, port)))
        proxied = redis_url.replace(f"{host}:{port}", "{}:{}".format(*proxy.address), 1)
        a, b = Instance(proxied), Instance(redis_url)
        for instance in (a, b):
            instance.start()
            stack.callback(instance.stop)
        users = [User(i, [a.url, b.url] if i % 2 == 0 else [b.url, a.url], random.Random(rng.random()),
                      interval) for i in range(clients)]
        stack.callback(lambda: [user.client.drop() for user in users])
        start = time.monotonic()
        end = start + seconds
        threads = [threading.Thread(target=user.run, args=(end,), daemon=True) for user in users]
        for thread in threads:
            thread.start()
        faults = ["kill"] * kills + ["partition"] * partitions
        schedule = [(start + seconds * (k + 1) / (len(faults) + 1), fault) for k, fault in enumerate(faults)]
        heal_at = None
        ticks = range(int(seconds))
        for tick in (cli.progress(ticks, label="seconds") if progress else ticks):
            if heal_at is not None and time.monotonic() >= heal_at:
                proxy.heal()
                heal_at = None
            if schedule and time.monotonic() >= schedule[0][0]:
                _, fault = schedule.pop(0)
                if fault == "kill":
                    a.kill()        # SIGKILL: in-flight messages, acks and presence are cut off
                    time.sleep(0.5)
                    a.start()       # back at the same address; its old users are on B by now
                else:
                    proxy.partition("refuse")   # A stays up, but cannot reach Redis
                    heal_at = time.monotonic() + partition_seconds
            time.sleep(max(0.0, start + tick + 1 - time.monotonic()))
        if heal_at is not None:
            proxy.heal()
        for thread in threads:
            thread.join(timeout=60)
        for user in users:          # a user cut off in the last moments comes back first
            if not user.client.connected:
                user.reconnect(time.monotonic() + 30)
        for user in users:
            try:
                user.client.wait_until_sent(timeout=20)
            except AssertionError:
                pass   # counted below as "still sending"
        for user in users:
            user.catch_up()
        return count(users, start, end)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m RealTimeChat.chaos",
                                description="Two chat instances behind one Redis; one is SIGKILLed and "
                                            "restarted while clients talk. Counts lost and doubled messages.")
    parser.add_argument("--clients", type=cli.int_range(2), default=20, help="users (default 20)")
    parser.add_argument("--seconds", type=cli.int_range(2), default=20, help="sending time (default 20)")
    parser.add_argument("--kills", type=cli.non_negative_int, default=2,
                        help="SIGKILLs of instance A, evenly spaced (default 2)")
    parser.add_argument("--partitions", type=cli.non_negative_int, default=0,
                        help="times instance A is partitioned from Redis (not killed) (default 0)")
    parser.add_argument("--partition-seconds", type=cli.positive_float, default=4.0,
                        help="how long each partition lasts (default 4)")
    parser.add_argument("--interval", type=cli.float_range(0.05, 60), default=1.0,
                        help="mean seconds between two messages of one user (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the users' typing times")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"{args.clients} users on two instances behind one Redis, {args.seconds} s: instance A "
          f"SIGKILLed and restarted {args.kills} time(s), partitioned from Redis for "
          f"{args.partition_seconds:g} s {args.partitions} time(s)", flush=True)
    outcome = run_chaos(args.clients, args.seconds, args.kills, args.seed, args.interval,
                        partitions=args.partitions, partition_seconds=args.partition_seconds)
    print(f"  sent        {outcome.sent}")
    print(f"  acked       {outcome.acked}   (failed {outcome.failed}, still sending {outcome.still_sending})")
    print(f"  delivered   {outcome.delivered}   to every member")
    print(f"  lost        {outcome.lost}   acked but missing for some member (must be 0)")
    print(f"  duplicated  {outcome.duplicated}   shown twice (must be 0)")
    print(f"  longest gap {outcome.longest_gap_s:.1f} s   a user heard nothing "
          f"({outcome.reconnects} reconnects)")
    print(f"result: {'no acked message lost, none doubled' if outcome.ok else 'INVARIANT BROKEN'}")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
