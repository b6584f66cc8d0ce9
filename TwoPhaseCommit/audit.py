"""The invariant audit: what "nothing lost, nothing split" means after crashes and recovery.

After recovery:
1. no participant holds an in-doubt (prepared, undecided) transaction;
2. every transaction in the coordinator's log is decided and acknowledged by every participant;
3. every participant agrees with the coordinator's decision (unknown to the coordinator = aborted);
4. for each item, current stock + committed quantities = initial stock (abort gave back exactly);
5. no courier holds more than one undelivered committed order, and every committed order has a courier;
6. every order the coordinator answered "committed" is committed at every participant, and every
   order it answered "aborted" holds nothing anywhere.

`settle()` waits for recovery to finish; `audit()` runs the checks. chaos.py and the tests share them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from .httpjson import Unreachable, call_json


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class AuditReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def add(self, name: str, problems: list[str], summary: str) -> None:
        detail = summary if not problems else f"{len(problems)} problem(s): " + "; ".join(problems[:5])
        self.checks.append(Check(name, not problems, detail))

    def lines(self) -> list[str]:
        return [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]


def fetch(coordinator_url: str, participant_urls: Mapping[str, str], timeout: float = 5.0):
    """(coordinator transactions by txid, participant name -> GET /state)."""
    _, body = call_json("GET", f"{coordinator_url}/transactions", timeout=timeout)
    coordinator = {tx["txid"]: tx for tx in body["transactions"]}
    states = {name: call_json("GET", f"{url}/state", timeout=timeout)[1]
              for name, url in participant_urls.items()}
    return coordinator, states


def settle(coordinator_url: str, participant_urls: Mapping[str, str], timeout: float = 60.0) -> float:
    """Wait until recovery has finished everything (no in-doubt, nothing unacknowledged).

    Returns the seconds it took; raises TimeoutError saying what is still unfinished.
    """
    start = time.monotonic()
    unfinished: list[str] = []
    while time.monotonic() - start < timeout:
        try:
            coordinator, states = fetch(coordinator_url, participant_urls)
        except (Unreachable, KeyError):
            time.sleep(0.1)
            continue
        unfinished = [f"{txid} {tx['phase']}" for txid, tx in coordinator.items()
                      if tx["phase"] not in ("committed", "aborted")]
        unfinished += [f"{name}: {tx['txid']} in doubt" for name, state in states.items()
                       for tx in state["in_doubt"]]
        if not unfinished:
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(f"recovery did not finish within {timeout:.0f}s: {unfinished[:5]}")


def audit(coordinator_url: str, participant_urls: Mapping[str, str],
          answers: Mapping[str, str] | None = None) -> AuditReport:
    """Run every invariant check. `answers` maps txid -> the outcome the coordinator told the client."""
    coordinator, states = fetch(coordinator_url, participant_urls)
    return audit_states(coordinator, states, answers)


def audit_states(coordinator: Mapping[str, dict], states: Mapping[str, dict],
                 answers: Mapping[str, str] | None = None) -> AuditReport:
    """The checks themselves, on already fetched state (GET /transactions by txid, GET /state by name)."""
    report = AuditReport()
    decisions = {txid: tx["decision"] for txid, tx in coordinator.items()}
    by_participant = {name: {tx["txid"]: tx for tx in state["in_doubt"] + state["decided"]}
                      for name, state in states.items()}

    report.add("no in-doubt transaction left",
               [f"{name}: {tx['txid']}" for name, state in states.items() for tx in state["in_doubt"]],
               f"0 in doubt at {len(states)} participants")
    report.add("every transaction decided and acknowledged",
               [f"{txid} is {tx['phase']}" for txid, tx in coordinator.items()
                if tx["phase"] not in ("committed", "aborted")],
               f"{len(coordinator)} transactions: " + ", ".join(
                   f"{n} {phase}" for phase, n in sorted(Counter(
                       tx["phase"] for tx in coordinator.values()).items())))
    phase2 = {txid: tx.get("participants", list(states)) for txid, tx in coordinator.items()}
    report.add("participants agree with the coordinator", _disagreements(decisions, by_participant, phase2),
               "one outcome per transaction everywhere")
    inventory = [s for s in states.values() if s["kind"] == "inventory"]
    delivery = [s for s in states.values() if s["kind"] == "delivery"]
    for state in inventory:
        _check_stock(report, state)
    for state in delivery:
        _check_couriers(report, state)
    if answers is not None:
        _check_answers(report, answers, decisions, by_participant, phase2)
    return report


def _disagreements(decisions: Mapping[str, str | None], by_participant: Mapping[str, dict],
                   phase2: Mapping[str, list[str]]) -> list[str]:
    problems = []
    for name, txs in by_participant.items():
        for txid, tx in txs.items():
            # a txid the coordinator never logged can only have been aborted
            expected = {"commit": "committed", "abort": "aborted"}.get(decisions.get(txid) or "abort")
            if tx["state"] != expected:
                problems.append(f"{name} has {txid} {tx['state']}, coordinator decided {decisions.get(txid)}")
    for txid, decision in decisions.items():
        if decision == "commit":  # every participant that voted yes must know (read-only voters need not)
            problems += [f"{txid} committed by the coordinator but unknown to {name}"
                         for name, txs in by_participant.items()
                         if txid not in txs and name in phase2[txid]]
    return problems


def _check_stock(report: AuditReport, state: dict) -> None:
    held: Counter[str] = Counter()
    for tx in state["in_doubt"] + state["decided"]:
        if tx["state"] in ("prepared", "committed") and "item" in tx:
            held[tx["item"]] += tx["quantity"]
    problems, parts = [], []
    for item, row in state["resources"].items():
        total = row["available"] + held[item]
        parts.append(f"{item} {row['available']}+{held[item]}={row['initial']}")
        if total != row["initial"] or row["available"] < 0:
            problems.append(f"{item}: available {row['available']} + held {held[item]}"
                            f" != initial {row['initial']}")
    report.add("stock + committed = initial", problems, ", ".join(parts))


def _check_couriers(report: AuditReport, state: dict) -> None:
    load: Counter[str] = Counter()
    problems = []
    for tx in state["in_doubt"] + state["decided"]:
        if tx["state"] == "committed":
            if not tx.get("courier"):
                problems.append(f"committed {tx['txid']} has no courier")
            elif not tx.get("delivered"):
                load[tx["courier"]] += 1
    problems += [f"{name} carries {n} orders" for name, n in load.items() if n > 1]
    report.add("no courier carries more than one order", problems,
               f"{sum(load.values())} of {len(state['resources'])} couriers out with an order")


def _check_answers(report: AuditReport, answers: Mapping[str, str], decisions: Mapping[str, str | None],
                   by_participant: Mapping[str, dict], phase2: Mapping[str, list[str]]) -> None:
    problems = []
    for txid, outcome in answers.items():
        states = {name: txs.get(txid, {}).get("state") for name, txs in by_participant.items()}
        if outcome == "committed":
            voters = {name: state for name, state in states.items() if name in phase2.get(txid, states)}
            if decisions.get(txid) != "commit" or any(s != "committed" for s in voters.values()):
                problems.append(f"{txid} answered committed but is {states}")
        elif outcome == "aborted" and any(s in ("prepared", "committed") for s in states.values()):
            problems.append(f"{txid} answered aborted but holds {states}")
    counts = Counter(answers.values())
    report.add("clients' answers hold", problems,
               f"{counts['committed']} committed and {counts['aborted']} aborted answers verified")
