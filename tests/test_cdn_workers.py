"""--workers N: N processes share the edge's port (SO_REUSEPORT), each with its own cache; a PURGE
received by any one of them reaches all of them."""

from __future__ import annotations

from tests.cdn_helpers import edge_stats, request, start_edge, start_origin


def stats_of_every_worker(port: int, workers: int, attempts: int = 400) -> dict[str, dict]:
    """/__stats on fresh connections until each worker has answered (the kernel picks per connection)."""
    seen: dict[str, dict] = {}
    for _ in range(attempts):
        stats = edge_stats(port)
        seen.setdefault(stats["edge"], stats)
        if len(seen) == workers:
            return seen
    raise AssertionError(f"only {sorted(seen)} answered in {attempts} connections")


def test_two_workers_share_the_port_and_a_purge_reaches_both(spawn):
    origin = start_origin(spawn, latency_ms=0)
    _, edge = start_edge(origin.url, "--workers", "2", spawn=spawn)
    origin.script("/shared", [("Cache-Control", "max-age=600")], body="copy {n}")
    assert set(stats_of_every_worker(edge, 2)) == {"edge/1", "edge/2"}
    for _ in range(20):  # new connections land on both workers: each fetches once, then hits
        assert request(edge, "/shared").status == 200
    assert origin.count("/shared") == 2  # one cache per worker, as nginx workers without shared memory

    purge = request(edge, "/shared", "PURGE")
    assert purge.status == 200 and b'"workers": 2' in purge.body
    assert {name: stats["purges"] for name, stats in stats_of_every_worker(edge, 2).items()} == \
        {"edge/1": 1, "edge/2": 1}
    for _ in range(20):
        request(edge, "/shared")
    assert origin.count("/shared") == 4  # both copies were gone: each worker fetched again
