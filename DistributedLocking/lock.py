"""A Redis lease lock that hands out fencing tokens — and says exactly what it guarantees.

    lock = RedisLock(client, "invoice:42", ttl_ms=10_000)
    with lock as token:                 # token: an int that grows with every acquisition
        resource.write(token, data)     # the resource rejects writes older than one it has seen

What it does (each step is one atomic Lua script on one Redis server):

* acquire: ``SET lock:<name> <owner> NX PX <ttl>`` and, only if that succeeded, ``INCR`` the per-lock
  counter ``lock-token:<name>``; the new counter value is the fencing token. SET with NX and PX together
  is one command, so there is no moment when the key exists without an expiry (the old SETNX-then-
  EXPIRE pattern leaves an immortal lock if the client dies between the two commands).
* release: delete the key only if it still holds *our* owner value (compare-and-delete), then push
  one element onto ``lock-wake:<name>`` so one blocked waiter wakes up at once.
* extend: reset the expiry only if the key still holds our owner value (compare-and-extend); an
  expired lock is never resurrected. With ``auto_renew`` a per-process watchdog thread extends every
  held lock at about ttl/3 and stops at release.
* lock-delay (``lock_delay_ms``, Chubby's idea): if a holder is *lost* — its lease expires without a
  release — nobody may take the lock until ``lock_delay_ms`` after the expiry. A marker key
  ``lock-delay:<name>`` shadows the lease and outlives it by the delay; a normal release deletes it,
  so the delay costs nothing when holders behave. It is a cheap defence for a resource that cannot
  check a fencing token: a stale holder's last requests have time to drain before anyone else acts.
  It is not a guarantee — a pause longer than the delay still overlaps.
* blocking acquire: either BLPOP on the wake list (default, ``WAIT_WAKEUP``) or capped exponential
  backoff with full jitter (``WAIT_BACKOFF``). Both wait at most until the holder's lease would expire,
  so a crashed holder delays others by at most its TTL. A list, not pub/sub: a release pushed while
  nobody was blocked stays in the list for the next waiter (a pub/sub message would be lost), and
  BLPOP wakes ONE waiter, not all of them. bench.py measured: wake-up cuts the hand-off and waiting
  tails; backoff gets more total throughput only by letting the releasing process barge straight back
  in while the others sleep (over 90% of sections went back to the same process). Neither is FIFO-fair.

What it does NOT guarantee — read this before you rely on it:

* Mutual exclusion holds only while the holder is running. A lease is a promise about *time*: if the
  holder's process is paused (GC, swapping, SIGSTOP, a VM migration) or its network is slow for longer
  than the TTL, the key expires and another client acquires the lock while the first still believes it
  holds it. The watchdog cannot help — it is paused too. ``release()`` then returns False, after the
  fact. The only protection is on the resource side: pass the fencing token with every write and let
  the resource reject a token lower than one it has already accepted (see ``fencing.py``).
* The random owner value is NOT a fencing token. It only lets ``release``/``extend`` recognise their
  own lock; a resource cannot order two random values, so a stale holder's write still goes through.
* One Redis server is a single point of failure. If it restarts without persistence (or a replica that
  missed the last writes is promoted) the lock key AND the token counter are lost: two clients can
  hold the lock, and tokens restart from 1 — a resource that remembers a higher token will then reject
  every write until the counter catches up. Run Redis with AOF ``appendfsync always`` if the counter
  must survive a crash, or take tokens from a consensus system (etcd revision, ZooKeeper zxid).
* Expiry is measured by the Redis server's clock; the client's own view of "I still hold it" is
  ``owned()`` at the moment you ask, no later.
* Not re-entrant, and one ``RedisLock`` object belongs to one holder at a time (create one object per
  thread or process that competes for the lock; they coordinate through Redis).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import random
import secrets
import threading
import time
import weakref
from collections.abc import Iterator
from types import TracebackType

import redis

log = logging.getLogger(__name__)

WAIT_WAKEUP = "wakeup"
WAIT_BACKOFF = "backoff"
WAIT_STRATEGIES = (WAIT_WAKEUP, WAIT_BACKOFF)

# How long a release notification may sit in the wake list when nobody is waiting for it.
_WAKE_KEY_TTL_MS = 60_000
# A waiter never sleeps longer than this in one round, whatever the lock's TTL says; it bounds the
# damage of a lost notification (e.g. the wake list vanished in a Redis restart).
_MAX_WAIT_ROUND_S = 1.0


class LockError(Exception):
    """Base class of this module's errors."""


