"""Lookup speed of our ring against uhashring (a ketama-compatible ring from PyPI), same run.

    python -m ConsistentHashing.bench             # 1,000 nodes x 160 vnodes, 100,000 keys, 7 rounds

Both rings get the same 1,000 node names (160 virtual nodes each, uhashring's default) and look
up the same 100,000 keys. Rounds are interleaved (ours, peer, peer, ours, ...) so background load
hits both alike; we time CPU seconds of this process (time.process_time), report the median of
the rounds and the ratio ours/peer (higher = ours faster).
uhashring has no bulk API, so the bulk rows compare our NumPy `assign` against its per-key loop.

A membership change (one node joins or leaves) is timed too: we splice 160 points into the
sorted array in one pass of memory copies; uhashring rebuilds its ring.

Why ours is faster on single keys: an 8-byte BLAKE2b digest turned into an int with
int.from_bytes (uhashring parses a 32-hex-digit MD5 string), bisect over a sorted array of
64-bit positions narrowed by a 2**16-slice index to a couple of candidates (uhashring: ~17
comparisons of 128-bit ints), and the owner read from a parallel list with a wrap-around
sentinel (uhashring: a dict lookup behind two method calls). The row "ours, MD5 positions" uses
MD5 like uhashring, to show how much of the gap is the hash function; the Maglev row is a
different scheme (alternatives.py) on the same keys: one table index per lookup.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from hashlib import md5
from importlib.metadata import version

import numpy as np

from common import cli

from .alternatives import MaglevHashing
from .ring import ConsistentHashRing, hash_keys


def md5_64(data: bytes) -> int:
    """The first 8 bytes of MD5, big-endian: a 64-bit position from uhashring's hash function."""
    return int.from_bytes(md5(data).digest()[:8], "big")


# CPU time of this process, not wall-clock time: on a machine shared with other jobs, wall time
# also counts the moments we were not running at all. (Both sides are measured the same way.)
clock = time.process_time


def time_loop(lookup: Callable[[str], object], keys: list[str]) -> float:
    started = clock()
    for key in keys:
        lookup(key)
    return clock() - started


def time_call(call: Callable[[], object]) -> float:
    started = clock()
    call()
    return clock() - started


