"""The inventory participant with its state in PostgreSQL, where *prepare* is PostgreSQL's own.

    python -m TwoPhaseCommit.participant --kind inventory --store postgres --dsn postgresql://...

The same protocol a real XA transaction manager drives against a database:

    prepare  BEGIN; SELECT ... FOR UPDATE (the stock row); UPDATE stock; INSERT the order's row;
             PREPARE TRANSACTION 'txid'    -- durable, survives a server crash, keeps its row locks
    commit   COMMIT PREPARED 'txid'        -- from any session, even after a restart
    abort    ROLLBACK PREPARED 'txid'

Between PREPARE and COMMIT PREPARED the transaction belongs to no session: it is listed in
`pg_prepared_xacts`, its changes are invisible, and its row locks block every other writer of the same
stock row. That is 2PC's blocking, enforced by the database itself (see the guide's operator notes).

The order's row is inserted *inside* the prepared transaction with state 'committed', so it becomes
visible exactly when COMMIT PREPARED makes it true. What an in-doubt participant needs to know while it
is invisible (coordinator, peers, variant, item, quantity) goes in a `pending` row committed just
before, asynchronously (synchronous_commit = off): PostgreSQL's write-ahead log is one sequential log,
so the PREPARE's own forced flush makes that earlier record durable too.

`lock_timeout` bounds a prepare that finds the stock row held by an in-doubt transaction: it votes no
instead of waiting for an outage to end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from .costs import Costs
from .crash import CrashPlan
from .participant_machine import (
    BadOrder,
    Order,
    ProtocolViolation,
    Step,
    TxState,
    Vote,
    on_abort,
    on_commit,
    on_decision_answer,
    on_prepare,
    peer_status,
    stock_vote,
)
from .variants import RULES, Protocol

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    item text PRIMARY KEY,
    available integer NOT NULL CHECK (available >= 0),
    initial integer NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (   -- decided transactions (a prepared one is invisible)
    txid text PRIMARY KEY,
    state text NOT NULL,
    item text, quantity integer NOT NULL DEFAULT 0,
    reason text NOT NULL DEFAULT '',
    coordinator text, protocol text NOT NULL DEFAULT 'basic', peers text NOT NULL DEFAULT '{}',
    updated_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (        -- what an in-doubt participant needs while it is prepared
    txid text PRIMARY KEY,
    item text NOT NULL, quantity integer NOT NULL,
    coordinator text, protocol text NOT NULL, peers text NOT NULL, prepared_at double precision NOT NULL
);
"""