class LockNotAcquired(LockError):
    """The lock was not acquired within the timeout (raised by the context manager)."""


class LockLost(LockError):
    """The `with` block finished, but the lease had expired: another client may have held the lock.

    Writes made inside the block without a fencing token may have overlapped with that client's.
    """


class LockBackendUnavailable(LockError):
    """Redis could not be reached; the lock's state is unknown. Retry when Redis is back."""


# KEYS[1] lock key, KEYS[2] token counter, KEYS[3] lock-delay marker; ARGV[1] owner value,
# ARGV[2] ttl in ms, ARGV[3] lock-delay in ms (0: none).
# Returns {1, token} when acquired, {0, ms until it may be free} when busy (or in a lock-delay).
# The checks, SET and INCR run in one script, so a token is issued if and only if the lock was taken,
# and tokens are ordered exactly like the acquisitions (Redis runs scripts one at a time). SET with
# PX: the key never exists without an expiry.
_ACQUIRE_LUA = """
local busy = redis.call('PTTL', KEYS[1])
if busy == -2 then busy = redis.call('PTTL', KEYS[3]) end
if busy ~= -2 then
    return {0, busy}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '0' then
    redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2] + ARGV[3])
end
return {1, redis.call('INCR', KEYS[2])}
"""

# KEYS[1] lock key, KEYS[2] wake list, KEYS[3] lock-delay marker; ARGV[1] owner value,
# ARGV[2] wake-list ttl in ms.
# Compare-and-delete: a GET followed by a DEL from the client could delete a lock that expired
# between the two commands and now belongs to someone else. A normal release also ends the
# lock-delay (the delay is only for holders that were lost).
# The wake list holds at most one element (DEL then RPUSH): one release wakes one waiter.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('RPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS[1] lock key, KEYS[2] lock-delay marker; ARGV[1] owner value, ARGV[2] new ttl in ms,
# ARGV[3] lock-delay in ms. Never recreates an expired key; the marker keeps outliving the lease.
_EXTEND_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
if ARGV[3] ~= '0' then
    redis.call('PEXPIRE', KEYS[2], ARGV[2] + ARGV[3])
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# Chubby's bound on a client-chosen lock-delay: one minute, so a faulty client cannot make a lock
# (and the resource behind it) unavailable for an arbitrarily long time.
MAX_LOCK_DELAY_MS = 60_000


def backoff_delays(base_s: float = 0.001, cap_s: float = 0.05,
                   rng: random.Random | None = None) -> Iterator[float]:
    """Capped exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt)).

    Full jitter (rather than a fixed doubling) spreads competing waiters out so they do not retry in
    lock-step; the cap keeps a long wait from turning into multi-second sleeps after the lock is free.
    """
    if base_s <= 0 or cap_s < base_s:
        raise ValueError("need 0 < base_s <= cap_s")
    rng = rng or random.Random()
    attempt = 0
    while True:
        yield rng.uniform(0.0, min(cap_s, base_s * (2 ** attempt)))
        attempt = min(attempt + 1, 30)  # 2**30 * base is far past any cap; stop the int growing


