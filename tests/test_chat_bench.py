"""RealTimeChat.bench's "wait server" column: the kernel's run-queue delay of a process is read right.

Three busy processes pinned to one core must take turns, so each spends about two thirds of its
time ready to run but waiting for the core, one third running: what the column reports for the server.
"""

from __future__ import annotations

import subprocess
import sys
import time

from RealTimeChat.bench import cpu_seconds, run_queue_seconds

BUSY = "import os, time; os.sched_setaffinity(0, {0}); end = time.time() + 3\nwhile time.time() < end: pass"


def test_run_queue_seconds_counts_the_time_spent_waiting_for_a_core():
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(3)]
    try:
        time.sleep(1.5)   # all busy on the same core for a while (a duration, not a synchronisation)
        waited = run_queue_seconds(busy[0].pid)
        ran = cpu_seconds(busy[0].pid)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    # Sharing one core three ways, each waited about twice as long as it ran (longer if the
    # machine is busy too); reading the CPU-time field instead would make the two equal.
    assert waited > 1.2 * ran
    assert waited + ran < 3.0


def test_load_generator_clients_handle_messages_without_a_thread_each(spawn, data_dir):
    from RealTimeChat.bench import handle_in_read_loop
    from RealTimeChat.client import ChatClient
    from tests.chat_helpers import start_chat, users

    _, url = start_chat(spawn, "--rate", "1000", "--burst", "1000", db=str(data_dir / "chat.sqlite3"))
    listener = handle_in_read_loop(ChatClient(url, "listener")).connect()
    try:
        listener.joined("lobby", "listener")
        started = []
        start = listener.sio.eio.start_background_task
        listener.sio.eio.start_background_task = lambda *a, **k: (started.append(a), start(*a, **k))[1]
        with users(url, 1) as (talker,):
            talker.joined("lobby", "talker")
            for k in range(20):
                talker.say("lobby", f"m{k}")
            listener.wait_for("message", lambda m: m["text"] == "m19")
        assert started == []     # python-engineio's default: one new thread per received message
    finally:
        listener.drop()
