"""Ctrl-C while a script starts a child process: the parent stops, the child never sees it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time

import pytest

from common.cli import keep_ctrl_c
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


def test_a_ctrl_c_swallowed_by_a_finalizer_is_delivered_again(monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    keep_ctrl_c()

    class GarbageCollected:
        def __del__(self):
            raise KeyboardInterrupt  # a Ctrl-C landing in a multiprocessing queue's finalizer

    with pytest.raises(KeyboardInterrupt):
        GarbageCollected()                        # freed at once; CPython "ignores" its exception
        threading.Event().wait(10)                # the Ctrl-C sent again interrupts this wait
