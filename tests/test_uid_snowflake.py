"""Snowflake generator: uniqueness and order under threads and processes, the bit layout, and the
clock rules (overflow waits for the next millisecond, small clock steps back are waited out, large
ones raise)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.uid_helpers import START_MS, SteppedClock, ids_from_process
from UniqueIdGeneration.snowflake import (
    DEFAULT_EPOCH_MS,
    MAX_ID,
    MAX_SEQUENCE,
    MAX_TIMESTAMP,
    MAX_WORKER_ID,
    ClockMovedBackwardsError,
    EpochInFutureError,
    InvalidSnowflakeError,
    SnowflakeGenerator,
    TimestampOverflowError,
    WorkerIdOutOfRangeError,
    compose,
    format_bits,
    parse,
)

THREADS = 8
PROCESSES = 8
IDS_EACH = 100_000


# --- uniqueness and order ---------------------------------------------------------------------

@pytest.mark.slow
def test_eight_threads_share_one_generator_without_duplicates():
    generator = SnowflakeGenerator(7)
    results: list[list[int]] = [[] for _ in range(THREADS)]
    start = threading.Barrier(THREADS)

    errors: list[BaseException] = []

    def work(index: int) -> None:
        start.wait()                      # all threads hammer the generator at the same time
        out = results[index]
        next_id = generator.next_id
        try:
            for _ in range(IDS_EACH):
                out.append(next_id())
        except BaseException as exc:      # e.g. a racy generator tripping over its own state
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()

    assert errors == []
    every_id = [i for ids in results for i in ids]
    assert len(every_id) == THREADS * IDS_EACH
    assert len(set(every_id)) == len(every_id), "duplicate IDs across threads"
    for ids in results:
        assert all(a < b for a, b in zip(ids, ids[1:], strict=False)), "a thread saw IDs go backwards"
    assert {parse(i).worker_id for i in every_id} == {7}


@pytest.mark.slow
def test_eight_processes_with_distinct_worker_ids_never_collide():
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [pool.submit(ids_from_process, worker_id, IDS_EACH) for worker_id in range(PROCESSES)]
        per_process = [future.result(timeout=180) for future in futures]

    every_id = [i for ids in per_process for i in ids]
    assert len(set(every_id)) == PROCESSES * IDS_EACH, "duplicate IDs across processes"
    for worker_id, ids in enumerate(per_process):
        assert {parse(i).worker_id for i in ids} == {worker_id}
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


# --- the layout -------------------------------------------------------------------------------

def test_parse_round_trips_a_fresh_id():
    before_ms = time.time_ns() // 1_000_000
    generator = SnowflakeGenerator(19)
    first, second = generator.next_id(), generator.next_id()
    after_ms = time.time_ns() // 1_000_000
    parts = parse(first)
    assert parts.worker_id == 19
    assert before_ms <= parts.timestamp_ms <= after_ms
    assert parts.datetime_utc == datetime.fromtimestamp(parts.timestamp_ms / 1000, tz=UTC)
    assert compose(parts.timestamp_ms - DEFAULT_EPOCH_MS, parts.worker_id, parts.sequence) == first
    assert generator.parse(second).worker_id == 19
    assert first < second <= MAX_ID


def test_a_known_id_decodes_to_its_fields():
    clock = SteppedClock(DEFAULT_EPOCH_MS + 1000)
    generator = SnowflakeGenerator(3, clock=clock)
    snowflake_id = generator.next_id()
    # 1000 ms after the epoch, worker 3, sequence 0.
    assert snowflake_id == (1000 << 17) | (3 << 12)
    assert format_bits(snowflake_id).split(" | ") == [
        "000000", format(1000, "041b"), "00011", "000000000000"]
    parts = parse(snowflake_id)
    assert parts.datetime_utc == datetime(2023, 1, 1, 0, 0, 1, tzinfo=UTC)


fields = st.tuples(st.integers(0, MAX_TIMESTAMP), st.integers(0, MAX_WORKER_ID),
                   st.integers(0, MAX_SEQUENCE))


@settings(max_examples=300, derandomize=True)
@given(fields)
def test_compose_and_parse_are_inverse(parts):
    timestamp, worker_id, sequence = parts
    snowflake_id = compose(timestamp, worker_id, sequence)
    assert 0 <= snowflake_id <= MAX_ID < 2 ** 58        # the 6 high bits stay zero: fits int64
    decoded = parse(snowflake_id)
    assert (decoded.timestamp_ms - DEFAULT_EPOCH_MS, decoded.worker_id, decoded.sequence) == parts


@settings(max_examples=300, derandomize=True)
@given(fields, fields)
def test_id_order_is_time_then_worker_then_sequence(a, b):
    # The property the blog relies on: comparing IDs compares (time, worker, sequence).
    assert (compose(*a) < compose(*b)) == (a < b)


@settings(max_examples=100, derandomize=True)
@given(st.integers(min_value=MAX_ID + 1, max_value=2 ** 64) | st.integers(max_value=-1))
def test_parse_rejects_integers_outside_the_layout(bad):
    with pytest.raises(InvalidSnowflakeError):
        parse(bad)


# --- configuration errors -----------------------------------------------------------------------

@pytest.mark.parametrize("worker_id", [-1, 32, 1000, True, "3"])
def test_worker_id_out_of_range(worker_id):
    with pytest.raises(WorkerIdOutOfRangeError, match="worker_id"):
        SnowflakeGenerator(worker_id)


def test_epoch_in_the_future_is_refused():
    clock = SteppedClock(START_MS)
    with pytest.raises(EpochInFutureError, match="in the future"):
        SnowflakeGenerator(1, epoch_ms=START_MS + 60_000, clock=clock)


def test_timestamp_beyond_41_bits_is_refused():
    clock = SteppedClock(MAX_TIMESTAMP + 1)          # with epoch 0: one ms too late
    with pytest.raises(TimestampOverflowError, match="41 bits"):
        SnowflakeGenerator(1, epoch_ms=0, clock=clock)
    clock.now_ms = MAX_TIMESTAMP                      # the very last millisecond still works ...
    generator = SnowflakeGenerator(1, epoch_ms=0, clock=clock)
    assert parse(generator.next_id(), epoch_ms=0).timestamp_ms == MAX_TIMESTAMP
    clock.now_ms += 1                                 # ... and the next one raises
    with pytest.raises(TimestampOverflowError):
        generator.next_id()


# --- clock rules --------------------------------------------------------------------------------

def test_sequence_overflow_issues_exactly_4096_then_waits_for_the_clock():
    clock = SteppedClock()
    generator = SnowflakeGenerator(5, clock=clock, sleep=clock.sleep)
    ids = [generator.next_id() for _ in range(MAX_SEQUENCE + 1)]
    assert [parse(i).sequence for i in ids] == list(range(4096))
    assert {parse(i).timestamp_ms for i in ids} == {START_MS}
    assert clock.sleeps == [], "the generator waited before the millisecond was used up"

    # The clock stays stuck for three waits; only then does it move on. No ID may appear before.
    def move_after_three_waits(c: SteppedClock) -> None:
        if len(c.sleeps) == 3:
            c.now_ms += 1
    clock.on_sleep = move_after_three_waits
    next_one = generator.next_id()
    assert len(clock.sleeps) == 3
    assert all(0 < s <= 0.001 for s in clock.sleeps), "waits should be short sleeps, not spins"
    assert parse(next_one).timestamp_ms == START_MS + 1
    assert parse(next_one).sequence == 0
    assert next_one > ids[-1]


def test_overflow_blocks_a_caller_until_the_clock_moves():
    """The same, with a real second thread: next_id() does not return while the clock is stuck."""
    clock = SteppedClock()
    moved = threading.Event()
    clock.on_sleep = lambda c: moved.wait(0.01)       # a "sleep" that returns early once moved
    generator = SnowflakeGenerator(5, clock=clock, sleep=clock.sleep)
    for _ in range(MAX_SEQUENCE + 1):
        generator.next_id()
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(generator.next_id()))
    waiter.start()
    while len(clock.sleeps) < 5:                     # it is waiting, repeatedly, and issued nothing
        time.sleep(0.001)
    assert result == [] and waiter.is_alive()
    clock.now_ms += 1
    moved.set()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert parse(result[0]).timestamp_ms == START_MS + 1


def test_clock_back_within_tolerance_is_waited_out():
    clock = SteppedClock()
    clock.on_sleep = SteppedClock.advance_by_sleep
    generator = SnowflakeGenerator(2, clock=clock, sleep=clock.sleep, clock_back_tolerance_ms=5)
    before = [generator.next_id() for _ in range(3)]
    clock.now_ms -= 5                                # exactly the tolerance
    after = [generator.next_id() for _ in range(3)]
    assert clock.sleeps == [0.005], "expected one wait of the 5 ms the clock stepped back"
    ids = before + after
    assert all(a < b for a, b in zip(ids, ids[1:], strict=False))
    assert parse(after[0]).timestamp_ms == START_MS   # never a timestamp from the stepped-back clock


def test_clock_back_beyond_tolerance_raises_and_recovers():
    clock = SteppedClock()
    generator = SnowflakeGenerator(2, clock=clock, sleep=clock.sleep, clock_back_tolerance_ms=5)
    last = generator.next_id()
    clock.now_ms -= 6
    with pytest.raises(ClockMovedBackwardsError, match="by 6 ms") as caught:
        generator.next_id()
    assert caught.value.behind_ms == 6 and clock.sleeps == []
    clock.now_ms += 7                                 # the clock catches up: service resumes
    assert generator.next_id() > last


def test_default_clock_back_tolerance_is_5_ms():
    clock = SteppedClock()
    generator = SnowflakeGenerator(2, clock=clock, sleep=clock.sleep)
    generator.next_id()
    clock.now_ms -= 6
    with pytest.raises(ClockMovedBackwardsError):
        generator.next_id()
