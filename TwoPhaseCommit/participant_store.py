"""A participant's durable state in SQLite: its resources and every transaction it has seen.

The durable points of the participant, in order:
1. prepare: one SQLite transaction (BEGIN IMMEDIATE) checks the resource, takes it (stock decremented,
   courier marked) and records the transaction as PREPARED. Only after COMMIT returns does the
   participant answer "yes" - a yes vote is a promise that must survive a crash.
2. commit / abort: one SQLite transaction moves PREPARED to COMMITTED (the reservation becomes final)
   or to ABORTED (exactly the reserved quantity is given back), and only then is the decision acked.

Why BEGIN IMMEDIATE: it takes SQLite's write lock *before* reading the stock, so two concurrent prepares
cannot both read "1 left" and both reserve it (a read-then-upgrade DEFERRED transaction could). The
`CHECK (available >= 0)` constraint is a second line of defence: an oversell would be a crash, never data.

The state machine (participant_machine) decides what each message means; this module only applies it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .crash import CrashPlan
from .participant_machine import (
    BadOrder,
    Order,
    ProtocolViolation,
    Step,
    TxState,
    Vote,
    free_courier,
    on_abort,
    on_commit,
    on_decision_answer,
    on_prepare,
    stock_vote,
)

KINDS = ("inventory", "delivery")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stock (
    item TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0),
    initial INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS couriers (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS transactions (
    txid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    item TEXT, quantity INTEGER,          -- inventory: what was reserved (exactly this is given back)
    courier TEXT,                         -- delivery: who was reserved
    delivered INTEGER NOT NULL DEFAULT 0, -- delivery: the courier is free again after delivering
    reason TEXT NOT NULL DEFAULT '',
    coordinator TEXT,                     -- where to ask when in doubt
    prepared_at REAL,
    updated_at REAL NOT NULL
);
"""


