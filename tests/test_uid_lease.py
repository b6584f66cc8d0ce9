"""Worker-id leasing against a real redis-server: 32 ids for 32 nodes, a clear error for the 33rd,
crash recovery via expiry (SIGKILL), and a stalled node (SIGSTOP) that must not issue IDs on waking.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

from tests.uid_helpers import process_state, wait_until
from UniqueIdGeneration.lease_node import EXIT_LEASE_LOST
from UniqueIdGeneration.snowflake import parse
from UniqueIdGeneration.worker_lease import (
    LeaseError,
    LeaseExpiredError,
    NoFreeWorkerIdError,
    WorkerLease,
)

NODE_TTL_MS = 1000


@pytest.fixture
def client(redis_url):
    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    yield connection
    connection.close()


def test_32_nodes_get_32_distinct_ids_and_the_33rd_gets_a_clear_error(redis_url, client):
    leases: list[WorkerLease] = []
    lock = threading.Lock()
    start = threading.Barrier(32)

    def take() -> None:
        lease = WorkerLease(redis_url, node_id=f"node-{threading.get_ident()}")
        start.wait()                                  # all 32 race for ids at the same moment
        lease.acquire()
        with lock:
            leases.append(lease)

    threads = [threading.Thread(target=take) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert sorted(lease.worker_id for lease in leases) == list(range(32))
        for lease in leases:
            assert client.get(f"worker:{lease.worker_id}") == lease.node_id
        late = WorkerLease(redis_url, node_id="node-33")
        with pytest.raises(NoFreeWorkerIdError, match="all 32 worker ids"):
            late.acquire()
        late.close()
    finally:
        for lease in leases:
            lease.close()
    # released: each id is free again once the skew margin (ttl/10 = 1 s by default) has passed
    assert all(0 < client.pttl(f"worker:{worker_id}") <= 1001 for worker_id in range(32))
    wait_until(lambda: client.keys("worker:*") == [], timeout=10, what="close() to release every id")


def test_a_released_id_is_not_handed_out_again_within_the_skew_margin(redis_url, client):
    # Regression: close() used to DEL the key, so a newcomer whose clock is behind ours (by less than
    # the margin the lease promises to absorb) got the id at once and re-issued our last milliseconds.
    first = WorkerLease(redis_url, node_id="first", ttl_ms=5000, max_clock_skew_ms=500).acquire()
    first.generator().next_id()
    first.close()
    assert client.get("worker:0") == "first"
    assert 0 < client.pttl("worker:0") <= 501
    with WorkerLease(redis_url, node_id="second") as second:
        assert second.worker_id == 1, "worker id 0 was handed out again before the skew margin passed"
    wait_until(lambda: client.get("worker:0") is None, timeout=10, what="the released id to be free")
    with WorkerLease(redis_url, node_id="third") as third:
        assert third.worker_id == 0


def test_release_never_deletes_another_nodes_lease(redis_url, client):
    lease = WorkerLease(redis_url, node_id="old-owner").acquire()
    client.set("worker:0", "new-owner")              # as if ours expired and another node took it
    lease.close()
    assert client.get("worker:0") == "new-owner"


def test_renewal_keeps_the_lease_past_its_ttl(redis_url, client):
    # 600 ms, not shorter: the lease's Redis calls time out after its renew interval (ttl*0.9/3), and on
    # a 2-CPU machine loaded by other jobs a 90 ms timeout (ttl 300) failed the acquire itself.
    with WorkerLease(redis_url, ttl_ms=600) as lease:
        generator = lease.generator()
        ids = []
        deadline = time.monotonic() + 2.4            # four ttls: only renewal can keep it alive
        while time.monotonic() < deadline:
            ids.append(generator.next_id())
            time.sleep(0.005)
        assert client.get("worker:0") == lease.node_id
        assert 0 < client.pttl("worker:0") <= 600
        assert {parse(i).worker_id for i in ids} == {0}
    assert 0 < client.pttl("worker:0") <= 61             # released: kept only for the skew margin
    wait_until(lambda: client.get("worker:0") is None, timeout=10, what="the released id to be free")


def test_a_lease_taken_over_by_another_node_is_lost_for_good(redis_url, client):
    with WorkerLease(redis_url, node_id="me", ttl_ms=5000) as lease:
        generator = lease.generator()
        generator.next_id()
        client.set("worker:0", "someone-else")
        assert lease.renew_once() is False
        with pytest.raises(LeaseExpiredError, match="held by another node"):
            generator.next_id()
        client.set("worker:0", "me")                  # even if the key comes back, no revival
        assert lease.renew_once() is False
        assert not lease.is_valid()


def test_generator_refuses_once_redis_is_unreachable_past_the_lease(redis_process):
    server = redis_process()
    with WorkerLease(server.url, ttl_ms=500) as lease:
        generator = lease.generator()
        generator.next_id()
        server.pause()                                # renewals now time out
        try:
            wait_until(lambda: not lease.is_valid(), timeout=10, what="the local lease deadline")
            with pytest.raises(LeaseExpiredError, match="may have expired"):
                generator.next_id()
        finally:
            server.resume()


def test_lease_misuse_errors_are_clear(redis_url):
    lease = WorkerLease(redis_url)
    with pytest.raises(LeaseError, match="call acquire"):
        _ = lease.worker_id
    with pytest.raises(ValueError, match="renew_interval_ms"):
        WorkerLease(redis_url, ttl_ms=100, renew_interval_ms=100)
    lease.acquire()
    with pytest.raises(LeaseError, match="already holds"):
        lease.acquire()
    lease.close()
    with pytest.raises(LeaseExpiredError, match="released"):
        lease.ensure_valid()


# --- real node processes: SIGKILL and SIGSTOP ----------------------------------------------------

def start_node(spawn, redis_url):
    node = spawn("UniqueIdGeneration.lease_node", "--redis-url", redis_url, "--ttl-ms", NODE_TTL_MS,
                 "--interval-ms", 10)
    match = wait_until(lambda: re.search(r"leased worker_id=(\d+) node=(\S+)", node.output()),
                       timeout=30, what="the node to lease a worker id")
    wait_until(lambda: "issued" in node.output(), timeout=30, what="the node to issue IDs")
    return node, int(match.group(1)), match.group(2)


def issued_ids(text: str) -> list[int]:
    return [int(found) for found in re.findall(r"^issued (\d+)", text, flags=re.MULTILINE)]


def test_a_killed_nodes_id_is_free_again_once_its_lease_expires(spawn, redis_url, client):
    node, worker_id, node_name = start_node(spawn, redis_url)
    node.kill()                                        # SIGKILL: no chance to release
    assert client.get(f"worker:{worker_id}") == node_name, "the dead node's lease is still there"
    with WorkerLease(redis_url) as meanwhile:
        assert meanwhile.worker_id != worker_id        # not handed out while it may be in use
    wait_until(lambda: client.get(f"worker:{worker_id}") is None, timeout=NODE_TTL_MS / 1000 + 10,
               what="the killed node's lease to expire")
    with WorkerLease(redis_url) as successor:
        assert successor.worker_id == worker_id


def test_a_node_paused_past_its_lease_refuses_to_issue_ids_when_resumed(spawn, redis_url, client):
    node, worker_id, _ = start_node(spawn, redis_url)
    node.signal(signal.SIGSTOP)
    wait_until(lambda: process_state(node.pid) == "T", timeout=10, what="the node to stop")
    stopped_at_ms = time.time_ns() // 1_000_000
    seen_before = len(node.output())

    wait_until(lambda: client.get(f"worker:{worker_id}") is None, timeout=NODE_TTL_MS / 1000 + 10,
               what="the paused node's lease to expire in Redis")
    with WorkerLease(redis_url, node_id="successor") as successor:
        assert successor.worker_id == worker_id       # the id has really passed to someone else
        node.signal(signal.SIGCONT)
        node.popen.wait(timeout=30)
        output = node.output()
        assert node.popen.returncode == EXIT_LEASE_LOST, output[-2000:]
        after_resume = output[seen_before:]
        assert "refused: worker id" in after_resume
        # Whatever the node printed, no ID it made carries a time after it was stopped: the
        # successor, using the same worker id from now on, cannot collide with it.
        assert issued_ids(output)
        assert all(parse(i).timestamp_ms <= stopped_at_ms for i in issued_ids(output))
        assert successor.generator().next_id() > max(issued_ids(output))


def test_a_node_started_with_every_id_taken_exits_with_a_clear_error(spawn, redis_url, client):
    for worker_id in range(32):
        client.set(f"worker:{worker_id}", f"someone-{worker_id}", px=60_000)
    node = spawn("UniqueIdGeneration.lease_node", "--redis-url", redis_url)
    node.popen.wait(timeout=30)
    assert node.popen.returncode == 2
    assert "error: all 32 worker ids (worker:0 .. worker:31) are leased by live nodes" in node.output()


@pytest.mark.parametrize("args,flag", [
    (["--redis-url", "not-a-url"], "--redis-url"),
    (["--redis-url", "redis://127.0.0.1:1/0", "--ttl-ms", "0"], "--ttl-ms"),
    (["--redis-url", "redis://127.0.0.1:1/0", "--ttl-ms", "1"], "--ttl-ms"),   # too short to renew
    ([], "--redis-url"),
])
def test_lease_node_bad_arguments_get_a_one_line_error(args, flag):
    # Regression: a malformed --redis-url or --ttl-ms 0 ended in a ValueError traceback.
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run([sys.executable, "-m", "UniqueIdGeneration.lease_node", *args],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {flag}"), done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_the_refusal_names_the_holders_lease_time_not_the_newcomers(redis_url, client):
    # The demo once said "wait up to 10000 ms" (the refused node's own default ttl) while every id was
    # held by 2000 ms leases: how long a crashed holder keeps its id is the *holder's* ttl.
    holders = [WorkerLease(redis_url, node_id=f"holder-{n}", ttl_ms=2000).acquire() for n in range(2)]
    try:
        newcomer = WorkerLease(redis_url, node_id="newcomer", ttl_ms=10_000, worker_ids=range(2))
        with pytest.raises(NoFreeWorkerIdError) as refused:
            newcomer.acquire()
        newcomer.close()
        waited = int(re.search(r"wait up to (\d+) ms", str(refused.value)).group(1))
        assert 0 < waited <= 2000, str(refused.value)
    finally:
        for holder in holders:
            holder.close()


def test_demo_explains_why_a_newcomer_skips_a_just_released_id(redis_url):
    env = {**os.environ, "REDIS_URL": redis_url}
    result = subprocess.run([sys.executable, "-m", "UniqueIdGeneration.demo", "--ids", "400"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "node-b closes: worker id 1 is released, but stays taken for the 200 ms skew margin" in out
    assert ("node-d joins at once and gets worker id 3, the lowest free one: "
            "id 1 is still inside its margin") in out
    assert "node-e joins and gets worker id 1" in out
    waited = int(re.search(r"node-f is refused: .* wait up to (\d+) ms", out).group(1))
    assert 0 < waited <= 2000
    last = out.strip().splitlines()[-1]
    assert last.startswith("result: 400 IDs distinct and ordered; leased worker ids [0, 1, 2, 3]")
