"""The ring against its rivals on one workload: balance, movement, lookup cost, memory.

    python -m ConsistentHashing.compare            # 1,000 nodes, 100,000 keys, seed 42

Rows: the ring with 1, 3, 10, 100, 160 and 500 virtual nodes, rendezvous hashing, jump hash,
Maglev (M = 65,537), consistent hashing with bounded loads (c = 1.25 on a 160-vnode ring) and
modulo hashing. Columns:
std-dev/mean and max/mean of keys per node; % of keys moved when `remove` random nodes leave and
when `add` nodes join, next to the ideal; single-key lookup time; memory of the structure. It also
plots max/mean load against vnodes (with the theory's curves), and measures Maglev's disruption
against its table size; plots go to out/ConsistentHashing/.
Balance and movement are deterministic for a seed; times are measurements and vary.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import cli

from .alternatives import (
    MAGLEV_TABLE_SIZE,
    BoundedLoadsRing,
    JumpHashing,
    MaglevHashing,
    ModuloHashing,
    RendezvousHashing,
)
from .ring import ConsistentHashRing, hash_keys
from .theory import (
    ideal_moved_on_add,
    ideal_moved_on_remove,
    load_relative_std,
    max_load_bound,
    typical_max_load,
)
from .workload import build_workload, parse_workload_args, pyplot, save_figure, shown, workload_parser

RING_VNODES = (1, 3, 10, 100, 160, 500)
PLOT_NAME = "max_load_vs_vnodes.png"
MAGLEV_PLOT_NAME = "maglev_disruption.png"
# Maglev's disruption against its table size: primes from ~2 to ~650 slots per backend.
MAGLEV_BACKENDS = 100
MAGLEV_SIZES = (211, 503, 1009, 2003, 5003, 10007, 20011, 65537)


@dataclass(frozen=True)
class Scheme:
    label: str
    build: Callable[[list[str]], object]
    # Modulo and jump depend on the order of membership changes (list positions, bucket numbers),
    # so their removals and additions are applied one by one to the same instance. The ring,
    # rendezvous and bounded loads are functions of the member set (bounded loads: and of the key
    # arrival order), so the changed structure is built afresh, which is equal and faster.
    order_matters: bool = False
    lookup_sample: int = 20_000
    vnodes: int | None = None
    stateful: bool = False  # bounded loads: its state is the placement of the keys it has seen


@dataclass
class Row:
    label: str
    std_over_mean: float
    max_over_mean: float
    moved_remove: float
    moved_add: float
    lookup_ns: float
    memory_bytes: int
    vnodes: int | None


def schemes() -> list[Scheme]:
    rings = [Scheme(f"ring, {v} vnode{'s' if v > 1 else ''}",
                    lambda nodes, v=v: ConsistentHashRing(nodes, vnodes=v), vnodes=v)
             for v in RING_VNODES]
    return rings + [
        Scheme("rendezvous (HRW)", RendezvousHashing, lookup_sample=300),
        Scheme("jump hash", JumpHashing, order_matters=True),
        Scheme(f"maglev M={MAGLEV_TABLE_SIZE:,}", MaglevHashing),
        Scheme("bounded loads c=1.25", lambda nodes: BoundedLoadsRing(nodes, c=1.25, vnodes=160),
               stateful=True),
        Scheme("modulo", ModuloHashing, order_matters=True),
    ]


def assign(placement, keys: list[str], positions: np.ndarray) -> np.ndarray:
    if isinstance(placement, BoundedLoadsRing):
        return placement.assign(keys)  # stateful: places keys in arrival order
    return placement.assign_hashes(positions)


def load_stats(owners: np.ndarray, node_count: int) -> tuple[float, float]:
    counts = np.unique(owners, return_counts=True)[1].astype(float)
    counts = np.concatenate([counts, np.zeros(node_count - len(counts))])  # nodes with no key
    return counts.std() / counts.mean(), counts.max() / counts.mean()


def measure_memory(build: Callable[[], object]) -> tuple[object, int]:
    """Bytes the built structure still holds (tracemalloc: Python objects and NumPy buffers)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        return built, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def lookup_ns(placement, keys: list[str]) -> float:
    """Median over 5 timed passes of get_node on `keys`, in ns per key."""
    get = placement.get_node
    times = []
    for _ in range(5):
        started = time.perf_counter()
        for key in keys:
            get(key)
        times.append(time.perf_counter() - started)
    return 1e9 * float(np.median(times)) / len(keys)


