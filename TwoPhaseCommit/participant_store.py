"""A participant's durable state in SQLite: its resources and every transaction it has seen.

The durable points of the participant, in order (forced or lazy as the variant's `Rules` say):
1. prepare: one SQLite transaction (BEGIN IMMEDIATE) checks the resource, takes it (stock decremented,
   courier marked) and records the transaction as PREPARED, *forced*. Only after COMMIT returns does
   the participant answer "yes" - a yes vote is a promise that must survive a crash. A "no" is recorded
   as ABORTED (forced unless the variant is presumed abort); a read-only vote records nothing.
2. commit / abort: one SQLite transaction moves PREPARED to COMMITTED (the reservation becomes final)
   or to ABORTED (exactly the reserved quantity is given back). It is forced when the variant wants
   it acknowledged (the ack promises it is durable), lazy otherwise.

Forced = `synchronous=FULL` (SQLite fsyncs the WAL before COMMIT returns). Lazy = `synchronous=NORMAL`:
in WAL mode that survives a crash of the process but may lose the last commits on power loss or an OS
crash. SQLite refuses to change the setting inside a transaction, so a write's durability is chosen
when it begins.

Why BEGIN IMMEDIATE: it takes SQLite's write lock *before* reading the stock, so two concurrent prepares
cannot both read "1 left" and both reserve it (a read-then-upgrade DEFERRED transaction could). The
`CHECK (available >= 0)` constraint is a second line of defence: an oversell would be a crash, never data.

The state machine (participant_machine) decides what each message means; this module only applies it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .costs import Costs
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
    peer_status,
    stock_vote,
)
from .variants import RULES, Decision, Protocol

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
    protocol TEXT NOT NULL DEFAULT 'basic', -- the variant named in the prepare
    peers TEXT NOT NULL DEFAULT '{}',     -- the other participants (JSON name -> URL), to ask when in doubt
    prepared_at REAL,
    updated_at REAL NOT NULL
);
"""


