"""Redis Cluster's hash slots beside our ring, for real: a live reshard while clients read and write.

    python -m ConsistentHashing.redis_cluster     # 3 masters, 20,000 keys, 4,096 slots to a 4th

1. A real Redis Cluster of 3 masters (common.redis_cluster) holds the keys, spread by
   CRC16(key) mod 16,384 slots (hash_slots.py).
2. A 4th master joins, empty. We plan which slots it takes (a quarter of them, from each master in
   proportion) and predict the keys that will move: exactly the keys in those slots.
3. The slots move live, one at a time, the way `redis-cli --cluster reshard` moves them (Redis
   Cluster specification, "Live reconfiguration"): CLUSTER SETSLOT <slot> IMPORTING on the target,
   MIGRATING on the source, MIGRATE the slot's keys in batches, then CLUSTER SETSLOT <slot> NODE on
   every master. Meanwhile client threads keep writing and reading their own keys (those in the
   moving slots, and as many that stay) through redis-py's RedisCluster, which follows the
   servers' redirects: MOVED (the slot has a new owner: update the slot table) and ASK (this one
   key already moved, the slot is still migrating: ask the target, once). We count the redirects
   the servers sent (INFO errorstats), check every read against the last acknowledged write, and
   afterwards read every key back.
4. The same keys on our ring over plain redis-servers (sharded_store.py): add a 4th server, and
   compare the two designs side by side.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import redis
from redis.cluster import RedisCluster

from common import cli, redis_servers
from common.redis_cluster import RedisCluster as ClusterProcesses
from common.redis_cluster import redis_cluster

from .hash_slots import SLOT_COUNT, key_slot, plan_reshard
from .ring import key_bytes
from .sharded_store import ShardedStore, keys_that_move
from .workload import DEFAULT_OUT, output_dir, pyplot, save_figure, shown

PLOT_NAME = "redis_cluster_reshard.png"
MIGRATE_BATCH = 100        # keys per MIGRATE command
MIGRATE_TIMEOUT_MS = 5000


# ---- the cluster's view -----------------------------------------------------------------------

def slot_owners(node: redis.Redis) -> dict[int, str]:
    """slot -> master node id, from one node's CLUSTER SLOTS."""
    owners = {}
    for start, end, master, *_replicas in node.execute_command("CLUSTER", "SLOTS"):
        node_id = master[2].decode() if isinstance(master[2], bytes) else master[2]
        for slot in range(start, end + 1):
            owners[slot] = node_id
    return owners


def redirects_sent(nodes: list[redis.Redis]) -> Counter:
    """MOVED and ASK replies the servers sent since their last CONFIG RESETSTAT (INFO errorstats)."""
    sent: Counter = Counter()
    for node in nodes:
        for name, stats in node.info("errorstats").items():
            if name in ("errorstat_MOVED", "errorstat_ASK"):
                sent[name.removeprefix("errorstat_")] += int(stats["count"])
    return sent


def migrate_slot(slot: int, source: redis.Redis, target: redis.Redis, source_id: str, target_id: str,
                 target_port: int, masters: list[redis.Redis]) -> int:
    """Move one slot with its keys from source to target, live. Returns how many keys moved.

    The order matters (cluster spec, "Live reconfiguration"): IMPORTING on the target first, so it
    accepts the ASKING clients the source is about to send it; then MIGRATING on the source, which
    from now on answers ASK for keys it no longer has; MIGRATE moves keys atomically in batches;
    finally SETSLOT NODE makes the move final (target first, so it never refuses its own slot).
    """
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    moved = 0
    while True:
        keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_BATCH)
        if not keys:
            break
        source.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0, MIGRATE_TIMEOUT_MS,
                               "KEYS", *keys)
        moved += len(keys)
    for node in [target, source] + [m for m in masters if m not in (target, source)]:
        node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved


# ---- the clients that keep working during the move --------------------------------------------

@dataclass
class ClientStats:
    writes: int = 0
    reads: int = 0
    wrong_reads: int = 0
    errors: Counter = field(default_factory=Counter)
    op_times: list[float] = field(default_factory=list)


