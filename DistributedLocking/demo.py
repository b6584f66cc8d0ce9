"""The headline demo: a seat lock that holds under a race, and what a "GC pause" does to it.

    python -m DistributedLocking.demo [--racers 8] [--ttl-ms 1000]

1. N real processes race for one seat: exactly one books it.
2. Holder A is frozen with SIGSTOP (a stop-the-world GC pause) during payment, past its lease.
   B books the seat. A wakes up and writes — and the seat, fenced by its token, refuses.
3. The same pause with fencing off (the old design, where the random lock value was said to be a
   fencing token): A's write lands on top of B's booking — a double booking.
4. No pause, a network partition: A keeps running but is cut off from Redis (common.faultproxy);
   its watchdog cannot renew, B books, A's late write is rejected by the fence. More network
   scenes, with a message diagram: python -m DistributedLocking.partition
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import redis

from common import cli, redis_server

from .partition import holder_partitioned
from .seat_store import SeatStore
from .ticket_booking import delete_event_keys
from .workers import SPAWN, booking_worker, race_worker, start_process


def race(url: str, db: str, racers: int) -> str:
    """N processes, one seat, one start signal. Returns the winner."""
    print(f"\n== 1. {racers} processes race for seat A1 of event 'race' ==")
    start, results = SPAWN.Event(), SPAWN.Queue()
    procs = [start_process(race_worker, url, db, "race", "A1", f"user{n}", start, results)
             for n in range(racers)]
    try:
        start.set()
        outcomes = sorted(results.get(timeout=60) for _ in procs)
        for proc in procs:
            proc.join(30)
    finally:
        stop_all(procs)  # on Ctrl-C too: before the redis-server they talk to goes away
    for user, outcome, token in outcomes:
        print(f"  {user:7} {outcome:15} token={token}")
    winners = [user for user, outcome, _ in outcomes if outcome == "booked"]
    with SeatStore(db) as store:
        holder = store.holder("race", "A1")
    print(f"  -> {len(winners)} winner; the seat store says A1 belongs to {holder}")
    if len(winners) != 1:
        raise SystemExit(f"BUG: {len(winners)} processes booked the same seat")
    return winners[0]


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def say(self, text: str, at: float | None = None) -> None:
        print(f"  t={(at or time.monotonic()) - self.t0:6.3f}s  {text}")


def pause_scenario(url: str, db: str, *, fencing: bool, ttl_ms: int,
                   payment_s: float) -> tuple[str, str, str | None]:
    """A pays, is frozen past its lease, B books, A resumes. Returns (A's outcome, B's, seat holder)."""
    event = "fenced" if fencing else "unfenced"
    title = "with fencing" if fencing else "WITHOUT fencing (fencing=False: the old design)"
    print(f"\n== {2 if fencing else 3}. GC pause during payment, {title}; lock ttl {ttl_ms} ms ==")
    client = redis.Redis.from_url(url)
    line = Timeline()
    a_end, a_child = SPAWN.Pipe()
    a = start_process(booking_worker, url, db, event, "D4", "alice", payment_s, fencing, ttl_ms, a_child)
    procs = [a]
    try:
        _, a_token, at = _recv(a_end)
        line.t0 = at
        line.say(f"A (alice, pid {a.pid}) holds lock:{event}:D4; the seat issued it token {a_token} "
                 "and is free; paying...", at)
        os.kill(a.pid, signal.SIGSTOP)
        line.say("A is frozen (SIGSTOP) -- a stop-the-world GC pause; its watchdog thread is frozen too")
        while client.exists(f"lock:{event}:D4"):
            time.sleep(0.005)
        line.say("A's lease expires in Redis; A still believes it holds the lock")
        b_end, b_child = SPAWN.Pipe()
        b = start_process(booking_worker, url, db, event, "D4", "bob", 0.0, fencing, ttl_ms, b_child)
        procs.append(b)
        _, b_token, at = _recv(b_end)
        line.say(f"B (bob) acquires the lock; the seat issues it token {b_token} and is free", at)
        _, b_outcome, _, at = _recv(b_end)
        line.say(f"B writes seat D4 = bob -> {b_outcome}", at)
        b.join(30)
        os.kill(a.pid, signal.SIGCONT)
        line.say("A resumes (SIGCONT), finishes paying and writes the seat")
        _, a_outcome, _, at = _recv(a_end)
        how = f"token {a_token} < {b_token}, refused by the seat" if fencing else "nothing checks it"
        line.say(f"A writes seat D4 = alice -> {a_outcome.upper()} ({how})", at)
        a.join(30)
    finally:
        stop_all(procs)
    with SeatStore(db) as store:
        holder = store.holder(event, "D4")
    told = [name for name, outcome in (("alice", a_outcome), ("bob", b_outcome)) if outcome == "booked"]
    print(f"  -> seat D4 belongs to {holder}; told 'booked': {', '.join(told)}"
          + ("  << DOUBLE BOOKING" if len(told) > 1 else ""))
    return a_outcome, b_outcome, holder


def stop_all(procs) -> None:
    """Stop every child still running (continued first: a stopped process dies only once resumed)."""
    for proc in procs:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.join(10)


def _recv(conn, timeout: float = 30.0):
    if not conn.poll(timeout):
        raise SystemExit("a worker process did not answer within 30 s")
    return conn.recv()


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m DistributedLocking.demo", description=__doc__)
    parser.add_argument("--racers", type=cli.int_range(2, 64), default=8,
                        help="processes racing for one seat, 2..64 (default 8)")
    parser.add_argument("--ttl-ms", type=cli.int_range(50, 60_000), default=1000,
                        help="lock lease in the pause scenes, 50..60000 ms (default 1000)")
    parser.add_argument("--payment-s", type=cli.float_range(0.01, 60), default=1.5,
                        help="how long A's payment takes; A is frozen during it (default 1.5)")
    args = parser.parse_args(argv)
    # The seats live in a throw-away SQLite file; the locks in Redis.
    with redis_server() as url, tempfile.TemporaryDirectory(prefix="locking-demo-") as tmp:
        client = redis.Redis.from_url(url)
        for event in ("race", "fenced", "unfenced"):  # only ours: REDIS_URL may be the user's Redis
            delete_event_keys(client, event)
        db = str(Path(tmp) / "seats.sqlite3")
        SeatStore(db).close()  # create the schema once, before the racers open it
        print(f"redis-server at {url}; seats in SQLite")
        winner = race(url, db, args.racers)
        fenced = pause_scenario(url, db, fencing=True, ttl_ms=args.ttl_ms, payment_s=args.payment_s)
        unfenced = pause_scenario(url, db, fencing=False, ttl_ms=args.ttl_ms, payment_s=args.payment_s)
        print("\n== 4. no pause: A is partitioned from Redis (both ways) while it holds the lock ==")
        partitioned = holder_partitioned(url, db, "both", ttl_ms=max(300, min(args.ttl_ms, 10_000)))
    ok = (fenced == ("rejected stale", "booked", "bob") and unfenced == ("booked", "booked", "alice")
          and partitioned.holder == "bob" and not partitioned.alice_write_accepted)
    print(f"\nresult: 1 of {args.racers} racers won ({winner}); GC pause: fenced stale write "
          f"{'rejected' if fenced[0] == 'rejected stale' else fenced[0]}, unfenced -> "
          f"{'double booking' if unfenced[0] == unfenced[1] == 'booked' else 'no double booking'}; "
          f"partitioned holder's write {'accepted' if partitioned.alice_write_accepted else 'rejected'}"
          f"{'' if ok else ' (UNEXPECTED)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
