"""The bounded chaos runs (per variant) and the demo. Bad command lines are in tests/test_cli.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common import REPO_ROOT
from TwoPhaseCommit.chaos import Chaos, ChaosConfig, summary_lines
from TwoPhaseCommit.demo import release_note


@pytest.mark.slow
@pytest.mark.parametrize("protocol, orders, crashes, partitions", [("pa", 100, 10, 4), ("pc", 50, 5, 2)])
def test_chaos_run_keeps_the_invariant(protocol, orders, crashes, partitions, spawn, tmp_path):
    config = ChaosConfig(orders=orders, crashes=crashes, seed=7, protocol=protocol, partitions=partitions,
                         verbose=False)
    result = Chaos(config, str(tmp_path), spawner=spawn).run()
    print("\n".join(summary_lines(config, result)))
    assert result.crashes >= crashes and sum(result.kills.values()) == crashes
    assert sum(result.partitions.values()) == partitions  # kills *and* partitions, then the audit
    assert len(result.answers) + result.no_answer == orders
    assert "committed" in result.answers.values() and "aborted" in result.answers.values()
    assert result.report is not None and result.report.ok, "\n".join(result.report.lines())


def run_module(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_demo_tells_the_story_and_ends_with_a_result_line():
    done = run_module("TwoPhaseCommit.demo", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert "IN DOUBT" in done.stdout and "blocking problem" in done.stdout
    assert "BLOCKED" in done.stdout and "cooperative termination (delivery says abort)" in done.stdout
    assert lines[-1].startswith("result: 5 orders, 1 committed, 2 aborted") and "invariant ok" in lines[-1]


def test_demo_says_what_the_inventory_really_did_with_the_aborted_order():
    # parallel prepares: the inventory may have reserved the drink (and given it back) or never seen
    # the prepare before the abort's tombstone; the demo must not claim a reservation that never was
    released = {"txid": "t3", "state": "aborted", "item": "drink", "quantity": 1}
    tombstone = {"txid": "t3", "state": "aborted", "reason": "aborted before prepare arrived"}
    assert "had reserved 1 drink" in release_note(released) and "gave it back" in release_note(released)
    assert "reserved nothing" in release_note(tombstone) and "had reserved" not in release_note(tombstone)
