"""The demo the tour runs: exits 0, shows real handshake and frame bytes, ends with the result line."""

from __future__ import annotations

import subprocess
import sys

from common import REPO_ROOT


def test_demo_runs_and_reports():
    done = subprocess.run([sys.executable, "-m", "WebSockets.demo"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("result: ") and "broadcast reached 2/2" in lines[-1]
    assert "HTTP/1.1 101 Switching Protocols" in done.stdout
    assert "payload XOR key -> 'hello, world'" in done.stdout
    assert "code 1002" in done.stdout
    assert "response: Sec-WebSocket-Extensions: permessage-deflate" in done.stdout
    assert "RSV1-3=100 opcode=0x1 (TEXT) (RSV1: compressed message" in done.stdout
    assert "compressed echo ok" in lines[-1]
