"""Benchmark: our edge vs nginx with proxy_cache, in one run, on loopback.

    python -m SimpleCDN.bench [--seconds 3] [--repeats 5]

Measures, for both (interleaved repetitions, median of --repeats):
1. cache hits: requests/s and p50/p99 latency for a 10 KB object (keep-alive clients,
   SimpleCDN.loadgen processes);
2. the miss path: median latency of a cold object through the edge minus straight to the origin;
3. coalescing: 100 concurrent requests for one cold object -> requests the origin received.
nginx (Debian's /usr/sbin/nginx, or `nginx` on PATH) runs as a child process with a generated
config in a temporary directory (`-p` prefix, `daemon off`, pid, logs and cache all inside it), one
worker process to match our one event loop, `proxy_cache_lock on` (its coalescing). Without nginx
the column is skipped with a message.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import cli, free_port, spawn_command, spawn_module

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
HIT_PATH = "/bench/10k"


def find_nginx() -> str | None:
    for candidate in NGINX_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("nginx")


def nginx_config(prefix: Path, port: int, origin_port: int, workers: int = 1) -> str:
    # Running as root, nginx workers would switch to "nobody", who cannot write our temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=edge:10m max_size=64m inactive=60m use_temp_path=off;
    keepalive_requests 10000000;  # nginx closes a keep-alive connection after 1000 by default; ours never
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            proxy_cache_revalidate on;
            proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
            proxy_cache_background_update on;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""


def start_nginx(binary: str, prefix: Path, origin_port: int, workers: int = 1):
    port = free_port()
    prefix.mkdir(exist_ok=True)
    (prefix / "nginx.conf").write_text(nginx_config(prefix, port, origin_port, workers))
    child = spawn_command([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
                           str(prefix / "error.log")], port=port, timeout=20, log_dir=prefix,
                          description="nginx")
    return child, port


def nginx_version(binary: str) -> str:
    result = subprocess.run([binary, "-v"], capture_output=True, text=True)
    return (result.stderr or result.stdout).strip().replace("nginx version: ", "")


# ------------------------------------------------------------------------------------ measures

def get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("X-Cache", "-")
    finally:
        connection.close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process `pid` and its children (nginx's or our workers), from /proc.

    Requests per CPU-second is the figure a busy machine distorts least: requests/s depends on how
    much of the cores the server gets, the CPU it spends per request does not (much).
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1] is the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def hit_load(port: int, seconds: float, connections: int, processes: int, pid: int | None = None) -> dict:
    """Run `processes` loadgen processes at once; requests/s, p50, p99 over all of them, and the
    server's requests per CPU-second when its `pid` is given (and /proc exists)."""
    command = [sys.executable, "-m", "SimpleCDN.loadgen", "--port", str(port), "--path", HIT_PATH,
               "--connections", str(connections), "--seconds", str(seconds)]
    cpu_before = cpu_seconds(pid) if pid and os.path.isdir("/proc") else None
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(processes)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed: {err.strip()}")
        results.append(json.loads(out))
    latencies = sorted(value for result in results for value in result["latencies_ms"])
    requests = sum(result["requests"] for result in results)
    errors = sum(result["errors"] for result in results)
    seconds_run = max(result["seconds"] for result in results)
    cpu = cpu_seconds(pid) - cpu_before if cpu_before is not None and pid else 0.0
    return {"rps": requests / seconds_run, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "errors": errors, "per_cpu_s": requests / cpu if cpu > 0 else float("nan")}


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


