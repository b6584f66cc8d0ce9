"""ShardedStore over real redis-server processes: migrations move exactly the predicted keys,
every key reads back, values keep their type and TTL, and SCAN (never KEYS) finds them."""

from __future__ import annotations

import pytest
import redis

from common import free_port
from ConsistentHashing.ring import DuplicateNodeError, UnknownNodeError, key_bytes
from ConsistentHashing.sharded_store import ShardedStore, ShardedStoreError, keys_that_move

KEYS = [f"user:{i}" for i in range(3000)]
VALUES = {k: f"v-{k}" for k in KEYS}


def where_keys_live(store: ShardedStore) -> dict[bytes, list[str]]:
    """Scan every server: which servers hold each key (should be exactly one, its owner)."""
    found: dict[bytes, list[str]] = {}
    for name in store.clients:
        for key in store.scan_keys(name):
            found.setdefault(key, []).append(name)
    return found


def assert_consistent(store: ShardedStore) -> None:
    found = store.get_many(KEYS)
    assert all(found[key_bytes(k)] == v.encode() for k, v in VALUES.items())
    located = where_keys_live(store)
    assert len(located) == len(KEYS)
    assert all(servers == [store.owner(key)] for key, servers in located.items())


def test_add_and_remove_move_exactly_the_predicted_keys(redis_urls):
    urls = redis_urls(5)
    names = [f"s{i}" for i in range(5)]
    with ShardedStore(dict(zip(names[:4], urls[:4], strict=True)), vnodes=64, batch=97) as store:
        store.set_many(VALUES)
        assert_consistent(store)

        planned = store.ring.copy()
        planned.add_node("s4")
        predicted = keys_that_move(KEYS, store.ring, planned)
        migration = store.add_server("s4", urls[4])
        assert migration.moved_keys == predicted and migration.moved == len(predicted) > 0
        assert all(target == "s4" for _, target in migration.routes)
        assert sum(migration.routes.values()) == migration.moved
        assert_consistent(store)

        planned = store.ring.copy()
        planned.remove_node("s1")
        held = {key for key in store.scan_keys("s1")}
        predicted = keys_that_move(KEYS, store.ring, planned)
        assert predicted == held  # removal moves exactly the leaving server's keys
        migration = store.remove_server("s1")
        assert migration.moved_keys == predicted
        assert "s1" not in store.clients and "s1" not in store.ring
        assert_consistent(store)
        assert redis.Redis.from_url(urls[1]).dbsize() == 0  # nothing left behind on the leaver


def test_migration_keeps_types_and_ttls_and_uses_scan_not_keys(redis_urls):
    urls = redis_urls(3)
    with ShardedStore({"a": urls[0], "b": urls[1]}) as store:
        for i in range(200):  # each key written on its own owner (a key elsewhere is a stray)
            store.clients[store.owner(f"h{i}")].hset(f"h{i}", mapping={"field": i})
            store.clients[store.owner(f"l{i}")].rpush(f"l{i}", "x", "y")
            store.clients[store.owner(f"t{i}")].set(f"t{i}", "ttl", ex=3600)
        before = {k: store.owner(k) for i in range(200) for k in (f"h{i}", f"l{i}", f"t{i}")}
        store.add_server("c", urls[2])
        moved = [k for k, old in before.items() if store.owner(k) != old]
        assert moved, "some keys must have moved to the new server"
        for key in moved:
            client = store.clients[store.owner(key)]
            if key.startswith("h"):
                assert client.hget(key, "field") == key[1:].encode()
            elif key.startswith("l"):
                assert client.lrange(key, 0, -1) == [b"x", b"y"]
            else:
                assert 3000 < client.ttl(key) <= 3600  # the TTL travelled with the value
        for client in store.clients.values():
            stats = client.info("commandstats")
            assert "cmdstat_keys" not in stats
        assert any("cmdstat_scan" in c.info("commandstats") for c in store.clients.values())


def test_store_errors_are_specific(redis_urls):
    urls = redis_urls(2)
    with ShardedStore({"a": urls[0]}) as store:
        with pytest.raises(DuplicateNodeError):
            store.add_server("a", urls[1])
        with pytest.raises(UnknownNodeError):
            store.remove_server("zz")
        with pytest.raises(ShardedStoreError, match="last server"):
            store.remove_server("a")
        dead = f"redis://127.0.0.1:{free_port()}/0"
        with pytest.raises(ShardedStoreError, match="cannot reach"):
            store.add_server("ghost", dead)
        assert store.ring.nodes == ["a"] and "ghost" not in store.clients
        store.set("k", "v")  # the store keeps working after the failed add
        assert store.get("k") == b"v" and store.delete("k") and store.get("k") is None


def test_namespaces_isolate_stores_sharing_servers(redis_urls):
    urls = redis_urls(3)
    odd = "ns*[x]?\\:"  # glob characters must match literally in SCAN MATCH
    with ShardedStore({"a": urls[0], "b": urls[1]}, namespace=odd) as mine, \
            ShardedStore({"a": urls[0], "b": urls[1]}, namespace="other:") as theirs:
        mine.set_many({k: "mine" for k in KEYS[:500]})
        theirs.set_many({k: "theirs" for k in KEYS[:500]})
        bystander = redis.Redis.from_url(urls[0])
        bystander.set("nsX[x]?\\:unrelated", "keep")  # would match if the glob were not escaped
        migration = mine.add_server("c", urls[2])
        assert migration.moved > 0
        assert sum(mine.key_counts().values()) == 500 == sum(theirs.key_counts().values())
        assert all(v == b"mine" for v in mine.get_many(KEYS[:500]).values())
        assert all(v == b"theirs" for v in theirs.get_many(KEYS[:500]).values())
        assert mine.drop_all() == 500
        assert sum(theirs.key_counts().values()) == 500 and bystander.get("nsX[x]?\\:unrelated") == b"keep"
        bystander.close()


def test_a_stale_copy_on_a_server_that_does_not_own_the_key_never_overwrites_the_owner(redis_urls):
    """An interrupted migration can leave a stale copy of a key on a server that does not own it.
    A later migration must not treat that copy as the key's data (RESTORE REPLACE onto the owner
    would silently lose the owner's newer value); it skips it and counts it as a stray."""
    urls = redis_urls(3)
    with ShardedStore({"a": urls[0], "b": urls[1]}, vnodes=64) as store:
        planned = store.ring.copy()
        planned.add_node("c")
        # A key owned by "a" before and after adding "c": it must not move at all.
        key = next(k for k in KEYS if store.owner(k) == "a" and planned.get_node(k) == "a")
        store.clients["b"].set(key, "stale")  # e.g. left by a copy whose switch never happened
        store.set(key, "fresh")
        migration = store.add_server("c", urls[2])
        assert store.get(key) == b"fresh"
        assert key_bytes(key) not in migration.moved_keys
        assert migration.strays == 1
        # Removing the server that holds the stray must not overwrite the owner either.
        store.clients["b"].set(key, "stale")
        migration = store.remove_server("b")
        assert store.get(key) == b"fresh" and migration.strays == 1
