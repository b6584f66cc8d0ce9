"""The three variants against the R* paper, counted on real processes; cooperative termination.

Each process counts its own log writes (forced and lazy) and protocol messages per transaction; the
counts of a commit, an abort (inventory votes yes, delivery has no courier) and a pick-up order
(delivery votes read-only) must be exactly the paper's. The pure tables are in test_twopc_machines.py.
"""

from __future__ import annotations

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
from TwoPhaseCommit.bench import check, count_one
from TwoPhaseCommit.httpjson import Unreachable


@pytest.mark.parametrize("protocol", ["basic", "pa", "pc"])
def test_counted_writes_and_messages_match_the_paper(protocol, spawn, tmp_path):
    cluster = make_cluster(spawn, tmp_path, protocol=protocol, couriers="John")
    cluster.start_all()
    counts = {(protocol, "commit"): count_one(cluster, "commit")}      # John takes it and stays out
    counts[(protocol, "abort")] = count_one(cluster, "abort")          # no courier: delivery votes no
    counts[(protocol, "read-only")] = count_one(cluster, "read-only")  # pick-up: delivery read-only
    assert [counts[(protocol, kind)]["outcome"] for kind in ("commit", "abort", "read-only")] == [
        "committed", "aborted", "committed"]
    assert check(counts, variants=(protocol,)) == []
    settle_and_audit(cluster)


# --- cooperative termination -------------------------------------------------------------------------

def inventory_log(cluster) -> str:
    return cluster.processes["inventory"].output()


@pytest.mark.parametrize("protocol", ["pa", "pc"])
def test_a_peer_that_voted_no_lets_the_in_doubt_participant_abort_without_the_coordinator(
        protocol, spawn, tmp_path):
    cluster = make_cluster(spawn, tmp_path, protocol=protocol, couriers="John")
    cluster.start_all()
    assert post_order(cluster, "burger", 1)[1]["outcome"] == "committed"  # John is out with it
    # The client has its answer; the commit may still be on its way to a participant. Let it land
    # before stopping the coordinator, so that the pizza is the only transaction left in doubt.
    wait_until(lambda: all(state(cluster, name)["in_doubt"] == [] for name in ("inventory", "delivery")),
               what="the burger order to settle at both participants")
    cluster.processes["coordinator"].stop()
    cluster.start("coordinator", crash_at="before-decision-logged")
    with pytest.raises(Unreachable):
        post_order(cluster, "pizza", 2)  # inventory votes yes, delivery (no courier) votes no
    assert cluster.wait_dead("coordinator", timeout=30)
    # the coordinator stays down: inventory asks delivery, learns "abort", and releases the pizzas
    wait_until(lambda: "cooperative termination (delivery says abort): abort" in inventory_log(cluster),
               what="inventory to end the transaction through its peer")
    assert available(cluster, "pizza") == 3 and state(cluster, "inventory")["in_doubt"] == []
    assert not cluster.alive("coordinator")
    cluster.start("coordinator")
    settle_and_audit(cluster)


def test_when_every_participant_voted_yes_they_stay_blocked(spawn, tmp_path):
    cluster = make_cluster(spawn, tmp_path)
    cluster.start_all(crash_at={"coordinator": "after-decision-logged"})
    with pytest.raises(Unreachable):
        post_order(cluster, "fries", 2)
    assert cluster.wait_dead("coordinator", timeout=30)
    for name in ("inventory", "delivery"):
        # each asked the other, and the other was uncertain too: nobody but the coordinator knows
        wait_until(lambda name=name: "BLOCKED" in cluster.processes[name].output()
                   and "says uncertain" in cluster.processes[name].output(),
                   what=f"{name} to find that its peer knows nothing either")
        assert len(state(cluster, name)["in_doubt"]) == 1
    assert available(cluster, "fries") == 8  # still held, not guessed either way
    cluster.start("coordinator")  # only the coordinator's log ends it: it decided commit
    settle_and_audit(cluster)
    assert [tx["outcome"] for tx in transactions(cluster).values()] == ["committed"]
    assert available(cluster, "fries") == 8