class Writer(threading.Thread):
    """Writes its own keys round-robin (SET key <writer>:<n>), reads each back at once, and
    remembers the last value the server acknowledged for every key."""

    def __init__(self, number: int, port: int, keys: list[str], stop: threading.Event, started: float):
        super().__init__(name=f"writer-{number}", daemon=True)
        self.number, self.port, self.keys, self.stop, self.started = number, port, keys, stop, started
        self.acknowledged: dict[str, str] = {}
        self.maybe: dict[str, set[str]] = {}  # a SET that raised may or may not have happened
        self.stats = ClientStats()

    def run(self) -> None:
        client = RedisCluster(host="127.0.0.1", port=self.port, socket_timeout=10)
        try:
            sequence = 0
            while not self.stop.is_set():
                key = self.keys[sequence % len(self.keys)]
                sequence += 1
                value = f"{self.number}:{sequence}"
                try:
                    client.set(key, value)
                except redis.RedisError as exc:
                    self.stats.errors[type(exc).__name__] += 1
                    self.maybe.setdefault(key, set()).add(value)
                    continue
                self.acknowledged[key] = value
                self.maybe.pop(key, None)
                self.stats.writes += 1
                try:
                    seen = client.get(key)
                except redis.RedisError as exc:
                    self.stats.errors[type(exc).__name__] += 1
                    continue
                self.stats.reads += 1
                if seen is None or seen.decode() != value:
                    self.stats.wrong_reads += 1
                self.stats.op_times.append(time.monotonic() - self.started)
        finally:
            client.close()


# ---- the experiment ---------------------------------------------------------------------------

@dataclass
class ClusterResult:
    keys_per_master_before: list[int]
    keys_per_master_after: list[int]
    slots_moved: int
    predicted: set[bytes]
    moved: set[bytes]
    redirects: Counter
    writes: int
    reads: int
    wrong_reads: int
    lost_writes: int
    errors: Counter
    reshard_window: tuple[float, float]
    op_times: list[float]


def run_cluster(keys: list[str], slots: int, clients: int) -> ClusterResult:
    values = {key: "initial" for key in keys}
    with redis_cluster(masters=3) as cluster:
        nodes = [cluster.client(node) for node in cluster.nodes]
        try:
            return reshard_live(cluster, nodes, keys, values, slots, clients)
        finally:
            for node in nodes:
                node.close()


def reshard_live(cluster: ClusterProcesses, nodes: list[redis.Redis], keys: list[str],
                 values: dict[str, str], slots: int, clients: int) -> ClusterResult:
    loader = RedisCluster(host="127.0.0.1", port=cluster.ports[0], socket_timeout=10)
    try:
        for start in range(0, len(keys), 1000):
            loader.mset_nonatomic({key: values[key] for key in keys[start:start + 1000]})
    finally:
        loader.close()
    before = [node.dbsize() for node in nodes]
    ids = [cluster.node_id(node) for node in cluster.nodes]
    spread = ", ".join(f"port {node.port}: {count:,} keys"
                       for node, count in zip(cluster.nodes, before, strict=True))
    print(f"  {len(keys):,} keys on 3 masters: {spread}")

    newcomer = cluster.add_master()
    nodes.append(cluster.client(newcomer))
    new_id = cluster.node_id(newcomer)
    owners = slot_owners(nodes[0])
    by_owner: dict[str, list[int]] = {}
    for slot, owner in owners.items():
        by_owner.setdefault(owner, []).append(slot)
    plan = plan_reshard(by_owner, slots)
    moving = {slot for slots_of in plan.values() for slot in slots_of}
    predicted = {key_bytes(k) for k in keys if key_slot(k) in moving}
    sources = ", ".join(f"{len(slots_of):,} from port {cluster.nodes[ids.index(owner)].port}"
                        for owner, slots_of in plan.items())
    print(f"  a 4th master joins (port {newcomer.port}); plan: {slots:,} slots to it ({sources})")
    print(f"  predicted before the move: {len(predicted):,} keys ({100 * len(predicted) / len(keys):.2f}%) "
          f"live in those slots")

    jobs = [(slot, source) for source, slots_of in plan.items() for slot in slots_of]
    # redis-py (7.4) cannot follow an ASK to a master that owns no slot yet: it builds its node
    # list from CLUSTER SLOTS, where a slotless master does not appear (redis-py issue #4015). So
    # the first planned slot moves before the clients start; from then on every client's slot
    # table names the new master, and the rest of the reshard happens under their feet.
    first_slot, first_source = jobs.pop(0)
    migrate_slot(first_slot, nodes[ids.index(first_source)], nodes[-1], first_source, new_id,
                 newcomer.port, nodes)
    for node in nodes:
        node.config_resetstat()  # count only this reshard's MOVED/ASK replies
    # The clients work on the keys at risk, those in the moving slots, and as many that stay.
    staying = [k for k in keys if key_bytes(k) not in predicted][:max(1, len(predicted))]
    at_risk = [k for k in keys if key_bytes(k) in predicted] + staying
    stop, started = threading.Event(), time.monotonic()
    shares = [at_risk[i::clients] for i in range(clients)]
    writers = [Writer(i, cluster.ports[0], share, stop, started) for i, share in enumerate(shares)]
    for writer in writers:
        writer.start()
    try:
        time.sleep(0.5)  # let the clients reach full speed first, so the plot shows before and during
        window_start = time.monotonic() - started
        for slot, source in cli.progress(jobs, label="slots migrated"):
            source_node = nodes[ids.index(source)]
            migrate_slot(slot, source_node, nodes[-1], source, new_id, newcomer.port, nodes)
        window_end = time.monotonic() - started
        time.sleep(0.5)  # and after
    finally:
        stop.set()  # also on an error or Ctrl-C: no client may outlive the cluster it talks to
        for writer in writers:
            writer.join()
    redirects = redirects_sent(nodes)

    moved = {bytes(k) for k in nodes[-1].scan_iter(count=1000)}
    lost = count_lost_writes(cluster.ports[0], writers)
    errors: Counter = Counter()
    for writer in writers:
        errors.update(writer.stats.errors)
    return ClusterResult(
        keys_per_master_before=before, keys_per_master_after=[node.dbsize() for node in nodes],
        slots_moved=len(jobs) + 1, predicted=predicted, moved=moved, redirects=redirects,
        writes=sum(w.stats.writes for w in writers), reads=sum(w.stats.reads for w in writers),
        wrong_reads=sum(w.stats.wrong_reads for w in writers), lost_writes=lost, errors=errors,
        reshard_window=(window_start, window_end),
        op_times=sorted(t for w in writers for t in w.stats.op_times))


