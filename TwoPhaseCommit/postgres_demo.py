"""PostgreSQL as a 2PC participant, and what a crash between PREPARE and COMMIT PREPARED leaves behind.

    python -m TwoPhaseCommit.postgres_demo

1. A private PostgreSQL (common.postgres: initdb in a temporary folder, max_prepared_transactions > 0)
   holds the inventory; the delivery keeps SQLite; the coordinator runs presumed abort.
2. An order, with the coordinator armed to die right after logging "commit": the inventory's part is
   a PREPARE TRANSACTION in PostgreSQL, waiting for COMMIT PREPARED.
3. SIGKILL the whole PostgreSQL server, then restart it: `pg_prepared_xacts` still lists the
   transaction, and its row lock still blocks another session's update of the same item (shown with a
   lock timeout). This is what an orphaned prepared transaction does to a production database.
4. Restart the coordinator: recovery re-sends "commit", the inventory runs COMMIT PREPARED, the lock is
   gone, and the invariant audit (stock read from PostgreSQL) passes.

Needs PostgreSQL's server binaries (Debian: apt-get install postgresql). POSTGRES_DSN is not enough
here: the demo kills the server, so it always starts its own.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from common import cli
from common.postgres import PostgresServer, PostgresUnavailable

from .audit import audit, settle
from .cluster import Cluster
from .httpjson import Unreachable, call_json


def say(text: str = "") -> None:
    print(text, flush=True)


def query(dsn: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def blocked_update(dsn: str) -> str:
    """Another session tries to change the same stock row, giving up after 500 ms (and rolls back)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("SET lock_timeout = '500ms'")
        started = time.monotonic()
        try:
            conn.execute("UPDATE stock SET available = available - 1 WHERE item = 'burger'")
        except psycopg.errors.LockNotAvailable as exc:
            return f"ERROR after {time.monotonic() - started:.1f}s: {str(exc).strip().splitlines()[0]}"
        finally:
            conn.rollback()  # a look, not a change
        return "UPDATE 1 (not blocked; rolled back)"


def burgers(dsn: str) -> int:
    return query(dsn, "SELECT available FROM stock WHERE item='burger'")[0][0]


def run(workdir: str, pg: PostgresServer) -> str:
    cluster = Cluster(workdir, rpc_timeout=2.0, retry_interval=0.3, resolve_interval=0.5,
                      extra_args={"inventory": ["--store", "postgres", "--dsn", pg.dsn]})
    try:
        version = query(pg.dsn, "SHOW server_version")[0][0].split()[0]
        say(f"== PostgreSQL {version} on port {pg.port} (pid {pg.popen.pid}), "
            f"max_prepared_transactions = {query(pg.dsn, 'SHOW max_prepared_transactions')[0][0]}")
        cluster.start_all(crash_at={"coordinator": "after-decision-logged"})
        say("== inventory in PostgreSQL, delivery in SQLite; coordinator armed: "
            "--crash-at after-decision-logged")
        say(f"  burger in PostgreSQL: {burgers(pg.dsn)}")

        say("\n== an order of 2 burgers")
        try:
            call_json("POST", f"{cluster.coordinator_url}/orders",
                      {"item": "burger", "quantity": 2, "address": "1 Main St"}, timeout=15)
        except Unreachable:
            say("  the coordinator died after logging commit: the client gets no answer")
        cluster.wait_dead("coordinator", timeout=15)
        rows = query(pg.dsn, "SELECT gid, prepared FROM pg_prepared_xacts")
        say(f"  pg_prepared_xacts: {[(gid, str(prepared)[:19]) for gid, prepared in rows]}")

        say("\n== SIGKILL PostgreSQL (postmaster and every backend), between PREPARE and COMMIT PREPARED")
        pg.kill()
        say("  killed; restarting it on the same data directory (crash recovery replays the WAL)")
        pg.start()
        rows = query(pg.dsn, "SELECT gid FROM pg_prepared_xacts")
        say(f"  after the restart, pg_prepared_xacts: {[gid for (gid,) in rows]}   <- still there")
        say(f"  burger as other sessions see it: {burgers(pg.dsn)} (the prepared change is invisible until"
            " COMMIT PREPARED)")
        say("  another session: SET lock_timeout = '500ms'; UPDATE stock ... WHERE item = 'burger'")
        say(f"  -> {blocked_update(pg.dsn)}")
        say("  the prepared transaction still holds its row lock, owned by no session: nothing but\n"
            "  COMMIT PREPARED / ROLLBACK PREPARED (the coordinator's decision) will release it")

        say("\n== restarting the coordinator: recovery re-sends commit; the inventory runs COMMIT PREPARED")
        cluster.start("coordinator")
        settle(cluster.coordinator_url, cluster.participant_urls, timeout=30)
        for line in cluster.processes["inventory"].output().splitlines():
            if "commit" in line and "prepare" not in line:
                say(f"  {line}")
        say(f"  pg_prepared_xacts: {[gid for (gid,) in query(pg.dsn, 'SELECT gid FROM pg_prepared_xacts')]}")
        say(f"  burger in PostgreSQL: {burgers(pg.dsn)}")
        say(f"  the same update now: {blocked_update(pg.dsn)}")

        say("\n== invariant audit (the inventory's stock read from PostgreSQL)")
        report = audit(cluster.coordinator_url, cluster.participant_urls)
        for line in report.lines():
            say(line)
        return ("result: PostgreSQL killed between PREPARE TRANSACTION and COMMIT PREPARED; the prepared "
                "transaction and its lock survived; recovery committed it; "
                f"invariant {'ok' if report.ok else 'FAILED'}")
    finally:
        cluster.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m TwoPhaseCommit.postgres_demo",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.parse_args(argv)
    try:
        pg = PostgresServer()
    except PostgresUnavailable as exc:
        raise cli.UsageError(str(exc)) from None
    # Ctrl-C / SIGTERM: cli.run turns them into 130 / 143; the `finally` blocks stop every process
    try:
        pg.start()
        with tempfile.TemporaryDirectory(prefix="twopc-pg-demo-") as workdir:
            result = run(workdir, pg)
    except PostgresUnavailable as exc:
        raise cli.UsageError(str(exc).splitlines()[0]) from None
    finally:
        pg.close()
    say("")
    say(result)
    return 0 if "invariant ok" in result else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
