"""Redis Cluster's hash slots, on a real cluster: our slot function agrees with the server's, an ASK
redirect is followed, and a live reshard under concurrent writers moves exactly the keys in the
moved slots and loses nothing. Skipped, with the reason, if the binaries cannot form a cluster."""

from __future__ import annotations

import random

import pytest
import redis
from redis.cluster import RedisCluster

from common import RedisUnavailable
from common.redis_cluster import redis_cluster
from ConsistentHashing.hash_slots import SLOT_COUNT, crc16, hash_tag, key_slot, plan_reshard
from ConsistentHashing.redis_cluster import migrate_slot, redirects_sent, run_cluster, slot_owners


@pytest.fixture(scope="module")
def cluster():
    try:
        with redis_cluster(masters=3) as started:
            yield started
    except RedisUnavailable as exc:
        pytest.skip(f"cannot start a Redis Cluster here: {exc}")


# ---- the slot function (pure) -----------------------------------------------------------------

def test_crc16_is_the_xmodem_variant_of_the_spec():
    assert crc16(b"123456789") == 0x31C3  # the spec's check value
    assert key_slot("somekey") == 11058 and key_slot("{user1}.following") == 8106


def test_hash_tags_follow_the_spec_examples():
    assert hash_tag(b"{user1000}.following") == b"user1000"
    assert hash_tag(b"foo{}{bar}") == b"foo{}{bar}"       # empty first tag: hash the whole key
    assert hash_tag(b"foo{{bar}}zap") == b"{bar"          # from the first { to the first } after it
    assert hash_tag(b"foo{bar}{zap}") == b"bar"           # only the first tag counts
    assert key_slot("user:{42}:name") == key_slot("user:{42}:cart")


def test_a_reshard_plan_takes_a_fair_share_from_each_master():
    owners = {"a": range(0, 5461), "b": range(5461, 10923), "c": range(10923, SLOT_COUNT)}
    plan = plan_reshard(owners, SLOT_COUNT // 4)
    assert sum(len(slots) for slots in plan.values()) == 4096
    assert sorted(len(slots) for slots in plan.values()) == [1365, 1365, 1366]
    for source, slots in plan.items():
        assert set(slots) <= set(owners[source])
    with pytest.raises(ValueError):
        plan_reshard(owners, SLOT_COUNT + 1)


# ---- on the real cluster --------------------------------------------------------------------

def test_our_slot_function_agrees_with_cluster_keyslot(cluster):
    node = cluster.client(cluster.nodes[0])
    rng = random.Random(3)
    keys = [f"key-{rng.getrandbits(40):x}" for _ in range(300)] + \
        ["", "{}", "{a}b", "a{b}c{d}", "ключ", "user:{42}:name", "x" * 300]
    try:
        for key in keys:
            assert node.execute_command("CLUSTER", "KEYSLOT", key) == key_slot(key), key
    finally:
        node.close()


def test_an_ask_redirect_during_a_migration_is_followed(cluster):
    """Mid-migration: the key already on the target, the slot still MIGRATING on the source. The
    source answers ASK; redis-py asks the target once (ASKING + GET) and gets the value."""
    nodes = [cluster.client(n) for n in cluster.nodes]
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        key = "ask-me"
        client.set(key, "moved-value")
        slot = key_slot(key)
        owners = slot_owners(nodes[0])
        ids = [cluster.node_id(n) for n in cluster.nodes]
        source = ids.index(owners[slot])
        target = (source + 1) % 3
        nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        nodes[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        nodes[source].execute_command("MIGRATE", "127.0.0.1", cluster.ports[target], "", 0, 5000,
                                      "KEYS", key)
        for node in nodes:
            node.config_resetstat()
        assert client.get(key) == b"moved-value"
        assert redirects_sent(nodes)["ASK"] == 1
        others = [n for i, n in enumerate(nodes) if i not in (source, target)]
        for node in [nodes[target], nodes[source], *others]:
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        assert client.get(key) == b"moved-value"  # now a MOVED, then the new owner
        assert redirects_sent(nodes)["MOVED"] >= 1
    finally:
        client.close()
        for node in nodes:
            node.close()


def test_migrate_slot_moves_every_key_of_the_slot(cluster):
    nodes = [cluster.client(n) for n in cluster.nodes]
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        keys = [f"{{tagged}}:{i}" for i in range(250)]  # one slot, more keys than one MIGRATE batch
        for key in keys:
            client.set(key, key.upper())
        slot = key_slot(keys[0])
        ids = [cluster.node_id(n) for n in cluster.nodes]
        source = ids.index(slot_owners(nodes[0])[slot])
        target = (source + 2) % 3
        moved = migrate_slot(slot, nodes[source], nodes[target], ids[source], ids[target],
                             cluster.ports[target], nodes)
        assert moved == 250
        assert all(slot_owners(node)[slot] == ids[target] for node in nodes)
        assert nodes[target].execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 250
        assert [client.get(k) for k in keys] == [k.upper().encode() for k in keys]
    finally:
        client.close()
        for node in nodes:
            node.close()


def test_live_reshard_with_concurrent_writers_loses_nothing_and_moves_the_predicted_keys():
    keys = [f"user:{i}" for i in range(2000)]
    try:
        result = run_cluster(keys, slots=400, clients=3)
    except RedisUnavailable as exc:
        pytest.skip(f"cannot start a Redis Cluster here: {exc}")
    assert result.predicted and result.moved == result.predicted  # predicted before, counted after
    assert result.slots_moved == 400
    assert result.writes > 0 and result.reads == result.writes
    assert result.wrong_reads == 0, "a read returned something other than the last acknowledged write"
    assert result.lost_writes == 0, "a key did not hold its last acknowledged value after the reshard"
    assert result.redirects["MOVED"] > 0  # the clients' slot tables were corrected by the servers
    assert sum(result.keys_per_master_after) == len(keys)
    assert result.keys_per_master_after[-1] == len(result.predicted)


def test_redis_py_is_a_real_cluster_client(cluster):
    """Guard against a silent fallback: a plain client on the wrong node gets MOVED, not data."""
    key = "where-am-i"
    RedisCluster(host="127.0.0.1", port=cluster.ports[0]).set(key, "here")
    owner = slot_owners(cluster.client(cluster.nodes[0]))[key_slot(key)]
    ids = [cluster.node_id(n) for n in cluster.nodes]
    wrong = cluster.client(cluster.nodes[(ids.index(owner) + 1) % 3])
    with pytest.raises(redis.exceptions.MovedError):
        wrong.get(key)
    wrong.close()
