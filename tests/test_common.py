"""The shared infrastructure: real redis-servers, REDIS_URL, child processes, the tour."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis

import common
from common import (
    REPO_ROOT,
    RedisServer,
    RedisUnavailable,
    SpawnError,
    free_port,
    port_is_open,
    redis_server,
    redis_servers,
    spawn_command,
    spawn_module,
)

# With REDIS_URL set the suite must start no redis-server at all, so tests of the launcher itself skip.
starts_its_own_servers = pytest.mark.skipif(
    bool(os.environ.get(common.REDIS_URL_ENV)),
    reason="tests the redis-server launcher; with REDIS_URL set the suite starts no server",
)


def _port_is_bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_launcher_starts_a_real_redis_server(redis_process):
    server = redis_process()
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    client.set("greeting", "hello")
    assert client.get("greeting") == b"hello"
    info = client.info("server")
    assert info["tcp_port"] == server.port
    assert info["process_id"] == server.pid  # the process we own, not some other server
    assert client.config_get("save")["save"] == ""           # persistence off
    assert client.config_get("appendonly")["appendonly"] == "no"
    client.close()


@starts_its_own_servers
def test_redis_server_context_stops_the_process_and_frees_the_port(monkeypatch):
    monkeypatch.delenv(common.REDIS_URL_ENV, raising=False)
    with redis_server() as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        pid = redis.Redis.from_url(url).info("server")["process_id"]
        assert port_is_open(port)
    assert not port_is_open(port)
    assert _port_is_bindable(port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_redis_url_is_honoured_and_nothing_is_started(monkeypatch, _session_redis_url):
    # In a REDIS_URL run this is the user's server; otherwise the suite's private one.
    existing = _session_redis_url
    monkeypatch.setenv(common.REDIS_URL_ENV, existing)

    def refuse_to_start(self, *args, **kwargs):
        raise AssertionError("redis_server() started a server although REDIS_URL is set")

    monkeypatch.setattr(RedisServer, "start", refuse_to_start)
    with redis_server() as url:
        assert url == existing
    with redis_servers(3) as urls:
        assert urls == [common.with_db(existing, db) for db in (1, 2, 3)]
        clients = [redis.Redis.from_url(u) for u in urls]
        clients[0].set("common-test-key", "only in db 1")
        assert clients[1].get("common-test-key") is None
        clients[0].delete("common-test-key")


@starts_its_own_servers
def test_two_servers_are_independent(monkeypatch):
    monkeypatch.delenv(common.REDIS_URL_ENV, raising=False)
    with redis_servers(2) as (first, second):
        assert first != second
        a, b = redis.Redis.from_url(first), redis.Redis.from_url(second)
        a.set("key", "a")
        assert b.get("key") is None
        assert a.info("server")["process_id"] != b.info("server")["process_id"]
        a.close()
        b.close()


def test_kill_and_restart_on_the_same_port(redis_process):
    server = redis_process()
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    client.set("k", "v")
    server.kill()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()
    server.restart()
    assert client.ping()
    assert client.get("k") is None  # persistence is off: a restart starts empty


@starts_its_own_servers
def test_a_server_that_cannot_start_reports_its_log(monkeypatch):
    monkeypatch.delenv(common.REDIS_URL_ENV, raising=False)
    with pytest.raises(RedisUnavailable) as excinfo:
        RedisServer(extra_args=("--maxmemory-policy", "no-such-policy")).start(timeout=5)
    message = str(excinfo.value)
    assert "did not start" in message
    assert "maxmemory-policy" in message  # redis-server's own complaint, from its log


@starts_its_own_servers
def test_a_port_taken_by_something_else_is_reported(monkeypatch):
    monkeypatch.delenv(common.REDIS_URL_ENV, raising=False)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(RedisUnavailable) as excinfo:
            RedisServer(port=port).start(timeout=5)
    assert "Address already in use" in str(excinfo.value)  # redis-server's own words, from its log


def test_spawn_reports_a_child_that_dies_at_start_up(tmp_path):
    with pytest.raises(SpawnError) as excinfo:
        spawn_module("no_such_module_here", port=free_port(), timeout=10, log_dir=tmp_path)
    assert "No module named no_such_module_here" in str(excinfo.value)


def test_spawn_waits_for_the_port_and_stop_escalates_to_sigkill(tmp_path):
    port = free_port()
    # A server that ignores SIGTERM: stop() must fall back to SIGKILL after the grace period.
    program = (
        "import signal, socket, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "print('listening', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = spawn_command([sys.executable, "-c", program], port=port, log_dir=tmp_path)
    assert child.alive() and port_is_open(port)
    assert child.stop(grace=0.5) == -signal.SIGKILL
    assert not child.alive()
    assert "listening" in child.output()


def test_pause_returns_only_once_every_thread_of_the_child_is_stopped(tmp_path):
    # Four busy threads: kill(SIGSTOP) returns before they have all stopped; pause() must not.
    program = (
        "import threading\n"
        "def spin():\n"
        "    while True: pass\n"
        "for _ in range(4): threading.Thread(target=spin, daemon=True).start()\n"
        "print('spinning', flush=True)\n"
        "threading.Event().wait()\n"
    )
    child = spawn_command([sys.executable, "-c", program], log_dir=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while "spinning" not in child.output():  # the threads have started
            assert time.monotonic() < deadline and child.alive(), child.output()
            time.sleep(0.01)
        for _ in range(20):
            child.pause()
            states = [Path(stat).read_text().rsplit(")", 1)[1].split()[0]
                      for stat in Path(f"/proc/{child.pid}/task").glob("*/stat")]
            assert len(states) == 5 and set(states) == {"T"}, states
            child.signal(signal.SIGCONT)
    finally:
        child.stop()


def test_a_log_in_the_system_temp_dir_is_removed_at_stop_and_its_text_kept():
    child = spawn_command([sys.executable, "-c", "print('hello from the child')"])
    child.popen.wait(timeout=10)
    assert child.log_path.exists()
    child.stop()
    assert not child.log_path.exists()  # demos must not leave a file per child in /tmp
    assert child.output().strip() == "hello from the child"


def test_spawn_runs_from_the_repository_root(tmp_path):
    child = spawn_command([sys.executable, "-c", "import os; print(os.getcwd())"], log_dir=tmp_path)
    child.popen.wait(timeout=10)
    assert child.output().strip() == str(REPO_ROOT)


def test_tour_lists_every_concept():
    result = subprocess.run([sys.executable, "tour.py", "--list"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for name in ("Threading", "BlockingQueue", "WebSockets", "RealTimeChat", "TwoPhaseCommit",
                 "UniqueIdGeneration", "SimpleCDN", "ConsistentHashing", "DistributedLocking"):
        assert name in result.stdout


def test_tour_rejects_an_unknown_concept():
    result = subprocess.run([sys.executable, "tour.py", "NoSuchConcept"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown concept")


def test_a_child_interrupted_while_starting_is_stopped_and_its_log_removed(monkeypatch):
    # Ctrl-C while spawn_command waits for the port: the caller never receives the child, so
    # spawn_command itself must stop it (and release its log) before re-raising.
    import common.processes as processes

    seen = {}

    def interrupted_wait(port, host, timeout, still_alive):
        seen["alive"] = still_alive
        raise KeyboardInterrupt

    monkeypatch.setattr(processes, "wait_for_port", interrupted_wait)
    logs_before = set(Path(tempfile.gettempdir()).glob("sleeper-*.log"))
    with pytest.raises(KeyboardInterrupt):
        processes.spawn_command([sys.executable, "-c", "import time; time.sleep(60)"], port=1,
                                description="sleeper")
    assert not seen["alive"](), "the half-started child must not outlive the interruption"
    assert set(Path(tempfile.gettempdir()).glob("sleeper-*.log")) == logs_before
