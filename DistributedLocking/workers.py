"""Process bodies for the demo, simulation, bench and tests: real OS processes competing for locks.

Each function runs in a child started with multiprocessing's "spawn" method (a fresh interpreter,
nothing inherited but its arguments), talks to Redis over its own connection, and reports back
through a pipe or queue. Real processes are the point: they can be SIGKILLed and SIGSTOPped, and
they share nothing but Redis.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import signal
import time
from multiprocessing.connection import Connection

import redis

from .fencing import FencedResource
from .lock import RedisLock
from .seat_store import SeatStore
from .ticket_booking import BookingOutcome, CancelOutcome, TicketBookingSystem

SPAWN = multiprocessing.get_context("spawn")


def start_process(target, *args) -> multiprocessing.process.BaseProcess:
    """Start a daemon child that never sees Ctrl-C.

    Ctrl-C reaches the whole process group; the parent handles it and stops its children. So SIGINT
    is *blocked* while the child starts: the child inherits the signal mask across fork and exec and
    keeps it, so a Ctrl-C only ever stays pending there; the parent unblocks it right after, and a
    Ctrl-C that came meanwhile is delivered then. (Ignoring SIGINT instead, SIG_IGN, would also make
    the parent drop a Ctrl-C that lands during the start: the demo would carry on without Redis.)
    """
    proc = SPAWN.Process(target=target, args=args, daemon=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending Ctrl-C lands here
    except KeyboardInterrupt:  # here, or in start() if another thread of ours took the signal
        if proc.pid is not None:
            proc.kill()  # the caller never gets it, so it could not stop it
        raise
    return proc


def counter_worker(url: str, lock_name: str, counter_key: str, iterations: int, ttl_ms: int,
                   wait: str, start: object, results: object, work_s: float = 0.0) -> None:
    """GET then SET a counter inside the lock `iterations` times; report one tuple per section:
    (acquired, released, token, pid, waited) with times from time.monotonic() (system-wide on Linux).

    Without mutual exclusion two processes read the same value and one increment is lost.
    """
    client = redis.Redis.from_url(url)
    lock = RedisLock(client, lock_name, ttl_ms=ttl_ms, auto_renew=False, wait=wait)
    sections = []
    pid = os.getpid()
    client.ping()  # connect before the start line
    start.wait()  # an Event or a Barrier: all processes start competing at the same moment
    for _ in range(iterations):
        asked = time.monotonic()
        token = lock.acquire()
        acquired = time.monotonic()
        value = int(client.get(counter_key) or 0)
        if work_s:
            time.sleep(work_s)  # a longer critical section: widens the window a lost update needs
        client.set(counter_key, value + 1)
        released = time.monotonic()
        lock.release()
        sections.append((acquired, released, token, pid, acquired - asked))
    results.put(sections)


def holder_worker(url: str, lock_name: str, ttl_ms: int, auto_renew: bool, conn: Connection) -> None:
    """Acquire the lock, report the token, then obey commands: 'write <value>', 'release', 'exit'.

    The parent kills or pauses this process while it holds the lock.
    """
    client = redis.Redis.from_url(url)
    lock = RedisLock(client, lock_name, ttl_ms=ttl_ms, auto_renew=auto_renew)
    token = lock.acquire()
    resource = FencedResource(client, f"resource:{lock_name}")
    conn.send(("acquired", token))
    while True:
        command = conn.recv()
        if command[0] == "write":
            result = resource.write(token, command[1])
            conn.send(("write", result.accepted, result.highest))
        elif command[0] == "release":
            conn.send(("release", lock.release()))
        else:
            conn.send(("bye",))
            return


def booking_worker(url: str, db: str, event_id: str, seat_id: str, user_id: str, payment_seconds: float,
                   fencing: bool, ttl_ms: int, conn: Connection) -> None:
    """Book one seat; report ('locked', token) before paying and ('result', outcome, token) after."""
    # The watchdog's "lease lost" warning is part of the story: show whose it is.
    logging.basicConfig(format=f"  ({user_id}'s process, stderr) %(message)s")
    client = redis.Redis.from_url(url)
    system = TicketBookingSystem(client, SeatStore(db), lock_ttl_ms=ttl_ms, fencing=fencing)
    result = system.book_seat(event_id, seat_id, user_id, payment_seconds,
                              on_locked=lambda token: conn.send(("locked", token, time.monotonic())))
    conn.send(("result", result.outcome.value, result.token, time.monotonic()))


def race_worker(url: str, db: str, event_id: str, seat_id: str, user_id: str, start: object,
                results: object) -> None:
    """One user racing for one seat; waits for the shared start signal first."""
    client = redis.Redis.from_url(url)
    system = TicketBookingSystem(client, SeatStore(db), lock_ttl_ms=5_000)
    start.wait()
    result = system.book_seat(event_id, seat_id, user_id)
    results.put((user_id, result.outcome.value, result.token))


def crowd_worker(url: str, db: str, event_id: str, seats: list[str], users: list[str], seed: int,
                 cancel_probability: float, start: object, results: object,
                 payment_max_s: float = 0.0) -> None:
    """Run many users in one process: each tries seats in a random order until one is booked.

    A user may cancel their booking (with `cancel_probability`) and then try again. Reports, per
    user, every booking and cancellation it was told succeeded — the audit checks them against Redis.
    """
    client = redis.Redis.from_url(url)
    system = TicketBookingSystem(client, SeatStore(db), lock_ttl_ms=5_000, lock_wait_s=0.0)
    rng = random.Random(seed)
    start.wait()
    log: list[tuple[str, str, str]] = []  # (user, "booked"|"cancelled"|"busy"|..., seat)
    for user in users:
        for _round in range(2):  # at most one cancel-and-retry per user
            booked = _book_any(system, event_id, seats, user, rng, log, payment_max_s)
            if booked is None or rng.random() >= cancel_probability:
                break
            outcome = system.cancel(event_id, booked, user)
            log.append((user, f"cancel {outcome.value}", booked))
            if outcome is not CancelOutcome.CANCELLED:
                break  # still holds `booked` (e.g. the lock was busy): another would make it two seats
    results.put(log)


def _book_any(system: TicketBookingSystem, event_id: str, seats: list[str], user: str, rng: random.Random,
              log: list[tuple[str, str, str]], payment_max_s: float) -> str | None:
    for seat in rng.sample(seats, len(seats)):
        result = system.book_seat(event_id, seat, user, rng.uniform(0, payment_max_s))
        log.append((user, result.outcome.value, seat))
        if result.outcome is BookingOutcome.BOOKED:
            return seat
    return None


def seat_rush_worker(url: str, db: str, event_id: str, seats: list[str], user_id: str, lock_free: bool,
                     seed: int, start: object, results: object) -> None:
    """One user tries every seat once, in its own random order, with or without the seat lock.

    Reports (user, [(seat, outcome, seconds the attempt took)]). The bench compares the two ways of
    booking under contention; the tests check that each seat has exactly one winner.
    """
    client = redis.Redis.from_url(url)
    system = TicketBookingSystem(client, SeatStore(db), lock_ttl_ms=5_000, auto_renew=False)
    order = random.Random(seed).sample(seats, len(seats))
    client.ping()  # connect before the start line
    start.wait()
    attempts = []
    for seat in order:
        began = time.perf_counter()
        if lock_free:
            result = system.book_seat_lock_free(event_id, seat, user_id)
        else:
            result = system.book_seat(event_id, seat, user_id)
        attempts.append((seat, result.outcome.value, time.perf_counter() - began))
    results.put((user_id, attempts))
