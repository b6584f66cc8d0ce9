"""Worker-id leasing: each live node holds a worker id (0-31) that no other live node holds.

Snowflake IDs are unique only if no two nodes ever use the same worker id at the same time.
Hard-coding ids in config files fails the day two nodes are started with the same file. Here a
node *leases* an id from Redis instead:

    SET worker:<id> <node> NX PX <ttl>         take the first free id (one atomic Lua call)
    compare-and-extend every (ttl - skew)/3    PEXPIRE only if the value is still <node>
    compare-and-shorten on close               PEXPIRE <skew + 1 ms> only if the value is still <node>

A node that crashes stops renewing; Redis deletes its key after the ttl and the id is free again.

The dangerous case is a node that is *alive but stalled* (GC pause, SIGSTOP, a VM frozen for
minutes): its lease expires, another node takes the id — and then the stalled node wakes up and
issues IDs with the same worker id. So the node tracks the lease's expiry itself, on a local
monotonic clock that keeps counting through the stall (CLOCK_BOOTTIME on Linux, which unlike
CLOCK_MONOTONIC also counts a system suspend), and `LeasedSnowflakeGenerator.next_id()` refuses
(LeaseExpiredError) once the lease *may* have expired, whatever the renewal thread believes:

- the expiry estimate is taken from the moment *before* the SET/PEXPIRE was sent, so it is never
  later than Redis's own expiry (the key's ttl starts when Redis receives the command);
- a safety margin (`max_clock_skew_ms`) is subtracted: the previous holder stops issuing at least
  that long before a new holder can start, which absorbs that much wall-clock skew between nodes;
- the check runs *after* the ID's timestamp was read, so every ID returned was made while the
  lease was certainly held.

A lease that was lost (expired in Redis, or someone else's now) is never revived: the node must
take a new lease (a fresh process, typically).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import redis

from .snowflake import MAX_WORKER_ID, SnowflakeGenerator

log = logging.getLogger(__name__)

DEFAULT_TTL_MS = 10_000
DEFAULT_KEY_PREFIX = "worker:"


def _stall_counting_clock() -> Callable[[], float]:
    """A monotonic clock (seconds) that keeps counting while this host is suspended.

    CLOCK_MONOTONIC counts a GC pause or a SIGSTOP but stops during a system suspend, while Redis's
    ttl (on another host) keeps running: a node resumed from suspend would trust a lease that is
    long gone. Linux's CLOCK_BOOTTIME includes the suspend; elsewhere fall back to time.monotonic.
    """
    if hasattr(time, "CLOCK_BOOTTIME"):
        boottime = time.CLOCK_BOOTTIME
        return lambda: time.clock_gettime(boottime)
    return time.monotonic


# KEYS = worker:0 .. worker:31, ARGV = node, ttl_ms. One round trip, atomic: two nodes starting at
# the same instant cannot both see worker:3 free. Returns the index taken, or -1 if all are held.
_ACQUIRE_LUA = """
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    return i - 1
  end
end
return -1
"""

# Compare-and-extend: a plain PEXPIRE could extend a lease that expired and now belongs to another
# node. Returns 1 if extended, 0 if the key is gone or held by someone else.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Release = compare-and-shorten, not DEL: the id stays taken for max_clock_skew_ms + 1 more ms. A
# newcomer whose clock is behind ours (by up to the margin) could otherwise take the id at once and
# reuse the milliseconds we just issued IDs in. Never touches a lease that has passed to another node.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class LeaseError(Exception):
    """Base class of worker-lease errors."""


class NoFreeWorkerIdError(LeaseError):
    """Every worker id is held by a live node."""


class LeaseExpiredError(LeaseError):
    """The lease may have expired (or was lost, or released): issuing IDs could duplicate another node's."""


