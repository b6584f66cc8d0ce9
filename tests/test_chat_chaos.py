"""RealTimeChat under failure: instance A of two is SIGKILLed and restarted while six users talk.

The invariant (python -m RealTimeChat.chaos, smaller): every acknowledged message is displayed by
every member, and no member displays a message twice. Users of the killed instance reconnect to the
other one, fill the gap with `join` + `since`, and resend what was never acknowledged.
"""

from __future__ import annotations

from RealTimeChat.chaos import run_chaos


def test_no_acked_message_is_lost_or_doubled_when_an_instance_is_killed(redis_url):
    # Each user sends ~10 messages/s, so some are in flight (sent, not yet acknowledged) at the kill.
    outcome = run_chaos(clients=6, seconds=6, kills=1, seed=7, interval=0.1, progress=False,
                        redis_url=redis_url)
    assert outcome.reconnects >= 3, "the killed instance's users should have moved to the other one"
    assert outcome.sent > 0 and outcome.acked == outcome.sent, outcome
    assert outcome.lost == 0 and outcome.delivered == outcome.acked, outcome
    assert outcome.duplicated == 0, outcome


def test_an_instance_partitioned_from_redis_loses_no_acked_message_and_its_users_come_back(redis_url):
    # Instance A stays up, but its link to Redis is refused (common.faultproxy) for 3 s: its users'
    # sends are not stored (the outbox retries), they hear nothing from B, and B's reaper drops them
    # from presence and frees their nicknames. On heal A finds it was presumed dead and disconnects
    # its users, who reconnect, claim their nicknames again, catch up with `since` and resend.
    outcome = run_chaos(clients=6, seconds=8, kills=0, partitions=1, partition_seconds=3, seed=3,
                        interval=0.3, progress=False, redis_url=redis_url)
    assert outcome.reconnects >= 3, "A's users should have been sent away after the heal, and come back"
    assert outcome.sent > 0 and outcome.acked == outcome.sent, outcome
    assert outcome.lost == 0 and outcome.delivered == outcome.acked, outcome
    assert outcome.duplicated == 0, outcome