class ParticipantStore:
    """The SQLite-backed participant. Thread-safe: every operation uses its own connection."""

    def __init__(self, path: str | Path, kind: str, stock: dict[str, int] | None = None,
                 couriers: Sequence[str] | None = None, crash: CrashPlan | None = None,
                 costs: Costs | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.path = str(path)
        self.kind = kind
        self.crash = crash or CrashPlan.none()
        self.costs = costs or Costs()
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
        self._seed(stock or {}, list(couriers or []))

    # --- connections --------------------------------------------------------------------------------

    @contextmanager
    def _connect(self, forced: bool = True) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # FULL: a COMMIT is on disk before we answer (a yes vote must survive power loss, not only
        # SIGKILL); NORMAL for the writes the variant lets us do lazily
        conn.execute(f"PRAGMA synchronous={'FULL' if forced else 'NORMAL'}")
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self, forced: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its first statement (BEGIN IMMEDIATE)."""
        with self._connect(forced) as conn:
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

    def prepare(self, txid: str, order: Order, coordinator: str | None = None,
                protocol: Protocol = Protocol.BASIC, peers: dict[str, str] | None = None) -> Vote:
        """Vote on `order`. A yes is returned only after the reservation is forced to disk.

        Raises BadOrder (nothing recorded) for an item this participant does not know.
        """
        context = {"coordinator": coordinator, "protocol": protocol.value, "peers": json.dumps(peers or {})}
        with self._write(forced=True) as conn:
            state = _state(conn, txid)
            step = on_prepare(state)
            if step is not Step.RESERVE:
                conn.execute("COMMIT")
                return self._repeat_vote(conn, txid, step)
            vote, courier = self._vote(conn, order)  # BadOrder for an unknown item: nothing written
            if vote.yes and not vote.read_only:
                self._reserve(conn, txid, order, vote, courier, context)
                self.crash.reached("before-prepare-recorded")  # reserved, not yet committed: rolled back
                conn.execute("COMMIT")
                self.costs.write(txid, True, "prepared")
                self.crash.reached("after-prepare-recorded")  # durable, but the coordinator never hears yes
                return vote
            conn.execute("ROLLBACK")  # read-only: nothing to record; no: recorded below, forced or not
        if not vote.yes:
            forced = RULES[protocol].participant_forces_no_vote()
            with self._write(forced=forced) as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO transactions (txid, state, item, quantity, reason, coordinator,"
                    " protocol, peers, prepared_at, updated_at) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                    (txid, TxState.ABORTED.value, order.item if self.kind == "inventory" else None,
                     vote.reason, coordinator, protocol.value, context["peers"], time.time(), time.time()))
                conn.execute("COMMIT")
            self.costs.write(txid, forced, "voted-no")
        return vote

    def _vote(self, conn: sqlite3.Connection, order: Order) -> tuple[Vote, str | None]:
        """The vote, and the courier it would hold (delivery only)."""
        if self.kind == "inventory":
            available = {row["item"]: row["available"] for row in conn.execute("SELECT * FROM stock")}
            return stock_vote(available, order), None
        if order.pickup:
            return Vote(True, "pick-up order: no courier needed", read_only=True), None
        courier = free_courier(self._roster(conn), self._busy(conn))
        if courier is None:
            return Vote(False, "no courier available"), None
        return Vote(True, f"courier {courier} assigned"), courier

    def _reserve(self, conn: sqlite3.Connection, txid: str, order: Order, vote: Vote, courier: str | None,
                 context: dict) -> None:
        now = time.time()
        if self.kind == "inventory":
            conn.execute("UPDATE stock SET available = available - ? WHERE item = ?",
                         (order.quantity, order.item))
            conn.execute(
                "INSERT INTO transactions (txid, state, item, quantity, reason, coordinator, protocol, peers,"
                " prepared_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (txid, TxState.PREPARED.value, order.item, order.quantity, vote.reason,
                 context["coordinator"], context["protocol"], context["peers"], now, now))
            return
        conn.execute(
            "INSERT INTO transactions (txid, state, courier, reason, coordinator, protocol, peers,"
            " prepared_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (txid, TxState.PREPARED.value, courier, vote.reason, context["coordinator"], context["protocol"],
             context["peers"], now, now))

    def _repeat_vote(self, conn: sqlite3.Connection, txid: str, step: Step) -> Vote:
        reason = conn.execute("SELECT reason FROM transactions WHERE txid=?", (txid,)).fetchone()["reason"]
        if step is Step.VOTE_YES_AGAIN:
            return Vote(True, f"{reason} (duplicate prepare)")
        return Vote(False, reason or "already aborted")

    # --- phase 2 ------------------------------------------------------------------------------------

    def commit(self, txid: str) -> TxState:
        """Make the reservation final. Idempotent; raises ProtocolViolation for an aborted/unknown txid."""
        protocol = self._protocol(txid)
        forced = RULES[protocol].participant_forces(Decision.COMMIT)
        with self._write(forced) as conn:
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
            self.costs.write(txid, forced, "committed")
            self.crash.reached("after-commit-applied")  # applied, but the coordinator gets no ack
        return TxState.COMMITTED

    def abort(self, txid: str, protocol: Protocol | None = None) -> TxState:
        """Give back exactly what was reserved. Idempotent; raises ProtocolViolation after a commit.

        `protocol` (from the abort message) decides how durable a tombstone for an unknown txid must be.
        """
        protocol = self._protocol(txid, default=protocol or Protocol.BASIC)
        forced = RULES[protocol].participant_forces(Decision.ABORT)
        with self._write(forced) as conn:
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
                             (TxState.ABORTED.value, "aborted", now, txid))
            elif step is Step.TOMBSTONE:
                # abort before prepare (reordered or timed-out messages): remember it so a late
                # prepare votes no instead of reserving
                conn.execute("INSERT INTO transactions (txid, state, reason, protocol, updated_at)"
                             " VALUES (?, ?, ?, ?, ?)",
                             (txid, TxState.ABORTED.value, "aborted before prepare arrived",
                              protocol.value, now))
            conn.execute("COMMIT")
        if step in (Step.RELEASE, Step.TOMBSTONE):
            self.costs.write(txid, forced, "aborted")
        return TxState.ABORTED

    def apply_decision(self, txid: str, answer: str) -> Step:
        """Apply a decision learnt by asking (the coordinator, or a peer); returns what was done."""
        with self._connect() as conn:
            state = _state(conn, txid)
        step = on_decision_answer(state, answer)
        if answer == "commit":
            self.commit(txid)
        elif answer == "abort":
            self.abort(txid)
        return step

    def peer_status(self, txid: str) -> str:
        """What we tell an in-doubt peer (cooperative termination): commit, abort, uncertain or unknown."""
        with self._connect() as conn:
            return peer_status(_state(conn, txid))

    def _protocol(self, txid: str, default: Protocol = Protocol.BASIC) -> Protocol:
        with self._connect() as conn:
            row = conn.execute("SELECT protocol FROM transactions WHERE txid=?", (txid,)).fetchone()
        return Protocol(row["protocol"]) if row else default

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


def _tx_json(row: sqlite3.Row) -> dict:
    tx = {"txid": row["txid"], "state": row["state"], "reason": row["reason"],
          "coordinator": row["coordinator"], "protocol": row["protocol"], "peers": json.loads(row["peers"])}
    if row["item"] is not None:
        tx.update(item=row["item"], quantity=row["quantity"])
    if row["courier"] is not None:
        tx.update(courier=row["courier"], delivered=bool(row["delivered"]))
    return tx


__all__ = ["BadOrder", "KINDS", "ParticipantStore", "ProtocolViolation"]
