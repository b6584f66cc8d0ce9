"""The README's experiment, reproducible: how many keys move when shards leave or join?

    python -m ConsistentHashing.simulate          # 1,000 shards, 10,000 keys, 3 vnodes, seed 42

Place `keys` keys on a ring of `shards` shards; remove `remove` random shards (chosen with the
seed); separately, add `add` new shards to the original ring. Print the percentage of keys whose
shard changed next to the ideal (removed/total, added/new total) and next to modulo hashing on
the same shards, and draw the three histograms of keys per shard that the README shows.
Everything is derived from the seed, so the same arguments print the same output every run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from math import exp, lgamma, log
from pathlib import Path

import numpy as np

from common import cli

from .alternatives import ModuloHashing
from .ring import ConsistentHashRing, hash_keys
from .theory import ideal_moved_on_add, ideal_moved_on_remove
from .workload import build_workload, parse_workload_args, pyplot, save_figure, shown, workload_parser

PROGRESS_THRESHOLD = 200_000  # keys; below this the run takes a second and needs no progress


@dataclass(frozen=True)
class Movement:
    moved: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.moved / self.total


def hash_with_progress(keys: list[str], show: bool) -> np.ndarray:
    """Hash keys in 20 chunks, reporting progress on stderr (stdout stays identical across runs)."""
    if not show:
        return hash_keys(keys)
    chunk = max(1, len(keys) // 20)
    starts = range(0, len(keys), chunk)
    parts = [hash_keys(keys[start:start + chunk])
             for start in cli.progress(starts, total=len(starts), label="hashing key chunks")]
    return np.concatenate(parts)


def moved(before: np.ndarray, after: np.ndarray) -> Movement:
    return Movement(int(np.count_nonzero(before != after)), len(before))


def loads(assignment: np.ndarray, shards: list[str]) -> np.ndarray:
    """Keys per shard, including shards that received none."""
    index = {name: i for i, name in enumerate(shards)}
    counts = np.zeros(len(shards), dtype=np.int64)
    for name, count in zip(*np.unique(assignment, return_counts=True), strict=True):
        counts[index[name]] = count
    return counts


def describe(counts: np.ndarray) -> str:
    mean = counts.mean()
    return (f"mean {mean:.1f}, std {counts.std():.1f} ({counts.std() / mean:.2f} x mean), "
            f"min {counts.min()}, max {counts.max()} ({counts.max() / mean:.2f} x mean), "
            f"empty shards {int(np.count_nonzero(counts == 0))}")


def plot_histogram(counts: np.ndarray, title: str, path: Path, vnodes: int) -> None:
    plt = pyplot()
    mean = counts.mean()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    bins = np.arange(0, counts.max() + 2) - 0.5
    ax.hist(counts, bins=bins, color="#4C72B0", alpha=0.8,
            label=f"ring, {vnodes} virtual node{'s' if vnodes != 1 else ''} per shard")
    # Even a perfectly uniform random placement spreads keys: Poisson(mean) per shard. What the
    # ring adds on top of that comes from unequal arc lengths (fewer vnodes, wider spread).
    xs = np.arange(0, counts.max() + 1)
    poisson = [len(counts) * exp(k * log(mean) - mean - lgamma(k + 1)) for k in xs]
    ax.plot(xs, poisson, color="#DD8452", lw=2, label=f"ideal random placement (Poisson, mean {mean:.1f})")
    ax.axvline(mean, color="black", ls="--", lw=1, label=f"mean {mean:.1f}")
    ax.set_title(title)
    ax.set_xlabel("keys on a shard")
    ax.set_ylabel("number of shards")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def parse_args(argv: list[str] | None):
    parser = workload_parser("python -m ConsistentHashing.simulate", __doc__.split("\n\n")[0],
                             shards=1000, keys=10_000, plot_help="PNG histograms")
    parser.add_argument("--vnodes", type=cli.positive_int, default=3, help="virtual nodes per shard")
    return parse_workload_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = build_workload(args, prefix="shard")
    keys, shards, removed, added = work.keys, work.nodes, work.removed, work.added
    remaining = work.remaining

    print(f"Consistent hashing experiment: {args.shards:,} shards, {args.keys:,} keys, "
          f"{args.vnodes} virtual node{'s' if args.vnodes != 1 else ''} per shard, seed {args.seed}")
    show = args.keys >= PROGRESS_THRESHOLD
    positions = hash_with_progress(keys, show)
    if show:
        print("  building rings and assigning keys ...", file=sys.stderr, flush=True)

    initial = ConsistentHashRing(shards, vnodes=args.vnodes).assign_hashes(positions)
    after_remove = ConsistentHashRing(remaining, vnodes=args.vnodes).assign_hashes(positions)
    after_add = ConsistentHashRing(shards + added, vnodes=args.vnodes).assign_hashes(positions)

    modulo = ModuloHashing(shards)
    modulo_initial = modulo.assign_hashes(positions)
    for shard in removed:
        modulo.remove_node(shard)
    modulo_after_remove = modulo.assign_hashes(positions)
    modulo_after_add = ModuloHashing(shards + added).assign_hashes(positions)

    ring_remove, ring_add = moved(initial, after_remove), moved(initial, after_add)
    mod_remove, mod_add = moved(modulo_initial, modulo_after_remove), moved(modulo_initial, modulo_after_add)
    ideal_remove = 100 * ideal_moved_on_remove(args.shards, args.remove)
    ideal_add = 100 * ideal_moved_on_add(args.shards, args.add)

    rows = [
        (f"remove {args.remove} of {args.shards:,} shards", ring_remove, ideal_remove, mod_remove),
        (f"add {args.add} to {args.shards:,} shards", ring_add, ideal_add, mod_add),
    ]
    print(f"\n{'keys moved':<28} {'ring':>16} {'ideal':>8} {'modulo':>16}")
    for label, ring_moved, ideal, mod_moved in rows:
        print(f"{label:<28} {ring_moved.percent:>6.2f}% ({ring_moved.moved:>6,}) {ideal:>7.2f}% "
              f"{mod_moved.percent:>6.2f}% ({mod_moved.moved:>6,})")

    # Monotonicity, checked on the data rather than assumed: removal moves only the removed
    # shards' keys; addition moves keys only onto the new shards.
    changed = initial != after_remove
    only_removed = bool(np.isin(initial[changed], removed).all()) and not np.isin(after_remove, removed).any()
    only_new = bool(np.isin(after_add[initial != after_add], added).all())
    print(f"\nonly keys of removed shards moved: {'yes' if only_removed else 'NO'}; "
          f"keys moved only onto new shards: {'yes' if only_new else 'NO'}")

    distributions = [
        (f"initial_distribution_of_{args.keys}_keys_across_{args.shards}_shards.png",
         f"Initial distribution of {args.keys:,} keys across {args.shards:,} shards",
         loads(initial, shards)),
        (f"distribution_after_removing_{args.remove}_shards.png",
         f"Distribution after removing {args.remove} shards ({len(remaining):,} left)",
         loads(after_remove, remaining)),
        (f"distribution_after_adding_{args.add}_new_shards.png",
         f"Distribution after adding {args.add} new shards ({args.shards + args.add:,} in all)",
         loads(after_add, shards + added)),
    ]
    print("\nkeys per shard:")
    for _, title, counts in distributions:
        print(f"  {title.split(' (')[0].lower()}: {describe(counts)}")
    if not args.no_plot:
        for filename, title, counts in distributions:
            plot_histogram(counts, f"{title}\n{args.vnodes} virtual nodes per shard, seed {args.seed}",
                           args.out / filename, args.vnodes)
        written = ", ".join(filename for filename, _, _ in distributions)
        print(f"\nhistograms written to {shown(args.out)}/: {written}")
    return 0 if only_removed and only_new else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