def sequential_latency(port: int, paths: list[str]) -> float:
    """Median latency (ms) of GETs for `paths`, one after another on one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    samples = []
    try:
        for path in paths:
            start = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            samples.append((time.perf_counter() - start) * 1000)
            if response.status != 200:
                raise RuntimeError(f"GET {path} on :{port} -> {response.status}")
    finally:
        connection.close()
    return statistics.median(samples)


def origin_count(origin_port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", origin_port, timeout=30)
    try:
        connection.request("GET", "/__stats")
        return json.loads(connection.getresponse().read())["paths"].get(path, 0)
    finally:
        connection.close()


def coalescing(port: int, origin_port: int, path: str, clients: int = 100) -> tuple[int, int]:
    """`clients` concurrent GETs for one cold object (the origin takes 1 s for /slow-like paths)."""
    barrier = threading.Barrier(clients)

    def one(_):
        barrier.wait()
        return get(port, path)[0]

    with ThreadPoolExecutor(max_workers=clients) as pool:
        statuses = list(pool.map(one, range(clients)))
    return sum(1 for status in statuses if status == 200), origin_count(origin_port, path)


# ---------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m SimpleCDN.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=cli.positive_float, default=3.0,
                        help="duration of each hit-load run")
    parser.add_argument("--repeats", type=cli.positive_int, default=5,
                        help="interleaved repetitions (median reported)")
    parser.add_argument("--connections", type=cli.positive_int, default=32,
                        help="keep-alive connections per loadgen")
    parser.add_argument("--loadgens", type=cli.positive_int, default=2, help="loadgen processes run at once")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx column")
    args = parser.parse_args(argv)

    nginx = None if args.no_nginx else find_nginx()
    children = []
    prefix = Path(tempfile.mkdtemp(prefix="simplecdn-bench-"))
    try:
        origin_port = free_port()
        children.append(spawn_module("SimpleCDN.origin", "--port", str(origin_port), "--latency-ms", "0",
                                     port=origin_port, timeout=30, log_dir=prefix))
        edge_port = free_port()
        children.append(spawn_module("SimpleCDN.cdn_server", "--port", str(edge_port), "--origin",
                                     f"http://127.0.0.1:{origin_port}", port=edge_port, timeout=30,
                                     log_dir=prefix))
        servers = {"ours": edge_port}
        if uvloop_available():
            uvloop_port = free_port()
            children.append(spawn_module("SimpleCDN.cdn_server", "--port", str(uvloop_port), "--origin",
                                         f"http://127.0.0.1:{origin_port}", "--loop", "uvloop",
                                         port=uvloop_port, timeout=30, log_dir=prefix))
            servers["uvloop"] = uvloop_port
        else:
            print("uvloop not installed (pip install uvloop): the SimpleCDN --loop uvloop column is skipped")
        if nginx:
            nginx_child, nginx_port = start_nginx(nginx, prefix, origin_port)
            children.append(nginx_child)
            servers["nginx"] = nginx_port
            print(f"nginx {nginx_version(nginx)} at {nginx}: 1 worker, proxy_cache + proxy_cache_lock "
                  f"(config in {prefix})")
        else:
            print("nginx not found (install Debian's `nginx` package): the nginx column is skipped")
        # Two workers each (hits only): ours are two processes with a cache each, nginx's share one.
        hit_only = {}
        two_port = free_port()
        children.append(spawn_module("SimpleCDN.cdn_server", "--port", str(two_port), "--origin",
                                     f"http://127.0.0.1:{origin_port}", "--workers", "2",
                                     port=two_port, timeout=30, log_dir=prefix))
        hit_only["ours x2"] = two_port
        if nginx:
            nginx2_child, hit_only["nginx x2"] = start_nginx(nginx, prefix / "two", origin_port, workers=2)
            children.append(nginx2_child)
        print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs; "
              f"{args.repeats} interleaved repetitions, median reported")

        for name, port in {**servers, **hit_only}.items():
            for _ in range(20):  # new connections reach every worker, so each one stores it
                status, label = get(port, HIT_PATH)
            if (status, label) != (200, "HIT"):
                raise RuntimeError(f"{name} did not cache {HIT_PATH}: {status} {label}")

        loaded = {**servers, **hit_only}
        pids = {child.port: child.pid for child in children}
        runs: dict[str, list[dict]] = {name: [] for name in loaded}
        misses: dict[str, list[float]] = {name: [] for name in ["direct", *servers]}
        print(f"\n1) cache hits on {HIT_PATH}: {args.loadgens} loadgen processes x {args.connections} "
              f"keep-alive connections, {args.seconds:g} s per run")
        for rep in cli.progress(range(args.repeats), label="repetitions"):
            order = list(loaded) if rep % 2 == 0 else list(reversed(loaded))
            for name in order:
                result = hit_load(loaded[name], args.seconds, args.connections, args.loadgens,
                                  pid=pids.get(loaded[name]))
                runs[name].append(result)
                print(f"   run {rep + 1} {name:<8} {result['rps']:9.0f} req/s  p50 {result['p50']:6.2f} ms  "
                      f"p99 {result['p99']:6.2f} ms  errors {result['errors']}")
            # The miss path, interleaved too: fresh objects every repetition, so every request misses.
            paths = {name: [f"/objects/{1_000_000 * (rep + 1) + 1000 * index + n}" for n in range(100)]
                     for index, name in enumerate(["direct", *servers])}
            misses["direct"].append(sequential_latency(origin_port, paths["direct"]))
            for name, port in servers.items():
                misses[name].append(sequential_latency(port, paths[name]))

        print("\n2) coalescing: 100 concurrent requests for one cold object (origin takes 1 s)")
        coalesced = {}
        for name, port in servers.items():
            ok, count = coalescing(port, origin_port, f"/slow?for={name}")
            coalesced[name] = count
            print(f"   {name:<5} {ok} x 200, origin requests: {count}")

        print_table(servers, runs, misses, coalesced, args)
        print_workers_table(hit_only, runs)
    finally:  # also on Ctrl-C / SIGTERM (KeyboardInterrupt through cli.run)
        for child in reversed(children):
            child.stop()
        shutil.rmtree(prefix, ignore_errors=True)
    return 0


def print_workers_table(hit_only: dict[str, int], runs: dict[str, list[dict]]) -> None:
    if "nginx x2" not in hit_only:
        return
    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])
    print("\nTwo workers each (SimpleCDN --workers 2: a cache per worker; nginx worker_processes 2)")
    print(f"| {'measure':<20} | {'SimpleCDN x2':>12} | {'nginx x2':>10} | {'ours/nginx':>10} |")
    print(f"|{'-' * 22}|{'-' * 14}|{'-' * 12}|{'-' * 12}|")
    for label, key, fmt in (("hit req/s (10 KB)", "rps", "{:.0f}"), ("hit p50 ms", "p50", "{:.2f}"),
                            ("hit p99 ms", "p99", "{:.2f}"), ("hits per CPU-second", "per_cpu_s", "{:.0f}")):
        ours, peer = median("ours x2", key), median("nginx x2", key)
        print(f"| {label:<20} | {fmt.format(ours):>12} | {fmt.format(peer):>10} | {ours / peer:>10.2f} |")


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def print_table(servers, runs, misses, coalesced, args) -> None:
    """One column per server (ours, ours with uvloop, nginx) and each of ours as a ratio to nginx."""
    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    direct = statistics.median(misses["direct"])
    measures = [
        ("hit req/s (10 KB)", lambda n: median(n, "rps"), "{:.0f}"),
        ("hit p50 ms", lambda n: median(n, "p50"), "{:.2f}"),
        ("hit p99 ms", lambda n: median(n, "p99"), "{:.2f}"),
        ("hits per CPU-second", lambda n: median(n, "per_cpu_s"), "{:.0f}"),
        ("miss p50 ms", lambda n: statistics.median(misses[n]), "{:.2f}"),
        ("miss overhead ms vs origin", lambda n: statistics.median(misses[n]) - direct, "{:.2f}"),
        ("origin reqs for 100 concurrent", lambda n: coalesced[n], "{:.0f}"),
    ]
    names = list(servers)
    titles = {"ours": "SimpleCDN", "uvloop": "+uvloop", "nginx": "nginx"}
    ours = [name for name in names if name != "nginx"]
    has_nginx = "nginx" in servers
    print(f"\nSimpleCDN vs nginx proxy_cache, median of {args.repeats}; "
          f"straight to the origin: miss p50 {direct:.2f} ms")
    header = [f"{'measure':<31}"] + [f"{titles[n]:>10}" for n in names]
    if has_nginx:
        header += [f"{titles[n] + '/nginx':>15}" for n in ours]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("-" * (len(cell) + 2) for cell in header) + "|")
    for label, value, fmt in measures:
        values = {name: value(name) for name in names}
        cells = [f"{label:<31}"] + [f"{fmt.format(values[n]):>10}" for n in names]
        if has_nginx:
            peer = values["nginx"]
            # A ratio of two noise-level numbers (an overhead measured at or below zero) means nothing.
            cells += [f"{(f'{values[n] / peer:.2f}' if peer > 0 and values[n] > 0 else '-'):>15}"
                      for n in ours]
        print("| " + " | ".join(cells) + " |")
    summary = ", ".join(f"{titles[n]} {median(n, 'rps'):.0f} hit req/s"
                        + (f" = {median(n, 'rps') / median('nginx', 'rps'):.2f}x nginx" if has_nginx else "")
                        for n in ours)
    print(f"result: {summary}; 100 concurrent misses -> {coalesced['ours']} origin request")


if __name__ == "__main__":
    sys.exit(cli.run(main))
