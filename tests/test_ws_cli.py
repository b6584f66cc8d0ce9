"""The interactive line clients (ours and the websockets one): stdin lines out, echoes printed,
every echo shown before the close, a clear error when nothing listens."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common import REPO_ROOT


def run_client(module: str, url: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, url], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT)


@pytest.mark.parametrize("module", ["WebSockets.client", "WebSockets.lib_client"])
def test_line_client_prints_every_echo_then_the_close(spawn, free_port, module):
    spawn("WebSockets.server", "--port", free_port, port=free_port)
    done = run_client(module, f"ws://127.0.0.1:{free_port}/", "first line\nsecond ✓\nthird\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1:] == ["< first line", "< second ✓", "< third", "connection closed: code 1000 ''"]


def test_line_client_reports_an_unreachable_server(free_port):
    done = run_client("WebSockets.client", f"ws://127.0.0.1:{free_port}/", "")
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "refused" in done.stderr
    assert "Traceback" not in done.stderr


def test_line_client_refuses_wss():
    done = run_client("WebSockets.client", "wss://example.com/", "")
    assert done.returncode == 1 and "TLS" in done.stderr


@pytest.mark.parametrize("args", [["--max-size", "0"], ["--max-size", "-5"], ["--handshake-timeout", "-1"],
                                  ["--handshake-timeout", "nan"]])
def test_server_refuses_a_nonsensical_limit_with_a_one_line_error(args):
    """A max size of 0 would close every message with 1009, a negative timeout drop every client."""
    done = subprocess.run([sys.executable, "-m", "WebSockets.server", "--port", "1", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {args[0]}: expected")


def test_server_names_the_busy_port_in_one_line(spawn, free_port):
    spawn("WebSockets.server", "--port", free_port, port=free_port)
    done = subprocess.run([sys.executable, "-m", "WebSockets.server", "--port", str(free_port)],
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"error: port {free_port} on 127.0.0.1 is already in use by "
                                        "another program; pick another with --port"]
