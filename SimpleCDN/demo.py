"""The SimpleCDN tour: what an edge cache does with each kind of resource, on a real origin.

    python -m SimpleCDN.demo

1. Starts the bundled origin (150 ms latency) and one edge, requests each kind of resource twice and
   prints URL, first X-Cache + latency, second X-Cache + latency, and the origin's request count.
2. 100 concurrent requests for one cold object: how many reach the origin (coalescing).
3. A Zipf workload: 2,000 requests over 200 objects (s = 1.0, seeded), hit ratio and origin offload.
4. Three edges at simulated distances + the router: miss vs hit latency per edge, then the nearest
   edge is SIGKILLed and the router moves clients to the next one.
5. The network between an edge and the origin breaks (common.faultproxy): a slow link, then a
   connection cut in the middle of a response.
Everything runs on 127.0.0.1 on free ports and is stopped at the end.
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from common import cli, free_port, spawn_module
from common.faultproxy import fault_proxy

ORIGIN_LATENCY_MS = 150
ZIPF_REQUESTS = 2000
ZIPF_OBJECTS = 200
ZIPF_EXPONENT = 1.0
SEED = 8


def fetch(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, float, int]:
    """GET on a fresh connection -> (status, X-Cache, milliseconds, body bytes)."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        elapsed_ms = (time.perf_counter() - start) * 1000
        return response.status, response.getheader("X-Cache", "-"), elapsed_ms, len(body)
    finally:
        connection.close()


def get_json(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


RESOURCES = [
    ("/static/app.js", {}, "public, max-age=1 year"),
    ("/static/style.css", {}, "max-age=1 day + Last-Modified"),
    ("/index.html", {}, "no-cache + ETag: revalidate"),
    ("/expires", {}, "Expires - Date = 60 s"),
    ("/vary", {"Accept-Encoding": "gzip"}, "Vary: Accept-Encoding (gzip)"),
    ("/vary", {}, "... other variant (identity)"),
    ("/news", {}, "max-age=2, SWR, stale-if-error"),
    ("/account", {}, "private"),
    ("/api/time", {}, "no-store"),
    ("/login", {}, "Set-Cookie, not public"),
    ("/large.bin", {}, "12 MB > max object size"),
    ("/slow", {}, "1 s at the origin, max-age=60"),
]


def resource_table(edge: int, origin: int) -> None:
    print(f"\n1) each kind of resource, requested twice through the edge "
          f"(origin latency {ORIGIN_LATENCY_MS} ms)")
    print(f"   {'URL':<18} {'policy':<32} {'1st':>6} {'ms':>7}   {'2nd':>11} {'ms':>7}  origin hits")
    for path, headers, description in RESOURCES:
        _, first, first_ms, _ = fetch(edge, path, headers)
        _, second, second_ms, _ = fetch(edge, path, headers)
        hits = get_json(origin, "/__stats")["paths"].get(path, 0)
        print(f"   {path:<18} {description:<32} {first:>6} {first_ms:7.1f}   {second:>11} {second_ms:7.1f}"
              f"  {hits:>5}")
    time.sleep(2.2)  # let /news (max-age=2) go stale: the point is to show what happens next
    _, label, ms, _ = fetch(edge, "/news")
    print(f"   /news again after 2.2 s: {label} in {ms:.1f} ms (stale-while-revalidate: served at once, "
          f"refreshed in the background)")
    purge = http.client.HTTPConnection("127.0.0.1", edge, timeout=30)
    purge.request("PURGE", "/static/app.js")
    purge_status = purge.getresponse().status
    purge.close()
    _, label, ms, _ = fetch(edge, "/static/app.js")
    print(f"   PURGE /static/app.js -> {purge_status}; next GET: {label} in {ms:.1f} ms")


def coalescing(edge: int, origin: int, clients: int = 100) -> int:
    path = "/objects/100000"
    barrier = threading.Barrier(clients)

    def one(_):
        barrier.wait()
        return fetch(edge, path)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        replies = list(pool.map(one, range(clients)))
    origin_requests = get_json(origin, "/__stats")["paths"].get(path, 0)
    ok = sum(1 for status, *_ in replies if status == 200)
    print(f"\n2) coalescing: {clients} concurrent requests for one cold object -> {ok} answered 200, "
          f"origin requests: {origin_requests}")
    return origin_requests


def zipf_paths(count: int, objects: int, exponent: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    weights = [1 / (rank ** exponent) for rank in range(1, objects + 1)]
    return [f"/objects/{n}" for n in rng.choices(range(objects), weights=weights, k=count)]


def zipf_workload(edge: int, origin: int) -> tuple[float, float]:
    before = get_json(origin, "/__stats")["total"]
    edge_before = get_json(edge, "/__stats")
    paths = zipf_paths(ZIPF_REQUESTS, ZIPF_OBJECTS, ZIPF_EXPONENT, SEED)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda path: fetch(edge, path), paths))
    elapsed = time.perf_counter() - start
    origin_requests = get_json(origin, "/__stats")["total"] - before
    labels = [label for _, label, _, _ in replies]
    hits = labels.count("HIT") + labels.count("STALE")
    hit_ratio = hits / len(replies)
    offload = 1 - origin_requests / len(replies)
    hit_ms = sorted(ms for _, label, ms, _ in replies if label == "HIT")
    miss_ms = sorted(ms for _, label, ms, _ in replies if label == "MISS")
    print(f"\n3) Zipf workload: {ZIPF_REQUESTS} requests over {ZIPF_OBJECTS} objects (s={ZIPF_EXPONENT}, "
          f"seed {SEED}, 16 clients) in {elapsed:.1f} s")
    print(f"   distinct objects requested: {len(set(paths))}; X-Cache: " + ", ".join(
        f"{name} {labels.count(name)}" for name in ("HIT", "MISS", "STALE", "REVALIDATED", "BYPASS")
        if labels.count(name)))
    print(f"   hit ratio {hit_ratio:.1%}; origin requests {origin_requests} -> origin offload {offload:.1%}")
    if hit_ms and miss_ms:
        print(f"   median latency: hit {hit_ms[len(hit_ms) // 2]:.1f} ms, "
              f"miss {miss_ms[len(miss_ms) // 2]:.1f} ms")
    # /__stats counts from the edge's start (scenes 1 and 2 included), so this scene's share is the
    # difference; the whole-run figures are printed as such, not as this scene's.
    stats = get_json(edge, "/__stats")
    scene = {name: stats[name] - edge_before[name] for name in ("hits", "misses", "origin_fetches")}
    print(f"   edge /__stats, this scene only: {scene['hits']} hits, {scene['misses']} misses, "
          f"{scene['origin_fetches']} origin fetches")
    print(f"   edge /__stats, whole run so far (scenes 1-3): hit_ratio {stats['hit_ratio']:.1%}, "
          f"{stats['entries']} entries, {stats['bytes_cached']:,} bytes cached")
    return hit_ratio, offload


