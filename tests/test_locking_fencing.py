"""FencedResource against a real redis-server: the highest-token rule, checked atomically in Lua."""

from __future__ import annotations

import redis

from DistributedLocking import FencedResource


def test_lower_token_is_rejected_equal_and_higher_accepted(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    resource = FencedResource(client, "doc")
    assert resource.write(5, "from-5").accepted
    assert resource.write(5, "again-5").accepted          # the same holder may write twice
    stale = resource.write(4, "from-4")
    assert not stale.accepted and stale.highest == 5 and stale.value == "again-5"
    assert resource.write(9, "from-9").accepted
    assert client.get("doc") == "from-9" and resource.highest() == 9


def test_read_registers_the_token_so_an_older_holder_cannot_write_afterwards(redis_url):
    client = redis.Redis.from_url(redis_url)
    resource = FencedResource(client, "doc")
    assert resource.read(2).accepted                       # holder 2 looked, has not written yet
    assert not resource.write(1, "stale").accepted         # holder 1 wakes up: refused
    assert resource.read(1).accepted is False
    assert client.get("doc") is None


def test_delete_is_fenced_and_keeps_the_fence(redis_url):
    client = redis.Redis.from_url(redis_url)
    resource = FencedResource(client, "doc")
    resource.write(3, "v")
    assert not resource.delete(2).accepted and client.get("doc") == b"v"
    assert resource.delete(3).accepted and client.get("doc") is None
    assert not resource.write(2, "late").accepted          # the fence outlived the value
    assert resource.write(4, "w", ttl_ms=50_000).accepted and 0 < client.pttl("doc") <= 50_000
