"""common/postgres.py: a private PostgreSQL that really is one - prepared transactions enabled, a crash
that kills every backend, recovery on restart, nothing left behind; POSTGRES_DSN honoured."""

from __future__ import annotations

import os

import pytest

from common import postgres
from common.postgres import PostgresServer, PostgresUnavailable, postgres_server

try:
    postgres.find_postgres_bin()
    MISSING = ""
except PostgresUnavailable as exc:
    MISSING = str(exc)

needs_postgres = pytest.mark.skipif(bool(MISSING), reason=MISSING or "PostgreSQL is installed")
psycopg = pytest.importorskip("psycopg", reason="psycopg is in requirements.txt")


@pytest.fixture
def server():
    if os.environ.get(postgres.POSTGRES_DSN_ENV):
        pytest.skip("needs a PostgreSQL of its own to kill; POSTGRES_DSN is set")
    with PostgresServer() as running:
        yield running


@needs_postgres
def test_a_prepared_transaction_survives_a_crash_of_the_whole_server(server):
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        assert int(conn.execute("SHOW max_prepared_transactions").fetchone()[0]) > 0  # 0 disables 2PC
        conn.execute("CREATE TABLE t (n int)")
    with psycopg.connect(server.dsn) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("PREPARE TRANSACTION 'g1'")
    server.kill()
    assert not server.alive()
    server.start()  # same data directory: WAL replay restores the prepared transaction
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        assert conn.execute("SELECT gid FROM pg_prepared_xacts").fetchall() == [("g1",)]
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # not visible until committed
        conn.execute("COMMIT PREPARED 'g1'")
        assert conn.execute("SELECT n FROM t").fetchall() == [(1,)]


@needs_postgres
def test_the_server_does_not_run_as_root_and_leaves_nothing_behind():
    server = PostgresServer().start()
    pid, workdir = server.popen.pid, server.workdir
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        data_directory = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
    assert data_directory.startswith(str(workdir))
    if os.geteuid() == 0:
        assert os.stat(server.datadir).st_uid != 0  # PostgreSQL refuses to run as root
    server.close()
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no postmaster, no backend left in its process group


def test_postgres_dsn_is_used_as_is(monkeypatch):
    monkeypatch.setenv(postgres.POSTGRES_DSN_ENV, "postgresql://someone@db.example:5432/shop")
    with postgres_server() as dsn:
        assert dsn == "postgresql://someone@db.example:5432/shop"


def test_missing_binaries_say_what_to_install(monkeypatch):
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    with pytest.raises(PostgresUnavailable, match="postgresql"):
        postgres.find_postgres_bin()
