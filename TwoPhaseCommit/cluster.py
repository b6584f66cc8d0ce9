"""Start, kill and restart the three processes of the shop (coordinator, inventory, delivery).

Used by the demos, the chaos run and the tests. Each process keeps its port and its SQLite file across
restarts - a restart is the same node coming back with its disk, which is what recovery is about.

`links=("coordinator->delivery", "delivery->coordinator", ...)` puts a fault proxy (common/faultproxy)
on each named one-way link: the caller on the left reaches the node on the right only through it, so
`cluster.proxies["coordinator->delivery"].partition()` cuts exactly that path. `trace=FILE` makes every
process record its messages there (common/trace), and the cluster records the kills and restarts.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common import ChildProcess, free_port, spawn_module
from common.faultproxy import FaultProxy
from common.trace import Tracer

from .crash import CRASH_ENV
from .participant import DEFAULT_COURIERS, DEFAULT_STOCK

PARTICIPANTS = ("inventory", "delivery")


@dataclass
class NodeSpec:
    name: str
    port: int
    args: list[str]
    module: str


@dataclass
class Cluster:
    """The coordinator and two participants as real processes on 127.0.0.1."""

    workdir: Path
    stock: str = DEFAULT_STOCK
    couriers: str = DEFAULT_COURIERS
    rpc_timeout: float = 2.0
    protocol: str = "pa"
    extra_args: dict[str, list[str]] = field(default_factory=dict)  # e.g. inventory: --store postgres
    retry_interval: float = 0.3
    decision_timeout: float = 10.0
    resolve_interval: float = 0.5
    spawner: Callable[..., ChildProcess] = spawn_module
    links: tuple[str, ...] = ()
    trace: Path | None = None
    specs: dict[str, NodeSpec] = field(default_factory=dict)
    processes: dict[str, ChildProcess] = field(default_factory=dict)
    proxies: dict[str, FaultProxy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        ports = {name: free_port() for name in ("coordinator", *PARTICIPANTS)}
        for link in self.links:
            caller, _, callee = link.partition("->")
            if caller not in ports or callee not in ports or caller == callee:
                raise ValueError(f"bad link {link!r}; write e.g. coordinator->delivery")
            self.proxies[link] = FaultProxy(upstream=("127.0.0.1", ports[callee])).start()

        def seen_by(caller: str, callee: str) -> str:  # the URL `caller` uses to reach `callee`
            proxy = self.proxies.get(f"{caller}->{callee}")
            return f"http://127.0.0.1:{proxy.address[1] if proxy else ports[callee]}"

        traced = ["--trace", str(self.trace)] if self.trace else []
        for kind in PARTICIPANTS:
            routes = [("--coordinator", seen_by(kind, "coordinator"))
                      for link in self.links if link == f"{kind}->coordinator"]
            routes += [("--peer", f"{other}={seen_by(kind, other)}") for other in PARTICIPANTS
                       if f"{kind}->{other}" in self.links]
            self.specs[kind] = NodeSpec(kind, ports[kind], [
                "--kind", kind, "--port", str(ports[kind]), "--db", str(self.workdir / f"{kind}.db"),
                "--stock", self.stock, "--couriers", self.couriers,
                "--resolve-interval", str(self.resolve_interval),
                "--in-doubt-after", str(self.resolve_interval), "--rpc-timeout", str(self.rpc_timeout),
                *self.extra_args.get(kind, []), *[arg for route in routes for arg in route], *traced,
            ], "TwoPhaseCommit.participant")
        self.specs["coordinator"] = NodeSpec("coordinator", ports["coordinator"], [
            "--port", str(ports["coordinator"]), "--log", str(self.workdir / "coordinator.db"),
            "--protocol", self.protocol,
            *[arg for kind in PARTICIPANTS
              for arg in ("--participant", f"{kind}={seen_by('coordinator', kind)}")],
            "--rpc-timeout", str(self.rpc_timeout), "--retry-interval", str(self.retry_interval),
            "--decision-timeout", str(self.decision_timeout), *traced,
        ], "TwoPhaseCommit.coordinator")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.specs[name].port}"

    @property
    def coordinator_url(self) -> str:
        return self.url("coordinator")

    @property
    def participant_urls(self) -> dict[str, str]:
        return {kind: self.url(kind) for kind in PARTICIPANTS}

    def start(self, name: str, crash_at: str | None = None) -> ChildProcess:
        """Start (or restart) one node; `crash_at` arms a crash point through the environment."""
        spec = self.specs[name]
        env = {CRASH_ENV: crash_at or ""}
        previous = self.processes.get(name)
        if previous is not None:
            previous.stop()  # normally already dead (killed or crashed); this also tidies its log
            self._trace_mark(name, "restart", "restart")
        self.processes[name] = self.spawner(spec.module, *spec.args, port=spec.port, env=env, timeout=30.0)
        return self.processes[name]

    def start_all(self, crash_at: dict[str, str] | None = None) -> None:
        """Start the three processes at once (each start waits for its port; the imports dominate)."""
        with ThreadPoolExecutor(max_workers=3) as pool:
            starts = [pool.submit(self.start, name, (crash_at or {}).get(name))
                      for name in (*PARTICIPANTS, "coordinator")]
            for started in starts:
                started.result()  # re-raise a failed start

    def kill(self, name: str) -> None:
        """SIGKILL: the crash no handler can intercept."""
        process = self.processes.get(name)
        if process is not None and process.alive():
            process.kill()
            self._trace_mark(name, "crash", "SIGKILL")

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.alive()

    def wait_dead(self, name: str, timeout: float) -> bool:
        """Wait for a node that was armed with a crash point to kill itself."""
        try:
            self.processes[name].popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop(grace=5.0)
        for proxy in self.proxies.values():
            proxy.close()

    def _trace_mark(self, name: str, kind: str, label: str) -> None:
        """A SIGKILLed process cannot record its own crash: the one who killed it does."""
        if self.trace:
            with Tracer(self.trace, process=name) as tracer:
                getattr(tracer, kind)(label)
