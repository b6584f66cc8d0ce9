"""Network partitions through common.faultproxy: a running holder cut off from Redis, Redlock minorities.

Unlike the GC-pause tests, the holder here never stops: only its network to Redis breaks. Its
watchdog keeps trying and cannot renew, the lease expires, another client books, and the holder's
late write — which still reaches the seat store — is refused by the fence.
"""

from __future__ import annotations

import pytest

from common import trace
from DistributedLocking import SeatStore
from DistributedLocking.partition import holder_partitioned, redlock_partitioned


@pytest.mark.parametrize("mode", ["both", "upstream", "downstream"])
def test_a_holder_partitioned_from_redis_loses_the_lease_and_its_late_write(redis_url, tmp_path, mode):
    db = str(tmp_path / "seats.sqlite3")
    SeatStore(db).close()
    trace_path = tmp_path / "run.jsonl"
    scene = holder_partitioned(redis_url, db, mode, ttl_ms=600, trace_path=trace_path, say=lambda _: None)
    assert scene.failed_renewals >= 1                       # the watchdog ran, and heard no reply
    if mode == "downstream":
        # Her requests still arrive: Redis ran a renewal she counts as failed (it extended the lease
        # she thinks is running out) — a timeout does not say whether the request ran.
        assert 1 <= scene.renewals_run_unseen <= scene.failed_renewals
    else:
        assert scene.renewals_run_unseen == 0               # nothing of hers reached Redis
    assert scene.bob_token == scene.alice_token + 1         # bob got the lock only after the lease expired
    assert scene.bob_write_accepted and not scene.alice_write_accepted
    assert scene.holder == "bob"                            # exactly one booking: bob's
    assert scene.alice_release is False                     # after the heal, the lease was not hers
    # The trace draws what happened: every exchange as two arrows, each failed renewal a lost one.
    diagram = trace.layout(trace.read_trace(trace_path))
    assert diagram.count("lost") == scene.failed_renewals
    assert diagram.count("timeout") == scene.failed_renewals
    assert diagram.count("message") == 2 * 7                # 7 request/reply exchanges in the scene


def test_redlock_survives_two_of_five_partitioned_but_not_three(redis_urls):
    urls = redis_urls(5)
    minority = redlock_partitioned(urls, 2, say=lambda _: None)
    assert minority.granted_by == 3                         # still a majority: still a lock...
    assert not minority.rival_got_it                        # ...that excludes a client reaching all five
    majority = redlock_partitioned(urls, 3, say=lambda _: None)
    assert majority.granted_by is None                      # no majority: no lock
    assert majority.keys_left == 0                          # and its partial grants were undone
    assert majority.rival_got_it                            # the servers are fine: others still can lock
