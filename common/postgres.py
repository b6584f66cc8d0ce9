"""A private, throw-away PostgreSQL server for demos and tests - or the one you point us at.

    with postgres_server() as dsn:            # POSTGRES_DSN if set, else a fresh server on a free port
        conn = psycopg.connect(dsn)

    server = PostgresServer().start()         # for fault injection: the server itself
    server.kill()                             # SIGKILL the postmaster *and* every backend (a crash)
    server.start()                            # the same data directory: crash recovery runs

The server is a real `postgres` from Debian's `postgresql` package (found on PATH or under
/usr/lib/postgresql/*/bin). Each server gets its own cluster in a temporary folder (a copy of one
`initdb` run per process: initdb takes seconds, the copy milliseconds); the server listens on
127.0.0.1 only (no Unix socket), trusts local connections, and has `max_prepared_transactions` > 0 -
it is 0 by default, which disables `PREPARE TRANSACTION`, the feature two-phase commit needs. (20 is
plenty here; PostgreSQL's docs advise at least `max_connections` for a server that uses it.)

PostgreSQL refuses to run as root, so when we are root the server runs as an unprivileged user
(`postgres` if that account exists, else `nobody`) that owns the temporary folder.

`kill()` sends SIGKILL to the server's whole process group: the postmaster and its backends die at
once, as in a power cut of the machine, and the next `start()` replays the write-ahead log.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .ports import LOOPBACK, free_port, wait_for_port

POSTGRES_DSN_ENV = "POSTGRES_DSN"
INSTALL_HINT = ("install Debian's `postgresql` package (apt-get install postgresql; bash .ci/run does), "
                "or set POSTGRES_DSN to a server with max_prepared_transactions > 0")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries, or the server did not start. The message says what to do."""


def find_postgres_bin() -> Path:
    """The folder holding `initdb` and `postgres`: PATH first, then Debian's versioned folders."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):  # newest version first
        if Path(folder, "initdb").exists() and Path(folder, "postgres").exists():
            return Path(folder)
    raise PostgresUnavailable(f"no PostgreSQL server binaries (initdb, postgres) found; {INSTALL_HINT}")


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account to run the server as when we are root (PostgreSQL refuses root), else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and there is no 'postgres' or 'nobody' account to run "
                              "PostgreSQL as; run as an ordinary user or set POSTGRES_DSN")


_TEMPLATES: dict[str, Path] = {}


def _template(bin_dir: Path, user: pwd.struct_passwd | None) -> Path:
    """An initdb'd data directory to copy, made once per process and removed when it exits."""
    if str(bin_dir) in _TEMPLATES:
        return _TEMPLATES[str(bin_dir)]
    holder = Path(tempfile.mkdtemp(prefix="postgres-template-"))
    atexit.register(shutil.rmtree, holder, True)
    if user is not None:
        os.chown(holder, user.pw_uid, user.pw_gid)
    datadir = holder / "data"
    argv = [str(bin_dir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync", "--no-instructions"]
    as_user = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    done = subprocess.run(argv, capture_output=True, text=True, cwd=holder, **as_user)
    if done.returncode != 0:
        raise PostgresUnavailable(f"initdb failed: {(done.stderr or done.stdout).strip()[-500:]}")
    _TEMPLATES[str(bin_dir)] = datadir
    return datadir


class PostgresServer:
    """One PostgreSQL server on 127.0.0.1 with its own data directory. Use as a context manager."""

    def __init__(self, port: int | None = None, max_prepared_transactions: int = 20):
        self.bin = find_postgres_bin()
        self.port = port or free_port()
        self.max_prepared_transactions = max_prepared_transactions
        self.user = _unprivileged_user()
        self.workdir = Path(tempfile.mkdtemp(prefix="postgres-"))
        self.datadir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.popen: subprocess.Popen | None = None
        if self.user is not None:
            os.chown(self.workdir, self.user.pw_uid, self.user.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        """A fresh cluster: a copy of this process's initdb template (initdb takes seconds; a copy
        of its result, milliseconds), owned by the server's user."""
        shutil.copytree(_template(self.bin, self.user), self.datadir, symlinks=True)
        if self.user is not None:
            for folder, dirs, files in os.walk(self.datadir):
                for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                    os.lchown(name, self.user.pw_uid, self.user.pw_gid)

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Start the server (initdb on first start) and return once it accepts a query."""
        if not self.datadir.exists():
            self._initdb()
        argv = [str(self.bin / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                "-c", f"listen_addresses={LOOPBACK}", "-c", "unix_socket_directories=",
                "-c", f"max_prepared_transactions={self.max_prepared_transactions}",
                "-c", "fsync=on", "-c", "synchronous_commit=on"]
        with open(self.log_path, "ab") as log:
            # its own session: kill() can SIGKILL the postmaster and every backend as one group
            self.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=self.workdir,
                                          start_new_session=True, **self._as_user())
        try:
            wait_for_port(self.port, LOOPBACK, timeout, still_alive=self.alive)
            self._wait_for_query(timeout)
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise PostgresUnavailable(f"PostgreSQL on port {self.port} did not start: {exc}\n"
                                      f"--- its log (last lines) ---\n{self.tail()}") from None
        return self

    def _wait_for_query(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError as exc:  # "the database system is starting up"
                if not self.alive() or time.monotonic() > deadline:
                    raise RuntimeError(str(exc).strip()) from None
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once: a crash, as far as clients can tell."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        if self.popen is not None:
            self._reap_group()

    def stop(self, grace: float = 10.0) -> None:
        """A fast shutdown (SIGINT: roll back sessions, checkpoint), SIGKILL after `grace` seconds."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()

    def _reap_group(self) -> None:
        # backends notice a dead postmaster and exit on their own; make sure none is left behind
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        if not self.alive():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a PostgreSQL DSN: $POSTGRES_DSN if set (nothing started), else a private server's DSN."""
    external = os.environ.get(POSTGRES_DSN_ENV)
    if external:
        yield external
        return
    with PostgresServer() as server:
        yield server.dsn