class RedisLock:
    """A lease lock on one Redis server whose ``acquire`` returns a fencing token (see module doc)."""

    def __init__(self, client: redis.Redis, name: str, *, ttl_ms: int = 10_000, auto_renew: bool = True,
                 wait: str = WAIT_WAKEUP, blocking_timeout: float | None = None, lock_delay_ms: int = 0):
        if not isinstance(name, str) or not name:
            raise ValueError("lock name must be a non-empty string")
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be a positive integer of milliseconds, got {ttl_ms!r}")
        if wait not in WAIT_STRATEGIES:
            raise ValueError(f"wait must be one of {WAIT_STRATEGIES}, got {wait!r}")
        if blocking_timeout is not None and blocking_timeout < 0:
            raise ValueError("blocking_timeout must be >= 0 seconds or None (wait forever)")
        if (isinstance(lock_delay_ms, bool) or not isinstance(lock_delay_ms, int)
                or not 0 <= lock_delay_ms <= MAX_LOCK_DELAY_MS):
            raise ValueError(f"lock_delay_ms must be an int from 0 to {MAX_LOCK_DELAY_MS}, "
                             f"got {lock_delay_ms!r}")
        self.client = client
        self.name = name
        self.key = f"lock:{name}"
        self.token_key = f"lock-token:{name}"
        self.wake_key = f"lock-wake:{name}"
        self.delay_key = f"lock-delay:{name}"
        self.lock_delay_ms = lock_delay_ms
        self.ttl_ms = ttl_ms
        self.auto_renew = auto_renew
        self.wait = wait
        self.blocking_timeout = blocking_timeout
        self.token: int | None = None      # fencing token of the current acquisition
        self.renewals = 0                  # successful watchdog extensions (observable in tests)
        self._owner: str | None = None     # random value that marks the key as ours
        self._session = _session_for(client)
        self._backoff_rng = random.Random()

    @property
    def _scripts(self) -> _Session:
        session = self._session
        if session.pid != os.getpid():  # forked since: the parent's connection is not ours to use
            session = self._session = _session_for(self.client)
        return session

    # -- acquire -------------------------------------------------------------------------------

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> int | None:
        """Take the lock; return its fencing token, or None if not acquired (non-blocking / timeout).

        ``timeout`` (seconds) bounds a blocking wait; None waits forever.
        """
        if self._owner is not None:
            raise RuntimeError(f"{self.key} is already held by this RedisLock object; it is not "
                               "re-entrant — use one RedisLock object per holder")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 seconds or None")
        owner = secrets.token_hex(16)
        deadline = None if timeout is None else time.monotonic() + timeout
        delays = backoff_delays(rng=self._backoff_rng)
        while True:
            acquired, value = self._try_acquire(owner)
            if acquired:
                self._owner, self.token = owner, value
                if self.auto_renew:
                    _watchdog().watch(self)
                return value
            if not blocking:
                return None
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            # Never wait past the holder's expiry: a crashed holder sends no wake-up.
            limit = _MAX_WAIT_ROUND_S if value < 0 else min(_MAX_WAIT_ROUND_S, max(value, 1) / 1000)
            if remaining is not None:
                limit = min(limit, remaining)
            if self.wait == WAIT_WAKEUP:
                self._wait_for_release(limit)
            else:
                time.sleep(min(next(delays), limit))

    def _try_acquire(self, owner: str) -> tuple[bool, int]:
        try:
            ok, value = self._scripts.run("acquire", (self.key, self.token_key, self.delay_key),
                                          (owner, self.ttl_ms, self.lock_delay_ms))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise LockBackendUnavailable(
                f"cannot acquire {self.key}: Redis unreachable ({exc}); retry when it is back") from exc
        return bool(ok), int(value)

    def _wait_for_release(self, limit_s: float) -> None:
        """Block on the wake list until a release pushes to it, or `limit_s` passes."""
        # BLPOP's timeout has 1 ms resolution and 0 means "forever": never send 0.
        wait_s = max(0.001, min(limit_s, self._socket_budget()))
        try:
            self.client.blpop([self.wake_key], timeout=round(wait_s, 3))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise LockBackendUnavailable(
                f"lost Redis while waiting for {self.key} ({exc}); retry when it is back") from exc

    def _socket_budget(self) -> float:
        # A blocking command must return before the client's socket timeout fires.
        socket_timeout = self.client.connection_pool.connection_kwargs.get("socket_timeout")
        return _MAX_WAIT_ROUND_S if not socket_timeout else socket_timeout / 2

    # -- release / extend ----------------------------------------------------------------------

    def release(self) -> bool:
        """Release the lock. False if it was no longer ours (expired, maybe taken by someone else)."""
        owner = self._owner
        if owner is None:
            return False
        # Forget the lock first: the watchdog must not renew it once we have decided to let go.
        self._owner = None
        try:
            return bool(self._scripts.run("release", (self.key, self.wake_key, self.delay_key),
                                          (owner, _WAKE_KEY_TTL_MS)))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise LockBackendUnavailable(
                f"cannot release {self.key}: Redis unreachable ({exc}); if it is still there it expires "
                f"within {self.ttl_ms} ms") from exc

    def extend(self, ttl_ms: int | None = None) -> bool:
        """Reset the lease to `ttl_ms` (default: the lock's ttl) if still ours; False otherwise."""
        if ttl_ms is not None and (isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0):
            raise ValueError(f"ttl_ms must be a positive integer of milliseconds, got {ttl_ms!r}")
        owner = self._owner
        if owner is None:
            return False
        try:
            return bool(self._scripts.run("extend", (self.key, self.delay_key),
                                          (owner, ttl_ms or self.ttl_ms, self.lock_delay_ms)))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise LockBackendUnavailable(f"cannot extend {self.key}: Redis unreachable ({exc})") from exc

    def owned(self) -> bool:
        """Does Redis say the lock is ours right now? (True can be stale a moment later.)"""
        owner = self._owner
        if owner is None:
            return False
        current = self.client.get(self.key)
        return current is not None and (current == owner or current == owner.encode())

    def locked(self) -> bool:
        """Is the lock held by anyone right now?"""
        return bool(self.client.exists(self.key))

    # -- context manager -----------------------------------------------------------------------

    def __enter__(self) -> int:
        token = self.acquire(blocking=True, timeout=self.blocking_timeout)
        if token is None:
            raise LockNotAcquired(f"could not acquire {self.key} within {self.blocking_timeout} s; "
                                  "another holder kept it — retry later or raise blocking_timeout")
        return token

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        released = self.release()
        if not released and exc_type is None:
            raise LockLost(f"{self.key} (token {self.token}) expired before the block finished; "
                           "another client may have held it — protect the resource with the fencing token")

    def __repr__(self) -> str:
        state = f"held, token {self.token}" if self._owner else "not held"
        return f"<RedisLock {self.key} ttl={self.ttl_ms}ms {state}>"


