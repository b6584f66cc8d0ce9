"""The headline demo: 10,000 keys on 5 real redis-servers, then add a 6th and remove one.

    python -m ConsistentHashing.demo

For each change it prints how many keys the ring predicts will move (computed from the two rings
alone), how many the store actually moved (SCAN + DUMP/RESTORE), what modulo hashing would have
moved, and checks that every key still reads back from its new owner. The last line is the
one-line result the tour shows.
"""

from __future__ import annotations

import argparse
import os
import sys

from common import cli, redis_servers

from .alternatives import ModuloHashing
from .ring import key_bytes
from .sharded_store import ShardedStore, keys_that_move


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m ConsistentHashing.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--keys", type=cli.positive_int, default=10_000, help="keys to load")
    parser.add_argument("--servers", type=cli.int_range(2), default=5,
                        help="redis-servers to start with (one is removed later)")
    parser.add_argument("--vnodes", type=cli.positive_int, default=160, help="virtual nodes per server")
    return parser.parse_args(argv)


def counts_line(store: ShardedStore) -> str:
    return "  ".join(f"{name}={count:,}" for name, count in store.key_counts().items())


def modulo_moves(keys: list[str], before: list[str], after: list[str]) -> int:
    old, new = ModuloHashing(before), ModuloHashing(after)
    return sum(old.get_node(k) != new.get_node(k) for k in keys)


def everything_reads_back(store: ShardedStore, expected: dict[str, str]) -> bool:
    found = store.get_many(expected)
    return all(found[key_bytes(k)] == v.encode() for k, v in expected.items())


def change(store: ShardedStore, label: str, keys: list[str], apply, planned) -> tuple[int, int, bool]:
    """Predict, apply, and report one membership change. Returns (predicted, moved, same set)."""
    before_nodes = store.ring.nodes
    predicted = keys_that_move(keys, store.ring, planned)
    migration = apply()
    mod = modulo_moves(keys, before_nodes, store.ring.nodes)
    same = migration.moved_keys == predicted
    print(f"\n{label}")
    print(f"  predicted from the rings : {len(predicted):>6,} keys ({100 * len(predicted) / len(keys):.1f}%)")
    print(f"  actually moved (SCAN)    : {migration.moved:>6,} keys in {migration.seconds:.2f}s, "
          f"{'exactly the predicted keys' if same else 'NOT the predicted keys'}")
    routes = ", ".join(f"{src}->{dst}: {n:,}" for (src, dst), n in sorted(migration.routes.items()))
    print(f"  routes                   : {routes or 'none'}")
    print(f"  modulo hashing would move: {mod:>6,} keys ({100 * mod / len(keys):.1f}%)")
    print(f"  keys per server          : {counts_line(store)}")
    return len(predicted), migration.moved, same


def run_changes(store: ShardedStore, keys: list[str], values: dict[str, str], names: list[str],
                urls: list[str]) -> tuple[bool, int, int, int, int]:
    """Load the keys, add the last server, remove the second one; print every step.

    Returns (all checks passed, moved on add, predicted on add, moved on remove, predicted on remove).
    """
    store.set_many(values)
    print(f"\nloaded {len(keys):,} keys onto {len(store.ring)} servers "
          f"({store.ring.vnodes} virtual nodes each)")
    print(f"  keys per server          : {counts_line(store)}")

    newcomer, leaver = names[-1], names[1]
    planned = store.ring.copy()
    planned.add_node(newcomer)
    add_predicted, add_moved, add_same = change(
        store, f"add {newcomer} (ideal: 1/{len(planned)} of the keys move, {len(keys) / len(planned):,.0f})",
        keys, lambda: store.add_server(newcomer, urls[-1]), planned)
    add_ok = everything_reads_back(store, values)
    print(f"  every key reads back     : {'yes' if add_ok else 'NO'}")

    planned = store.ring.copy()
    planned.remove_node(leaver)
    share = store.key_counts()[leaver]
    remove_predicted, remove_moved, remove_same = change(
        store, f"remove {leaver} (ideal: exactly its {share:,} keys move)",
        keys, lambda: store.remove_server(leaver), planned)
    remove_ok = everything_reads_back(store, values)
    total = sum(store.key_counts().values())
    print(f"  every key reads back     : {'yes' if remove_ok else 'NO'}; "
          f"{total:,} keys stored in all (no copies left behind)")
    ok = add_ok and remove_ok and add_same and remove_same and total == len(keys)
    return ok, add_moved, add_predicted, remove_moved, remove_predicted


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keys = [f"user:{i}" for i in range(args.keys)]
    values = {k: f"profile-of-{k}" for k in keys}
    print(f"starting {args.servers + 1} redis-servers ({args.servers} shards + 1 to add later) ...")
    with redis_servers(args.servers + 1) as urls:
        names = [f"redis-{i + 1}" for i in range(len(urls))]
        for name, url in zip(names, urls, strict=True):
            print(f"  {name}: {url}")
        # A namespace of our own: with REDIS_URL set these are databases of a shared server, and
        # the migrations must touch (and the clean-up delete) nothing but the demo's keys.
        namespace = f"consistent-hashing-demo:{os.getpid()}:"
        with ShardedStore(dict(zip(names[:-1], urls[:-1], strict=True)), vnodes=args.vnodes,
                          namespace=namespace) as store:
            try:
                ok, add_moved, add_predicted, remove_moved, remove_predicted = run_changes(
                    store, keys, values, names, urls)
                servers_now = len(store.ring)
            finally:
                store.drop_all()

    print(f"\nresult: {len(keys):,} keys on {args.servers} redis-servers; adding a server moved "
          f"{add_moved:,} (predicted {add_predicted:,}), removing one moved {remove_moved:,} "
          f"(predicted {remove_predicted:,}); {'all keys read back' if ok else 'CHECK FAILED'} "
          f"from {servers_now} servers")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
