"""common.redis_cluster: a real Redis Cluster from the embedded binaries, and nothing left behind.

Skipped, with the reason, when the binaries cannot form a cluster on this machine."""

from __future__ import annotations

import os

import pytest
from redis.cluster import RedisCluster as ClusterClient

from common import RedisUnavailable, port_is_open
from common.redis_cluster import BUS_PORT_OFFSET, RedisCluster, cluster_port, redis_cluster


def test_a_cluster_starts_covers_every_slot_grows_and_cleans_up():
    try:
        context = redis_cluster(masters=3)
        cluster = context.__enter__()
    except RedisUnavailable as exc:
        pytest.skip(f"cannot start a Redis Cluster here: {exc}")
    try:
        assert len(cluster.nodes) == 3
        for node in cluster.nodes:
            # each node serves clients on its port and the cluster bus on port + 10,000
            assert port_is_open(node.port) and port_is_open(node.port + BUS_PORT_OFFSET)
        info = cluster.client(cluster.nodes[0]).execute_command("CLUSTER", "INFO").decode()
        assert "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info
        client = ClusterClient(host="127.0.0.1", port=cluster.ports[0])
        client.mset_nonatomic({f"k{i}": i for i in range(300)})  # spread over all three masters
        assert sorted(cluster.client(n).dbsize() > 0 for n in cluster.nodes) == [True] * 3
        newcomer = cluster.add_master()
        assert len({cluster.node_id(n) for n in cluster.nodes}) == 4
        assert cluster.client(newcomer).dbsize() == 0  # joined empty: no slots until a reshard
        assert client.get("k7") == b"7"
        client.close()
        nodes = list(cluster.nodes)
    finally:
        context.__exit__(None, None, None)
    for node in nodes:
        assert not node.alive()
        assert not os.path.exists(node.workdir)
        assert not port_is_open(node.port) and not port_is_open(node.port + BUS_PORT_OFFSET)


def test_node_ports_leave_room_for_the_bus_port():
    for _ in range(20):
        port = cluster_port()
        assert port + BUS_PORT_OFFSET <= 65_535


def test_fewer_than_three_masters_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 3 masters"):
        RedisCluster(masters=2)
