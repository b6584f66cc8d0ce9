"""A key-value client over N real Redis servers, each key stored on the server the ring picks.

    with ShardedStore({"a": url_a, "b": url_b}) as store:
        store.set("user:42", b"...")
        store.add_server("c", url_c)     # moves exactly the keys whose owner became "c"
        store.remove_server("a")         # moves exactly the keys "a" held

Why a ring here: with `hash % N`, adding a 6th server to 5 would move ~5/6 of all keys; with the
ring only the ~1/6 the new server now owns move, and removing a server moves only its own keys.

How a migration works (add or remove):
1. Plan: walk the keys with SCAN (incremental, never KEYS, which blocks a server for the whole
   keyspace) and keep those whose owner differs between the current ring and the new one. On
   removal only the leaving server is scanned: by monotonicity no other key changes owner.
2. Copy: DUMP + PTTL on the source and RESTORE ... REPLACE on the target, in pipelined batches
   (one round trip per batch instead of per key). DUMP/RESTORE keeps every Redis type and TTL.
3. Switch the ring, then delete the copied keys from their sources.
If the client dies during step 2 nothing is lost: the old ring still points at complete sources,
and a rerun overwrites the partial copies (REPLACE). If it dies during step 3, the sources keep
stale duplicates of keys that now live elsewhere. Either way a server can be left holding a copy
of a key it does not own; a migration moves only the keys a source *owns* under the current ring
and counts the others as `strays` (never copies them: RESTORE REPLACE of a stale stray onto the
owner would silently destroy the owner's newer value). This is a single-writer migration: another
client writing the moving keys meanwhile could lose writes. Online systems add a dual-read /
forwarding phase (e.g. Redis Cluster's ASK redirection) for that.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import redis

from .ring import ConsistentHashRing, DuplicateNodeError, Key, UnknownNodeError, key_bytes

Value = bytes | str | int | float


class ShardedStoreError(RuntimeError):
    """A store operation could not be done; the message says why and what to do."""


@dataclass
class Migration:
    """What one add_server / remove_server did."""

    change: str
    moved_keys: set[bytes] = field(default_factory=set)
    routes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, target) -> keys
    scanned: int = 0
    strays: int = 0  # keys found on a source that does not own them (left by an interrupted run)
    seconds: float = 0.0

    @property
    def moved(self) -> int:
        return len(self.moved_keys)


def server_name(url: str) -> str:
    """A readable node name for a URL: redis://127.0.0.1:6379/0 -> 127.0.0.1:6379/0."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"


def keys_that_move(keys: Iterable[Key], before: ConsistentHashRing,
                   after: ConsistentHashRing) -> set[bytes]:
    """The prediction, from the rings alone: keys whose owner differs between two rings."""
    return {key_bytes(k) for k in keys if before.get_node(k) != after.get_node(k)}


