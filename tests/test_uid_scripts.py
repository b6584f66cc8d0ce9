"""UniqueIdGeneration's scripts: the sortable-key experiment runs small, and its outputs stay out of git."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_sortable_keys_plot_defaults_to_the_ignored_out_folder():
    from UniqueIdGeneration.sortable_keys import DEFAULT_PLOT
    assert DEFAULT_PLOT.relative_to(ROOT / "out" / "UniqueIdGeneration")
    assert subprocess.run(["git", "check-ignore", "-q", str(DEFAULT_PLOT)], cwd=ROOT).returncode == 0


def test_sortable_keys_small_run_prints_the_table_and_plots(tmp_path):
    png = tmp_path / "keys.png"
    result = run_module("UniqueIdGeneration.sortable_keys", "--rows", "3000", "--batch", "1000",
                        "--plot", str(png))
    assert result.returncode == 0, result.stderr
    for kind in ("snowflake (int64)", "uuid4 (text)", "uuid4 (16-byte blob)", "uuidv7 (16-byte blob)"):
        assert f"| {kind} |" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sortable_keys_no_plot_writes_none(tmp_path):
    png = tmp_path / "never.png"
    result = run_module("UniqueIdGeneration.sortable_keys", "--rows", "2000", "--batch", "1000",
                        "--plot", str(png), "--no-plot")
    assert result.returncode == 0, result.stderr
    assert not png.exists() and "plot saved" not in result.stdout
