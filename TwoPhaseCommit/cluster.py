"""Start, kill and restart the three processes of the shop (coordinator, inventory, delivery).

Used by the demo, the chaos run and the tests. Each process keeps its port and its SQLite file across
restarts - a restart is the same node coming back with its disk, which is what recovery is about.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import ChildProcess, free_port, spawn_module

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
    retry_interval: float = 0.3
    decision_timeout: float = 10.0
    resolve_interval: float = 0.5
    spawner: Callable[..., ChildProcess] = spawn_module
    specs: dict[str, NodeSpec] = field(default_factory=dict)
    processes: dict[str, ChildProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        ports = {name: free_port() for name in ("coordinator", *PARTICIPANTS)}
        for kind in PARTICIPANTS:
            self.specs[kind] = NodeSpec(kind, ports[kind], [
                "--kind", kind, "--port", str(ports[kind]), "--db", str(self.workdir / f"{kind}.db"),
                "--stock", self.stock, "--couriers", self.couriers,
                "--resolve-interval", str(self.resolve_interval),
                "--in-doubt-after", str(self.resolve_interval), "--rpc-timeout", str(self.rpc_timeout),
            ], "TwoPhaseCommit.participant")
        self.specs["coordinator"] = NodeSpec("coordinator", ports["coordinator"], [
            "--port", str(ports["coordinator"]), "--log", str(self.workdir / "coordinator.db"),
            "--protocol", self.protocol,
            *[arg for kind in PARTICIPANTS for arg in ("--participant", f"{kind}={self.url(kind)}")],
            "--rpc-timeout", str(self.rpc_timeout), "--retry-interval", str(self.retry_interval),
            "--decision-timeout", str(self.decision_timeout),
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
        self.processes[name] = self.spawner(spec.module, *spec.args, port=spec.port, env=env, timeout=30.0)
        return self.processes[name]

    def start_all(self, crash_at: dict[str, str] | None = None) -> None:
        for name in (*PARTICIPANTS, "coordinator"):
            self.start(name, (crash_at or {}).get(name))

    def kill(self, name: str) -> None:
        """SIGKILL: the crash no handler can intercept."""
        process = self.processes.get(name)
        if process is not None:
            process.kill()

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
