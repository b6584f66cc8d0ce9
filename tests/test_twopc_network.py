"""2PC across network faults (common/faultproxy.py on the links): the three scenes of the network demo,
each with its invariant - plus the trace of a run drawn as the expected arrows."""

from __future__ import annotations

from common.trace import layout, read_trace
from TwoPhaseCommit.network_demo import (
    scene_lost_reply,
    scene_partition_after_yes,
    scene_partition_before_vote,
)


def test_a_participant_cut_off_after_voting_yes_stays_in_doubt_until_the_partition_heals(spawn, tmp_path):
    result = scene_partition_after_yes(tmp_path, spawner=spawn)
    assert result["told"] == "committed"                 # the decision was logged before the cut
    assert result["still_in_doubt"] == [result["txid"]]  # no guess either way while cut off ...
    assert result["inquiries"] >= result["inquiries_at_blocked"] + 2  # ... and it kept asking
    assert result["final"] == {"inventory": "committed", "delivery": "committed"}  # heal: resolved
    assert result["report"].ok, "\n".join(result["report"].lines())


def test_a_participant_cut_off_before_voting_means_abort_everywhere(spawn, tmp_path):
    result = scene_partition_before_vote(tmp_path, spawner=spawn)
    assert result["told"] == "aborted" and "delivery" in result["reason"]
    assert result["final"]["inventory"] == "aborted" and result["final"]["delivery"] in ("aborted", None)
    assert result["burgers"] == 5 and result["courier"] is None  # nothing held anywhere
    assert result["report"].ok, "\n".join(result["report"].lines())


def test_a_lost_commit_reply_is_resent_and_acknowledged_without_applying_twice(spawn, tmp_path):
    trace = tmp_path / "lost-reply.jsonl"
    result = scene_lost_reply(tmp_path, trace=trace, spawner=spawn)
    assert result["told"] == "committed"
    assert result["commits_received"] >= 2 and result["commits_applied"] == 1
    assert any("no ack" in line for line in result["coordinator_lines"])
    assert result["final"] == {"inventory": "committed", "delivery": "committed"} and result["burgers"] == 3
    assert result["report"].ok, "\n".join(result["report"].lines())
    # the diagram of the run: prepare + vote for both, two commits to delivery (the first one's ack
    # never arrives), one ack from each in the end
    diagram = layout(read_trace(trace))
    labels = [(arrow.src, arrow.dst, arrow.label) for arrow in diagram.arrows if not arrow.lost]
    assert labels.count(("coordinator", "delivery", "commit")) >= 2
    assert labels.count(("delivery", "coordinator", "ack")) >= 1
    assert ("coordinator", "inventory", "prepare") in labels and ("inventory", "coordinator", "yes") in labels
    lost = [(arrow.src, arrow.dst, arrow.label) for arrow in diagram.arrows if arrow.lost]
    assert ("delivery", "coordinator", "ack") in lost  # the reply the proxy reset
