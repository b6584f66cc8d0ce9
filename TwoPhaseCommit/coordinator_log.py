"""The coordinator's durable log in SQLite: one row per transaction, one row per phase-2 acknowledgement.

Durable points of the coordinator, in order:
1. begin: the transaction and its participants are logged before any prepare is sent, so a restarted
   coordinator knows which undecided transactions it left behind (and aborts them).
2. decision: logged (committed to disk) before any phase-2 message is sent. Written with
   `UPDATE ... WHERE decision IS NULL`, so it is set exactly once even when the vote collector and the
   timeout sweeper race: whoever loses reads the winner's decision.
3. acks: each participant's acknowledgement of phase 2, written *lazily* (not forced to disk): losing
   one in a power failure only means the decision is re-sent, and commit/abort are idempotent at the
   participant, so a re-send is harmless. Forcing every ack would cost one fsync per participant per
   transaction for nothing.

"Forced" means `synchronous=FULL`: SQLite fsyncs the write-ahead log before COMMIT returns. The lazy
writes use `synchronous=NORMAL`, which in WAL mode survives a crash of this process (the bytes are in
the OS page cache) but may lose the last commits on power loss - exactly the guarantee an ack needs.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .coordinator_machine import Decision, TxRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    txid TEXT PRIMARY KEY,
    order_json TEXT NOT NULL,
    participants_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    decision TEXT CHECK (decision IN ('commit', 'abort')),
    reason TEXT NOT NULL DEFAULT '',
    decided_at REAL
);
CREATE TABLE IF NOT EXISTS acks (
    txid TEXT NOT NULL REFERENCES transactions(txid),
    participant TEXT NOT NULL,
    acked_at REAL NOT NULL,
    PRIMARY KEY (txid, participant)
);
"""


class CoordinatorLog:
    """Thread-safe (a connection per operation) SQLite log of the coordinator."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    @contextmanager
    def _connect(self, forced: bool = True) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # FULL: a logged decision is on disk before phase 2 starts; NORMAL (lazy): see the docstring
        conn.execute(f"PRAGMA synchronous={'FULL' if forced else 'NORMAL'}")
        try:
            yield conn
        finally:
            conn.close()

    def begin(self, txid: str, order: dict, participants: Sequence[str]) -> None:
        with self._connect() as conn:
            conn.execute("INSERT INTO transactions (txid, order_json, participants_json, created_at)"
                         " VALUES (?, ?, ?, ?)",
                         (txid, json.dumps(order), json.dumps(list(participants)), time.time()))

    def log_decision(self, txid: str, decision: Decision, reason: str) -> tuple[Decision, str]:
        """Log `decision` unless one is logged already; return the decision that holds, and its reason."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE transactions SET decision=?, reason=?, decided_at=?"
                         " WHERE txid=? AND decision IS NULL", (decision.value, reason, time.time(), txid))
            row = conn.execute("SELECT decision, reason FROM transactions WHERE txid=?", (txid,)).fetchone()
            conn.execute("COMMIT")
        if row is None:
            raise KeyError(f"no transaction {txid} in the coordinator log")
        return Decision(row["decision"]), row["reason"]

    def record_ack(self, txid: str, participant: str) -> None:
        """Lazy: a lost ack only makes recovery re-send the decision, which the participant re-acks."""
        with self._connect(forced=False) as conn:
            conn.execute("INSERT OR IGNORE INTO acks VALUES (?, ?, ?)", (txid, participant, time.time()))

    def get(self, txid: str) -> TxRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM transactions WHERE txid=?", (txid,)).fetchone()
            return None if row is None else _record(conn, row)

    def order(self, txid: str) -> dict | None:
        with self._connect() as conn:
            row = conn.execute("SELECT order_json FROM transactions WHERE txid=?", (txid,)).fetchone()
        return None if row is None else json.loads(row["order_json"])

    def all(self) -> list[TxRecord]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM transactions ORDER BY created_at").fetchall()
            return [_record(conn, row) for row in rows]

    def unfinished(self) -> list[TxRecord]:
        """Undecided transactions and decisions some participant has not acknowledged."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM transactions t WHERE decision IS NULL OR"
                " (SELECT COUNT(*) FROM acks a WHERE a.txid = t.txid) < json_array_length(participants_json)"
                " ORDER BY created_at").fetchall()
            return [_record(conn, row) for row in rows]


def _record(conn: sqlite3.Connection, row: sqlite3.Row) -> TxRecord:
    acked = frozenset(r["participant"] for r in conn.execute("SELECT participant FROM acks WHERE txid=?",
                                                              (row["txid"],)))
    return TxRecord(txid=row["txid"], participants=tuple(json.loads(row["participants_json"])),
                    created_at=row["created_at"],
                    decision=Decision(row["decision"]) if row["decision"] else None,
                    reason=row["reason"], acked=acked, decided_at=row["decided_at"])
