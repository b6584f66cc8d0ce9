"""The crash matrix: every crash point x protocol variant, a real SIGKILL there, restart, recovery, then
the invariant.

Each case places one order of 2 burgers with one process armed (TWOPC_CRASH_AT), checks what the
client saw and what the survivors hold while the process is down, restarts it, waits for recovery and
audits. The expected outcome follows from the rules: no decision written -> abort; decision written ->
that decision, however many processes die afterwards. Every point runs under PA and PC (what each
forces and acknowledges differs, the invariant does not); basic, whose rules are PA's for commits and
PC's for aborts, runs the points where it could still differ (see BASIC_POINTS).
"""

from __future__ import annotations

import signal

import pytest

from tests.twopc_helpers import (
    available,
    make_cluster,
    post_order,
    settle_and_audit,
    state,
    transactions,
    wait_until,
)
from TwoPhaseCommit.httpjson import Unreachable, call_json

# point -> (process armed, what the client may be told, final outcome, who is in doubt while it is down)
CASES = {
    "before-decision-logged": ("coordinator", {None}, "aborted", {"inventory", "delivery"}),
    "after-decision-logged": ("coordinator", {None}, "committed", {"inventory", "delivery"}),
    # inventory has the commit, delivery does not: delivery asks inventory (cooperative termination)
    "mid-phase2": ("coordinator", {None}, "committed", set()),
    "before-prepare-recorded": ("delivery", {"aborted"}, "aborted", set()),
    "after-prepare-recorded": ("delivery", {"aborted"}, "aborted", set()),
    "before-commit-applied": ("inventory", {"committed"}, "committed", set()),
    "after-commit-applied": ("inventory", {"committed"}, "committed", set()),
}
# Basic 2PC has no path of its own: its commit is PA's (forced, acknowledged) and its abort is PC's
# (forced, acknowledged) without the collecting record. So every point runs under PA and PC, and basic
# keeps the two points where its own presumption (no record -> abort) and its abort re-sends meet a crash.
BASIC_POINTS = ("before-decision-logged", "after-prepare-recorded")
MATRIX = [(protocol, point) for protocol in ("pa", "pc") for point in CASES] + [
    ("basic", point) for point in BASIC_POINTS]


@pytest.mark.parametrize("protocol, point", MATRIX)
def test_crash_point_then_recovery(protocol, point, spawn, tmp_path):
    armed, told, outcome, in_doubt = CASES[point]
    if (protocol, point) == ("pc", "mid-phase2"):
        # a PC commit is not acknowledged: it is sent in the background after the answer may have left
        told = {None, "committed"}
    cluster = make_cluster(spawn, tmp_path, protocol=protocol)
    cluster.start_all(crash_at={armed: point})

    try:
        status, answer = post_order(cluster, "burger", 2)
        answered = answer.get("outcome")
        assert status == 200
    except Unreachable:
        answered = None  # the coordinator died with the request: the client cannot know
    assert answered in told
    assert cluster.wait_dead(armed, timeout=30), f"{armed} did not crash at {point}"
    assert f"CRASH: SIGKILL at {point}" in cluster.processes[armed].output()

    survivors = [name for name in ("inventory", "delivery") if name != armed]
    for name in survivors:
        def doubtful(name=name):
            return [tx["txid"] for tx in state(cluster, name)["in_doubt"]]
        if name in in_doubt:
            # while the coordinator is down, a participant that voted yes can only hold and wait
            # (its peer is in doubt too, so cooperative termination cannot help)
            assert len(doubtful()) == 1, (name, doubtful())
        else:  # a decision nobody acknowledges may still be on its way, or a peer may know it
            wait_until(lambda name=name: not doubtful(name), what=f"{name} to hear the decision")
    if point == "mid-phase2":  # the coordinator is still down: delivery learnt the commit from its peer
        assert not cluster.alive("coordinator")
        told_by_peer = "cooperative termination (inventory says commit): commit"
        assert told_by_peer in cluster.processes["delivery"].output()

    cluster.start(armed)  # the same node, with its disk, unarmed
    settle_and_audit(cluster, {answer["txid"]: answered} if answered else None)

    records = list(transactions(cluster).values())
    if records:
        (record,) = records
        assert record["outcome"] == outcome and record["protocol"] == protocol
    else:  # basic and PA write nothing before the decision: no record means it was never committed
        assert outcome == "aborted" and protocol in ("basic", "pa")
    for name in ("inventory", "delivery"):
        for tx in state(cluster, name)["decided"]:
            assert tx["state"] == outcome, (name, tx)
    assert available(cluster, "burger") == (3 if outcome == "committed" else 5)  # exactly 2, or all back


def test_coordinator_down_after_decision_blocks_participants_until_it_returns(spawn, tmp_path):
    cluster = make_cluster(spawn, tmp_path)
    cluster.start_all(crash_at={"coordinator": "after-decision-logged"})
    with pytest.raises(Unreachable):
        post_order(cluster, "pizza", 3)
    assert cluster.wait_dead("coordinator", timeout=30)
    # the participants ask, get no answer, and keep holding: the pizzas and the courier are locked
    for name in ("inventory", "delivery"):
        wait_until(lambda name=name: "coordinator unreachable" in cluster.processes[name].output(),
                   what=f"{name} to ask the dead coordinator")
        assert len(state(cluster, name)["in_doubt"]) == 1
    assert available(cluster, "pizza") == 0
    assert state(cluster, "delivery")["resources"]["John"]["carrying"] is not None

    cluster.start("coordinator")
    settle_and_audit(cluster)
    assert available(cluster, "pizza") == 0  # the last 3 pizzas are sold, not restored
    assert [tx["outcome"] for tx in transactions(cluster).values()] == ["committed"]


def test_crash_at_flag_kills_at_the_point_and_the_prepare_survives(spawn, tmp_path, free_port):
    # the command-line flag (the tests above arm processes through $TWOPC_CRASH_AT)
    db = tmp_path / "inv.db"
    args = ("--kind", "inventory", "--port", free_port, "--db", db, "--resolve-interval", "60")
    inventory = spawn("TwoPhaseCommit.participant", *args, "--crash-at", "after-prepare-recorded",
                      port=free_port)
    body = {"txid": "t1", "order": {"item": "pizza", "quantity": 3, "address": "a"}}
    url = f"http://127.0.0.1:{free_port}"
    with pytest.raises(Unreachable):
        call_json("POST", f"{url}/prepare", body, timeout=10)  # it dies before it can say yes
    assert inventory.popen.wait(timeout=30) == -signal.SIGKILL
    spawn("TwoPhaseCommit.participant", *args, port=free_port)
    snapshot = call_json("GET", f"{url}/state", timeout=10)[1]
    assert [tx["txid"] for tx in snapshot["in_doubt"]] == ["t1"]  # the reservation was durable
    assert snapshot["resources"]["pizza"]["available"] == 0
