"""The coordinator's durable log in SQLite: one row per transaction it has to remember.

The records, in order, and when each is forced (the variant's `Rules` decide):
1. collecting (PC only, forced): the participant list, before any prepare - so a restarted coordinator
   finds the transactions it left undecided and aborts them; "no information" must be able to mean
   commit in PC, so nothing that could still abort may go unrecorded.
2. decision (commit: always forced; abort: forced in basic and PC, lazy in PA): written before any
   phase-2 message is sent, at most once (`... WHERE decision IS NULL`, so the vote collector and the
   timeout sweeper cannot both decide: whoever loses reads the winner's decision).
3. end (lazy), once every acknowledgement the variant wants is in: the transaction can be forgotten.
   Individual acks are kept in memory, not logged: if they are lost in a crash the decision is simply
   re-sent, and commit/abort are idempotent at the participant.

Forced = `synchronous=FULL` (the WAL is fsynced before COMMIT returns); lazy = `synchronous=NORMAL`,
which in WAL mode survives a crash of this process but may lose the last commits on power loss or an
OS crash.
Every write is counted in `costs` (see costs.py).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .coordinator_machine import RULES, Decision, Protocol, TxRecord
from .costs import Costs

SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    txid TEXT PRIMARY KEY,
    protocol TEXT NOT NULL,
    order_json TEXT NOT NULL,
    participants_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    decision TEXT CHECK (decision IN ('commit', 'abort')),
    reason TEXT NOT NULL DEFAULT '',
    decided_at REAL,
    ended INTEGER NOT NULL DEFAULT 0
);
"""


class CoordinatorLog:
    """Thread-safe (a connection per operation) SQLite log of the coordinator."""

    def __init__(self, path: str | Path, costs: Costs | None = None):
        self.path = str(path)
        self.costs = costs or Costs()
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    @contextmanager
    def _connect(self, forced: bool = True) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA synchronous={'FULL' if forced else 'NORMAL'}")
        try:
            yield conn
        finally:
            conn.close()

    def collecting(self, txid: str, protocol: Protocol, order: dict, participants: Sequence[str]) -> None:
        """PC's forced collecting record (a no-op in basic and PA, which write nothing before deciding)."""
        if not RULES[protocol].forces_collecting:
            return
        with self._connect(forced=True) as conn:
            conn.execute("INSERT INTO transactions (txid, protocol, order_json, participants_json,"
                         " created_at) VALUES (?, ?, ?, ?, ?)",
                         (txid, protocol.value, json.dumps(order), json.dumps(list(participants)),
                          time.time()))
        self.costs.write(txid, True, "collecting")

    def log_decision(self, txid: str, protocol: Protocol, order: dict, participants: Sequence[str],
                     decision: Decision, reason: str) -> tuple[Decision, str]:
        """Write `decision` unless one is written already; return the decision that holds, and its reason.

        `participants` are those phase 2 must reach; they replace the collecting record's list.
        """
        forced = RULES[protocol].forces[decision]
        now = time.time()
        with self._connect(forced=forced) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO transactions (txid, protocol, order_json, participants_json, created_at,"
                " decision, reason, decided_at, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (txid) DO UPDATE SET decision=excluded.decision, reason=excluded.reason,"
                " decided_at=excluded.decided_at, participants_json=excluded.participants_json,"
                " ended=excluded.ended WHERE decision IS NULL",
                # a decision nobody acknowledges is finished as soon as it is written: no end record
                (txid, protocol.value, json.dumps(order), json.dumps(list(participants)), now,
                 decision.value, reason, now, int(not RULES[protocol].needs_end_record(decision))))
            changed = conn.execute("SELECT changes()").fetchone()[0]
            row = conn.execute("SELECT decision, reason FROM transactions WHERE txid=?", (txid,)).fetchone()
            conn.execute("COMMIT")
        if changed:
            self.costs.write(txid, forced, decision.value)
        return Decision(row["decision"]), row["reason"]

    def log_end(self, txid: str) -> None:
        """Lazy: every ack is in. Losing it only means one more (harmless) round of re-sends."""
        with self._connect(forced=False) as conn:
            changed = conn.execute("UPDATE transactions SET ended=1 WHERE txid=? AND ended=0",
                                   (txid,)).rowcount
        if changed:
            self.costs.write(txid, False, "end")

    def get(self, txid: str) -> TxRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM transactions WHERE txid=?", (txid,)).fetchone()
        return None if row is None else _record(row)

    def order(self, txid: str) -> dict | None:
        with self._connect() as conn:
            row = conn.execute("SELECT order_json FROM transactions WHERE txid=?", (txid,)).fetchone()
        return None if row is None else json.loads(row["order_json"])

    def all(self) -> list[TxRecord]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM transactions ORDER BY created_at").fetchall()
        return [_record(row) for row in rows]

    def unfinished(self) -> list[TxRecord]:
        """Undecided transactions and decisions whose end record is not written yet."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM transactions WHERE decision IS NULL OR ended=0"
                                " ORDER BY created_at").fetchall()
        return [_record(row) for row in rows]


def _record(row: sqlite3.Row) -> TxRecord:
    return TxRecord(txid=row["txid"], participants=tuple(json.loads(row["participants_json"])),
                    created_at=row["created_at"], protocol=Protocol(row["protocol"]),
                    decision=Decision(row["decision"]) if row["decision"] else None,
                    reason=row["reason"], ended=bool(row["ended"]), decided_at=row["decided_at"])