def measure(scheme: Scheme, nodes: list[str], removed: list[str], added: list[str],
            keys: list[str], positions: np.ndarray) -> Row:
    if scheme.stateful:
        # its state is the placement table, so count it: build and place the keys
        def build_and_place():
            built = scheme.build(nodes)
            built.assign(keys)
            return built
        placement, memory = measure_memory(build_and_place)
    else:
        placement, memory = measure_memory(lambda: scheme.build(nodes))
    before = assign(placement, keys, positions)
    std_mean, max_mean = load_stats(before, len(nodes))

    if scheme.order_matters:
        shrunk = scheme.build(nodes)
        for node in removed:
            shrunk.remove_node(node)
        grown = scheme.build(nodes)
        for node in added:
            grown.add_node(node)
    else:
        gone = set(removed)
        shrunk = scheme.build([n for n in nodes if n not in gone])
        grown = scheme.build(nodes + added)
    moved_remove = float(np.mean(before != assign(shrunk, keys, positions)))
    moved_add = float(np.mean(before != assign(grown, keys, positions)))

    if isinstance(placement, BoundedLoadsRing):
        fresh = scheme.build(nodes)  # a lookup of a new key is a placement: time those
        sample = keys[:scheme.lookup_sample]
        started = time.perf_counter()
        fresh.assign(sample)
        ns = 1e9 * (time.perf_counter() - started) / len(sample)
    else:
        ns = lookup_ns(placement, keys[:scheme.lookup_sample])
    return Row(scheme.label, std_mean, max_mean, 100 * moved_remove, 100 * moved_add, ns, memory,
               scheme.vnodes)


