"""Lamport diagrams of real 2PC runs: a presumed-abort commit, a presumed-abort abort, and a partition.

    python -m TwoPhaseCommit.diagrams [--out-dir out/TwoPhaseCommit]

Each run is a real cluster with `--trace` on every process (common/trace.py); the diagram draws every
message from its send to its receipt, local events (forced and lazy log writes), timeouts and lost
messages. Written as PNG files into --out-dir (`make figures` passes TwoPhaseCommit/images):

    pa-commit.png            prepare x2 at once, two yes votes, the forced commit record, commit + ack
                             from each, the lazy end record
    pa-abort.png             a "no" (not enough pizza): the abort is written lazily, sent once to the yes
                             voter, and never acknowledged - presumed abort's saving, visible
    partition-after-yes.png  scene (a) of network_demo: delivery cut off after voting yes keeps asking
                             the coordinator and its peer (timeouts) until the partition heals
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import cli
from common.trace import render

from .audit import settle
from .cluster import Cluster
from .httpjson import call_json
from .network_demo import scene_partition_after_yes

PROCESSES = ["inventory", "coordinator", "delivery"]


def traced_order(workdir: Path, trace: Path, body: dict) -> str:
    cluster = Cluster(workdir, trace=trace, rpc_timeout=2.0, retry_interval=0.3, resolve_interval=0.5)
    try:
        cluster.start_all()
        answer = call_json("POST", f"{cluster.coordinator_url}/orders", body, timeout=30)[1]
        settle(cluster.coordinator_url, cluster.participant_urls, timeout=30)
        return answer["outcome"]
    finally:
        cluster.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m TwoPhaseCommit.diagrams", description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=cli.output_path("TwoPhaseCommit", ""),
                        help="folder for the PNG files (default out/TwoPhaseCommit)")
    args = parser.parse_args(argv)
    try:
        cli.writable_path(str(args.out_dir / "pa-commit.png"))  # fail now, not after the runs
    except argparse.ArgumentTypeError as exc:
        parser.error(f"--out-dir: {exc}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runs = [
        ("pa-commit", "Presumed abort: a commit (2 burgers)",
         {"item": "burger", "quantity": 2, "address": "a"}),
        ("pa-abort", "Presumed abort: an abort (inventory votes no)", {"item": "pizza", "quantity": 4,
                                                                        "address": "a"}),
    ]
    with tempfile.TemporaryDirectory(prefix="twopc-diagrams-") as tmp:
        for name, title, body in cli.progress(runs, label="runs"):
            trace = Path(tmp) / f"{name}.jsonl"
            (Path(tmp) / name).mkdir()
            outcome = traced_order(Path(tmp) / name, trace, body)
            diagram = render(trace, args.out_dir / f"{name}.png", title=f"{title}: {outcome}",
                             processes=PROCESSES)
            print(f"{args.out_dir / f'{name}.png'}: {diagram.count('message')} messages", flush=True)
        trace = Path(tmp) / "partition.jsonl"
        (Path(tmp) / "partition").mkdir()
        scene_partition_after_yes(Path(tmp) / "partition", trace=trace)
        diagram = render(trace, args.out_dir / "partition-after-yes.png",
                         title="Delivery cut off after voting yes: in doubt until the partition heals",
                         processes=PROCESSES)
        print(f"{args.out_dir / 'partition-after-yes.png'}: {diagram.count('message')} messages, "
              f"{diagram.count('lost')} lost, {diagram.count('timeout')} timeouts", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