def count_lost_writes(port: int, writers: list[Writer]) -> int:
    """Read every key with a fresh client: it must hold the last acknowledged value (or, if the
    last SET raised, possibly that value)."""
    reader = RedisCluster(host="127.0.0.1", port=port, socket_timeout=10)
    lost = 0
    try:
        for writer in writers:
            for key in writer.keys:
                seen = reader.get(key)
                seen = seen.decode() if seen is not None else None
                allowed = {writer.acknowledged.get(key, "initial")} | writer.maybe.get(key, set())
                lost += seen not in allowed
    finally:
        reader.close()
    return lost


@dataclass
class RingResult:
    keys_per_server_before: list[int]
    keys_per_server_after: list[int]
    predicted: set[bytes]
    moved: set[bytes]
    points: int


def run_ring(keys: list[str], vnodes: int) -> RingResult:
    with redis_servers(4) as urls:
        names = [f"shard-{i + 1}" for i in range(4)]
        with ShardedStore(dict(zip(names[:3], urls[:3], strict=True)), vnodes=vnodes,
                          namespace="redis-cluster-demo:") as store:
            try:
                store.set_many({key: "initial" for key in keys})
                before = list(store.key_counts().values())
                planned = store.ring.copy()
                planned.add_node(names[3])
                predicted = keys_that_move(keys, store.ring, planned)
                migration = store.add_server(names[3], urls[3])
                after = list(store.key_counts().values())
                return RingResult(before, after, predicted, migration.moved_keys, store.ring.total_vnodes)
            finally:
                store.drop_all()


def max_over_mean(counts: list[int]) -> float:
    return max(counts) / (sum(counts) / len(counts))


def print_table(cluster: ClusterResult, ring: RingResult, keys: int, vnodes: int) -> None:
    def pct(count: int) -> str:
        return f"{count:,} ({100 * count / keys:.2f}%)"

    rows = [
        ("keys moved to the 4th node", pct(len(cluster.moved)), pct(len(ring.moved))),
        ("moved = predicted before the move", "yes" if cluster.moved == cluster.predicted else "NO",
         "yes" if ring.moved == ring.predicted else "NO"),
        ("ideal share of the 4th node", "25.00%", "25.00%"),
        ("balance after: max/mean keys per node", f"{max_over_mean(cluster.keys_per_master_after):.3f}",
         f"{max_over_mean(ring.keys_per_server_after):.3f}"),
        ("who decides what moves", f"the operator: {cluster.slots_moved:,} chosen slots",
         "the hash: the arcs before the new points"),
        ("routing state every client keeps", f"a {SLOT_COUNT:,}-entry slot table",
         f"{ring.points:,} ring points ({vnodes} per node)"),
        ("clients during the move", "keep going: MOVED/ASK redirects",
         "must pause writes (single-writer copy)"),
    ]
    print(f"\n| {keys:,} keys, 3 nodes + 1 | Redis Cluster (16,384 slots) | our ring over 4 redis-servers |")
    print("|---|---|---|")
    for label, left, right in rows:
        print(f"| {label} | {left} | {right} |")