class WorkerLease:
    """A worker id leased from Redis, renewed in the background until `close()`.

        with WorkerLease("redis://127.0.0.1:6379/0") as lease:
            generator = lease.generator()
            generator.next_id()
    """

    def __init__(self, redis_client: str | redis.Redis, *, node_id: str | None = None,
                 ttl_ms: int = DEFAULT_TTL_MS, renew_interval_ms: int | None = None,
                 max_clock_skew_ms: int | None = None, worker_ids: range = range(MAX_WORKER_ID + 1),
                 key_prefix: str = DEFAULT_KEY_PREFIX,
                 monotonic: Callable[[], float] | None = None):
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        self.max_clock_skew_ms = ttl_ms // 10 if max_clock_skew_ms is None else max_clock_skew_ms
        if not 0 <= self.max_clock_skew_ms < ttl_ms:
            raise ValueError(f"max_clock_skew_ms must be in 0..ttl_ms-1, got {self.max_clock_skew_ms}")
        usable_ms = ttl_ms - self.max_clock_skew_ms
        # Three renewal attempts fit in the usable part of each lease: one slow or failed call
        # does not lose it.
        self.renew_interval_ms = renew_interval_ms or max(1, usable_ms // 3)
        if self.renew_interval_ms >= usable_ms:
            raise ValueError(f"renew_interval_ms ({self.renew_interval_ms}) must be below ttl_ms minus "
                             f"max_clock_skew_ms ({usable_ms}), or the lease lapses between renewals")
        if not worker_ids or worker_ids[0] < 0 or worker_ids[-1] > MAX_WORKER_ID:
            raise ValueError(f"worker_ids must be a non-empty range within 0..{MAX_WORKER_ID}")
        self.ttl_ms = ttl_ms
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.worker_ids = worker_ids
        self.key_prefix = key_prefix
        self._monotonic = monotonic or _stall_counting_clock()
        self._owns_client = isinstance(redis_client, str)
        if isinstance(redis_client, str):
            # A bounded socket timeout: a hung Redis must not block renewal past the lease.
            timeout = max(0.05, self.renew_interval_ms / 1000)
            redis_client = redis.Redis.from_url(redis_client, socket_timeout=timeout,
                                                socket_connect_timeout=timeout)
        self._redis = redis_client
        self._acquire_script = redis_client.register_script(_ACQUIRE_LUA)
        self._renew_script = redis_client.register_script(_RENEW_LUA)
        self._release_script = redis_client.register_script(_RELEASE_LUA)

        self._worker_id: int | None = None
        self._valid_until = -math.inf     # local monotonic deadline; -inf = not held
        self._lost_reason: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def acquire(self) -> WorkerLease:
        """Take the lowest free worker id and start renewing it. Raises NoFreeWorkerIdError."""
        if self._worker_id is not None:
            raise LeaseError(f"this lease already holds worker id {self._worker_id}")
        keys = [self.key(worker_id) for worker_id in self.worker_ids]
        sent_at = self._monotonic()
        index = int(self._acquire_script(keys=keys, args=[self.node_id, self.ttl_ms]))
        if index < 0:
            raise NoFreeWorkerIdError(
                f"all {len(keys)} worker ids ({keys[0]} .. {keys[-1]}) are leased by live nodes; "
                f"stop a node, wait {self._longest_lease_left_ms(keys)} for a crashed node's lease to "
                f"expire, or give the layout more worker-id bits")
        self._worker_id = self.worker_ids[index]
        self._extend_local_deadline(sent_at)
        log.info("node %s leased worker id %d for %d ms", self.node_id, self._worker_id, self.ttl_ms)
        self._renewer = threading.Thread(target=self._renew_forever, name=f"lease-{self._worker_id}",
                                         daemon=True)
        self._renewer.start()
        return self

    def _longest_lease_left_ms(self, keys: list[str]) -> str:
        """'up to N ms', N = the longest time-to-live among the held leases (they are other nodes',
        so their ttl, not ours, says how long a crashed holder keeps its id). Only for the message."""
        try:
            pipeline = self._redis.pipeline(transaction=False)
            for key in keys:
                pipeline.pttl(key)
            longest = max(int(ttl) for ttl in pipeline.execute())
        except redis.RedisError:
            longest = -1
        return f"up to {longest} ms" if longest > 0 else "a lease's time to live"

    def close(self) -> None:
        """Stop renewing and release the id: it is free again max_clock_skew_ms + 1 ms later (the same
        margin as an expiry, so a newcomer with a slower clock cannot reuse our last milliseconds).
        Safe to call twice."""
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
        held = self._worker_id is not None and self._lost_reason is None
        self._valid_until = -math.inf       # first: no ID may be issued from here on
        if self._lost_reason is None:
            self._lost_reason = "the lease was released (close() was called)"
        try:
            if held:
                self._release_script(keys=[self.key(self._worker_id)],
                                     args=[self.node_id, self.max_clock_skew_ms + 1])
        except redis.RedisError as exc:
            # Not fatal: the key expires on its own within ttl_ms.
            log.warning("could not release %s (%s); it expires within %d ms",
                        self.key(self._worker_id), exc, self.ttl_ms)
        finally:
            if self._owns_client:
                self._redis.close()

    def __enter__(self) -> WorkerLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- state ------------------------------------------------------------------------------

    @property
    def worker_id(self) -> int:
        if self._worker_id is None:
            raise LeaseError("no worker id yet: call acquire() (or use the lease as a context manager)")
        return self._worker_id

    def key(self, worker_id: int) -> str:
        return f"{self.key_prefix}{worker_id}"

    def remaining_ms(self) -> float:
        """How long the lease is certainly still ours, by the local monotonic clock (<= 0: not)."""
        return (self._valid_until - self._monotonic()) * 1000

    def is_valid(self) -> bool:
        return self._monotonic() < self._valid_until

    def ensure_valid(self) -> None:
        """Raise LeaseExpiredError unless the lease is certainly still held right now."""
        if self._monotonic() < self._valid_until:
            return
        if self._worker_id is None:
            raise LeaseExpiredError("no lease held: call acquire() first")
        reason = self._lost_reason or (
            f"no successful renewal for {self.ttl_ms - self.max_clock_skew_ms} ms (Redis unreachable, "
            f"or this process was paused)")
        raise LeaseExpiredError(
            f"worker id {self._worker_id} lease may have expired: {reason}. Refusing to issue IDs "
            f"another node could also issue; start a new lease (restart the node)")

    def generator(self, **kwargs) -> LeasedSnowflakeGenerator:
        """A Snowflake generator using this lease's worker id, which refuses once the lease lapses."""
        return LeasedSnowflakeGenerator(self, **kwargs)

    # --- renewal ----------------------------------------------------------------------------

    def renew_once(self) -> bool:
        """One compare-and-extend. True if extended; False if Redis failed (retry) or the lease is lost."""
        if self._lost_reason is not None or self._worker_id is None:
            return False
        sent_at = self._monotonic()
        try:
            extended = int(self._renew_script(keys=[self.key(self._worker_id)],
                                              args=[self.node_id, self.ttl_ms]))
        except redis.RedisError as exc:
            log.warning("renewing %s failed (%s); %.0f ms of lease left",
                        self.key(self._worker_id), exc, self.remaining_ms())
            return False
        if extended:
            self._extend_local_deadline(sent_at)
            return True
        # The key expired in Redis (or another node holds it): it is gone for good.
        self._lost_reason = f"{self.key(self._worker_id)} expired in Redis or is now held by another node"
        self._valid_until = -math.inf
        log.error("lease on worker id %d lost: %s", self._worker_id, self._lost_reason)
        return False

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.renew_interval_ms / 1000):
            self.renew_once()
            if self._lost_reason is not None:
                return

    def _extend_local_deadline(self, sent_at: float) -> None:
        # `sent_at` precedes Redis receiving the command, so sent_at + ttl <= the key's real expiry.
        self._valid_until = sent_at + (self.ttl_ms - self.max_clock_skew_ms) / 1000


class LeasedSnowflakeGenerator(SnowflakeGenerator):
    """A SnowflakeGenerator whose worker id comes from a WorkerLease and which stops with it."""

    def __init__(self, lease: WorkerLease, **kwargs):
        super().__init__(lease.worker_id, **kwargs)
        self.lease = lease

    def next_id(self) -> int:
        snowflake_id = super().next_id()
        # Checked after the ID (and so its timestamp) was made: if the lease was valid now, it was
        # valid when the timestamp was read. A pause between the two makes us refuse, not repeat.
        self.lease.ensure_valid()
        return snowflake_id
