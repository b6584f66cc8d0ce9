"""Benchmark: RedisLock against redis-py's redis.lock.Lock; backoff against wake-up waiting; and
the seat booking with a lock against the same booking as one conditional write (no lock).

    python -m DistributedLocking.bench [--pairs 1000 --reps 11 --processes 8 --sections 200 --rounds 5
                                        --racers 32 --seats 100 --booking-rounds 3]

1. Uncontended: acquire+release pairs per second on one private redis-server, our RedisLock (with and
   without the renewal watchdog) and redis-py's Lock, interleaved repetitions, median reported.
   Both do one round trip per acquire and one per release; ours also issues a fencing token. The
   floor is two round trips: PING round trips per second over one held connection, measured in the
   same reps, give "pairs/s / (PING/s / 2)" — how close a pair gets to its physical limit.
2. Contended: `--processes` processes x `--sections` critical sections on ONE lock (GET+SET a counter
   inside), waiting by capped exponential backoff with jitter vs by BLPOP wake-up on release. Reports
   the total time and the hand-off latency (one holder's end of critical section -> the next holder's
   start) p50/p99, medians over `--rounds` interleaved rounds. The counter must come out exact.
3. Booking under contention: `--racers` processes each try every one of `--seats` seats once, in
   their own random order — with the seat lock (Redis lock + fenced SQLite write) and without it
   (one conditional SQLite write). Bookings per second and per-attempt latency p50/p99, medians over
   `--booking-rounds` interleaved rounds; every seat must end with exactly one winner.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from redis.lock import Lock as RedisPyLock

from common import cli, redis_server

from .lock import WAIT_BACKOFF, WAIT_WAKEUP, RedisLock
from .seat_store import SeatStore
from .ticket_booking import delete_event_keys
from .workers import SPAWN, counter_worker, seat_rush_worker, start_process

PING_FLOOR = "PING x 2 over one connection (the floor)"
PEER = "redis-py redis.lock.Lock"


def pairs_per_second(acquire: Callable[[], object], release: Callable[[], object], pairs: int) -> float:
    started = time.perf_counter()
    for _ in range(pairs):
        acquire()
        release()
    return pairs / (time.perf_counter() - started)


def uncontended(url: str, pairs: int, reps: int) -> dict[str, list[float]]:
    client = redis.Redis.from_url(url)
    ours_plain = RedisLock(client, "bench-plain", ttl_ms=10_000, auto_renew=False)
    ours_renew = RedisLock(client, "bench-renew", ttl_ms=10_000, auto_renew=True)
    peer = RedisPyLock(client, "lock:bench-peer", timeout=10)
    ping = ping_round_trip(client)
    variants = {
        "RedisLock (auto_renew=False)": (ours_plain.acquire, ours_plain.release),
        "RedisLock (auto_renew=True, default)": (ours_renew.acquire, ours_renew.release),
        PEER: (peer.acquire, peer.release),
        PING_FLOOR: (ping, ping),
    }
    for acquire, release in variants.values():      # warm-up: connections, script cache
        pairs_per_second(acquire, release, 200)
    results: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rep in cli.progress(range(reps), label="uncontended reps"):
        for name in names[rep % len(names):] + names[:rep % len(names)]:   # rotate the order each rep
            results[name].append(pairs_per_second(*variants[name], pairs))
    return results


def ping_round_trip(client: redis.Redis) -> Callable[[], object]:
    """One PING round trip over a held connection: the least a request/response can cost here."""
    connection = client.connection_pool.make_connection()

    def ping() -> object:
        connection.send_command("PING")
        return connection.read_response()
    return ping


@dataclass
class Round:
    total_s: float
    handoffs_ms: list[float]     # end of one holder's section -> start of a DIFFERENT holder's section
    waits_ms: list[float]        # acquire() call -> return, every acquisition
    same_holder: float           # fraction of sections that went straight back to the previous holder
    round_trips: int             # lock commands clients sent (EVALSHA/EVAL/BLPOP): polling shows up here


def contended_round(url: str, wait: str, processes: int, sections: int, work_s: float = 0.0) -> Round:
    """One round of `processes` x `sections` critical sections on one lock."""
    client = redis.Redis.from_url(url)
    lock_name, counter = f"contended-{wait}", f"counter-{wait}"
    client.delete(counter, f"lock:{lock_name}", f"lock-wake:{lock_name}")
    # A barrier, not a sleep: the clock starts when every child has imported and connected.
    start, results = SPAWN.Barrier(processes + 1), SPAWN.Queue()
    procs = [start_process(counter_worker, url, lock_name, counter, sections, 10_000, wait, start, results,
                           work_s) for _ in range(processes)]
    try:
        start.wait(timeout=600)
        began = time.monotonic()
        trips_before = lock_round_trips(client)
        all_sections = sorted(s for _ in procs for s in results.get(timeout=300))
        total = max(section[1] for section in all_sections) - began
        trips = lock_round_trips(client) - trips_before
        for proc in procs:
            proc.join(30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    count = int(client.get(counter))
    if count != processes * sections:
        raise SystemExit(f"BUG: counter is {count}, expected {processes * sections}: mutual exclusion broken")
    pairs = list(zip(all_sections, all_sections[1:], strict=False))
    handoffs = [(nxt[0] - cur[1]) * 1000 for cur, nxt in pairs if nxt[3] != cur[3]]
    same = sum(1 for cur, nxt in pairs if nxt[3] == cur[3]) / max(1, len(pairs))
    return Round(total, handoffs, [s[4] * 1000 for s in all_sections], same, trips)


def lock_round_trips(client: redis.Redis) -> int:
    """Calls of the commands the lock sends (scripts and BLPOP), from INFO commandstats."""
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval", "blpop"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class BookingRound:
    total_s: float
    bookings: int
    latencies_ms: list[float]    # every attempt, booked or not


def booking_round(url: str, db: str, event: str, lock_free: bool, racers: int, seats: int,
                  seed: int) -> BookingRound:
    """`racers` processes try every seat once; returns the time until the last attempt ended."""
    seat_ids = [f"S{n:03d}" for n in range(seats)]
    start, results = SPAWN.Barrier(racers + 1), SPAWN.Queue()
    procs = [start_process(seat_rush_worker, url, db, event, seat_ids, f"u{n}", lock_free, seed + n,
                           start, results) for n in range(racers)]
    try:
        start.wait(timeout=600)  # the clock starts when every racer has imported and connected
        began = time.perf_counter()
        reports = [results.get(timeout=300) for _ in procs]
        total = time.perf_counter() - began
        for proc in procs:
            proc.join(30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    winners: dict[str, list[str]] = {seat: [] for seat in seat_ids}
    for user, attempts in reports:
        for seat, outcome, _ in attempts:
            if outcome == "booked":
                winners[seat].append(user)
    if any(len(users) != 1 for users in winners.values()):
        raise SystemExit(f"BUG: a seat without exactly one winner in {event}: "
                         f"{ {s: u for s, u in winners.items() if len(u) != 1} }")
    return BookingRound(total, seats, [a[2] * 1000 for _, attempts in reports for a in attempts])


def booking_comparison(url: str, racers: int, seats: int, rounds: int) -> dict[str, list[BookingRound]]:
    client = redis.Redis.from_url(url)
    labels = {False: "with the seat lock (Redis lock + fenced write)",
              True: "no lock: one conditional write"}
    runs: dict[str, list[BookingRound]] = {label: [] for label in labels.values()}
    with tempfile.TemporaryDirectory(prefix="locking-bench-") as tmp:
        db = f"{tmp}/seats.sqlite3"
        SeatStore(db).close()
        for n in cli.progress(range(rounds), label="booking rounds"):
            for lock_free in ((False, True) if n % 2 == 0 else (True, False)):
                event = f"bench{n}{'free' if lock_free else 'locked'}"
                delete_event_keys(client, event)
                runs[labels[lock_free]].append(booking_round(url, db, event, lock_free, racers, seats, n))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m DistributedLocking.bench", description=__doc__)
    parser.add_argument("--pairs", type=cli.int_range(1, 1_000_000), default=1000,
                        help="acquire+release pairs per repetition (default 1000)")
    parser.add_argument("--reps", type=cli.int_range(1, 1000), default=11,
                        help="interleaved repetitions, median reported (default 11)")
    parser.add_argument("--processes", type=cli.int_range(1, 64), default=8,
                        help="contending processes (default 8)")
    parser.add_argument("--sections", type=cli.int_range(1, 100_000), default=200,
                        help="critical sections per process (default 200)")
    parser.add_argument("--work-ms", type=cli.float_range(0, 1000), default=0.0,
                        help="extra time spent inside each critical section (default 0: GET+SET only)")
    parser.add_argument("--rounds", type=cli.int_range(1, 100), default=5,
                        help="contended rounds per strategy, interleaved (default 5)")
    parser.add_argument("--racers", type=cli.int_range(1, 64), default=32,
                        help="booking processes, each trying every seat (default 32)")
    parser.add_argument("--seats", type=cli.int_range(1, 10_000), default=100,
                        help="seats in the booking comparison (default 100)")
    parser.add_argument("--booking-rounds", type=cli.int_range(1, 100), default=3,
                        help="booking rounds per variant, interleaved (default 3)")
    args = parser.parse_args(argv)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, redis-py {redis.__version__}")
    with redis_server() as url:
        info = redis.Redis.from_url(url).info("server")
        print(f"redis-server {info['redis_version']} at {url}\n")
        print(f"1. uncontended: {args.pairs} acquire+release pairs x {args.reps} interleaved reps")
        results = uncontended(url, args.pairs, args.reps)
        peer = statistics.median(results[PEER])
        floor = statistics.median(results[PING_FLOOR])
        print(f"  {'lock':42} {'median pairs/s':>14} {'min':>8} {'max':>8} {'ours/peer':>10} "
              f"{'of the floor':>12}")
        for name, rates in results.items():
            median = statistics.median(rates)
            print(f"  {name:42} {median:14,.0f} {min(rates):8,.0f} {max(rates):8,.0f} "
                  f"{median / peer:9.2f}x {median / floor:11.0%}")
        print(f"  PING round trips/s {2 * floor:,.0f}; a pair is two round trips, so "
              f"pairs/s / (PING/s / 2) = the 'of the floor' column")

        print(f"\n2. contended: {args.processes} processes x {args.sections} critical sections on one "
              f"lock (GET+SET{f' + {args.work_ms} ms' if args.work_ms else ''}), "
              f"{args.rounds} interleaved rounds (medians)")
        rounds: dict[str, list[Round]] = {WAIT_BACKOFF: [], WAIT_WAKEUP: []}
        for n in cli.progress(range(args.rounds), label="contended rounds"):
            for wait in ((WAIT_BACKOFF, WAIT_WAKEUP) if n % 2 == 0 else (WAIT_WAKEUP, WAIT_BACKOFF)):
                r = contended_round(url, wait, args.processes, args.sections, args.work_ms / 1000)
                rounds[wait].append(r)
                handoff = percentile(r.handoffs_ms, 0.5), percentile(r.handoffs_ms, 0.99)
                print(f"  round {n + 1} {wait:8} total {r.total_s:5.2f} s  hand-off p50 {handoff[0]:5.2f}"
                      f" p99 {handoff[1]:6.2f} ms  wait p99 {percentile(r.waits_ms, 0.99):6.1f} ms  "
                      f"same holder {r.same_holder:4.0%}  {r.round_trips} lock round trips")
        print(f"\n  {'waiting':28} {'total s':>7} {'hand-off p50':>12} {'p99 ms':>7} {'wait p50':>9} "
              f"{'p99 ms':>7} {'same holder':>11} {'lock RTTs':>9} {'total vs backoff':>16}")
        base = statistics.median(r.total_s for r in rounds[WAIT_BACKOFF])
        labels = {WAIT_BACKOFF: "backoff (exp., full jitter)", WAIT_WAKEUP: "wake-up (BLPOP on release)"}
        for wait, runs in rounds.items():
            def med(metric, runs=runs):
                return statistics.median(metric(r) for r in runs)
            total = med(lambda r: r.total_s)
            print(f"  {labels[wait]:28} {total:7.2f} "
                  f"{med(lambda r: percentile(r.handoffs_ms, 0.5)):12.2f} "
                  f"{med(lambda r: percentile(r.handoffs_ms, 0.99)):7.2f} "
                  f"{med(lambda r: percentile(r.waits_ms, 0.5)):9.2f} "
                  f"{med(lambda r: percentile(r.waits_ms, 0.99)):7.1f} "
                  f"{med(lambda r: r.same_holder):11.0%} {med(lambda r: r.round_trips):9,.0f} "
                  f"{total / base:15.2f}x")

        print(f"\n3. booking under contention: {args.racers} processes each try all {args.seats} seats once "
              f"(random order), {args.booking_rounds} interleaved rounds (medians)")
        runs = booking_comparison(url, args.racers, args.seats, args.booking_rounds)
        print(f"  {'booking':48} {'bookings/s':>10} {'attempts/s':>10} {'p50 ms':>7} {'p99 ms':>7}")
        for label, done in runs.items():
            total = statistics.median(r.total_s for r in done)
            p50 = statistics.median(percentile(r.latencies_ms, 0.5) for r in done)
            p99 = statistics.median(percentile(r.latencies_ms, 0.99) for r in done)
            print(f"  {label:48} {args.seats / total:10,.0f} {args.racers * args.seats / total:10,.0f} "
                  f"{p50:7.2f} {p99:7.2f}")
        print("  every seat had exactly one winner in every round")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
