"""PostgreSQL as a 2PC participant: prepare is PREPARE TRANSACTION, phase 2 is COMMIT/ROLLBACK PREPARED.

Skipped, with the reason, when PostgreSQL's server binaries are not installed (bash .ci/run installs
Debian's `postgresql`). Each test runs a private server it may SIGKILL.
"""

from __future__ import annotations

import pytest

from common import postgres
from tests.twopc_helpers import (
    make_cluster,
    post_order,
    settle_and_audit,
    state,
    transactions,
    tx_state,
    wait_until,
)
from TwoPhaseCommit.httpjson import Unreachable

try:
    postgres.find_postgres_bin()
    MISSING = ""
except postgres.PostgresUnavailable as exc:
    MISSING = str(exc)
pytestmark = pytest.mark.skipif(bool(MISSING), reason=MISSING or "PostgreSQL is installed")
psycopg = pytest.importorskip("psycopg", reason="psycopg is in requirements.txt")


@pytest.fixture
def pg():
    with postgres.PostgresServer() as server:
        yield server


def pg_cluster(spawn, tmp_path, pg, **overrides):
    return make_cluster(spawn, tmp_path, extra_args={"inventory": ["--store", "postgres", "--dsn", pg.dsn]},
                        **overrides)


def query(pg, sql: str, *params) -> list[tuple]:
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_prepared_transaction_survives_a_postgres_crash_holds_its_locks_and_recovery_commits_it(
        spawn, tmp_path, pg):
    cluster = pg_cluster(spawn, tmp_path, pg)
    cluster.start_all(crash_at={"coordinator": "after-decision-logged"})
    with pytest.raises(Unreachable):
        post_order(cluster, "burger", 2)  # both prepared, commit logged, the coordinator died
    assert cluster.wait_dead("coordinator", timeout=30)
    (txid,) = [gid for (gid,) in query(pg, "SELECT gid FROM pg_prepared_xacts")]

    pg.kill()   # SIGKILL the postmaster and every backend between PREPARE and COMMIT PREPARED
    pg.start()  # crash recovery: the prepared transaction is back, owned by no session
    assert query(pg, "SELECT gid FROM pg_prepared_xacts") == [(txid,)]
    assert query(pg, "SELECT available FROM stock WHERE item = 'burger'") == [(5,)]  # invisible until commit
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):  # its row lock survived the crash too
            conn.execute("UPDATE stock SET available = available - 1 WHERE item = 'burger'")

    cluster.start("coordinator")  # recovery re-sends commit: inventory runs COMMIT PREPARED
    settle_and_audit(cluster)     # the stock invariant, read from PostgreSQL
    assert query(pg, "SELECT gid FROM pg_prepared_xacts") == []
    assert query(pg, "SELECT available FROM stock WHERE item = 'burger'") == [(3,)]
    assert query(pg, "SELECT state, quantity FROM transactions WHERE txid = %s", txid) == [("committed", 2)]
    assert [tx["outcome"] for tx in transactions(cluster).values()] == ["committed"]


def test_an_abort_is_rollback_prepared_and_gives_everything_back(spawn, tmp_path, pg):
    cluster = pg_cluster(spawn, tmp_path, pg, couriers="John")
    cluster.start_all()
    assert post_order(cluster, "burger", 1)[1]["outcome"] == "committed"  # John is out with it
    status, answer = post_order(cluster, "pizza", 3)  # inventory prepares all 3 pizzas; no courier
    assert (status, answer["outcome"]) == (200, "aborted")
    # delivery's "no" can decide the abort while inventory's prepare is still running; the abort then
    # meets a PREPAREd transaction later (via inventory's inquiry): wait for inventory's own outcome, since
    # settle() cannot see a prepare in progress
    wait_until(lambda: tx_state(cluster, "inventory", answer["txid"]) == "aborted",
               what="inventory to abort the pizzas")
    settle_and_audit(cluster, {answer["txid"]: "aborted"})
    assert query(pg, "SELECT gid FROM pg_prepared_xacts") == []
    assert query(pg, "SELECT available FROM stock WHERE item = 'pizza'") == [(3,)]
    assert state(cluster, "inventory")["store"] == "postgres"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:  # and the row lock went with the rollback
        conn.execute("SET lock_timeout = '300ms'")
        conn.execute("UPDATE stock SET available = available WHERE item = 'pizza'")
