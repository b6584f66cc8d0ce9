"""The bounded chaos run (>= 200 orders, >= 20 crashes) and the command-line entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common import REPO_ROOT
from TwoPhaseCommit.chaos import Chaos, ChaosConfig, summary_lines


@pytest.mark.slow
@pytest.mark.parametrize("protocol, orders, crashes", [("pa", 200, 20), ("pc", 100, 10)])
def test_chaos_run_keeps_the_invariant(protocol, orders, crashes, spawn, tmp_path):
    config = ChaosConfig(orders=orders, crashes=crashes, seed=7, protocol=protocol, verbose=False)
    result = Chaos(config, str(tmp_path), spawner=spawn).run()
    print("\n".join(summary_lines(config, result)))
    assert result.crashes >= crashes and sum(result.kills.values()) == crashes
    assert len(result.answers) + result.no_answer == orders
    assert "committed" in result.answers.values() and "aborted" in result.answers.values()
    assert result.report is not None and result.report.ok, "\n".join(result.report.lines())


def run_module(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("module", ["participant", "coordinator", "demo", "chaos"])
def test_every_script_has_help(module):
    done = run_module(f"TwoPhaseCommit.{module}", "--help")
    assert done.returncode == 0 and "usage:" in done.stdout


def test_unknown_crash_point_is_refused_with_the_list(tmp_path):
    done = run_module("TwoPhaseCommit.coordinator", "--log", str(tmp_path / "c.db"),
                      "--participant", "inventory=http://127.0.0.1:1", "--crash-at", "after-prepare-recorded")
    assert done.returncode == 2
    assert "unknown crash point 'after-prepare-recorded'" in done.stderr and "mid-phase2" in done.stderr


def test_demo_tells_the_story_and_ends_with_a_result_line():
    done = run_module("TwoPhaseCommit.demo", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert "IN DOUBT" in done.stdout and "blocking problem" in done.stdout
    assert lines[-1].startswith("result: 4 orders, 1 committed, 2 aborted") and "invariant ok" in lines[-1]


@pytest.mark.parametrize("module, args, message", [
    ("participant", ["--kind", "inventory", "--port", "99999", "--db", "{tmp}/i.db"], "cannot listen on"),
    ("participant", ["--kind", "inventory", "--port", "0", "--db", "{tmp}/missing/i.db"], "cannot use --db"),
    ("coordinator", ["--port", "99999", "--log", "{tmp}/c.db", "--participant", "inventory=http://127.0.0.1:1"],
     "cannot listen on"),
    ("coordinator", ["--port", "0", "--log", "{tmp}/missing/c.db", "--participant",
                     "inventory=http://127.0.0.1:1"], "cannot use --log"),
])
def test_startup_errors_are_one_line_not_a_traceback(module, args, message, tmp_path):
    # Regression: a bad port or an unopenable SQLite file ended in a traceback.
    done = run_module(f"TwoPhaseCommit.{module}", *[arg.format(tmp=tmp_path) for arg in args])
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
