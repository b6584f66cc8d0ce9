"""Redlock: one lock across N independent Redis servers, held if a majority granted it in time.

The algorithm (https://redis.io/docs/latest/develop/use/patterns/distributed-locks/):

1. Note the time, then try ``SET key <random> NX PX ttl`` on every server, each with a short
   per-server timeout so a dead or frozen server costs milliseconds, not the whole TTL. We ask all
   servers at once (one thread each), so one slow server does not delay the others.
2. The lock is held if a majority (N//2 + 1) said yes AND time is left:
   ``validity = ttl - elapsed - drift`` with ``drift = ttl * drift_factor + 2 ms`` > 0.
3. Otherwise release on ALL servers — including those that did not answer, since their SET may have
   landed after we stopped waiting — wait a random moment and retry.

What this buys and what it does not: a lock that survives the loss of a minority of servers, *if*
process pauses, network delays and clock rates stay well inside the TTL. Redlock issues no fencing
token (the random value cannot be ordered), so a client paused past the validity time writes just
like a stale holder of a single-server lock — see the README's "Redlock and the debate". Use the
validity it returns: stop acting on the lock when it runs out.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType

import redis

from .lock import LockNotAcquired

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class RedlockLease:
    """A granted Redlock: act on it only until ``valid_until`` (time.monotonic())."""

    validity_ms: float
    granted_by: int          # how many servers said yes
    servers: int
    valid_until: float

    def remaining_ms(self) -> float:
        return max(0.0, (self.valid_until - time.monotonic()) * 1000)


class Redlock:
    """The Redlock algorithm over independent Redis servers (>= 3, usually 5)."""

    def __init__(self, clients: Sequence[redis.Redis], name: str, *, ttl_ms: int = 10_000,
                 drift_factor: float = 0.01, server_timeout_s: float = 0.05, retry_delay_s: float = 0.05,
                 blocking_timeout: float | None = None):
        if len(clients) < 3:
            raise ValueError(f"Redlock needs at least 3 independent servers (5 is usual), got {len(clients)}")
        if not isinstance(name, str) or not name:
            raise ValueError("lock name must be a non-empty string")
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be a positive integer of milliseconds, got {ttl_ms!r}")
        if not 0 <= drift_factor < 1 or server_timeout_s <= 0 or retry_delay_s < 0:
            raise ValueError("need 0 <= drift_factor < 1, server_timeout_s > 0, retry_delay_s >= 0")
        self.clients = list(clients)
        self.name = name
        self.key = f"lock:{name}"
        self.ttl_ms = ttl_ms
        self.drift_factor = drift_factor
        self.server_timeout_s = server_timeout_s
        self.retry_delay_s = retry_delay_s
        self.blocking_timeout = blocking_timeout
        self.quorum = len(self.clients) // 2 + 1
        self.lease: RedlockLease | None = None
        self._owner: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=len(self.clients), thread_name_prefix="redlock")

    @classmethod
    def from_urls(cls, urls: Sequence[str], name: str, *, server_timeout_s: float = 0.05,
                  **kwargs) -> Redlock:
        """Build clients whose socket timeouts match the per-server timeout (recommended)."""
        clients = [redis.Redis.from_url(url, socket_timeout=server_timeout_s,
                                        socket_connect_timeout=server_timeout_s) for url in urls]
        return cls(clients, name, server_timeout_s=server_timeout_s, **kwargs)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> RedlockLease | None:
        """Try until a majority grants the lock in time; None if not acquired (non-blocking/timeout)."""
        if self._owner is not None:
            raise RuntimeError(f"{self.key} is already held by this Redlock object (not re-entrant)")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            owner = secrets.token_hex(16)
            lease = self._attempt(owner)
            if lease is not None:
                self._owner, self.lease = owner, lease
                return lease
            self._release_all(owner)  # undo partial grants, including late ones
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return None
            # A random pause, so clients that split the vote do not collide again in lock-step.
            time.sleep(random.uniform(0, self.retry_delay_s))

    def release(self) -> int:
        """Release on every server; returns how many still had our value (0: the lease had expired)."""
        owner, self._owner, self.lease = self._owner, None, None
        return 0 if owner is None else self._release_all(owner)

    def _attempt(self, owner: str) -> RedlockLease | None:
        start = time.monotonic()
        futures = [self._pool.submit(self._set_on, client, owner) for client in self.clients]
        # Each server gets at most server_timeout_s; one that does not answer counts as "no".
        done, _ = wait(futures, timeout=self.server_timeout_s)
        granted = sum(1 for f in done if f.exception() is None and f.result())
        elapsed_ms = (time.monotonic() - start) * 1000
        drift_ms = self.ttl_ms * self.drift_factor + 2  # +2 ms: Redis's own expiry granularity
        validity_ms = self.ttl_ms - elapsed_ms - drift_ms
        if granted >= self.quorum and validity_ms > 0:
            return RedlockLease(validity_ms, granted, len(self.clients), start + validity_ms / 1000)
        return None

    def _set_on(self, client: redis.Redis, owner: str) -> bool:
        return bool(client.set(self.key, owner, nx=True, px=self.ttl_ms))

    def _release_all(self, owner: str) -> int:
        futures = [self._pool.submit(self._release_on, client, owner) for client in self.clients]
        done, _ = wait(futures, timeout=self.server_timeout_s * 2)
        return sum(1 for f in done if f.exception() is None and f.result())

    def _release_on(self, client: redis.Redis, owner: str) -> bool:
        try:
            return bool(client.eval(_RELEASE_LUA, 1, self.key, owner))
        except redis.RedisError:
            return False  # a dead server's copy expires by its TTL

    def close(self) -> None:
        """Stop the helper threads (after a release)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> RedlockLease:
        lease = self.acquire(blocking=True, timeout=self.blocking_timeout)
        if lease is None:
            raise LockNotAcquired(f"Redlock {self.key}: no majority ({self.quorum} of {len(self.clients)}) "
                                  f"within {self.blocking_timeout} s — are enough servers up?")
        return lease

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