def plot(cluster: ClusterResult, ring: RingResult, path) -> None:
    import numpy as np

    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4.5), dpi=100,
                                           gridspec_kw={"width_ratios": [3, 2]})
    times = np.asarray(cluster.op_times)
    if len(times):
        bins = np.arange(0, times.max() + 0.1, 0.1)
        counts, edges = np.histogram(times, bins=bins)
        left.plot(edges[:-1], counts * 10, color="#4C72B0", lw=1.5, label="client SET+GET pairs per second")
    start, end = cluster.reshard_window
    left.axvspan(start, end, color="#DD8452", alpha=0.2,
                 label=f"{cluster.slots_moved:,} slots migrating live")
    left.set_xlabel("seconds")
    left.set_ylabel("operations per second")
    left.set_ylim(0, None)
    left.set_title(f"Live reshard: {cluster.redirects['MOVED']:,} MOVED, {cluster.redirects['ASK']:,} ASK, "
                   f"{cluster.lost_writes} lost, {cluster.wrong_reads} wrong reads", fontsize=10)
    left.legend(fontsize=8, loc="lower left")
    left.grid(True, alpha=0.3)

    width = 0.38
    positions = np.arange(4)
    right.bar(positions - width / 2, cluster.keys_per_master_after, width, color="#4C72B0",
              label="Redis Cluster (slots)")
    right.bar(positions + width / 2, ring.keys_per_server_after, width, color="#55A868",
              label="our ring (160 vnodes)")
    mean = sum(cluster.keys_per_master_after) / 4
    right.axhline(mean, color="black", lw=1, ls="--", label=f"mean {mean:,.0f}")
    right.set_xticks(positions, ["node 1", "node 2", "node 3", "node 4 (new)"])
    right.set_ylabel("keys after the 4th node joined")
    right.set_title("Keys per node after the move", fontsize=10)
    right.legend(fontsize=8, loc="lower left")
    right.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m ConsistentHashing.redis_cluster",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--keys", type=cli.positive_int, default=20_000, help="keys to store")
    parser.add_argument("--slots", type=cli.int_range(1, SLOT_COUNT - 1), default=SLOT_COUNT // 4,
                        help="slots to move to the 4th master (4,096 = its fair quarter)")
    parser.add_argument("--clients", type=cli.int_range(1, 64), default=4,
                        help="client threads writing and reading during the move")
    parser.add_argument("--vnodes", type=cli.positive_int, default=160, help="virtual nodes per ring node")
    parser.add_argument("--out", type=output_dir, default=DEFAULT_OUT, help="folder for the plot")
    parser.add_argument("--no-plot", action="store_true", help="print the figures only, draw no plot")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keys = [f"user:{i}" for i in range(args.keys)]
    print(f"Redis Cluster: 3 masters, {args.keys:,} keys, CRC16(key) mod {SLOT_COUNT:,} slots "
          f"(a private cluster started by this script; REDIS_URL is not used for it)", flush=True)
    cluster = run_cluster(keys, args.slots, args.clients)
    exact = cluster.moved == cluster.predicted
    ok = exact and cluster.lost_writes == 0 and cluster.wrong_reads == 0
    print(f"  moved during the reshard: {len(cluster.moved):,} keys, "
          f"{'exactly the predicted keys' if exact else 'NOT the predicted keys'}")
    print(f"  clients meanwhile: {cluster.writes:,} writes, {cluster.reads:,} reads; redirects sent: "
          f"{cluster.redirects['MOVED']:,} MOVED, {cluster.redirects['ASK']:,} ASK; "
          f"{cluster.lost_writes} writes lost, {cluster.wrong_reads} reads wrong"
          + (f"; errors: {dict(cluster.errors)}" if cluster.errors else ""))
    print(f"  keys per master after: {', '.join(f'{c:,}' for c in cluster.keys_per_master_after)}")

    print(f"\nOur ring over plain redis-servers: the same {args.keys:,} keys on 3, then a 4th joins",
          flush=True)
    ring = run_ring(keys, args.vnodes)
    print(f"  moved: {len(ring.moved):,} keys, "
          f"{'exactly the predicted keys' if ring.moved == ring.predicted else 'NOT the predicted keys'}; "
          f"keys per server after: {', '.join(f'{c:,}' for c in ring.keys_per_server_after)}")
    ok = ok and ring.moved == ring.predicted
    print_table(cluster, ring, args.keys, args.vnodes)
    if not args.no_plot:
        plot(cluster, ring, args.out / PLOT_NAME)
        print(f"\nplot written to {shown(args.out / PLOT_NAME)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
