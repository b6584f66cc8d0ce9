"""The runnable scripts: simulate is deterministic and prints what it measured (checked against an
independent recount), compare/bench run end to end on a small workload, the demo passes."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

from ConsistentHashing.ring import ConsistentHashRing
from ConsistentHashing.workload import make_keys, node_names

REPO = Path(__file__).resolve().parent.parent
IMAGES = ("initial_distribution_of_10000_keys_across_1000_shards.png",
          "distribution_after_removing_50_shards.png",
          "distribution_after_adding_50_new_shards.png")


def run(*args: str, timeout: float = 200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_simulate_is_reproducible_and_prints_what_it_measures(tmp_path):
    first = run("ConsistentHashing.simulate", "--out", str(tmp_path / "a"))
    second = run("ConsistentHashing.simulate", "--no-plot")  # the figures, without drawing again
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout.split("\nhistograms written")[0].rstrip("\n") == second.stdout.rstrip("\n")
    for name in IMAGES:
        assert (tmp_path / "a" / name).stat().st_size > 10_000

    # Recount the default experiment (1,000 shards, 10,000 keys, 3 vnodes, seed 42) independently,
    # one get_node at a time, and compare with the printed figures.
    rng = random.Random(42)
    keys = make_keys(10_000, rng)
    shards = node_names("shard", 0, 1000)
    removed = set(rng.sample(shards, 50))
    initial = ConsistentHashRing(shards, vnodes=3)
    smaller = ConsistentHashRing([s for s in shards if s not in removed], vnodes=3)
    bigger = ConsistentHashRing(shards + node_names("shard", 1000, 50), vnodes=3)
    moved_remove = sum(initial.get_node(k) != smaller.get_node(k) for k in keys)
    moved_add = sum(initial.get_node(k) != bigger.get_node(k) for k in keys)
    remove_line = next(line for line in first.stdout.splitlines() if line.startswith("remove 50"))
    add_line = next(line for line in first.stdout.splitlines() if line.startswith("add 50"))
    assert f"{100 * moved_remove / 10_000:.2f}% ({moved_remove:>6,})" in remove_line
    assert "5.00%" in remove_line
    assert f"{100 * moved_add / 10_000:.2f}% ({moved_add:>6,})" in add_line
    assert "4.76%" in add_line
    assert "only keys of removed shards moved: yes; keys moved only onto new shards: yes" in first.stdout


def test_simulate_rejects_bad_arguments_clearly():
    done = run("ConsistentHashing.simulate", "--remove", "1000")
    assert done.returncode == 2 and "--remove: expected a whole number from 0 to 999" in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")


def test_compare_runs_on_a_small_workload(tmp_path):
    done = run("ConsistentHashing.compare", "--shards", "60", "--keys", "3000", "--remove", "3",
               "--add", "3", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    schemes = [row for row in rows if row.count("|") == 8 and not row.startswith("| scheme")]
    assert len(schemes) == 11  # six rings, rendezvous, jump, maglev, bounded loads, modulo
    modulo = next(row for row in rows if row.startswith("| modulo"))
    assert float(modulo.split("|")[4].strip().rstrip("%")) > 50  # modulo moves most keys
    maglev = [row for row in rows if row.startswith("| 65,537 |")]
    assert maglev and float(maglev[0].split("|")[-2].strip().rstrip("x")) > 1  # more than the minimum
    for name in ("max_load_vs_vnodes.png", "maglev_disruption.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_bench_runs_and_reports_ratios():
    done = run("ConsistentHashing.bench", "--nodes", "50", "--keys", "2000", "--rounds", "5")
    assert done.returncode == 0, done.stderr
    assert "uhashring" in done.stdout and "CPUs" in done.stdout
    assert re.search(r"single-key get_node \(lookups/s\) \| [\d,]+ \| [\d,]+ \| \d+\.\d\dx", done.stdout)


def test_demo_moves_the_predicted_keys_and_reads_everything_back():
    done = run("ConsistentHashing.demo", "--keys", "2000")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("exactly the predicted keys") == 2
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("result: 2,000 keys on 5 redis-servers") and "all keys read back" in last
