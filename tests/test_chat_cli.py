"""RealTimeChat.app's command line: bad arguments and unusable state stop the start with one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common import free_port


def run_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "RealTimeChat.app", "--port", str(free_port()), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [("--rate", "0"), ("--rate", "-1"), ("--burst", "0"),
                                  ("--heartbeat-ttl", "0")])
def test_bad_limits_are_refused_at_start_not_at_every_connection(args, data_dir):
    # Before: the server started, and every client's connect then failed on the bad token bucket.
    result = run_app(*args, "--db", str(data_dir / "chat.sqlite3"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--rate > 0" in result.stderr


def test_unreachable_redis_is_one_line_not_a_traceback():
    result = run_app("--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "cannot use Redis" in result.stderr


def test_unusable_history_database_is_one_line_not_a_traceback(data_dir):
    blocker = data_dir / "a-file"
    blocker.write_text("not a directory")
    result = run_app("--db", str(blocker / "chat.sqlite3"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "history database" in result.stderr
