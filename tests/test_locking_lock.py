"""RedisLock with real redis-servers and real processes: exclusion, crashes, pauses, restarts."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from DistributedLocking import (
    WAIT_BACKOFF,
    WAIT_WAKEUP,
    FencedResource,
    LockBackendUnavailable,
    LockLost,
    LockNotAcquired,
    RedisLock,
    watchdog_active_count,
)
from DistributedLocking.workers import counter_worker, holder_worker
from tests.locking_helpers import recv, workers


def poll_until(predicate, timeout: float = 15.0, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval)


@pytest.mark.parametrize("wait", [WAIT_WAKEUP, WAIT_BACKOFF])
def test_eight_processes_get_then_set_inside_the_lock_count_exactly(redis_url, wait):
    processes, iterations = 8, 40
    with workers() as group:
        start, results = group.event(), group.queue()
        for _ in range(processes):
            group.start(counter_worker, redis_url, "counter", "count", iterations, 5_000, wait,
                        start, results)
        start.set()
        sections = sorted(s for _ in range(processes) for s in results.get(timeout=120))
        group.join_all()
    client = redis.Redis.from_url(redis_url)
    assert int(client.get("count")) == processes * iterations      # no lost update
    # Critical sections never overlap, and tokens strictly increase in acquisition order.
    for (_, released, token, *_), (acquired, _, next_token, *_) in zip(sections, sections[1:], strict=False):
        assert acquired >= released
        assert next_token > token


def test_tokens_strictly_increase_across_holders(redis_url):
    client = redis.Redis.from_url(redis_url)
    tokens = []
    for holder in range(5):
        lock = RedisLock(client, "t", ttl_ms=1_000, auto_renew=False)
        with lock as token:
            tokens.append(token)
        assert lock.token == token and holder >= 0
    assert tokens == sorted(set(tokens)) and tokens[0] >= 1


def test_sigkill_the_holder_and_the_lock_is_free_within_its_ttl(redis_url):
    ttl_ms = 1_500
    client = redis.Redis.from_url(redis_url)
    with workers() as group:
        parent_end, child_end = group.pipe()
        holder = group.start(holder_worker, redis_url, "crash", ttl_ms, True, child_end)
        _, holder_token = recv(parent_end)
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        pttl = client.pttl("lock:crash")
        assert 0 < pttl <= ttl_ms                                 # SET NX PX: the key always expires
        other = RedisLock(client, "crash", ttl_ms=ttl_ms)
        assert other.acquire(blocking=False) is None               # still held by the dead process...
        token = other.acquire(timeout=10 * ttl_ms / 1000)          # ...until its lease runs out
        assert token is not None and token > holder_token
        assert other.release()


def test_non_owner_release_returns_false_and_leaves_the_lock(redis_url):
    client = redis.Redis.from_url(redis_url)
    owner = RedisLock(client, "shared", ttl_ms=5_000)
    stranger = RedisLock(client, "shared", ttl_ms=5_000)
    assert owner.acquire() is not None
    assert stranger.release() is False                            # never acquired
    assert stranger.extend() is False
    assert owner.owned() and client.exists("lock:shared")

    short = RedisLock(client, "short", ttl_ms=100, auto_renew=False)
    short.acquire()
    poll_until(lambda: not client.exists("lock:short"))
    successor = RedisLock(client, "short", ttl_ms=5_000)
    assert successor.acquire(blocking=False) is not None
    assert short.release() is False                               # expired: not ours any more
    assert successor.owned()                                      # and we did not delete the successor's
    successor.release()
    owner.release()


def test_watchdog_keeps_a_long_critical_section_safe_and_stops_after_release(redis_url):
    client = redis.Redis.from_url(redis_url)
    lock = RedisLock(client, "long", ttl_ms=600)                  # renewed every ~200 ms
    rival = RedisLock(client, "long", ttl_ms=600)
    lock.acquire()
    end = time.monotonic() + 1.8                                  # three TTLs of "work"
    while time.monotonic() < end:
        assert rival.acquire(blocking=False) is None
        time.sleep(0.05)
    assert lock.renewals >= 3 and lock.owned()
    assert lock.release()
    renewals = lock.renewals
    assert watchdog_active_count() == 0
    time.sleep(0.5)                                               # absence of renewals needs time to show
    assert lock.renewals == renewals
    assert rival.acquire(blocking=False) is not None
    rival.release()


def test_without_the_watchdog_the_same_critical_section_loses_the_lock(redis_url):
    client = redis.Redis.from_url(redis_url)
    lock = RedisLock(client, "long", ttl_ms=200, auto_renew=False)
    with pytest.raises(LockLost, match="fencing token"):
        with lock:
            poll_until(lambda: not client.exists("lock:long"))


def test_context_manager_raises_lock_not_acquired_on_timeout(redis_url):
    client = redis.Redis.from_url(redis_url)
    holder = RedisLock(client, "busy", ttl_ms=5_000)
    holder.acquire()
    started = time.monotonic()
    with pytest.raises(LockNotAcquired, match="lock:busy"):
        with RedisLock(client, "busy", blocking_timeout=0.2):
            pass
    assert time.monotonic() - started < 5
    holder.release()


def test_a_paused_holder_is_overtaken_and_its_fenced_write_rejected(redis_url):
    ttl_ms = 500
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with workers() as group:
        parent_end, child_end = group.pipe()
        holder = group.start(holder_worker, redis_url, "paused", ttl_ms, True, child_end)
        _, stale_token = recv(parent_end)
        os.kill(holder.pid, signal.SIGSTOP)                       # a "GC pause": the watchdog stops too
        successor = RedisLock(client, "paused", ttl_ms=5_000)
        token = successor.acquire(timeout=10)
        assert token is not None and token > stale_token
        resource = FencedResource(client, "resource:paused")
        assert resource.read(token).accepted
        os.kill(holder.pid, signal.SIGCONT)
        parent_end.send(("write", "stale holder's data"))
        reply = recv(parent_end)
        assert reply == ("write", False, token)                   # refused: a higher token was seen
        assert resource.write(token, "successor's data").accepted
        parent_end.send(("release",))
        assert recv(parent_end) == ("release", False)              # and it cannot release the new lock
        parent_end.send(("exit",))
        recv(parent_end)
        assert successor.owned() and client.get("resource:paused") == "successor's data"
        successor.release()


def test_redis_restart_gives_clear_errors_and_the_lock_works_again(redis_process):
    server = redis_process()
    client = redis.Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=2)
    renewed = RedisLock(client, "r", ttl_ms=300)                  # the watchdog renews it every ~100 ms
    plain = RedisLock(client, "p", ttl_ms=5_000, auto_renew=False)
    assert renewed.acquire() == 1 and plain.acquire() == 1
    server.kill()
    with pytest.raises(LockBackendUnavailable, match="Redis unreachable"):
        RedisLock(client, "r").acquire()
    with pytest.raises(LockBackendUnavailable, match="expires"):
        plain.release()
    time.sleep(0.3)                                               # let the watchdog fail a few renewals
    server.restart()
    # Persistence is off: the restart lost the keys AND the counters, so tokens restart at 1.
    again = RedisLock(client, "r", ttl_ms=600)
    assert again.acquire(timeout=5) == 1
    # The watchdog survived the outage, found the old lease gone, and stopped renewing it.
    poll_until(lambda: watchdog_active_count() == 1)
    assert renewed.release() is False and again.owned()
    assert again.release()
    assert watchdog_active_count() == 0


def test_watchdog_renewal_racing_a_release_is_not_reported_as_a_lost_lease(redis_url, caplog):
    # The watchdog checks the owner, then extends; a release in between makes the extend fail.
    # That is a normal release, not "the lease had expired": warning about it would cry wolf.
    from DistributedLocking.lock import _watchdog

    client = redis.Redis.from_url(redis_url)
    lock = RedisLock(client, "race", ttl_ms=5_000)
    lock.acquire()
    owner = lock._owner
    assert lock.release()
    with caplog.at_level("WARNING", logger="DistributedLocking.lock"):
        _watchdog()._renew(lock, owner)          # the renewal that lost the race with release()
    assert "was lost" not in caplog.text
    assert watchdog_active_count() == 0


def test_lock_delay_keeps_a_lost_holders_lock_closed_and_a_release_ends_it(redis_url):
    """Chubby's lock-delay: a lease that expired without a release stays closed for the delay."""
    client = redis.Redis.from_url(redis_url)
    lost = RedisLock(client, "ld", ttl_ms=200, auto_renew=False, lock_delay_ms=1_500)
    lost.acquire()                                          # ...and its holder never comes back
    poll_until(lambda: not client.exists("lock:ld"))        # the lease has expired
    rival = RedisLock(client, "ld", ttl_ms=5_000, auto_renew=False)
    assert client.pttl("lock-delay:ld") > 0                 # the delay outlives the lease
    assert rival.acquire(blocking=False) is None            # free in Redis, yet closed: lock-delay
    token = rival.acquire(timeout=10)                       # a waiter gets in once the delay is over
    assert token is not None and not client.exists("lock-delay:ld")
    assert rival.release()
    # A normal release ends the delay at once: the delay is only for holders that were lost.
    polite = RedisLock(client, "ld", ttl_ms=5_000, auto_renew=False, lock_delay_ms=60_000)
    polite.acquire()
    assert client.pttl("lock-delay:ld") > 5_000             # shadows the lease by the delay
    assert polite.release()
    assert rival.acquire(blocking=False) is not None and rival.release()


def test_lock_delay_is_bounded_like_chubbys():
    offline = redis.Redis(host="127.0.0.1", port=1)
    for bad in (-1, 60_001, 1.5, True):
        with pytest.raises(ValueError, match="lock_delay_ms"):
            RedisLock(offline, "x", lock_delay_ms=bad)
