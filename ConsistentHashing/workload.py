"""What the experiment scripts share: the workload's flags, the seeded workload, and saving figures.

`simulate` and `compare` run the same experiment on different placements: N nodes, K random keys,
then remove R random nodes or add A new ones. Both take the same flags, derive everything from
one seed, and write their plots to a folder (out/ConsistentHashing/ by default; `make figures`
passes ConsistentHashing/images/). Defining these once keeps the two scripts' flags identical
(one `--no-plot`, one meaning for `--out`) and the paths checked before any work starts.
"""

from __future__ import annotations

import argparse
import os
import random
from dataclasses import dataclass
from pathlib import Path

from common import cli

CONCEPT = "ConsistentHashing"
DEFAULT_OUT = cli.OUT_DIR / CONCEPT  # out/ConsistentHashing/, git-ignored


@dataclass(frozen=True)
class Workload:
    """The seeded experiment: keys, the initial nodes, which of them leave, which new ones join."""

    keys: list[str]
    nodes: list[str]
    removed: list[str]
    added: list[str]

    @property
    def remaining(self) -> list[str]:
        gone = set(self.removed)
        return [node for node in self.nodes if node not in gone]


def make_keys(count: int, rng: random.Random) -> list[str]:
    """Random key names (like real traffic), reproducible from the seed."""
    return [f"key-{rng.getrandbits(64):016x}" for _ in range(count)]


def node_names(prefix: str, start: int, count: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(start, start + count)]


def build_workload(args: argparse.Namespace, prefix: str) -> Workload:
    """Keys first, then the removed nodes, from one seeded generator: same arguments, same run."""
    rng = random.Random(args.seed)
    keys = make_keys(args.keys, rng)
    nodes = node_names(prefix, 0, args.shards)
    removed = sorted(rng.sample(nodes, args.remove))
    return Workload(keys, nodes, removed, node_names(prefix, args.shards, args.add))


def output_dir(text: str) -> Path:
    """An argparse type: a folder for output files that exists or can be created, and is writable.

    Checked while parsing, so `--out /etc/passwd/x` fails in a millisecond, not after the run.
    """
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder, got {text!r} (it is a file)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder that can be created, got {text!r} "
                                         f"({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"expected a folder you can write, got {text!r} "
                                         f"({existing} is not writable)")
    return path


def workload_parser(prog: str, description: str, *, shards: int, keys: int, min_shards: int = 1,
                    plot_help: str = "plots") -> cli.ArgumentParser:
    """A parser with the experiment's flags; the script adds its own on top."""
    parser = cli.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--shards", type=cli.int_range(min_shards), default=shards,
                        help="nodes on the initial ring")
    parser.add_argument("--keys", type=cli.positive_int, default=keys, help="keys to place")
    parser.add_argument("--remove", type=cli.non_negative_int, default=50,
                        help="random nodes to remove (fewer than --shards)")
    parser.add_argument("--add", type=cli.non_negative_int, default=50,
                        help="new nodes to add to the initial ring")
    parser.add_argument("--seed", type=int, default=42, help="seed for key names and removed nodes")
    parser.add_argument("--out", type=output_dir, default=DEFAULT_OUT,
                        help=f"folder for the {plot_help} (created if needed)")
    parser.add_argument("--no-plot", action="store_true", help=f"print the figures only, draw no {plot_help}")
    return parser


def parse_workload_args(parser: cli.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.remove >= args.shards:
        parser.error(f"--remove: expected a whole number from 0 to {args.shards - 1} "
                     f"(some node must remain), got '{args.remove}'")
    return args


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Write a PNG without the matplotlib version in its metadata, so a re-run changes no byte."""
    cli.ensure_parent(path)
    fig.savefig(path, metadata={"Software": None})
    pyplot().close(fig)


def shown(path: Path) -> str:
    """A path as the user should read it: relative to where they are, when that is shorter."""
    relative = os.path.relpath(path)
    return relative if len(relative) < len(str(path)) else str(path)
