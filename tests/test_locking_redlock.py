"""Redlock over five real redis-server processes, some of them killed or frozen."""

from __future__ import annotations

import time

import pytest

from DistributedLocking import LockNotAcquired, Redlock


def make_redlock(servers, name="job", **kwargs) -> Redlock:
    return Redlock.from_urls([s.url for s in servers], name, ttl_ms=2_000, server_timeout_s=0.2, **kwargs)


def test_majority_of_five_grants_and_release_clears_every_server(redis_process):
    servers = [redis_process() for _ in range(5)]
    first, second = make_redlock(servers), make_redlock(servers)
    lease = first.acquire(blocking=False)
    assert lease is not None and lease.granted_by == 5 and 0 < lease.validity_ms < 2_000
    assert second.acquire(blocking=False) is None                 # exclusive
    assert first.release() == 5
    assert second.acquire(blocking=False) is not None
    assert second.release() == 5
    first.close(), second.close()


def test_works_with_two_of_five_servers_killed(redis_process):
    servers = [redis_process() for _ in range(5)]
    for server in servers[:2]:
        server.kill()
    first, second = make_redlock(servers), make_redlock(servers)
    lease = first.acquire(blocking=False)
    assert lease is not None and lease.granted_by == 3
    assert second.acquire(blocking=False) is None
    assert first.release() == 3
    first.close(), second.close()


def test_fails_cleanly_with_three_of_five_servers_killed(redis_process):
    servers = [redis_process() for _ in range(5)]
    for server in servers[:3]:
        server.kill()
    redlock = make_redlock(servers, blocking_timeout=0.5)
    started = time.monotonic()
    assert redlock.acquire(timeout=0.5) is None
    with pytest.raises(LockNotAcquired, match="no majority"):
        with redlock:
            pass
    assert time.monotonic() - started < 10
    # A failed attempt leaves nothing behind on the live servers (partial grants were undone).
    import redis
    for server in servers[3:]:
        assert not redis.Redis.from_url(server.url).exists("lock:job")
    redlock.close()


def test_a_frozen_server_costs_its_timeout_not_the_ttl(redis_process):
    servers = [redis_process() for _ in range(5)]
    servers[0].pause()                                            # SIGSTOP: connects, never answers
    try:
        redlock = make_redlock(servers)
        lease = redlock.acquire(blocking=False)
        assert lease is not None and lease.granted_by == 4
        assert lease.validity_ms > 2_000 * 0.5                     # the frozen server did not eat the lease
        redlock.release()
        redlock.close()
    finally:
        servers[0].resume()
