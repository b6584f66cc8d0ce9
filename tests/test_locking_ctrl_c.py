"""Ctrl-C while a script starts a child process: the parent stops, the child never sees it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from DistributedLocking.workers import start_process


def test_ctrl_c_during_a_child_start_reaches_the_parent_not_the_child(monkeypatch):
    # Ctrl-C hits the whole process group; here it lands while the parent is starting a child.
    started = []
    real_start = multiprocessing.process.BaseProcess.start

    def start_then_ctrl_c(proc):
        real_start(proc)
        started.append(proc)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):       # not dropped: the demo must stop, not carry on
        start_process(time.sleep, 30)
    (child,) = started
    child.join(10)
    assert child.exitcode == -signal.SIGKILL     # stopped by the parent, not left running


def test_a_started_child_ignores_ctrl_c():
    child = start_process(time.sleep, 1.0)
    try:
        os.kill(child.pid, signal.SIGINT)         # blocked from its first instruction: no race
        child.join(20)
        assert child.exitcode == 0               # slept on; no KeyboardInterrupt traceback
    finally:
        if child.is_alive():
            child.kill()