def interleaved(contestants: dict[str, Callable[[], float]], rounds: int,
                label: str = "rounds") -> dict[str, float]:
    """Median seconds per contestant; each round runs all of them, in a rotating order."""
    names = list(contestants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_no in cli.progress(range(rounds), label=label):
        order = names[round_no % len(names):] + names[:round_no % len(names)]
        if round_no % 2:
            order.reverse()
        for name in order:
            samples[name].append(contestants[name]())
    return {name: statistics.median(times) for name, times in samples.items()}


def time_membership(rings: dict, rounds: int) -> dict[str, float]:
    """Median seconds for one node to join, then leave, each ring; rings alternate within a round."""
    samples: dict[str, list[float]] = {}
    for round_no in cli.progress(range(rounds), label="membership rounds"):
        names = list(rings) if round_no % 2 == 0 else list(reversed(rings))
        for name in names:
            ring = rings[name]
            samples.setdefault(f"{name}_add", []).append(time_call(lambda: ring.add_node("joiner")))  # noqa: B023
            samples.setdefault(f"{name}_remove", []).append(time_call(lambda: ring.remove_node("joiner")))  # noqa: B023
    return {name: statistics.median(times) for name, times in samples.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m ConsistentHashing.bench",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--nodes", type=cli.positive_int, default=1000, help="nodes on both rings")
    parser.add_argument("--keys", type=cli.positive_int, default=100_000, help="keys looked up per round")
    parser.add_argument("--vnodes", type=cli.positive_int, default=160,
                        help="virtual nodes per node (uhashring default)")
    parser.add_argument("--rounds", type=cli.int_range(5), default=7,
                        help="interleaved rounds (median reported)")
    parser.add_argument("--seed", type=int, default=42, help="seed for the key names")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from uhashring import HashRing
    except ImportError:
        raise cli.UsageError("the peer library uhashring is not installed: "
                             "pip install -r requirements-dev.txt") from None
    rng = random.Random(args.seed)
    nodes = [f"node-{i:04d}" for i in range(args.nodes)]
    keys = [f"key-{rng.getrandbits(64):016x}" for _ in range(args.keys)]

    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"numpy {np.__version__}, uhashring {version('uhashring')}")
    print(f"{args.nodes:,} nodes x {args.vnodes} vnodes, {args.keys:,} keys, median of {args.rounds} "
          f"interleaved rounds", flush=True)

    build = interleaved({
        "ours": lambda: time_call(lambda: ConsistentHashRing(nodes, vnodes=args.vnodes)),
        "peer": lambda: time_call(lambda: HashRing(nodes=nodes, vnodes=args.vnodes)),
    }, rounds=5, label="build rounds")
    ours = ConsistentHashRing(nodes, vnodes=args.vnodes)
    ours_md5 = ConsistentHashRing(nodes, vnodes=args.vnodes, hash_fn=md5_64)
    maglev = MaglevHashing(nodes)  # not a ring: Maglev's lookup table, for its lookups/s
    peer = HashRing(nodes=nodes, vnodes=args.vnodes)
    if peer.size != ours.total_vnodes:
        raise SystemExit(f"the rings differ in size ({peer.size} vs {ours.total_vnodes} points)")
    names = set(nodes)
    if not all(ours.get_node(k) in names and peer.get_node(k) in names for k in keys[:1000]):
        raise SystemExit("a lookup returned something that is not a node name")

    positions = hash_keys(keys)
    single = interleaved({
        "ours": lambda: time_loop(ours.get_node, keys),
        "ours_md5": lambda: time_loop(ours_md5.get_node, keys),
        "maglev": lambda: time_loop(maglev.get_node, keys),
        "peer": lambda: time_loop(peer.get_node, keys),
    }, rounds=args.rounds, label="lookup rounds")
    bulk = interleaved({
        "assign": lambda: time_call(lambda: ours.assign(keys)),
        "assign_hashes": lambda: time_call(lambda: ours.assign_indices(positions)),
    }, rounds=args.rounds, label="bulk rounds")

    membership = time_membership({"ours": ours, "peer": peer}, rounds=5)

    def rate(seconds: float, count: int = args.keys) -> float:
        return count / seconds

    # (label, ours, peer, unit): rates are per second (higher is better), times are milliseconds
    # (lower is better); the last column is always the speed-up, how many times faster ours is.
    rows = [
        ("single-key get_node", rate(single["ours"]), rate(single["peer"]), "lookups/s"),
        ("  ours, MD5 positions like uhashring", rate(single["ours_md5"]), rate(single["peer"]),
         "lookups/s"),
        (f"  Maglev, table of {maglev.table_size:,} (not a ring)", rate(single["maglev"]),
         rate(single["peer"]), "lookups/s"),
        ("bulk assign(keys): hash + searchsorted", rate(bulk["assign"]), rate(single["peer"]), "keys/s"),
        ("bulk, pre-hashed keys: searchsorted only", rate(bulk["assign_hashes"]), rate(single["peer"]),
         "keys/s"),
        ("build the ring", 1e3 * build["ours"], 1e3 * build["peer"], "ms"),
        (f"add one node to {args.nodes:,}", 1e3 * membership["ours_add"], 1e3 * membership["peer_add"], "ms"),
        (f"remove one node of {args.nodes + 1:,}", 1e3 * membership["ours_remove"],
         1e3 * membership["peer_remove"], "ms"),
    ]
    print("\n| operation | ours | uhashring | speed-up (ours vs peer) |")
    print("|---|---:|---:|---:|")
    for label, ours_value, peer_value, unit in rows:
        speedup = peer_value / ours_value if unit == "ms" else ours_value / peer_value
        digits = 0 if ours_value >= 100 else 2
        print(f"| {label} ({unit}) | {ours_value:,.{digits}f} | {peer_value:,.{digits}f} | {speedup:.2f}x |")
    print("\n(uhashring has no bulk API: its bulk column is its single-key loop.)")
    worst_change = max(membership["ours_add"], membership["ours_remove"]) * 1e3
    print(f"targets: single-key lookups >= 2.0x uhashring: {rows[0][1] / rows[0][2]:.2f}x; "
          f"a membership change <= 5 ms: {worst_change:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
