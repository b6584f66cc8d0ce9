"""Helpers for the TwoPhaseCommit tests: a cluster of real processes started through the `spawn` fixture."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from TwoPhaseCommit.audit import audit, settle
from TwoPhaseCommit.cluster import Cluster
from TwoPhaseCommit.httpjson import call_json

FAST = {"rpc_timeout": 1.5, "retry_interval": 0.2, "resolve_interval": 0.3, "decision_timeout": 10.0}


def make_cluster(spawn, workdir: Path, **overrides) -> Cluster:
    """A Cluster whose processes the `spawn` fixture stops after the test (short, configurable timeouts)."""
    return Cluster(workdir, spawner=spawn, **{**FAST, **overrides})


def post_order(cluster: Cluster, item: str, quantity, address: str = "1 Main St", timeout: float = 15.0):
    return call_json("POST", f"{cluster.coordinator_url}/orders",
                     {"item": item, "quantity": quantity, "address": address}, timeout=timeout)


def state(cluster: Cluster, name: str) -> dict:
    return call_json("GET", f"{cluster.url(name)}/state", timeout=10.0)[1]


def transactions(cluster: Cluster) -> dict[str, dict]:
    body = call_json("GET", f"{cluster.coordinator_url}/transactions", timeout=10.0)[1]
    return {tx["txid"]: tx for tx in body["transactions"]}


def tx_state(cluster: Cluster, name: str, txid: str) -> str | None:
    st = state(cluster, name)
    return next((tx["state"] for tx in st["in_doubt"] + st["decided"] if tx["txid"] == txid), None)


def available(cluster: Cluster, item: str) -> int:
    return state(cluster, "inventory")["resources"][item]["available"]


def settle_and_audit(cluster: Cluster, answers: dict[str, str] | None = None) -> None:
    settle(cluster.coordinator_url, cluster.participant_urls, timeout=60)
    report = audit(cluster.coordinator_url, cluster.participant_urls, answers)
    assert report.ok, "\n".join(report.lines())


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate` (a state query, not a fixed sleep) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
