"""The three variants against the R* paper, counted on real processes; cooperative termination.

Each process counts its own log writes (forced and lazy) and protocol messages per transaction; the
counts of a commit, an abort (inventory votes yes, delivery has no courier) and a pick-up order
(delivery votes read-only) must be exactly the paper's. The pure tables are in test_twopc_machines.py.
"""

from __future__ import annotations

import pytest

from tests.twopc_helpers import make_cluster, settle_and_audit
from TwoPhaseCommit.bench import check, count_one


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