EDGES = [  # name, client<->edge ms, edge<->origin ms: the nearer the user, the farther the origin
    ("tokyo", 5, 120),
    ("frankfurt", 30, 40),
    ("virginia", 70, 5),
]


def several_edges(origin_url: str, children: list) -> bool:
    print("\n4) three edges at simulated distances, and a router to the nearest healthy one")
    ports = {}
    for name, client_ms, origin_ms in EDGES:
        port = free_port()
        children.append(spawn_module("SimpleCDN.cdn_server", "--port", str(port), "--origin", origin_url,
                                     "--name", name, "--client-latency-ms", str(client_ms),
                                     "--origin-latency-ms", str(origin_ms), port=port, timeout=30))
        ports[name] = port
    print(f"   {'edge':<10} {'to client':>9} {'to origin':>9}   {'miss ms':>8} {'hit ms':>7}")
    for name, client_ms, origin_ms in EDGES:
        _, miss_label, miss_ms, _ = fetch(ports[name], "/static/style.css")
        _, hit_label, hit_ms, _ = fetch(ports[name], "/static/style.css")
        print(f"   {name:<10} {client_ms:>7} ms {origin_ms:>7} ms   {miss_ms:8.1f} {hit_ms:7.1f}"
              f"   ({miss_label} then {hit_label})")
    router_port = free_port()
    specs = [f"--edge={name}=http://127.0.0.1:{ports[name]}@{client_ms}" for name, client_ms, _ in EDGES]
    children.append(spawn_module("SimpleCDN.router", "--port", str(router_port), "--check-interval", "0.1",
                                 *specs, port=router_port, timeout=30))
    first = wait_for_route(router_port, lambda route: route.get("edge") == "tokyo")
    print(f"   router sends clients to: {first.get('edge')}")
    nearest = children[-4]
    nearest.kill()
    print("   SIGKILL tokyo ...")
    second = wait_for_route(router_port, lambda route: route.get("edge") not in (None, "tokyo"))
    healthy = ", ".join(second.get("healthy", []))
    print(f"   router now sends clients to: {second.get('edge')} (healthy: {healthy})")
    return first.get("edge") == "tokyo" and second.get("edge") == "frankfurt"


