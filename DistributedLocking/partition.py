"""Network partitions, not process pauses: a lock holder cut off from Redis, and Redlock losing servers.

    python -m DistributedLocking.partition [--ttl-ms 600] [--diagram out/DistributedLocking/partition.png]

The GC-pause scene (demo.py) freezes the holder. Here the holder keeps running — only its network to
Redis breaks, through `common.faultproxy` (see common/README.md):

1. Alice holds the seat lock and a token from the seat store, then is partitioned from Redis: both
   ways (a black hole); one way, her requests dropped; and one way, Redis's replies dropped — there
   her requests still *run*, so a renewal she counts as failed did extend her lease: a timeout tells
   a client nothing about whether its request ran. Either way no renewal reaches her as a success
   (and after a timeout the reconnect's handshake never completes, so no further request is sent);
   the lease expires in Redis, Bob takes the lock, gets the next token and books. Alice, still
   running and reaching the seat store directly, writes — and the fence rejects her token.
2. Redlock over five servers, a client partitioned from 2 of them: it still gets the lock (3 of 5 is
   a majority) and a rival cannot; partitioned from 3: it gets no lock and leaves no key behind.

The first scene is recorded with `common.trace` and drawn as a message diagram.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis

from common import cli, redis_server, redis_servers, trace
from common.faultproxy import fault_proxy

from .lock import RedisLock
from .redlock import Redlock
from .seat_store import SeatStore
from .ticket_booking import delete_event_keys

T = TypeVar("T")
MODES = {"both": "both ways (black hole)", "upstream": "one way (alice -> Redis dropped)",
         "downstream": "one way (Redis -> alice dropped: her requests still run)"}


@dataclass(frozen=True)
class HolderScene:
    mode: str
    alice_token: int
    bob_token: int
    failed_renewals: int          # watchdog attempts that got no reply
    renewals_run_unseen: int      # of those, how many Redis ran anyway (its reply was what got lost)
    alice_write_accepted: bool
    bob_write_accepted: bool
    holder: str | None            # the seat store's answer at the end
    alice_release: bool           # False: the lease was no longer hers


def holder_partitioned(url: str, db: str, mode: str, *, ttl_ms: int = 600,
                       trace_path: str | Path | None = None,
                       say: Callable[[str], None] = print) -> HolderScene:
    """Alice holds the lock, is partitioned from Redis (`mode`: one of MODES), Bob books."""
    event = f"partition-{mode}"
    bob_redis = redis.Redis.from_url(url)
    delete_event_keys(bob_redis, event)
    tracers = {name: trace.open_tracer(trace_path, name) for name in ("alice", "bob", "redis", "seats")}
    alice_t, redis_t = tracers["alice"], tracers["redis"]

    def exchange(client: str, server: str, label: str, call: Callable[[], T]) -> T:
        return _exchange(tracers, client, server, label, call)

    with fault_proxy(upstream=_host_port(bob_redis)) as proxy, SeatStore(db) as alice_store, \
            SeatStore(db) as bob_store, _FailedRenewals(alice_t) as failed:
        # Alice reaches Redis only through the proxy, with short timeouts (a partition shows as one).
        alice_redis = redis.Redis(host=proxy.address[0], port=proxy.address[1], socket_timeout=0.1,
                                  socket_connect_timeout=0.1)
        alice_lock = RedisLock(alice_redis, f"{event}:A1", ttl_ms=ttl_ms, auto_renew=True)
        bob_lock = RedisLock(bob_redis, f"{event}:A1", ttl_ms=ttl_ms, auto_renew=False)

        exchange("alice", "redis", "acquire lease", lambda: alice_lock.acquire(blocking=False))
        alice = exchange("alice", "seats", "issue token", lambda: alice_store.issue_token(event, "A1"))
        say(f"  alice holds lock:{event}:A1 (ttl {ttl_ms} ms, watchdog on), seat token {alice.token}; "
            "paying...")
        # Let one renewal succeed first: it loads the extend script into Redis's script cache, so a
        # renewal sent during the partition runs (a cold cache would answer NOSCRIPT — unheard too).
        lease_key = f"lock:{event}:A1"
        _wait_until(lambda: alice_lock.renewals >= 1 or not bob_redis.exists(lease_key),
                    what="alice's first renewal")
        if alice_lock.renewals == 0:
            raise RuntimeError(f"alice's lease ran out before her watchdog renewed it once: this machine "
                               f"stalled for more than {ttl_ms} ms; run again, or raise --ttl-ms")
        scripts_run = _scripts_run(bob_redis)
        if mode == "both":
            proxy.partition("blackhole")
        else:
            proxy.one_way(mode)
        alice_t.local(f"partitioned from Redis: {MODES[mode]}")
        say(f"  the network between alice and Redis breaks, {MODES[mode]}; alice keeps running")

        _wait_until(lambda: not bob_redis.exists(lease_key), what="the lease to expire")
        # Only alice's watchdog ran scripts on this server since the partition (bob has not started).
        run_unseen = _scripts_run(bob_redis) - scripts_run
        redis_t.local("alice's lease expires")
        ran = f" (Redis ran {run_unseen} of them: only the reply was lost)" if run_unseen else ""
        say(f"  alice's watchdog failed {failed.count} renewal(s){ran}; the lease expires in Redis")
        if exchange("bob", "redis", "acquire lease", lambda: bob_lock.acquire(blocking=False)) is None:
            raise RuntimeError("bob could not take the lock although alice's lease had expired")
        bob = exchange("bob", "seats", "issue token", lambda: bob_store.issue_token(event, "A1"))
        bob_write = exchange("bob", "seats", f"write bob (token {bob.token})",
                             lambda: bob_store.write(event, "A1", bob.token, "bob", 300))
        say(f"  bob takes the lock, gets token {bob.token}, books: "
            f"{'accepted' if bob_write.accepted else 'rejected'}")
        alice_write = exchange("alice", "seats", f"write alice (token {alice.token})",
                               lambda: alice_store.write(event, "A1", alice.token, "alice", 300))
        say(f"  alice finishes paying and writes with token {alice.token}: "
            f"{'ACCEPTED' if alice_write.accepted else 'REJECTED'} (the seat has issued {bob.token})")
        bob_lock.release()
        proxy.heal()
        alice_t.local("network healed")
        alice_release = exchange("alice", "redis", "release", alice_lock.release)
        renewals = failed.count
    with SeatStore(db) as store:
        holder = store.holder(event, "A1")
    say(f"  -> seat A1 belongs to {holder}; alice's release after the heal: {alice_release} (lease lost)")
    for tracer in tracers.values():
        tracer.close()
    return HolderScene(mode, alice.token, bob.token, renewals, run_unseen, alice_write.accepted,
                       bob_write.accepted, holder, alice_release)


@dataclass(frozen=True)
class RedlockScene:
    partitioned: int
    granted_by: int | None        # servers that granted the partitioned client's lock (None: no lock)
    rival_got_it: bool            # a client reaching all five servers, while the first one tried/held
    keys_left: int                # lock keys on the servers after the partitioned client gave up


def redlock_partitioned(urls: list[str], partitioned: int, *,
                        say: Callable[[str], None] = print) -> RedlockScene:
    """A Redlock client cut off from `partitioned` of the servers; a rival reaches them all."""
    name = f"partition-redlock-{partitioned}"
    direct = [redis.Redis.from_url(url) for url in urls]
    for client in direct:
        client.delete(f"lock:{name}")
    with contextlib.ExitStack() as stack:
        proxies = [stack.enter_context(fault_proxy(upstream=_host_port(client))) for client in direct]
        for proxy in proxies[:partitioned]:
            proxy.partition("blackhole")
        cut_off = Redlock.from_urls([f"redis://{p.address[0]}:{p.address[1]}/{_db(c)}"
                                     for p, c in zip(proxies, direct, strict=True)], name, ttl_ms=10_000,
                                    server_timeout_s=0.3)
        rival = Redlock(direct, name, ttl_ms=10_000, server_timeout_s=1.0)
        lease = cut_off.acquire(blocking=False)
        keys_left = sum(client.exists(f"lock:{name}") for client in direct[partitioned:])
        rival_lease = rival.acquire(blocking=False)
        if lease is not None:
            say(f"  partitioned from {partitioned} of 5: the lock is granted by {lease.granted_by} of 5 "
                f"(a majority); a rival reaching all five: {'GOT IT TOO' if rival_lease else 'refused'}")
            cut_off.release()
        else:
            say(f"  partitioned from {partitioned} of 5: no majority, no lock; keys left on the reachable "
                f"servers: {keys_left}; a rival reaching all five: {'gets it' if rival_lease else 'refused'}")
        if rival_lease is not None:
            rival.release()
        cut_off.close()
        rival.close()
        return RedlockScene(partitioned, None if lease is None else lease.granted_by,
                            rival_lease is not None, keys_left)


# -- helpers ---------------------------------------------------------------------------------------

def _exchange(tracers: dict, client: str, server: str, label: str, call: Callable[[], T]) -> T:
    """Run one request/response and record it as two messages (request, reply) in the trace.

    Redis and SQLite are not ours to instrument, so their side is recorded by the client once the
    reply is in: the order of events is exact, their spacing is not.
    """
    msg = f"{client}/{label}/{time.monotonic_ns()}"
    tracers[client].send(server, msg, label)
    result = call()
    tracers[server].recv(client, msg, label)
    tracers[server].send(client, msg + "/reply", _short(result))
    tracers[client].recv(server, msg + "/reply", _short(result))
    return result


def _host_port(client: redis.Redis) -> tuple[str, int]:
    kwargs = client.connection_pool.connection_kwargs
    return kwargs["host"], int(kwargs["port"])


def _short(result: object) -> str:
    """The reply as a diagram label."""
    if hasattr(result, "accepted"):
        return "accepted" if result.accepted else "REJECTED (stale token)"
    if hasattr(result, "token"):
        return f"token {result.token}, seat free" if result.holder is None else f"token {result.token}"
    if isinstance(result, bool):
        return "released" if result else "not yours (lease gone)"
    if isinstance(result, int):
        return "OK, leased"
    return "busy" if result is None else str(result)


class _FailedRenewals(logging.Handler):
    """Counts the watchdog's failed renewals (its log lines) and records each as a lost message."""

    def __init__(self, tracer) -> None:
        super().__init__(logging.WARNING)
        self.tracer = tracer
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "could not extend" in record.getMessage():
            self.count += 1
            self.tracer.send("redis", f"renew/{self.count}", "renew lease")
            self.tracer.timeout("redis", "no reply")

    def __enter__(self) -> _FailedRenewals:
        logger = logging.getLogger("DistributedLocking.lock")
        logger.addHandler(self)
        self._propagate, logger.propagate = logger.propagate, False  # counted here, not printed
        return self

    def __exit__(self, *exc) -> None:
        logger = logging.getLogger("DistributedLocking.lock")
        logger.removeHandler(self)
        logger.propagate = self._propagate


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _scripts_run(client: redis.Redis) -> int:
    """Lua scripts (EVALSHA) the server has run to completion so far: calls minus failed calls."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return stats.get("calls", 0) - stats.get("failed_calls", 0)


def _db(client: redis.Redis) -> int:
    return client.connection_pool.connection_kwargs.get("db", 0)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m DistributedLocking.partition", description=__doc__)
    parser.add_argument("--ttl-ms", type=cli.int_range(300, 10_000), default=600,
                        help="alice's lease, 300..10000 ms (default 600)")
    parser.add_argument("--diagram", type=cli.writable_path,
                        default=cli.output_path("DistributedLocking", "partition.png"),
                        help="message diagram of scene 1 (both ways), .png or .svg "
                             "(default out/DistributedLocking/partition.png)")
    trace.add_trace_argument(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="locking-partition-") as tmp, redis_server() as url:
        db = f"{tmp}/seats.sqlite3"
        trace_path = args.trace or Path(tmp) / "partition.jsonl"
        results = []
        for mode in MODES:
            print(f"\n== 1{'abc'[list(MODES).index(mode)]}. alice partitioned from Redis, {MODES[mode]} ==")
            results.append(holder_partitioned(url, db, mode, ttl_ms=args.ttl_ms,
                                              trace_path=trace_path if mode == "both" else None))
        trace.render(trace_path, args.diagram, title="alice partitioned from Redis (both ways) while "
                     "holding the seat lock", processes=["alice", "redis", "bob", "seats"])
        print(f"\n  diagram of 1a: {args.diagram}")
    with redis_servers(5) as urls:
        print("\n== 2. Redlock over 5 servers, the client partitioned from some of them ==")
        redlocks = [redlock_partitioned(urls, k) for k in (2, 3)]
    ok = (all(not r.alice_write_accepted and r.bob_write_accepted and r.holder == "bob" for r in results)
          and redlocks[0].granted_by == 3 and not redlocks[0].rival_got_it
          and redlocks[1].granted_by is None and redlocks[1].keys_left == 0)
    print(f"\nresult: partitioned holder's late write rejected in all {len(results)} modes; "
          f"Redlock: lock with 2 of 5 partitioned, none with 3{'' if ok else ' (UNEXPECTED)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
