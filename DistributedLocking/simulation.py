"""Many users in many processes book, cancel and re-book seats; then an audit checks every claim.

    python -m DistributedLocking.simulation [--users 50 --seats 20 --processes 5 --cancel 0.3 --seed 1]

Each process runs a share of the users. A user tries seats in a random order until one books (a
short random "payment" widens the race), may cancel it and try again. Every process reports what
each user was told. The audit then checks those claims against the seat store (SQLite):

* per seat, successful bookings minus successful cancellations is 0 or 1 (never two live bookings);
* each seat held in Redis belongs to the user whose booking of it was never cancelled;
* every "booked" is accounted for: still held, or cancelled by its own holder;
* nobody ends up holding two seats.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter, defaultdict

import redis

from common import cli, redis_server

from .seat_store import SeatStore
from .ticket_booking import delete_event_keys
from .workers import SPAWN, crowd_worker, start_process

EVENT = "sim"


def run(url: str, db: str, users: int, seats: int, processes: int, cancel: float, seed: int,
        payment_max_s: float) -> list[tuple[str, str, str]]:
    seat_ids = [f"S{n:02d}" for n in range(seats)]
    user_ids = [f"user{n:03d}" for n in range(users)]
    start, results = SPAWN.Event(), SPAWN.Queue()
    procs = [start_process(crowd_worker, url, db, EVENT, seat_ids, user_ids[p::processes], seed * 1000 + p,
                           cancel, start, results, payment_max_s) for p in range(processes)]
    try:
        start.set()
        log = [entry for _ in cli.progress(procs, label="processes done")
               for entry in results.get(timeout=300)]
        for proc in procs:
            proc.join(30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    return log


def audit(log: list[tuple[str, str, str]], held: dict[str, str]) -> list[str]:
    """Return the list of violations (empty: all claims match the seat store)."""
    problems = []
    booked: dict[str, list[str]] = defaultdict(list)
    cancelled: dict[str, list[str]] = defaultdict(list)
    for user, outcome, seat in log:
        if outcome == "booked":
            booked[seat].append(user)
        elif outcome == "cancel cancelled":
            cancelled[seat].append(user)
    for seat in sorted(set(booked) | set(held)):
        live = Counter(booked[seat]) - Counter(cancelled[seat])
        if sum(live.values()) > 1:
            problems.append(f"seat {seat} has {sum(live.values())} live bookings: {sorted(live)}")
        expected = next(iter(live), None)
        if held.get(seat) != expected:
            problems.append(f"seat {seat}: the store says {held.get(seat)}, the claims say {expected}")
        stray = Counter(cancelled[seat]) - Counter(booked[seat])
        if stray:
            problems.append(f"seat {seat}: cancelled by users who never booked it: {sorted(stray)}")
    holders = Counter(held.values())
    problems += [f"{user} holds {n} seats" for user, n in holders.items() if n > 1]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m DistributedLocking.simulation", description=__doc__)
    parser.add_argument("--users", type=cli.int_range(1, 100_000), default=50, help="(default 50)")
    parser.add_argument("--seats", type=cli.int_range(1, 10_000), default=20, help="(default 20)")
    parser.add_argument("--processes", type=cli.int_range(1, 64), default=5, help="(default 5)")
    parser.add_argument("--cancel", type=cli.fraction, default=0.3,
                        help="probability a user cancels and retries, 0..1 (default 0.3)")
    parser.add_argument("--payment-ms", type=cli.float_range(0, 10_000), default=3.0,
                        help="max random payment time per booking (default 3)")
    parser.add_argument("--seed", type=cli.non_negative_int, default=1, help="(default 1)")
    args = parser.parse_args(argv)
    with redis_server() as url, tempfile.TemporaryDirectory(prefix="locking-sim-") as tmp:
        client = redis.Redis.from_url(url)
        delete_event_keys(client, EVENT)  # only our keys: under REDIS_URL this is the user's Redis
        db = f"{tmp}/seats.sqlite3"
        SeatStore(db).close()  # create the schema once, before the workers open it
        print(f"redis-server at {url}, seats in SQLite: {args.users} users in {args.processes} "
              f"processes, {args.seats} seats, cancel probability {args.cancel}, seed {args.seed}")
        log = run(url, db, args.users, args.seats, args.processes, args.cancel, args.seed,
                  args.payment_ms / 1000)
        with SeatStore(db) as store:
            held = store.reservations(EVENT)
    outcomes = Counter(outcome for _, outcome, _ in log)
    print("\n  outcome                    count")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome:25} {count:6}")
    problems = audit(log, held)
    for problem in problems:
        print(f"  AUDIT FAILED: {problem}")
    bookings, cancels = outcomes["booked"], outcomes["cancel cancelled"]
    print(f"\n  the store holds {len(held)} of {args.seats} seats; {bookings} bookings - {cancels} "
          f"cancellations = {bookings - cancels}")
    verdict = "audit ok, no seat booked twice" if not problems else f"AUDIT FAILED ({len(problems)} problems)"
    print(f"result: {bookings} bookings, {cancels} cancels, {len(held)} seats held; {verdict}")
    return 0 if not problems and len(held) == bookings - cancels else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
