"""BlockingQueue.py: FIFO, bounds, timeouts, close(), a many-thread stress test, a model test, the CLI.

Each test asserts something a broken queue would violate: `if` instead of `while` around a wait
(crashes on a spurious wake-up), a deadline re-armed after each wake-up (blocks too long), a put that
does not re-check the bound (qsize() > capacity), a close() that does not wake waiters (hangs).
"""

from __future__ import annotations

import io
import math
import queue
import random
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from BlockingQueue import BlockingQueue, Closed, Repl

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "BlockingQueue.py"
JOIN = 30.0  # generous: the machine may be loaded; a hang still fails the test instead of the suite


def start(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def wait_until(predicate, timeout: float = JOIN) -> None:
    """Poll a condition that has no event to wait on (e.g. 'a thread is now blocked inside put')."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


def waiters(condition: threading.Condition) -> int:
    """How many threads are blocked in condition.wait() (CPython keeps them in `_waiters`)."""
    return len(condition._waiters)  # noqa: SLF001 - the only way to know a thread is really blocked


# ---------------------------------------------------------------------------- basic behaviour

def test_fifo_order_and_len():
    q = BlockingQueue(10)
    for i in range(10):
        q.put(i)
    assert len(q) == q.qsize() == 10
    assert [q.get() for _ in range(10)] == list(range(10))
    assert len(q) == 0


def test_nowait_variants_raise_the_standard_exceptions():
    q = BlockingQueue(2)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait("a")
    q.put_nowait("b")
    with pytest.raises(queue.Full):
        q.put_nowait("c")
    assert q.get_nowait() == "a"
    assert q.qsize() == 1


def test_peek_returns_head_without_removing():
    q = BlockingQueue(3)
    with pytest.raises(queue.Empty):
        q.peek()
    q.put("x")
    q.put("y")
    assert q.peek() == "x"
    assert q.peek() == "x"
    assert q.qsize() == 2
    assert q.get() == "x"
    assert q.peek() == "y"


@pytest.mark.parametrize("capacity", [0, -1, 1.5, "3", True, None])
def test_bad_capacity_is_rejected(capacity):
    with pytest.raises(ValueError, match="capacity"):
        BlockingQueue(capacity)


@pytest.mark.parametrize("timeout", [-0.001, -5, math.nan])
def test_negative_or_nan_timeout_is_rejected(timeout):
    q = BlockingQueue(1)
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        q.put(1, timeout=timeout)
    assert q.qsize() == 0  # a rejected put must not have added anything


def test_queue_queue_style_block_flags_fail_loudly():
    """queue.Queue's put(item, block, timeout): here timeout is keyword-only, and bools are refused,
    so code ported from queue.Queue cannot silently turn `True` into a 1-second timeout."""
    q = BlockingQueue(1)
    with pytest.raises(TypeError):
        q.put("x", True)
    with pytest.raises(TypeError):
        q.get(False)
    with pytest.raises(ValueError, match="not a bool"):
        q.put("x", timeout=False)
    assert q.qsize() == 0


# ---------------------------------------------------------------------------- timeouts

@pytest.mark.parametrize("operation", ["get", "put"])
def test_timeout_raises_after_the_timeout_and_not_much_later(operation):
    q = BlockingQueue(1)
    if operation == "put":
        q.put("filler")
    timeout = 0.2
    started = time.monotonic()
    with pytest.raises(queue.Empty if operation == "get" else queue.Full):
        q.get(timeout=timeout) if operation == "get" else q.put("x", timeout=timeout)
    elapsed = time.monotonic() - started
    assert elapsed >= timeout
    assert elapsed < timeout + 2.0  # "not much later", generous for a loaded CI machine


def test_spurious_wakeups_neither_crash_nor_extend_the_deadline():
    """Wake the getter again and again with nothing in the queue: it must keep waiting (`while`, not
    `if`), and still give up at its one original deadline (not timeout-after-the-last-wake-up)."""
    q = BlockingQueue(1)
    outcome: list[object] = []
    timeout = 0.5

    def getter():
        started = time.monotonic()
        try:
            outcome.append(q.get(timeout=timeout))
        except BaseException as exc:  # noqa: BLE001 - record whatever happened for the assertion
            outcome.append(exc)
        outcome.append(time.monotonic() - started)

    thread = start(getter)
    wait_until(lambda: waiters(q._not_empty) == 1)
    give_up = time.monotonic() + timeout + 10.0  # a re-armed deadline would never expire on its own
    while thread.is_alive() and time.monotonic() < give_up:
        with q._not_empty:
            q._not_empty.notify_all()  # a wake-up with no item behind it
        time.sleep(0.02)
    thread.join(JOIN)
    assert outcome, "get(timeout=0.5) was still blocked 10 s after its deadline"
    assert isinstance(outcome[0], queue.Empty), outcome
    assert timeout <= outcome[1] < timeout + 2.0


def test_timed_get_receives_an_item_that_arrives_in_time():
    q = BlockingQueue(1)
    got: list[object] = []
    thread = start(lambda: got.append(q.get(timeout=JOIN)))
    wait_until(lambda: waiters(q._not_empty) == 1)
    q.put("late")
    thread.join(JOIN)
    assert got == ["late"]


@pytest.mark.parametrize("operation", ["get", "put"])
def test_waiter_notified_after_its_timeout_expired_still_uses_the_item(operation):
    """The race between a timeout and a notify(): the waiter's timed wait has already given up, but
    it is still in the condition's waiter list, so notify() picks it (and nobody else). It must then
    take the item (or slot) it was woken for: raising Empty/Full instead - e.g. by trusting wait()'s
    False return value - loses that wake-up, and another waiter sleeps while an item sits in the queue.

    The interleaving is forced by holding the queue's lock past the waiter's deadline: its wait times
    out but cannot return until the lock is free, and under that same lock we do what put() (get())
    does - change the deque, then notify one waiter."""
    q = BlockingQueue(1)
    if operation == "put":
        q.put("filler")
    condition = q._not_empty if operation == "get" else q._not_full
    outcome: list[object] = []

    def waiter():
        try:
            outcome.append(q.get(timeout=0.05) if operation == "get" else q.put("mine", timeout=0.05))
        except BaseException as exc:  # noqa: BLE001 - record whatever happened for the assertion
            outcome.append(exc)

    thread = start(waiter)
    wait_until(lambda: waiters(condition) == 1)
    with condition:  # the queue's one lock
        time.sleep(0.3)  # not synchronisation: the waiter's 0.05 s deadline must really pass
        if operation == "get":
            q._items.append("item")
        else:
            q._items.popleft()
        condition.notify()
    thread.join(JOIN)
    if operation == "get":
        assert outcome == ["item"]
    else:
        assert outcome == [None] and q.get_nowait() == "mine"


def test_blocked_put_proceeds_when_a_slot_frees():
    q = BlockingQueue(1)
    q.put("first")
    thread = start(q.put, "second")
    wait_until(lambda: waiters(q._not_full) == 1)
    assert q.qsize() == 1  # still blocked: the bound holds
    assert q.get() == "first"
    thread.join(JOIN)
    assert not thread.is_alive()
    assert q.get_nowait() == "second"


# ---------------------------------------------------------------------------- close()

def test_close_wakes_blocked_getters_with_closed():
    q = BlockingQueue(2)
    results: list[object] = []
    lock = threading.Lock()

    def getter():
        try:
            q.get()
        except Closed as exc:
            with lock:
                results.append(exc)

    threads = [start(getter) for _ in range(3)]
    wait_until(lambda: waiters(q._not_empty) == 3)
    q.close()
    for t in threads:
        t.join(JOIN)
    assert len(results) == 3 and all(isinstance(r, Closed) for r in results)


def test_close_wakes_blocked_putters_with_closed_and_adds_nothing():
    q = BlockingQueue(1)
    q.put("only")
    results: list[object] = []

    def putter(i):
        try:
            q.put(i)
        except Closed as exc:
            results.append(exc)

    threads = [start(putter, i) for i in range(3)]
    wait_until(lambda: waiters(q._not_full) == 3)
    q.close()
    for t in threads:
        t.join(JOIN)
    assert len(results) == 3
    assert q.qsize() == 1


def test_after_close_put_raises_and_get_drains_then_raises():
    q = BlockingQueue(3)
    q.put(1)
    q.put(2)
    q.close()
    q.close()  # idempotent
    assert q.closed
    with pytest.raises(Closed):
        q.put(3)
    with pytest.raises(Closed):
        q.put_nowait(3)
    assert q.peek() == 1
    assert q.get() == 1
    assert q.get_nowait() == 2
    for call in (q.get, q.get_nowait, lambda: q.get(timeout=5), q.peek):
        started = time.monotonic()
        with pytest.raises(Closed):
            call()
        assert time.monotonic() - started < 1.0  # Closed at once, not after a timeout


# ---------------------------------------------------------------------------- stress

@pytest.mark.slow
def test_stress_8_producers_8_consumers_200k_items():
    """Random short timeouts with retries; every item exactly once, per-producer order, bound held."""
    producers, consumers, total, capacity = 8, 8, 200_000, 16
    per_producer = total // producers
    q: BlockingQueue[tuple[int, int]] = BlockingQueue(capacity)
    received: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]
    timeouts = {"put": 0, "get": 0}
    counts_lock = threading.Lock()
    errors: list[BaseException] = []
    stop_observing = threading.Event()
    observed = {"max": 0, "samples": 0}

    def produce(pid: int) -> None:
        rng = random.Random(pid)
        misses = 0
        try:
            for seq in range(per_producer):
                while True:
                    try:
                        q.put((pid, seq), timeout=rng.choice((0, 0.0005, 0.001, 0.002)))
                        break
                    except queue.Full:
                        misses += 1  # retry: the item must still go in, once, in order
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        with counts_lock:
            timeouts["put"] += misses

    def consume(cid: int) -> None:
        rng = random.Random(1000 + cid)
        log = received[cid]
        misses = 0
        try:
            while True:
                try:
                    log.append(q.get(timeout=rng.choice((0, 0.0005, 0.001, 0.002))))
                except queue.Empty:
                    misses += 1
                except Closed:
                    break
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        with counts_lock:
            timeouts["get"] += misses

    def observe() -> None:
        while not stop_observing.is_set():
            size = q.qsize()
            observed["samples"] += 1
            observed["max"] = max(observed["max"], size)
            time.sleep(0)  # yield the GIL so the observer samples often without starving the workers

    observer = start(observe)
    prod_threads = [start(produce, p) for p in range(producers)]
    cons_threads = [start(consume, c) for c in range(consumers)]
    for t in prod_threads:
        t.join(120)
    q.close()  # consumers drain what is left, then see Closed
    for t in cons_threads:
        t.join(120)
    stop_observing.set()
    observer.join(JOIN)

    assert not errors, errors
    assert not any(t.is_alive() for t in prod_threads + cons_threads), "a thread is stuck"
    everything = [item for log in received for item in log]
    assert len(everything) == total
    assert sorted(everything) == [(p, s) for p in range(producers) for s in range(per_producer)]
    # FIFO as seen by each consumer: it never receives a producer's item before an earlier one.
    for log in received:
        last = [-1] * producers
        for pid, seq in log:
            assert seq > last[pid]
            last[pid] = seq
    assert observed["samples"] > 100
    assert observed["max"] <= capacity
    assert timeouts["put"] + timeouts["get"] > 0  # the timeout/retry paths really ran


# ---------------------------------------------------------------------------- model-based

class QueueAgainstDeque(RuleBasedStateMachine):
    """Single-threaded sequences of operations must behave exactly like a bounded deque."""

    def __init__(self) -> None:
        super().__init__()
        self.capacity = 3
        self.q: BlockingQueue[int] = BlockingQueue(self.capacity)
        self.model: deque[int] = deque()
        self.closed = False

    @rule(item=st.integers())
    def put_nowait(self, item):
        if self.closed:
            with pytest.raises(Closed):
                self.q.put_nowait(item)
        elif len(self.model) == self.capacity:
            with pytest.raises(queue.Full):
                self.q.put_nowait(item)
        else:
            self.q.put_nowait(item)
            self.model.append(item)

    @rule(item=st.integers())
    def put_with_zero_timeout(self, item):
        if self.closed:
            with pytest.raises(Closed):
                self.q.put(item, timeout=0)
        elif len(self.model) == self.capacity:
            with pytest.raises(queue.Full):
                self.q.put(item, timeout=0)
        else:
            self.q.put(item, timeout=0)
            self.model.append(item)

    @rule()
    def get_nowait(self):
        if self.model:
            assert self.q.get_nowait() == self.model.popleft()
        else:
            with pytest.raises(Closed if self.closed else queue.Empty):
                self.q.get_nowait()

    @precondition(lambda self: self.model)
    @rule()
    def blocking_get_with_items(self):
        assert self.q.get() == self.model.popleft()

    @rule()
    def peek(self):
        if self.model:
            assert self.q.peek() == self.model[0]
        else:
            with pytest.raises(Closed if self.closed else queue.Empty):
                self.q.peek()

    @rule()
    def close(self):
        self.q.close()
        self.closed = True

    @invariant()
    def sizes_agree(self):
        assert self.q.qsize() == len(self.q) == len(self.model)
        assert self.q.closed == self.closed


QueueAgainstDeque.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                               derandomize=True)
test_queue_against_deque = QueueAgainstDeque.TestCase


# ---------------------------------------------------------------------------- CLI

def run_cli(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_cli_piped_stdin_basic_session():
    result = run_cli(stdin="enqueue a\nenqueue b c\nsize\npeek\ndequeue\ndequeue\nexit\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "enqueued 'a' (size 1/5)" in out
    assert "enqueued 'b c' (size 2/5)" in out
    assert "size 2/5" in out
    assert "next: 'a'" in out
    assert out.index("dequeued 'a'") < out.index("dequeued 'b c'")
    assert "Traceback" not in out + result.stderr


def test_cli_blocking_dequeue_waits_in_background_and_keeps_the_prompt_free():
    result = run_cli(stdin="dequeue\nsize\nenqueue late\nsize\nexit\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "waiting in the background" in out
    assert "1 command(s) waiting" in out  # the shell answered `size` while the dequeue was blocked
    assert "dequeued 'late' after waiting" in out


class Shell:
    """The CLI as a child process on a pipe, read line by line, so a test can wait for a line
    (an event) before typing the next command, instead of racing the shell's background threads."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-u", str(SCRIPT), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        start(self._read)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, text: str, timeout: float = JOIN) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            self.seen.append(line)
            if text in line:
                return line

    def finish(self) -> int:
        self.proc.stdin.close()  # end of input: the shell closes its queue and exits
        code = self.proc.wait(JOIN)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


def test_cli_blocking_enqueue_on_full_queue_and_end_of_input_cancels_waiters():
    shell = Shell("--capacity", "1")
    try:
        shell.send("enqueue a")
        shell.expect("enqueued 'a' (size 1/1)")
        shell.send("enqueue b")
        shell.expect("queue is full (1/1): waiting in the background to enqueue 'b'")
        shell.send("size")
        shell.expect("size 1/1, 1 command(s) waiting")  # the prompt answered while 'b' was blocked
        shell.send("dequeue")
        shell.expect("dequeued 'a'")
        shell.expect("enqueued 'b' after waiting")  # the freed slot unblocked the waiting enqueue
        shell.send("enqueue c")
        # Full again (b took the slot), so c waits. If b's waiter thread has printed but not yet exited,
        # the shell says "an earlier enqueue is still waiting: waiting behind it to enqueue 'c'"
        # instead of "queue is full ...: waiting in the background to enqueue 'c'" (seen under load).
        shell.expect("to enqueue 'c'")
        assert shell.finish() == 0
    finally:
        shell.proc.kill()
        shell.proc.wait()
    out = "\n".join(shell.seen)
    # end of input closes the queue: the still-waiting enqueue of 'c' is cancelled, not leaked
    assert "waiting enqueue of 'c' was cancelled" in out
    assert out.rstrip().endswith("bye")
    assert "Traceback" not in out


def test_cli_waiting_enqueue_is_not_overtaken_by_a_later_one():
    """enqueue a, enqueue b (waits: full), dequeue, enqueue c: the queue must then hold b before c.
    The dequeue wakes b's waiter, but until it runs, the slot is free: a shell that tried c with
    put_nowait() first let c jump ahead of b (the queue itself is fair to nobody; the shell must keep
    the order the user typed). In-process, the overtaking happened on most runs."""
    for _ in range(20):
        shell = Repl(1, out=io.StringIO())
        shell.handle("enqueue a")
        shell.handle("enqueue b")
        wait_until(lambda q=shell.queue: waiters(q._not_full) == 1)
        shell.handle("dequeue")
        shell.handle("enqueue c")
        assert [shell.queue.get(timeout=JOIN), shell.queue.get(timeout=JOIN)] == ["b", "c"]
        shell.shutdown()


def test_cli_errors_are_one_line_and_the_shell_keeps_going():
    result = run_cli(stdin="frobnicate\nenqueue\ndequeue now\nENQUEUE x\ndequeue\nexit\n")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 3
    assert "unknown command 'frobnicate'" in errors[0]
    assert "enqueue needs a value" in errors[1]
    assert "dequeue takes no argument" in errors[2]
    assert "dequeued 'x'" in result.stdout  # commands after the errors still work
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_help_and_subcommand_help():
    for args in ((), ("demo",), ("bench",)):
        result = run_cli(*args, "--help")
        assert result.returncode == 0
        assert "usage:" in result.stdout
    assert "--producers" in run_cli("demo", "--help").stdout
    bad = run_cli("demo", "--items", "0")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --items: expected a whole number >= 1, got '0'"), bad.stderr


def test_demo_runs_and_plots(tmp_path):
    png = tmp_path / "depth.png"
    result = run_cli("demo", "--items", "30", "--plot", str(png), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("result: 30/30 items delivered exactly once") and last.endswith("ok")
    assert "blocked: queue full" in result.stdout  # backpressure really happened
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_counts_each_blocked_put_once(capsys):
    """The summary's "producers blocked N times" must equal the number of "blocked" events in the
    full timeline (it once also counted the "(unblocked)" events, doubling the figure)."""
    import BlockingQueue as module

    result = module.run_demo(items=30, show=10_000)
    out = capsys.readouterr().out
    blocked_lines = out.count(module.BLOCKED)
    assert blocked_lines > 0 and out.count("(unblocked)") == blocked_lines
    assert result["blocked"] == blocked_lines
    assert f"producers blocked {blocked_lines} times" in out.strip().splitlines()[-1]


def test_bench_runs_small():
    result = run_cli("bench", "--items", "2000", "--repeat", "1", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ratio ours/peer" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("result: throughput ratio BlockingQueue/queue.Queue")


def _wait_until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


@pytest.mark.parametrize("timeout", [1e10, float("inf")])
def test_a_huge_timeout_waits_instead_of_overflowing(timeout):
    # threading's lock timeout is capped at threading.TIMEOUT_MAX; a larger one raised OverflowError
    # in the waiting thread, which then never took its item.
    q = BlockingQueue(1)
    got = []
    getter = threading.Thread(target=lambda: got.append(q.get(timeout=timeout)), daemon=True)
    getter.start()
    # White-box poll on the waiter count: it rises only once the getter is really waiting.
    _wait_until(lambda: q._getters_waiting == 1 or not getter.is_alive(), "the getter waits")
    q.put("x")
    getter.join(timeout=10)
    assert got == ["x"]
    q.put("y")
    # The queue is full again: a put with a huge timeout must wait, then get the slot.
    putter = threading.Thread(target=lambda: q.put("z", timeout=timeout), daemon=True)
    putter.start()
    _wait_until(lambda: q._putters_waiting == 1 or not putter.is_alive(), "the putter waits")
    assert q.get() == "y"
    putter.join(timeout=10)
    assert q.get_nowait() == "z"


def test_demo_plot_defaults_to_the_ignored_out_folder_and_no_plot_writes_none(tmp_path):
    from BlockingQueue import DEFAULT_PLOT
    assert DEFAULT_PLOT.relative_to(ROOT / "out" / "BlockingQueue")
    assert subprocess.run(["git", "check-ignore", "-q", str(DEFAULT_PLOT)], cwd=ROOT).returncode == 0
    png = tmp_path / "never.png"
    result = run_cli("demo", "--items", "6", "--plot", str(png), "--no-plot", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not png.exists() and "plot saved" not in result.stdout


def test_capacity_typo_is_one_line_naming_the_flag():
    result = run_cli("--capacity", "abc")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("error: --capacity: expected a whole number >= 1, got 'abc' "
                             "(see python BlockingQueue.py --help)\n")


def test_demo_refuses_an_unwritable_plot_before_the_demo_runs(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli("demo", "--plot", str(blocker / "dir" / "x.png"))
    assert result.returncode == 2 and result.stderr.startswith("error: --plot: "), result.stderr
    assert result.stdout == ""      # it once ran the whole demo, then failed with FileNotFoundError


def test_demo_piped_into_head_ends_quietly():
    done = subprocess.run(f"{sys.executable} {SCRIPT} demo --no-plot | head -2", shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert len(done.stdout.splitlines()) == 2
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