def human_bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def print_table(rows: list[Row], ideal_remove: float, ideal_add: float, args) -> None:
    per_node = args.keys / args.shards
    print(f"\n| scheme | std/mean (model) | max/mean (model) | moved on remove {args.remove} "
          f"(ideal {ideal_remove:.2f}%) | moved on add {args.add} (ideal {ideal_add:.2f}%) "
          f"| lookup ns/key | memory |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        std_model = max_model = ""
        if row.vnodes is not None:
            std_model = f" ({load_relative_std(row.vnodes, per_node):.3f})"
            max_model = f" ({typical_max_load(args.shards, row.vnodes, per_node):.2f})"
        print(f"| {row.label} | {row.std_over_mean:.3f}{std_model} | {row.max_over_mean:.2f}{max_model} | "
              f"{row.moved_remove:.2f}% | {row.moved_add:.2f}% | {row.lookup_ns:,.0f} | "
              f"{human_bytes(row.memory_bytes)} |")


def plot(rows: list[Row], args, path: Path) -> None:
    """Two panels: the ring's max/mean against vnodes (with the theory), and every scheme's max/mean.

    Plain tick labels (1.25, 1.5, 2 ...) rather than matplotlib's 2x10^0 on log axes, and the rivals
    as labelled bars rather than near-identical horizontal lines that hide one another.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    per_node = args.keys / args.shards
    ring_rows = [r for r in rows if r.vnodes is not None]
    vnodes = [r.vnodes for r in ring_rows]
    grid = np.unique(np.geomspace(1, max(vnodes), 60).round().astype(int))
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 5), dpi=100,
                                      gridspec_kw={"width_ratios": [3, 2]})

    left.plot(grid, [max_load_bound(args.shards, int(v), per_node) for v in grid], "--", color="#999999",
              lw=1.5, label="bound: exceeded with probability <= 1e-6")
    left.plot(grid, [typical_max_load(args.shards, int(v), per_node) for v in grid], "-", color="#DD8452",
              lw=2, label="typical max/mean (random-hash model)")
    left.plot(vnodes, [r.max_over_mean for r in ring_rows], "o", color="#4C72B0", ms=8,
              label="measured on the ring")
    random_level = next((r.max_over_mean for r in rows if r.label == "modulo"), None)
    if random_level is not None:
        left.axhline(random_level, color="#55A868", lw=1.5, ls=":",
                     label=f"random placement (modulo): {random_level:.2f}")
    left.set_xscale("log")
    left.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    left.xaxis.set_major_locator(FixedLocator(vnodes))
    left.xaxis.set_major_formatter(plain)
    left.xaxis.set_minor_locator(NullLocator())
    left.yaxis.set_major_locator(FixedLocator([1, 1.25, 1.5, 2, 3, 5, 10, 20, 30]))
    left.yaxis.set_major_formatter(plain)
    left.yaxis.set_minor_locator(NullLocator())
    left.set_ylim(1, None)
    left.set_xlabel("virtual nodes per node")
    left.set_ylabel("max load / mean load (keys per node)")
    left.set_title("The ring: more virtual nodes, flatter load")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8, loc="upper right")

    bars = [r for r in rows if r.vnodes is None] + [r for r in ring_rows if r.vnodes == 160]
    bars.sort(key=lambda r: r.max_over_mean)
    labels = [r.label for r in bars]
    values = [r.max_over_mean for r in bars]
    colors = ["#4C72B0" if r.vnodes is not None else "#8172B2" for r in bars]
    right.barh(labels, [v - 1 for v in values], left=1, color=colors, height=0.6)
    for y, value in enumerate(values):
        right.text(value + 0.01, y, f"{value:.2f}", va="center", fontsize=9)
    right.set_xlim(1, max(values) + 0.15)
    right.set_xlabel("max load / mean load")
    right.set_title("Every scheme, same keys")
    right.grid(True, axis="x", alpha=0.3)

    fig.suptitle(f"Max/mean load: {args.shards:,} nodes, {args.keys:,} keys ({per_node:g} per node), "
                 f"seed {args.seed}")
    fig.tight_layout()
    save_figure(fig, path)


@dataclass
class Disruption:
    table_size: int
    changed: float   # fraction of table slots whose owner changed when one backend left
    minimum: float   # the leaver's own share: what had to change


def maglev_disruption(backends: int = MAGLEV_BACKENDS, sizes=MAGLEV_SIZES,
                      leavers: int = 3) -> list[Disruption]:
    """For each table size: remove one backend of `backends` (averaged over a few), count changed slots."""
    names = [f"backend-{i:03d}" for i in range(backends)]
    rows = []
    for size in cli.progress(sizes, label="maglev table sizes"):
        before = MaglevHashing(names, table_size=size).table()
        changed = minimum = 0
        for leaver in names[::backends // leavers][:leavers]:
            after = MaglevHashing([n for n in names if n != leaver], table_size=size).table()
            changed += sum(old != new for old, new in zip(before, after, strict=True))
            minimum += before.count(leaver)
        rows.append(Disruption(size, changed / (leavers * size), minimum / (leavers * size)))
    return rows


def print_disruption(rows: list[Disruption]) -> None:
    print(f"\nMaglev: slots that change owner when 1 of {MAGLEV_BACKENDS} backends leaves "
          f"(mean of 3 leavers; the minimum is the leaver's own share)")
    print("| table size M | M / N | changed | minimum | changed / minimum |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row.table_size:,} | {row.table_size / MAGLEV_BACKENDS:,.0f} | {100 * row.changed:.2f}% | "
              f"{100 * row.minimum:.2f}% | {row.changed / row.minimum:.2f}x |")


def plot_disruption(rows: list[Disruption], path: Path) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig, ax = pyplot().subplots(figsize=(8, 4.5), dpi=100)
    ratio = [r.table_size / MAGLEV_BACKENDS for r in rows]
    ax.plot(ratio, [100 * r.changed for r in rows], "o-", color="#C44E52", lw=2,
            label="Maglev: slots that changed owner")
    ax.plot(ratio, [100 * r.minimum for r in rows], "--", color="#4C72B0", lw=1.5,
            label="minimum: the leaver's own slots (a ring or rendezvous moves only these)")
    ax.axvline(100, color="#999999", lw=1, ls=":", label="M = 100 N (the paper's choice: shares within 1%)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([2, 5, 10, 20, 50, 100, 200, 650]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(0, None)
    ax.set_xlabel(f"table slots per backend (M / N, N = {MAGLEV_BACKENDS})")
    ax.set_ylabel("% of table slots that change owner")
    ax.set_title(f"Maglev: one of {MAGLEV_BACKENDS} backends leaves; a bigger table disrupts less")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def parse_args(argv: list[str] | None):
    parser = workload_parser("python -m ConsistentHashing.compare", __doc__.split("\n\n")[0],
                             shards=1000, keys=100_000, min_shards=2, plot_help="plot")
    return parse_workload_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = build_workload(args, prefix="node")
    keys, nodes, removed, added = work.keys, work.nodes, work.removed, work.added
    positions = hash_keys(keys)
    print(f"Comparing placement schemes: {args.shards:,} nodes, {args.keys:,} keys, remove {args.remove}, "
          f"add {args.add}, seed {args.seed}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs; times are single-key get_node "
          f"(median of 5 passes; bounded loads: placing a new key)")
    rows = [measure(scheme, nodes, removed, added, keys, positions)
            for scheme in cli.progress(schemes(), label="schemes measured")]
    ideal_remove = 100 * ideal_moved_on_remove(args.shards, args.remove)
    ideal_add = 100 * ideal_moved_on_add(args.shards, args.add)
    print_table(rows, ideal_remove, ideal_add, args)
    print("\n(model) = the random-hash model for the ring (theory.py): std/mean = sqrt(1/v + n/m); "
          "max/mean = mean of 20 sampled maxima")
    disruption = maglev_disruption()
    print_disruption(disruption)
    if not args.no_plot:
        plot(rows, args, args.out / PLOT_NAME)
        plot_disruption(disruption, args.out / MAGLEV_PLOT_NAME)
        print(f"\nplots written to {shown(args.out)}/: {PLOT_NAME}, {MAGLEV_PLOT_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