class PostgresInventoryStore:
    """The inventory participant's store in PostgreSQL (same interface as ParticipantStore)."""

    kind = "inventory"

    def __init__(self, dsn: str, stock: dict[str, int] | None = None, crash: CrashPlan | None = None,
                 costs: Costs | None = None, lock_timeout: float = 1.0):
        self.dsn = dsn
        self.crash = crash or CrashPlan.none()
        self.costs = costs or Costs()
        self.lock_timeout_ms = int(lock_timeout * 1000)
        with self._connect() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(2)")  # two participants starting at once
            conn.execute(SCHEMA)
            if conn.execute("SELECT count(*) FROM stock").fetchone()[0] == 0:
                conn.cursor().executemany("INSERT INTO stock VALUES (%s, %s, %s)",
                                          [(item, n, n) for item, n in (stock or {}).items()])

    @contextmanager
    def _connect(self, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        with psycopg.connect(self.dsn, autocommit=autocommit, connect_timeout=5) as conn:
            yield conn

    # --- what we know about a transaction ---------------------------------------------------------

    def _state(self, conn: psycopg.Connection, txid: str) -> TxState | None:
        # prepared first, then decided: COMMIT PREPARED removes the gid and shows the row atomically,
        # so reading in this order cannot miss a transaction that is being committed right now
        if conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s AND database = current_database()",
                        (txid,)).fetchone():
            return TxState.PREPARED
        row = conn.execute("SELECT state FROM transactions WHERE txid = %s", (txid,)).fetchone()
        return TxState(row[0]) if row else None

    def state_of(self, txid: str) -> TxState | None:
        with self._connect(autocommit=True) as conn:
            return self._state(conn, txid)

    # --- phase 1 ----------------------------------------------------------------------------------

    def prepare(self, txid: str, order: Order, coordinator: str | None = None,
                protocol: Protocol = Protocol.BASIC, peers: dict[str, str] | None = None) -> Vote:
        step = on_prepare(self.state_of(txid))
        if step is Step.VOTE_YES_AGAIN:
            return Vote(True, "duplicate prepare")
        if step is Step.VOTE_NO_AGAIN:
            return Vote(False, "already aborted")
        with self._connect(autocommit=True) as conn:  # BEGIN ... PREPARE TRANSACTION spelt out
            conn.execute("BEGIN")
            try:
                vote = self._reserve(conn, txid, order, coordinator, protocol, peers)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if not vote.yes:
                conn.execute("ROLLBACK")
                return self._record_no(txid, order, coordinator, protocol, peers, vote.reason)
            self.crash.reached("before-prepare-recorded")  # nothing durable yet: the server rolls it back
            conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(txid)))  # forced
        self.costs.write(txid, True, "prepared")
        self.crash.reached("after-prepare-recorded")
        return vote

    def _reserve(self, conn: psycopg.Connection, txid: str, order: Order, coordinator: str | None,
                 protocol: Protocol, peers: dict[str, str] | None) -> Vote:
        """Inside BEGIN: lock the stock row, check it, take the units, write the order's row."""
        conn.execute(f"SET LOCAL lock_timeout = {self.lock_timeout_ms}")
        try:
            row = conn.execute("SELECT available FROM stock WHERE item = %s FOR UPDATE",
                               (order.item,)).fetchone()
        except psycopg.errors.LockNotAvailable:
            return Vote(False, f"{order.item} is locked by an in-doubt transaction")
        if row is None:
            items = [r[0] for r in conn.execute("SELECT item FROM stock ORDER BY item")]
            raise BadOrder(f"unknown item {order.item!r}; we sell: {', '.join(items)}")
        vote = stock_vote({order.item: row[0]}, order)
        if vote.yes:
            conn.execute("UPDATE stock SET available = available - %s WHERE item = %s",
                         (order.quantity, order.item))
            conn.execute("INSERT INTO transactions (txid, state, item, quantity, reason, coordinator,"
                         " protocol, peers, updated_at) VALUES (%s, 'committed', %s, %s, %s, %s, %s, %s, %s)",
                         (txid, order.item, order.quantity, vote.reason, coordinator, protocol.value,
                          json.dumps(peers or {}), time.time()))
            self._remember_pending(txid, order, coordinator, protocol, peers)
        return vote

    def _remember_pending(self, txid: str, order: Order, coordinator: str | None, protocol: Protocol,
                          peers: dict[str, str] | None) -> None:
        with self._connect(autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")  # made durable by the PREPARE's flush
            conn.execute("INSERT INTO pending VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (txid, order.item, order.quantity, coordinator, protocol.value,
                          json.dumps(peers or {}), time.time()))
        self.costs.write(txid, False, "pending")

    def _record_no(self, txid: str, order: Order, coordinator: str | None, protocol: Protocol,
                   peers: dict[str, str] | None, reason: str) -> Vote:
        forced = RULES[protocol].participant_forces_no_vote()
        with self._connect(autocommit=True) as conn:
            if not forced:
                conn.execute("SET synchronous_commit = off")
            conn.execute("INSERT INTO transactions (txid, state, item, reason, coordinator, protocol, peers,"
                         " updated_at) VALUES (%s, 'aborted', %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (txid, order.item, reason, coordinator, protocol.value, json.dumps(peers or {}),
                          time.time()))
        self.costs.write(txid, forced, "voted-no")
        return Vote(False, reason)

    # --- phase 2 ----------------------------------------------------------------------------------

    def commit(self, txid: str) -> TxState:
        """COMMIT PREPARED. Idempotent; ProtocolViolation for an aborted or unknown txid."""
        with self._connect(autocommit=True) as conn:
            state = self._state(conn, txid)
            step = on_commit(state)
            if step is Step.CONFLICT:
                raise ProtocolViolation(f"cannot commit {txid}: it is {state.value if state else 'unknown'}"
                                        " here (a commit must follow a yes vote)")
            if step is Step.APPLY_COMMIT:
                self.crash.reached("before-commit-applied")
                try:
                    conn.execute(sql.SQL("COMMIT PREPARED {}").format(sql.Literal(txid)))
                except psycopg.errors.UndefinedObject:  # a concurrent commit (a re-send) got there first
                    if self._state(conn, txid) is not TxState.COMMITTED:
                        raise
                    return TxState.COMMITTED
                self.costs.write(txid, True, "committed")
                self.crash.reached("after-commit-applied")
        return TxState.COMMITTED

    def abort(self, txid: str, protocol: Protocol | None = None) -> TxState:
        """ROLLBACK PREPARED, then a tombstone row. Idempotent; ProtocolViolation after a commit."""
        with self._connect(autocommit=True) as conn:
            state = self._state(conn, txid)
            step = on_abort(state)
            if step is Step.CONFLICT:
                raise ProtocolViolation(f"cannot abort {txid}: it is already committed here")
            if step is Step.ACK:
                return TxState.ABORTED
            if step is Step.RELEASE:
                try:
                    # the reservation vanishes with it
                    conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(txid)))
                except psycopg.errors.UndefinedObject:
                    pass  # a concurrent abort got there first
            # remember the abort, so a late prepare votes no and a duplicate abort is just acked. If this
            # txid's prepare is running right now (the abort overtook it), its uncommitted row holds the
            # key: this insert waits until that transaction ends - once PREPAREd, until the inquiry or a
            # re-sent abort rolls it back. Slow, but never wrong.
            conn.execute("INSERT INTO transactions (txid, state, reason, protocol, updated_at)"
                         " VALUES (%s, 'aborted', 'aborted', %s, %s) ON CONFLICT DO NOTHING",
                         (txid, (protocol or Protocol.BASIC).value, time.time()))
        self.costs.write(txid, True, "aborted")
        return TxState.ABORTED

    def apply_decision(self, txid: str, answer: str) -> Step:
        step = on_decision_answer(self.state_of(txid), answer)
        if answer == "commit":
            self.commit(txid)
        elif answer == "abort":
            self.abort(txid)
        return step

    def peer_status(self, txid: str) -> str:
        return peer_status(self.state_of(txid))

    def deliver(self, txid: str) -> None:
        raise BadOrder("only the delivery participant delivers orders")

    # --- reading ----------------------------------------------------------------------------------

    def in_doubt(self, prepared_before: float | None = None) -> list[dict]:
        """Transactions PREPAREd here and not yet committed or rolled back (pg_prepared_xacts)."""
        cutoff = time.time() + 1e9 if prepared_before is None else prepared_before
        with self._connect(autocommit=True) as conn:
            rows = conn.execute(
                "SELECT p.txid, p.item, p.quantity, p.coordinator, p.protocol, p.peers FROM pending p"
                " JOIN pg_prepared_xacts x ON x.gid = p.txid AND x.database = current_database()"
                " WHERE p.prepared_at <= %s ORDER BY p.prepared_at", (cutoff,)).fetchall()
        return [{"txid": txid, "state": TxState.PREPARED.value, "reason": "prepared (pg_prepared_xacts)",
                 "item": item, "quantity": quantity, "coordinator": coordinator, "protocol": protocol,
                 "peers": json.loads(peers)} for txid, item, quantity, coordinator, protocol, peers in rows]

    def snapshot(self) -> dict:
        """Resources, in-doubt and decided transactions (GET /state). `available` is what committed
        transactions left; a prepared transaction's reservation shows in `in_doubt` until it commits."""
        with self._connect() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one consistent read
            resources = {item: {"available": available, "initial": initial} for item, available, initial
                         in conn.execute("SELECT item, available, initial FROM stock ORDER BY item")}
            decided = [{"txid": txid, "state": state, "reason": reason, "item": item, "quantity": quantity,
                        "coordinator": coordinator, "protocol": protocol, "peers": json.loads(peers)}
                       for txid, state, reason, item, quantity, coordinator, protocol, peers in conn.execute(
                           "SELECT txid, state, reason, item, quantity, coordinator, protocol, peers"
                           " FROM transactions ORDER BY updated_at")]
        return {"kind": self.kind, "store": "postgres", "resources": resources, "in_doubt": self.in_doubt(),
                "decided": decided}
