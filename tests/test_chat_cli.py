"""RealTimeChat's scripts: bad arguments and unusable state stop the start with one clear line, and the
demo leaves nothing behind in the temp folder, also when interrupted with Ctrl-C.

(The table in tests/test_cli.py covers --help and the common mistakes of every chat script.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from common import REPO_ROOT, free_port


def run_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "RealTimeChat.app", "--port", str(free_port()), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [("--rate", "0"), ("--rate", "-1"), ("--burst", "0"),
                                  ("--heartbeat-ttl", "0")])
def test_bad_limits_are_refused_at_start_not_at_every_connection(args, data_dir):
    # Before: the server started, and every client's connect then failed on the bad token bucket.
    result = run_app(*args, "--db", str(data_dir / "chat.sqlite3"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {args[0]}:") and "Traceback" not in result.stderr


def test_unreachable_redis_is_one_line_not_a_traceback():
    result = run_app("--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot use Redis") and len(result.stderr.splitlines()) == 1


def test_unusable_history_database_is_one_line_not_a_traceback(data_dir):
    blocker = data_dir / "a-file"
    blocker.write_text("not a directory")
    result = run_app("--db", str(blocker / "chat.sqlite3"))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --db:") and "Traceback" not in result.stderr


def test_port_in_use_is_one_line_and_nothing_claims_to_serve(data_dir):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "RealTimeChat.app", "--port", str(port),
                                 "--db", str(data_dir / "chat.sqlite3")],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    # Before: "chat serving http://127.0.0.1:<port>" was logged, then Werkzeug's two-line complaint.
    assert result.stderr.splitlines() == [f"error: port {port} on 127.0.0.1 is already in use by another "
                                          f"program; pick another with --port"]


@pytest.mark.parametrize("interrupt_after", [None, "restarting the server"])
def test_demo_leaves_nothing_in_the_temp_folder(tmp_path, interrupt_after):
    """Run to the end, or Ctrl-C (SIGINT to the process group, as a terminal does) mid-way."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "RealTimeChat.demo"], cwd=REPO_ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        output = ""
        if interrupt_after:
            while interrupt_after not in output:
                line = proc.stdout.readline()
                assert line, f"the demo ended before {interrupt_after!r}:\n{output}"
                output += line
            os.killpg(proc.pid, signal.SIGINT)
        output += proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == (130 if interrupt_after else 0), output
    assert "Traceback" not in output, output
    assert list(scratch.iterdir()) == [], "the demo left files in the temp folder"