# -- scripts, over one dedicated connection -----------------------------------------------------

class _Session:
    """The lock's scripts, sent over ONE connection this process holds for the client (EVALSHA,
    falling back to EVAL after a Redis restart empties the script cache: NOSCRIPT).

    Why not ``client.evalsha(...)``: acquire+release is two round trips, and on loopback redis-py's
    per-command path (pool checkout and return, retry wrapper, metrics hooks) costs about as much as
    the round trip itself. A lock's commands are short and strictly request/response, so one held
    connection with a mutex around each exchange is enough — the same shape as a ZooKeeper session.
    Blocking waits (BLPOP) still go through the client's pool, never through this connection.

    A failed exchange is retried once on a fresh connection (after a Redis restart the old socket is
    dead). If the first attempt did reach Redis, the retried acquire finds the lock taken — by
    itself — and reports it busy; that orphaned lease expires within its TTL.
    """

    SOURCES = {"acquire": _ACQUIRE_LUA, "release": _RELEASE_LUA, "extend": _EXTEND_LUA}

    def __init__(self, client: redis.Redis):
        self.pid = os.getpid()
        self.shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in self.SOURCES.items()}
        self._connection = client.connection_pool.make_connection()
        self._mutex = threading.Lock()  # the watchdog thread shares the connection

    def run(self, name: str, keys: tuple, args: tuple):
        with self._mutex:
            try:
                return self._exchange(name, keys, args)
            except (redis.ConnectionError, redis.TimeoutError):
                self._connection.disconnect()
                return self._exchange(name, keys, args)

    def _exchange(self, name: str, keys: tuple, args: tuple):
        connection = self._connection
        try:
            connection.send_command("EVALSHA", self.shas[name], len(keys), *keys, *args)
            return connection.read_response()
        except redis.exceptions.NoScriptError:
            connection.send_command("EVAL", self.SOURCES[name], len(keys), *keys, *args)
            return connection.read_response()