class ShardedStore:
    """GET/SET/DELETE over Redis servers placed by a ConsistentHashRing, with rebalancing."""

    def __init__(self, servers: Mapping[str, str] | Iterable[str], *, vnodes: int = 160,
                 batch: int = 500, socket_timeout: float = 10.0, namespace: str = ""):
        """`namespace` prefixes every key stored in Redis (the ring hashes the key without it), so
        several stores can share servers and a migration touches only this store's keys."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.namespace = namespace.encode("utf-8")
        self._match = _glob_escape(self.namespace) + b"*"
        self.batch = batch
        self.socket_timeout = socket_timeout
        self.ring = ConsistentHashRing(vnodes=vnodes)
        self.urls: dict[str, str] = {}
        self.clients: dict[str, redis.Redis] = {}
        named = servers.items() if isinstance(servers, Mapping) else ((server_name(u), u) for u in servers)
        try:
            for name, url in named:
                self._connect(name, url)
                self.ring.add_node(name)
        except BaseException:
            self.close()  # do not leak the connections already made
            raise

    # ---- connections ------------------------------------------------------------------------

    def _connect(self, name: str, url: str) -> None:
        if name in self.clients:
            raise DuplicateNodeError(f"server {name!r} is already in the store")
        client = redis.Redis.from_url(url, socket_timeout=self.socket_timeout)
        try:
            client.ping()
        except redis.RedisError as exc:
            client.close()
            raise ShardedStoreError(f"cannot reach server {name!r} at {url}: {exc}; start it first") from None
        self.urls[name] = url
        self.clients[name] = client

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- key-value API ----------------------------------------------------------------------

    def owner(self, key: Key) -> str:
        """The server that holds `key`."""
        return self.ring.get_node(key)

    def _stored(self, key: Key) -> bytes:
        """The Redis key for `key`: namespace + key bytes."""
        return self.namespace + key_bytes(key)

    def set(self, key: Key, value: Value) -> None:
        self.clients[self.owner(key)].set(self._stored(key), value)

    def get(self, key: Key) -> bytes | None:
        return self.clients[self.owner(key)].get(self._stored(key))

    def delete(self, key: Key) -> bool:
        return bool(self.clients[self.owner(key)].delete(self._stored(key)))

    def set_many(self, items: Mapping[Key, Value]) -> None:
        """MSET per server in pipelined batches: one round trip per batch, not per key."""
        grouped: dict[str, dict[bytes, Value]] = defaultdict(dict)
        for key, value in items.items():
            grouped[self.owner(key)][self._stored(key)] = value
        for name, mapping in grouped.items():
            with self.clients[name].pipeline(transaction=False) as pipe:
                for chunk in _chunks(list(mapping.items()), self.batch):
                    pipe.mset(dict(chunk))
                pipe.execute()

    def get_many(self, keys: Iterable[Key]) -> dict[bytes, bytes | None]:
        """MGET per server; returns {key bytes (without namespace): value or None}."""
        grouped: dict[str, list[bytes]] = defaultdict(list)
        for key in keys:
            grouped[self.owner(key)].append(key_bytes(key))
        found: dict[bytes, bytes | None] = {}
        for name, names in grouped.items():
            chunks = list(_chunks(names, self.batch))
            with self.clients[name].pipeline(transaction=False) as pipe:
                for chunk in chunks:
                    pipe.mget([self.namespace + key for key in chunk])
                for chunk, values in zip(chunks, pipe.execute(), strict=True):
                    found.update(zip(chunk, values, strict=True))
        return found

    def scan_keys(self, name: str) -> Iterator[bytes]:
        """This store's keys on one server (namespace stripped), incrementally: SCAN, never KEYS."""
        cut = len(self.namespace)
        for stored in self.clients[name].scan_iter(match=self._match, count=1000):
            yield stored[cut:]

    def key_counts(self) -> dict[str, int]:
        """This store's keys per server (DBSIZE if there is no namespace, else a SCAN count)."""
        if not self.namespace:
            return {name: client.dbsize() for name, client in sorted(self.clients.items())}
        return {name: sum(1 for _ in self.scan_keys(name)) for name in sorted(self.clients)}

    def drop_all(self) -> int:
        """Delete every key of this store on every server (SCAN + pipelined DEL). Returns the count."""
        dropped = 0
        for name, client in self.clients.items():
            for chunk in _chunks(self.scan_keys(name), self.batch):
                client.delete(*(self.namespace + key for key in chunk))
                dropped += len(chunk)
        return dropped

    # ---- membership changes -----------------------------------------------------------------

    def add_server(self, name: str, url: str, weight: float = 1.0) -> Migration:
        """Join a server and move to it exactly the keys it now owns."""
        if name in self.clients:
            raise DuplicateNodeError(f"server {name!r} is already in the store")
        after = self.ring.copy()
        after.add_node(name, weight)
        self._connect(name, url)
        try:
            # Any existing server may own keys that now fall in the new server's arcs: scan them all.
            return self._migrate(f"add {name}", after, sources=self.ring.nodes)
        except BaseException:
            if name not in self.ring:  # failed before the switch: forget the half-joined server
                self.clients.pop(name).close()
                del self.urls[name]
            raise

    def remove_server(self, name: str) -> Migration:
        """Move every key of `name` to its next owner, then drop the server from the store."""
        if name not in self.clients:
            raise UnknownNodeError(f"server {name!r} is not in the store (servers: {self.ring.nodes})")
        if len(self.ring) == 1:
            raise ShardedStoreError(f"cannot remove {name!r}: it is the last server and its keys "
                                    f"would have nowhere to go; add another server first")
        after = self.ring.copy()
        after.remove_node(name)
        migration = self._migrate(f"remove {name}", after, sources=[name])
        self.clients.pop(name).close()
        del self.urls[name]
        return migration

    def _migrate(self, change: str, after: ConsistentHashRing, sources: list[str]) -> Migration:
        started = time.perf_counter()
        migration = Migration(change)
        copied: dict[str, list[bytes]] = defaultdict(list)
        for source in sources:
            for chunk in _chunks(self.scan_keys(source), self.batch):
                migration.scanned += len(chunk)
                by_target: dict[str, list[bytes]] = defaultdict(list)
                for key in chunk:
                    if key in migration.moved_keys:
                        continue  # SCAN may return a key twice; it moved already
                    if self.ring.get_node(key) != source:
                        migration.strays += 1  # not this source's key: its owner has the real value
                        continue
                    target = after.get_node(key)
                    if target != source:
                        by_target[target].append(key)
                for target, keys in by_target.items():
                    moved = self._copy(source, target, keys)
                    copied[source].extend(moved)
                    migration.routes[(source, target)] += len(moved)
                    migration.moved_keys.update(moved)
        self.ring = after  # from here on, reads go to the new owners, which already hold the data
        for source, keys in copied.items():
            with self.clients[source].pipeline(transaction=False) as pipe:
                for chunk in _chunks(keys, self.batch):
                    pipe.delete(*(self.namespace + key for key in chunk))
                pipe.execute()
        migration.seconds = time.perf_counter() - started
        return migration

    def _copy(self, source: str, target: str, keys: list[bytes]) -> list[bytes]:
        """DUMP+PTTL from source, RESTORE REPLACE on target, one pipeline each way."""
        with self.clients[source].pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.dump(self.namespace + key)
                pipe.pttl(self.namespace + key)
            replies = pipe.execute()
        copied: list[bytes] = []
        with self.clients[target].pipeline(transaction=False) as pipe:
            for key, payload, pttl in zip(keys, replies[0::2], replies[1::2], strict=True):
                if payload is None or pttl == -2:
                    continue  # expired or deleted since SCAN saw it: nothing to move
                # PTTL -1 means "no TTL", which RESTORE spells 0
                pipe.restore(self.namespace + key, max(pttl, 0), payload, replace=True)
                copied.append(key)
            pipe.execute()
        return copied


def _glob_escape(pattern: bytes) -> bytes:
    """Escape SCAN MATCH's glob characters so a namespace matches literally."""
    for char in (b"\\", b"*", b"?", b"[", b"]"):
        pattern = pattern.replace(char, b"\\" + char)
    return pattern


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
