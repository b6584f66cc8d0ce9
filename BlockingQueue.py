"""A bounded blocking queue, built the textbook way, with a CLI, a producer/consumer demo and a bench.

Why it exists: a bounded queue between producers and consumers is the simplest form of
*backpressure*. When consumers fall behind, the queue fills up and `put` blocks, so producers slow
down to the consumers' pace instead of piling up unbounded work in memory. Every later concept
(servers with worker pools, brokers, chat fan-out) leans on this idea.

How it is built (compare CPython's Lib/queue.py, which does the same thing):
- ONE lock protects all the state: the deque, the `closed` flag and the counts of waiting threads.
- TWO condition variables share that lock: `not_full` (putters wait on it) and `not_empty`
  (getters wait on it). A put wakes one getter; a get wakes one putter; close() wakes everybody.
- put/get call notify() only when somebody is waiting (a count kept under the same lock). The
  effect is the same as always notifying; it skips two Python-level calls on the common path where
  the queue is neither full nor empty, which is how this queue beats queue.Queue per operation.
- Every wait sits inside a `while` loop that re-checks its predicate: a waiter may wake up
  spuriously, or be woken and then find that another thread took the item (or the free slot) first.
  An `if` instead of a `while` is the classic bug that crashes a consumer on an empty deque.
- A call with a timeout computes ONE deadline from `time.monotonic()` when it starts, and each wait
  gets only the time that is left; re-waiting the full timeout after every wake-up would let a
  "1 second" call block for much longer. `time.time()` could jump with the wall clock.
- Timeouts and the `_nowait` variants raise the standard library's `queue.Full` / `queue.Empty`, so
  code written for `queue.Queue` can catch the same exceptions.

Run it:
    python BlockingQueue.py                 interactive: enqueue X, dequeue, size, peek, help, exit
    python BlockingQueue.py demo            fast producers, slow consumers; plot in out/BlockingQueue/
    python BlockingQueue.py bench           items/s against queue.Queue on the same workload
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TextIO, TypeVar

from common import cli

T = TypeVar("T")

__all__ = ["BlockingQueue", "Closed"]

DEFAULT_PLOT = cli.output_path("BlockingQueue", "blocking_queue_depth.png")


class Closed(Exception):
    """The queue was closed: no more puts; gets raise this once the remaining items are drained."""


def _deadline(timeout: float | None) -> float | None:
    """Turn a relative timeout into an absolute monotonic deadline (None means wait forever)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool):  # put(x, block=False) habits from queue.Queue: False would mean 0 s
        raise ValueError("timeout must be a number of seconds, not a bool; use put_nowait/get_nowait "
                         "for non-blocking calls")
    # `not timeout >= 0` also rejects NaN, which would otherwise make every comparison False.
    if not timeout >= 0:
        raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")
    return time.monotonic() + timeout


