"""Nothing a script creates outlives it, also when it is interrupted with Ctrl-C.

Each demo runs with TMPDIR pointing at an empty folder of the test's own (tempfile, and so every
redis-server work dir, SQLite file and child log, honours it). The demo is interrupted the way a
terminal does it: SIGINT to its whole process group, once it is well under way. Afterwards the
folder must be empty and no process of the group may be left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tour import CONCEPTS, ROOT  # noqa: E402

LINES_BEFORE_INTERRUPT = 6


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize("concept", CONCEPTS, ids=lambda c: c.name)
def test_an_interrupted_demo_leaves_nothing_behind(concept, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, *concept.demo], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        seen = [proc.stdout.readline() for _ in range(LINES_BEFORE_INTERRUPT)]
        os.killpg(proc.pid, signal.SIGINT)          # what Ctrl-C in a terminal does
        output = "".join(seen) + proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)                              # children finish their own clean-up
    assert not group_alive(proc.pid), f"{concept.name}: processes left running after Ctrl-C"
    assert "Traceback" not in output, output[-3000:]
    left = sorted(str(p.relative_to(scratch)) for p in scratch.rglob("*"))
    assert left == [], f"{concept.name} left files behind in TMPDIR after Ctrl-C: {left}"