class ParticipantStore:
    """The SQLite-backed participant. Thread-safe: every operation uses its own connection."""

    def __init__(self, path: str | Path, kind: str, stock: dict[str, int] | None = None,
                 couriers: Sequence[str] | None = None, crash: CrashPlan | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.path = str(path)
        self.kind = kind
        self.crash = crash or CrashPlan.none()
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
        self._seed(stock or {}, list(couriers or []))

    # --- connections --------------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # FULL: a COMMIT is on disk before we answer; a vote must survive power loss, not only SIGKILL
        conn.execute("PRAGMA synchronous=FULL")
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its first statement (BEGIN IMMEDIATE)."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # the block may have committed before raising (see _seed)
                    conn.execute("ROLLBACK")
                raise

    def _seed(self, stock: dict[str, int], couriers: list[str]) -> None:
        """First start: record the kind and initial resources. Later starts keep what is on disk."""
        with self._write() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key='kind'").fetchone()
            if row is not None:
                conn.execute("COMMIT")
                if row["value"] != self.kind:
                    raise ValueError(f"{self.path} belongs to the {row['value']} participant,"
                                     f" not {self.kind}")
                return
            conn.execute("INSERT INTO meta VALUES ('kind', ?)", (self.kind,))
            conn.executemany("INSERT INTO stock VALUES (?, ?, ?)",
                             [(item, count, count) for item, count in stock.items()])
            conn.executemany("INSERT INTO couriers VALUES (?, ?)",
                             [(name, i) for i, name in enumerate(couriers)])
            conn.execute("COMMIT")

    # --- phase 1 ------------------------------------------------------------------------------------

    def prepare(self, txid: str, order: Order, coordinator: str | None = None) -> Vote:
        """Vote on `order`. A yes is returned only after the reservation is committed to disk.

        Raises BadOrder (nothing recorded) for an item this participant does not know.
        """
        with self._write() as conn:
            state = _state(conn, txid)
            step = on_prepare(state)
            if step is not Step.RESERVE:
                conn.execute("COMMIT")
                return self._repeat_vote(conn, txid, step)
            vote = self._reserve(conn, txid, order, coordinator)
            if vote.yes:
                self.crash.reached("before-prepare-recorded")  # reserved, not yet committed: rolled back
            conn.execute("COMMIT")
        if vote.yes:
            self.crash.reached("after-prepare-recorded")  # durable, but the coordinator never hears yes
        return vote

    def _reserve(self, conn: sqlite3.Connection, txid: str, order: Order, coordinator: str | None) -> Vote:
        now = time.time()
        if self.kind == "inventory":
            available = {row["item"]: row["available"] for row in conn.execute("SELECT * FROM stock")}
            vote = stock_vote(available, order)  # raises BadOrder for an unknown item: nothing written
            if vote.yes:
                conn.execute("UPDATE stock SET available = available - ? WHERE item = ?",
                             (order.quantity, order.item))
            conn.execute(
                "INSERT INTO transactions (txid, state, item, quantity, reason, coordinator, prepared_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (txid, _vote_state(vote), order.item, order.quantity if vote.yes else 0, vote.reason,
                 coordinator, now, now))
            return vote
        courier = free_courier(self._roster(conn), self._busy(conn))
        vote = Vote(True, f"courier {courier} assigned") if courier else Vote(False, "no courier available")
        conn.execute(
            "INSERT INTO transactions (txid, state, courier, reason, coordinator, prepared_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (txid, _vote_state(vote), courier, vote.reason, coordinator, now, now))
        return vote

    def _repeat_vote(self, conn: sqlite3.Connection, txid: str, step: Step) -> Vote:
        reason = conn.execute("SELECT reason FROM transactions WHERE txid=?", (txid,)).fetchone()["reason"]
        if step is Step.VOTE_YES_AGAIN:
            return Vote(True, f"{reason} (duplicate prepare)")
        return Vote(False, reason or "already aborted")

    # --- phase 2 ------------------------------------------------------------------------------------

    def commit(self, txid: str) -> TxState:
        """Make the reservation final. Idempotent; raises ProtocolViolation for an aborted/unknown txid."""
        with self._write() as conn:
            state = _state(conn, txid)
            step = on_commit(state)
            if step is Step.CONFLICT:
                raise ProtocolViolation(f"cannot commit {txid}: it is {state.value if state else 'unknown'}"
                                        " here (a commit must follow a yes vote)")
            if step is Step.APPLY_COMMIT:
                conn.execute("UPDATE transactions SET state=?, updated_at=? WHERE txid=?",
                             (TxState.COMMITTED.value, time.time(), txid))
                self.crash.reached("before-commit-applied")
            conn.execute("COMMIT")
        if step is Step.APPLY_COMMIT:
            self.crash.reached("after-commit-applied")  # applied, but the coordinator gets no ack
        return TxState.COMMITTED

    def abort(self, txid: str) -> TxState:
        """Give back exactly what was reserved. Idempotent; raises ProtocolViolation after a commit."""
        with self._write() as conn:
            state = _state(conn, txid)
            step = on_abort(state)
            if step is Step.CONFLICT:
                raise ProtocolViolation(f"cannot abort {txid}: it is already committed here")
            now = time.time()
            if step is Step.RELEASE:
                row = conn.execute("SELECT item, quantity FROM transactions WHERE txid=?", (txid,)).fetchone()
                if row["item"] is not None:
                    conn.execute("UPDATE stock SET available = available + ? WHERE item = ?",
                                 (row["quantity"], row["item"]))
                conn.execute("UPDATE transactions SET state=?, reason=?, updated_at=? WHERE txid=?",
                             (TxState.ABORTED.value, "aborted by the coordinator", now, txid))
            elif step is Step.TOMBSTONE:
                # abort before prepare (reordered or timed-out messages): remember it so a late
                # prepare votes no instead of reserving
                conn.execute("INSERT INTO transactions (txid, state, reason, updated_at) VALUES (?, ?, ?, ?)",
                             (txid, TxState.ABORTED.value, "aborted before prepare arrived", now))
            conn.execute("COMMIT")
        return TxState.ABORTED

    def apply_decision(self, txid: str, answer: str) -> Step:
        """Apply the coordinator's answer to an in-doubt transaction; returns what was done."""
        with self._connect() as conn:
            state = _state(conn, txid)
        step = on_decision_answer(state, answer)
        if answer == "commit":
            self.commit(txid)
        elif answer == "abort":
            self.abort(txid)
        return step

    def deliver(self, txid: str) -> None:
        """Delivery only: the courier of a committed order has delivered it and is free again."""
        if self.kind != "delivery":
            raise BadOrder("only the delivery participant delivers orders")
        with self._write() as conn:
            state = _state(conn, txid)
            if state is not TxState.COMMITTED:
                raise ProtocolViolation(f"cannot deliver {txid}: it is {state.value if state else 'unknown'}"
                                        " (only committed orders are delivered)")
            conn.execute("UPDATE transactions SET delivered=1, updated_at=? WHERE txid=?",
                         (time.time(), txid))
            conn.execute("COMMIT")

    # --- reading ------------------------------------------------------------------------------------

    def in_doubt(self, prepared_before: float | None = None) -> list[dict]:
        """Prepared transactions with no decision yet: voted yes, resources held, waiting.

        `prepared_before` (a time.time() value) skips the young ones, whose votes are still being counted.
        """
        cutoff = time.time() + 1e9 if prepared_before is None else prepared_before
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM transactions WHERE state=? AND prepared_at <= ?"
                                " ORDER BY prepared_at", (TxState.PREPARED.value, cutoff)).fetchall()
        return [_tx_json(row) for row in rows]

    def snapshot(self) -> dict:
        """Resources, in-doubt and decided transactions (what GET /state returns)."""
        with self._connect() as conn:
            conn.execute("BEGIN")  # one consistent read of every table
            rows = conn.execute("SELECT * FROM transactions ORDER BY updated_at").fetchall()
            if self.kind == "inventory":
                resources = {row["item"]: {"available": row["available"], "initial": row["initial"]}
                             for row in conn.execute("SELECT * FROM stock ORDER BY item")}
            else:
                carrying = {row["courier"]: row["txid"] for row in rows if row["courier"] and (
                    row["state"] == TxState.PREPARED.value
                    or (row["state"] == TxState.COMMITTED.value and not row["delivered"]))}
                resources = {name: {"carrying": carrying.get(name)} for name in self._roster(conn)}
            conn.execute("COMMIT")
        txs = [_tx_json(row) for row in rows]
        return {"kind": self.kind, "resources": resources,
                "in_doubt": [tx for tx in txs if tx["state"] == TxState.PREPARED.value],
                "decided": [tx for tx in txs if tx["state"] != TxState.PREPARED.value]}

    def _roster(self, conn: sqlite3.Connection) -> list[str]:
        return [row["name"] for row in conn.execute("SELECT name FROM couriers ORDER BY position")]

    def _busy(self, conn: sqlite3.Connection) -> list[str]:
        return [row["courier"] for row in conn.execute(
            "SELECT courier FROM transactions WHERE courier IS NOT NULL"
            " AND (state=? OR (state=? AND delivered=0))",
            (TxState.PREPARED.value, TxState.COMMITTED.value))]


def _state(conn: sqlite3.Connection, txid: str) -> TxState | None:
    row = conn.execute("SELECT state FROM transactions WHERE txid=?", (txid,)).fetchone()
    return TxState(row["state"]) if row else None


def _vote_state(vote: Vote) -> str:
    # a "no" voter may abort alone at once: the coordinator can only decide abort
    return (TxState.PREPARED if vote.yes else TxState.ABORTED).value


def _tx_json(row: sqlite3.Row) -> dict:
    tx = {"txid": row["txid"], "state": row["state"], "reason": row["reason"],
          "coordinator": row["coordinator"]}
    if row["item"] is not None:
        tx.update(item=row["item"], quantity=row["quantity"])
    if row["courier"] is not None:
        tx.update(courier=row["courier"], delivered=bool(row["delivered"]))
    return tx


__all__ = ["BadOrder", "KINDS", "ParticipantStore", "ProtocolViolation"]