def network_faults(origin_port: int, children: list) -> bool:
    """An edge whose origin link goes through a fault proxy: slow (longer than the edge waits), then
    cut mid-response. Returns whether each fault ended as it must (504s shared, 502, nothing kept)."""
    print("\n5) the link between an edge and the origin breaks (common.faultproxy, see common/README.md)")
    with fault_proxy(upstream=("127.0.0.1", origin_port)) as proxy:
        port = free_port()
        children.append(spawn_module("SimpleCDN.cdn_server", "--port", str(port), "--name", "faulty",
                                     "--origin", f"http://127.0.0.1:{proxy.address[1]}",
                                     "--origin-timeout", "1", port=port, timeout=30))
        proxy.delay(2000)
        barrier = threading.Barrier(10)

        def one(_):
            barrier.wait()
            return fetch(port, "/objects/500001")

        with ThreadPoolExecutor(max_workers=10) as pool:
            slow = list(pool.map(one, range(10)))
        connections = proxy.stats().connections_accepted
        statuses = sorted({status for status, *_ in slow})
        print(f"   link 2 s slow each way, edge waits 1 s: 10 clients at once -> status {statuses}, "
              f"origin connections opened: {connections} (the ten were coalesced)")
        proxy.heal()
        status, label, ms, _ = fetch(port, "/objects/500001")
        print(f"   healed: {status} {label} in {ms:.0f} ms")
        proxy.cut_after(300)
        cut_status, _, _, _ = fetch(port, "/objects/500002")
        streamed = streamed_bytes(port, "/large.bin")
        print(f"   link cut 300 bytes into each response: a storable object -> {cut_status} (it is read "
              f"whole before the answer, so nothing half is stored)")
        print(f"   ... /large.bin (streamed through) -> 200, then the connection closes after {streamed:,} "
              f"of 12,582,912 bytes: the only honest signal once the status line is out")
        proxy.heal()
        status, label, _, size = fetch(port, "/objects/500002")
        print(f"   healed: {status} {label}, {size:,} bytes")
    return statuses == [504] and connections == 1 and cut_status == 502 and label == "MISS"


def streamed_bytes(port: int, path: str) -> int:
    """How much of a streamed body arrives before the edge closes the connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        return len(connection.getresponse().read())
    except http.client.IncompleteRead as exc:
        return len(exc.partial)
    finally:
        connection.close()


def wait_for_route(port: int, accept, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            route = get_json(port, "/__route")
        except (OSError, ValueError):
            route = {}
        if accept(route) or time.monotonic() > deadline:
            return route
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m SimpleCDN.demo", description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    children = []
    try:
        origin_port, edge_port = free_port(), free_port()
        print(f"starting the origin ({ORIGIN_LATENCY_MS} ms latency) on :{origin_port} "
              f"and an edge on :{edge_port}")
        children.append(spawn_module("SimpleCDN.origin", "--port", str(origin_port),
                                     "--latency-ms", str(ORIGIN_LATENCY_MS), port=origin_port, timeout=30))
        origin_url = f"http://127.0.0.1:{origin_port}"
        children.append(spawn_module("SimpleCDN.cdn_server", "--port", str(edge_port),
                                     "--origin", origin_url, port=edge_port, timeout=30))
        resource_table(edge_port, origin_port)
        coalesced = coalescing(edge_port, origin_port)
        hit_ratio, offload = zipf_workload(edge_port, origin_port)
        failover = several_edges(origin_url, children)
        faults_ok = network_faults(origin_port, children)
    finally:  # also on Ctrl-C / SIGTERM (KeyboardInterrupt through cli.run): stop every child
        for child in reversed(children):
            child.stop()
    print(f"\nresult: Zipf hit ratio {hit_ratio:.1%}, origin offload {offload:.1%}, "
          f"100 concurrent misses -> {coalesced} origin fetch, "
          f"router failover {'ok' if failover else 'FAILED'}, "
          f"network faults {'handled' if faults_ok else 'MISHANDLED'}")
    return 0 if coalesced == 1 and failover and faults_ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