_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_sessions_guard = threading.Lock()


def _session_for(client: redis.Redis) -> _Session:
    """The process's session for this client (a forked child opens its own connection)."""
    session = _sessions.get(client)
    if session is None or session.pid != os.getpid():
        with _sessions_guard:
            session = _sessions.get(client)
            if session is None or session.pid != os.getpid():
                session = _sessions[client] = _Session(client)
    return session


# -- the watchdog ----------------------------------------------------------------------------------

class _Watchdog:
    """One daemon thread per process that extends every auto-renewed lock at about ttl/3.

    One thread for all locks (not a thread per acquisition) keeps acquire cheap. Entries are
    (due, seq, lock, owner): a renewal applies only while the lock still has that owner value, so a
    release — or a later acquisition by the same object — silently retires the old entry.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._heap: list[tuple[float, int, RedisLock, str]] = []
        self._seq = 0
        self._cond = threading.Condition(threading.Lock())  # a plain Lock: cheaper than the default RLock
        self._thread = threading.Thread(target=self._run, name="redis-lock-watchdog", daemon=True)
        self._thread.start()

    def watch(self, lock: RedisLock) -> None:
        due = time.monotonic() + lock.ttl_ms / 3000
        with self._cond:
            self._seq += 1
            wake = not self._heap or due < self._heap[0][0]
            heapq.heappush(self._heap, (due, self._seq, lock, lock._owner))
            if wake:  # only when the new entry is the earliest: no thread switch per acquire
                self._cond.notify()

    def active(self) -> int:
        """How many locks are currently being renewed (entries whose owner is still current)."""
        with self._cond:
            return sum(1 for _, _, lock, owner in self._heap if lock._owner == owner)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = None if not self._heap else self._heap[0][0] - time.monotonic()
                    self._cond.wait(timeout)
                _, _, lock, owner = heapq.heappop(self._heap)
            if lock._owner != owner:
                continue  # released (or re-acquired with a new owner value) since: stop renewing
            self._renew(lock, owner)

    def _renew(self, lock: RedisLock, owner: str) -> None:
        try:
            extended = lock._scripts.run("extend", (lock.key, lock.delay_key),
                                         (owner, lock.ttl_ms, lock.lock_delay_ms))
        except redis.RedisError as exc:
            # Keep trying until the lease runs out; if Redis is back in time, the lock survives.
            log.warning("watchdog could not extend %s: %s", lock.key, exc)
            extended = None
        if extended == 0:
            if lock._owner == owner:  # else release() ran between our owner check and the extend
                log.warning("watchdog: %s (token %s) was lost — the lease had expired", lock.key, lock.token)
            return
        if extended:
            lock.renewals += 1
        with self._cond:
            if lock._owner == owner:
                self._seq += 1
                heapq.heappush(self._heap, (time.monotonic() + lock.ttl_ms / 3000, self._seq, lock, owner))


_watchdog_instance: _Watchdog | None = None
_watchdog_guard = threading.Lock()


def _watchdog() -> _Watchdog:
    """The process's watchdog; a forked child gets its own (threads do not survive fork)."""
    global _watchdog_instance, _watchdog_guard
    instance = _watchdog_instance
    if instance is not None and instance.pid == os.getpid():
        return instance
    if instance is not None:  # forked: the guard may have been copied in a locked state
        _watchdog_guard = threading.Lock()
    with _watchdog_guard:
        if _watchdog_instance is None or _watchdog_instance.pid != os.getpid():
            _watchdog_instance = _Watchdog()
        return _watchdog_instance


def watchdog_active_count() -> int:
    """Locks this process is renewing right now (0 if the watchdog never started)."""
    instance = _watchdog_instance
    return 0 if instance is None or instance.pid != os.getpid() else instance.active()