class BlockingQueue(Generic[T]):
    """A bounded, thread-safe FIFO queue whose `put` blocks while full and `get` blocks while empty.

    >>> q = BlockingQueue(2)
    >>> q.put("a"); q.put("b"); q.get()
    'a'
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._closed = False
        self._lock = threading.Lock()
        # Both conditions share the one lock: the predicates they guard ("not full", "not empty")
        # are about the same deque, so they must be checked and changed under the same lock.
        self._not_full = threading.Condition(self._lock)
        self._not_empty = threading.Condition(self._lock)
        # How many threads wait on each condition. notify() costs two Python-level calls even when
        # nobody waits (the common case when the queue is neither full nor empty); counting the
        # waiters, under the same lock, lets put/get skip it without ever missing a sleeper.
        self._putters_waiting = 0
        self._getters_waiting = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T, *, timeout: float | None = None) -> None:
        """Append `item`, blocking while the queue is full.

        Raises queue.Full if `timeout` seconds pass first, Closed if the queue is (or gets) closed.
        `timeout` is keyword-only: queue.Queue's second positional parameter is `block`, so
        `q.put(x, True)` must fail loudly here rather than silently mean "wait at most 1 second".
        """
        deadline = _deadline(timeout)
        with self._not_full:
            # Check the predicate *before* the deadline: a waiter whose wait timed out at the same
            # moment it was notified must still use the free slot, or that wake-up would be lost.
            while True:
                if self._closed:
                    raise Closed("put() on a closed queue: the consumers have been told to stop")
                if len(self._items) < self._capacity:
                    break
                if deadline is None:
                    remaining = None
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise queue.Full
                    # A huge timeout (1e10, inf) would overflow the lock's C timeout: wait in slices.
                    remaining = min(remaining, threading.TIMEOUT_MAX)
                self._putters_waiting += 1
                try:
                    self._not_full.wait(remaining)
                finally:
                    self._putters_waiting -= 1
            self._items.append(item)
            if self._getters_waiting:
                self._not_empty.notify()  # exactly one new item, so exactly one getter can use it

    def get(self, *, timeout: float | None = None) -> T:
        """Remove and return the oldest item, blocking while the queue is empty.

        Raises queue.Empty if `timeout` seconds pass first. After close(), returns the remaining
        items and then raises Closed (a closed, empty queue will never have items again).
        """
        deadline = _deadline(timeout)
        with self._not_empty:
            while not self._items:
                if self._closed:
                    raise Closed("get() on a closed, drained queue: no more items will arrive")
                if deadline is None:
                    remaining = None
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise queue.Empty
                    # A huge timeout (1e10, inf) would overflow the lock's C timeout: wait in slices.
                    remaining = min(remaining, threading.TIMEOUT_MAX)
                self._getters_waiting += 1
                try:
                    self._not_empty.wait(remaining)
                finally:
                    self._getters_waiting -= 1
            item = self._items.popleft()
            if self._putters_waiting:
                self._not_full.notify()  # exactly one slot freed, so exactly one putter can use it
            return item

    def put_nowait(self, item: T) -> None:
        """put() that never blocks: raises queue.Full at once if there is no room."""
        self.put(item, timeout=0)

    def get_nowait(self) -> T:
        """get() that never blocks: raises queue.Empty at once if there is no item."""
        return self.get(timeout=0)

    def peek(self) -> T:
        """Return the oldest item without removing it; never blocks.

        Raises queue.Empty if there is none (Closed if the queue is closed and drained). The answer
        may be stale as soon as the lock is released: use it for display, not to decide a get().
        """
        with self._lock:
            if self._items:
                return self._items[0]
            if self._closed:
                raise Closed("peek() on a closed, drained queue")
            raise queue.Empty

    def close(self) -> None:
        """Refuse further puts and wake every waiter; getters drain what is left, then get Closed.

        Idempotent. Blocked putters raise Closed; blocked getters take remaining items or raise Closed.
        """
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()

    def qsize(self) -> int:
        """The number of items right now (a snapshot: other threads may change it at once)."""
        with self._lock:
            return len(self._items)

    def __len__(self) -> int:
        return self.qsize()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<BlockingQueue {self.qsize()}/{self._capacity} {state}>"


# --------------------------------------------------------------------------------------------------
# Interactive CLI: `python BlockingQueue.py` (also works with piped stdin)
# --------------------------------------------------------------------------------------------------

HELP_TEXT = """commands:
  enqueue X   add X (the rest of the line); if the queue is full, waits in the background
  dequeue     remove and print the oldest item; if empty, waits in the background
  size        how many items are queued, and how many commands are waiting
  peek        show the oldest item without removing it
  help        this text
  exit        close the queue (cancelling waiting commands) and quit (end of input does the same)"""


class Repl:
    """The interactive shell. Blocking operations run on background threads so the prompt stays free.

    A `dequeue` on an empty queue starts a waiter thread that blocks in `get()` and prints the item
    when some later `enqueue` supplies it; the same for `enqueue` on a full queue. This is the
    queue's blocking behaviour made visible without freezing the shell.
    """

    def __init__(self, capacity: int, out: TextIO = sys.stdout) -> None:
        self.queue: BlockingQueue[str] = BlockingQueue(capacity)
        self.out = out
        self.interactive = False  # set by run(): whether to re-draw the prompt after background news
        self._print_lock = threading.Lock()  # waiter threads and the shell print to the same stream
        self._waiters: list[threading.Thread] = []
        # The newest waiter of each kind ("put", "get"). A new command of that kind queues up behind
        # it: the queue itself does not stop a newcomer from overtaking a woken waiter.
        self._last_waiter: dict[str, threading.Thread] = {}
        self._commands: dict[str, Callable[[str], bool]] = {
            "enqueue": self.cmd_enqueue, "dequeue": self.cmd_dequeue, "size": self.cmd_size,
            "peek": self.cmd_peek, "help": self.cmd_help, "exit": self.cmd_exit,
        }

    def say(self, text: str) -> None:
        with self._print_lock:
            print(text, file=self.out, flush=True)

    def announce(self, text: str) -> None:
        """News from a waiter thread: printed on its own line, then the prompt is drawn again."""
        with self._print_lock:
            if self.interactive:
                print(f"\r{text}\n> ", end="", file=self.out, flush=True)
            else:
                print(text, file=self.out, flush=True)

    def handle(self, line: str) -> bool:
        """Run one command line; return False when the shell should stop."""
        name, _, argument = line.strip().partition(" ")
        argument = argument.strip()
        if not name:
            return True
        command = self._commands.get(name.lower())
        if command is None:
            self.say(f"error: unknown command {name!r}; commands: {', '.join(self._commands)}")
            return True
        return command(argument)

    def cmd_enqueue(self, argument: str) -> bool:
        if not argument:
            self.say("error: enqueue needs a value, e.g. 'enqueue hello'")
            return True
        if self._still_waiting("put"):
            # The slot a dequeue just freed belongs to the woken earlier enqueue, which may not have
            # run yet: a put_nowait() here could take it and overtake what the user typed first.
            self.say(f"an earlier enqueue is still waiting: waiting behind it to enqueue {argument!r}")
            self._start_waiter("put", self._wait_to_put, argument)
            return True
        try:
            self.queue.put_nowait(argument)
            self.say(f"enqueued {argument!r} (size {self.queue.qsize()}/{self.queue.capacity})")
        except queue.Full:
            self.say(f"queue is full ({self.queue.capacity}/{self.queue.capacity}): "
                     f"waiting in the background to enqueue {argument!r}")
            self._start_waiter("put", self._wait_to_put, argument)
        return True

    def cmd_dequeue(self, argument: str) -> bool:
        if argument:
            self.say("error: dequeue takes no argument")
            return True
        if self._still_waiting("get"):  # the same for dequeues: the first one typed gets the next item
            self.say("an earlier dequeue is still waiting: this one waits behind it")
            self._start_waiter("get", self._wait_to_get)
            return True
        try:
            item = self.queue.get_nowait()
            self.say(f"dequeued {item!r} (size {self.queue.qsize()}/{self.queue.capacity})")
        except queue.Empty:
            self.say("queue is empty: waiting in the background for the next item (the prompt stays free)")
            self._start_waiter("get", self._wait_to_get)
        return True

    def cmd_size(self, argument: str) -> bool:
        waiting = sum(t.is_alive() for t in self._waiters)
        self.say(f"size {self.queue.qsize()}/{self.queue.capacity}, {waiting} command(s) waiting")
        return True

    def cmd_peek(self, argument: str) -> bool:
        try:
            self.say(f"next: {self.queue.peek()!r}")
        except queue.Empty:
            self.say("queue is empty: nothing to peek at")
        return True

    def cmd_help(self, argument: str) -> bool:
        self.say(HELP_TEXT)
        return True

    def cmd_exit(self, argument: str) -> bool:
        return False

    def _still_waiting(self, kind: str) -> bool:
        last = self._last_waiter.get(kind)
        return last is not None and last.is_alive()

    def _start_waiter(self, kind: str, target: Callable[..., None], *args: str) -> None:
        previous = self._last_waiter.get(kind)
        thread = threading.Thread(target=self._after, args=(previous, target, *args), daemon=True)
        self._last_waiter[kind] = thread
        self._waiters.append(thread)
        thread.start()

    @staticmethod
    def _after(previous: threading.Thread | None, target: Callable[..., None], *args: str) -> None:
        """Run target(*args) once the previous waiter of the same kind is done (close() ends it)."""
        if previous is not None:
            previous.join()
        target(*args)

    def _wait_to_get(self) -> None:
        started = time.monotonic()
        try:
            item = self.queue.get()
        except Closed:
            self.announce("a waiting dequeue was cancelled: the queue closed")
            return
        self.announce(f"dequeued {item!r} after waiting {time.monotonic() - started:.1f}s")

    def _wait_to_put(self, item: str) -> None:
        started = time.monotonic()
        try:
            self.queue.put(item)
        except Closed:
            self.announce(f"a waiting enqueue of {item!r} was cancelled: the queue closed")
            return
        self.announce(f"enqueued {item!r} after waiting {time.monotonic() - started:.1f}s")

    def shutdown(self) -> None:
        """Close the queue so every waiter thread finishes (and says so), then wait for them."""
        self.interactive = False  # no prompt after the waiters' farewells
        self.queue.close()
        for thread in self._waiters:
            thread.join(timeout=5)

    def run(self, stdin: TextIO = sys.stdin) -> int:
        self.interactive = interactive = stdin.isatty()
        self.say(f"BlockingQueue shell (capacity {self.queue.capacity}). Type 'help' for commands.")
        try:
            while True:
                if interactive:
                    with self._print_lock:
                        print("> ", end="", file=self.out, flush=True)
                line = stdin.readline()
                if not line:  # end of input (Ctrl-D, or the end of a pipe) means exit
                    break
                if not self.handle(line):
                    break
        except KeyboardInterrupt:
            self.say("")
        finally:
            self.shutdown()
        self.say("bye")
        return 0


# --------------------------------------------------------------------------------------------------
# Demo: fast producers, slow consumers, a small queue -> backpressure
# --------------------------------------------------------------------------------------------------

@dataclass
class Timeline:
    """Events recorded by producer and consumer threads, with the queue depth and who is blocked."""

    capacity: int
    start: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str, int, str]] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, who: str, what: str, depth: int, *, blocked: bool | None = None) -> None:
        with self.lock:
            if blocked is True:
                self.blocked.add(who)
            elif blocked is False:
                self.blocked.discard(who)
            waiting = ",".join(sorted(self.blocked)) or "-"
            self.events.append((time.monotonic() - self.start, f"{who} {what}", depth, waiting))

    def format_event(self, event: tuple[float, str, int, str]) -> str:
        at, text, depth, waiting = event
        bar = "#" * depth + "." * (self.capacity - depth)
        return f"  {at * 1000:7.1f}  {text:<24} [{bar}] {depth}/{self.capacity}  {waiting}"


BLOCKED = "blocked: queue full"  # the timeline's text for a producer that has to wait


def _producer(name: str, q: BlockingQueue, count: int, pause: float, rng: random.Random,
              tl: Timeline) -> None:
    try:
        for seq in range(count):
            item = (name, seq)
            try:
                q.put_nowait(item)
            except queue.Full:
                # Backpressure: the producer has to wait for a consumer to free a slot.
                tl.record(name, BLOCKED, q.qsize(), blocked=True)
                q.put(item)
                tl.record(name, f"put {name}-{seq} (unblocked)", q.qsize(), blocked=False)
            else:
                tl.record(name, f"put {name}-{seq}", q.qsize())
            time.sleep(pause * rng.uniform(0.5, 1.5))
    except Closed:
        return  # the demo was interrupted (Ctrl-C closed the queue): stop producing


def _consumer(name: str, q: BlockingQueue, work: float, rng: random.Random, tl: Timeline,
              received: list) -> None:
    while True:
        try:
            item = q.get()
        except Closed:
            tl.record(name, "sees Closed, stops", q.qsize())
            return
        received.append(item)  # this consumer's own log, in the order its get() calls returned
        tl.record(name, f"got {item[0]}-{item[1]}", q.qsize())
        time.sleep(work * rng.uniform(0.5, 1.5))


def run_demo(producers: int = 3, consumers: int = 2, capacity: int = 5, items: int = 60, seed: int = 1,
             produce_every: float = 0.004, consume_work: float = 0.02,
             show: int = 45, plot: Path | None = None) -> dict:
    """Run the producer/consumer demo, print the timeline, and return the figures it checked."""
    q: BlockingQueue[tuple[str, int]] = BlockingQueue(capacity)
    tl = Timeline(capacity)
    # One log per consumer: only within one consumer's stream is the dequeue order observable
    # (two consumers' appends to a shared list could land in either order after their get()s).
    received_by: list[list[tuple[str, int]]] = [[] for _ in range(consumers)]
    per_producer = [items // producers + (1 if i < items % producers else 0) for i in range(producers)]
    print(f"{producers} producers (one item every ~{produce_every * 1000:.0f} ms each), "
          f"{consumers} consumers (~{consume_work * 1000:.0f} ms per item), capacity {capacity}, "
          f"{items} items, seed {seed}")
    print("producers are faster than consumers, so the queue fills and put() blocks: that is backpressure\n")
    threads = [threading.Thread(target=_producer, name=f"P{i + 1}",
                                args=(f"P{i + 1}", q, n, produce_every, random.Random(seed * 1000 + i), tl))
               for i, n in enumerate(per_producer)]
    threads += [threading.Thread(target=_consumer, name=f"C{i + 1}",
                                 args=(f"C{i + 1}", q, consume_work, random.Random(seed * 2000 + i), tl,
                                       received_by[i]))
                for i in range(consumers)]
    for t in threads:
        t.daemon = True  # never keep the process alive after the main thread is gone
        t.start()
    try:
        for t in threads[:producers]:
            t.join()
    finally:
        # Normally: all items are in, so consumers drain the rest, then see Closed and stop.
        # On Ctrl-C: the same close() also makes the blocked producers give up.
        q.close()
    for t in threads[producers:]:
        t.join()

    events = tl.events
    print("  t (ms)  event                    depth                  blocked")
    head, tail = events[:show], events[max(show, len(events) - 8):]
    for event in head:
        print(tl.format_event(event))
    if len(events) > len(head) + len(tail):
        print(f"  ... {len(events) - len(head) - len(tail)} more events ...")
    for event in tail:
        print(tl.format_event(event))

    max_depth = max(e[2] for e in events)
    # endswith, not `in`: "put P1-3 (unblocked)" contains "blocked" too, and would count every wait twice.
    blocked_count = sum(1 for e in events if e[1].endswith(BLOCKED))
    full_share = sum(1 for e in events if e[2] == capacity) / len(events)
    expected = {(f"P{i + 1}", seq) for i, n in enumerate(per_producer) for seq in range(n)}
    received = [item for log in received_by for item in log]
    exactly_once = len(received) == len(expected) and set(received) == expected
    in_order = all(_in_order([seq for p, seq in log if p == f"P{i + 1}"])
                   for log in received_by for i in range(producers))
    print(f"\nmax depth {max_depth}/{capacity}; producers blocked {blocked_count} times; "
          f"queue full at {full_share:.0%} of events; took {events[-1][0]:.2f}s")
    if plot:
        _plot_depth(events, capacity, plot)
        print(f"plot saved to {os.path.relpath(plot)}")
    ok = exactly_once and in_order and max_depth <= capacity
    print(f"result: {len(received)}/{items} items delivered exactly once and in order per producer, "
          f"max depth {max_depth}/{capacity}, producers blocked {blocked_count} times: "
          f"{'ok' if ok else 'FAILED'}")
    return {"ok": ok, "received": len(received), "max_depth": max_depth, "blocked": blocked_count}


def _in_order(seqs: list[int]) -> bool:
    return all(a < b for a, b in zip(seqs, seqs[1:], strict=False))


def _plot_depth(events: list[tuple[float, str, int, str]], capacity: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [e[0] * 1000 for e in events]
    depths = [e[2] for e in events]
    blocked = [len(e[3].split(",")) if e[3] != "-" else 0 for e in events]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.step(times, depths, where="post", label="queue depth")
    ax.step(times, blocked, where="post", label="producers blocked", alpha=0.7)
    ax.axhline(capacity, color="red", linestyle="--", linewidth=1, label=f"capacity {capacity}")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("items / producers")
    ax.set_ylim(-0.3, capacity + 2)
    ax.set_title("Bounded queue under backpressure: fast producers, slow consumers")
    ax.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(cli.ensure_parent(path), dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Bench: items/s against queue.Queue, same workload, interleaved repetitions
# --------------------------------------------------------------------------------------------------

def _move_items(make_queue: Callable[[], object], producers: int, consumers: int, items: int) -> float:
    """Move `items` ints through a fresh queue with the given threads; return wall seconds.

    producers == consumers == 0 means one thread doing put then get: the cost of the operations
    themselves, free of the thread-scheduling noise that dominates the contended shapes.
    """
    q = make_queue()
    if producers == consumers == 0:
        started = time.perf_counter()
        for i in range(items):
            q.put(i)
            q.get()
        return time.perf_counter() - started
    put, get = q.put, q.get  # both queues accept put(item) / get() with blocking defaults
    per_producer = [items // producers + (1 if i < items % producers else 0) for i in range(producers)]
    per_consumer = [items // consumers + (1 if i < items % consumers else 0) for i in range(consumers)]

    def produce(n: int) -> None:
        for i in range(n):
            put(i)

    def consume(n: int) -> None:
        for _ in range(n):
            get()

    threads = [threading.Thread(target=produce, args=(n,)) for n in per_producer]
    threads += [threading.Thread(target=consume, args=(n,)) for n in per_consumer]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def run_bench(items: int = 200_000, capacity: int = 64, repeat: int = 7,
              shapes: tuple[tuple[int, int], ...] = ((1, 1), (4, 4), (0, 0))) -> list[dict]:
    import platform

    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{os.cpu_count()} CPUs; {items:,} ints, capacity {capacity}, median of {repeat} "
          f"interleaved repetitions")
    contenders = {"BlockingQueue": lambda: BlockingQueue(capacity),
                  "queue.Queue": lambda: queue.Queue(capacity)}
    rows = []
    for producers, consumers in shapes:
        shape = f"{producers}P/{consumers}C" if producers else "1 thread"
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for rep in cli.progress(range(repeat), label=f"{shape} repetitions"):
            # Alternate which one goes first, so neither always gets the warmer (or cooler) machine.
            order = list(contenders) if rep % 2 == 0 else list(reversed(contenders))
            for name in order:
                times[name].append(_move_items(contenders[name], producers, consumers, items))
        ours = items / statistics.median(times["BlockingQueue"])
        peer = items / statistics.median(times["queue.Queue"])
        rows.append({"shape": shape, "ours": ours, "peer": peer, "ratio": ours / peer})
    print(f"\n  {'threads':<8} {'BlockingQueue items/s':>22} {'queue.Queue items/s':>20} "
          f"{'ratio ours/peer':>16}")
    for row in rows:
        print(f"  {row['shape']:<8} {row['ours']:>22,.0f} {row['peer']:>20,.0f} {row['ratio']:>16.2f}")
    ratios = ", ".join(f"{r['shape']} {r['ratio']:.2f}" for r in rows)
    print(f"result: throughput ratio BlockingQueue/queue.Queue: {ratios}")
    return rows


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        prog="python BlockingQueue.py",
        description="A bounded blocking queue. Without a subcommand: an interactive shell "
                    "(enqueue X, dequeue, size, peek, help, exit) that also reads piped stdin.")
    parser.add_argument("--capacity", dest="shell_capacity", metavar="N", type=cli.positive_int, default=5,
                        help="capacity of the interactive shell's queue (default 5)")
    sub = parser.add_subparsers(dest="command", metavar="{demo,bench}")
    demo = sub.add_parser("demo", help="producers faster than consumers: backpressure timeline",
                          description="Producers faster than consumers through a small queue: prints a "
                                      "timeline of depth and blocked producers, and plots depth over time.")
    demo.add_argument("--producers", type=cli.positive_int, default=3, help="producer threads (default 3)")
    demo.add_argument("--consumers", type=cli.positive_int, default=2, help="consumer threads (default 2)")
    demo.add_argument("--capacity", type=cli.positive_int, default=5, help="queue capacity (default 5)")
    demo.add_argument("--items", type=cli.positive_int, default=60, help="items in total (default 60)")
    demo.add_argument("--seed", type=cli.int_range(), default=1,
                      help="seed for the random pauses (default 1)")
    demo.add_argument("--show", type=cli.positive_int, default=45,
                      help="timeline events to print before eliding the middle (default 45)")
    demo.add_argument("--plot", metavar="PATH", type=cli.writable_path, default=DEFAULT_PLOT,
                      help="where to save the PNG of queue depth over time "
                           "(default out/BlockingQueue/blocking_queue_depth.png)")
    demo.add_argument("--no-plot", action="store_true", help="print the timeline only")
    bench = sub.add_parser("bench", help="items/s against queue.Queue",
                           description="Throughput against queue.Queue on the same workload, in one run, "
                                       "interleaved repetitions, median.")
    bench.add_argument("--items", type=cli.positive_int, default=200_000,
                       help="ints moved per run (default 200000)")
    bench.add_argument("--capacity", type=cli.positive_int, default=64, help="queue capacity (default 64)")
    bench.add_argument("--repeat", type=cli.positive_int, default=7,
                       help="repetitions, median taken (default 7)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "demo":
        result = run_demo(args.producers, args.consumers, args.capacity, args.items, args.seed,
                          show=args.show, plot=None if args.no_plot else args.plot)
        return 0 if result["ok"] else 1
    if args.command == "bench":
        run_bench(args.items, args.capacity, args.repeat)
        return 0
    return Repl(args.shell_capacity).run()


if __name__ == "__main__":
    sys.exit(cli.run(main))
