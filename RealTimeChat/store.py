"""Where the chat keeps its state: who is online, who is in which room, and each room's history.

Two implementations of one interface (`ChatStore`):

- `LocalStore` — one server process. Nicknames and presence live in memory (they describe live
  connections, so they *should* vanish with the process); history lives in SQLite so it survives a
  restart.
- `RedisStore` — several server processes behind one Redis. Every instance must see the same
  nicknames, presence lists and history, so all three live in Redis. Each instance writes a
  heartbeat key with a short TTL; a nickname or presence entry whose instance has no heartbeat left
  (it was SIGKILLed, or lost its network) is treated as gone. Without that, a crashed instance would
  leave its users "online" forever and their nicknames taken.

Message ids increase per room because one atomic counter per room assigns them (SQLite: inside one
transaction under a lock; Redis: INCR).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import redis

from .rules import HISTORY_LIMIT, ChatMessage, utc_timestamp


class ChatStore(Protocol):
    """What the server needs from its state, whichever backend holds it."""

    def claim_nickname(self, key: str) -> bool:
        """Reserve a nickname for this instance; False if someone online already holds it."""

    def release_nickname(self, key: str) -> None: ...

    def nickname_online(self, key: str) -> bool: ...

    def add_to_room(self, room: str, username: str) -> None: ...

    def remove_from_room(self, room: str, username: str) -> None: ...

    def presence(self, room: str) -> list[str]:
        """Nicknames in the room, sorted case-insensitively."""

    def append_message(self, room: str, username: str, text: str) -> ChatMessage:
        """Store a room message; assigns its per-room id and its UTC timestamp."""

    def history(self, room: str, limit: int = HISTORY_LIMIT) -> list[ChatMessage]:
        """The last `limit` messages of the room, oldest first."""

    def next_private_id(self) -> int: ...

    def presence_lock(self, room: str) -> AbstractContextManager[None]:
        """Held while a room's membership changes and its new presence list is broadcast, so the
        snapshots go out in the order the changes happened."""

    def close(self) -> None: ...


def _sorted_names(names) -> list[str]:
    return sorted(names, key=lambda name: (name.lower(), name))


class LocalStore:
    """Single-process store: in-memory presence, SQLite history."""

    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the server's threads, serialised by a lock: SQLite allows one
        # writer at a time anyway, and the lock makes "read max id, insert id+1" atomic.
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS messages (
                room TEXT NOT NULL, id INTEGER NOT NULL, username TEXT NOT NULL,
                text TEXT NOT NULL, ts TEXT NOT NULL, PRIMARY KEY (room, id));
            CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        """)
        self._lock = threading.Lock()
        self._presence_lock = threading.Lock()
        self._nicknames: set[str] = set()
        self._rooms: dict[str, set[str]] = {}

    def claim_nickname(self, key: str) -> bool:
        with self._lock:
            if key in self._nicknames:
                return False
            self._nicknames.add(key)
            return True

    def release_nickname(self, key: str) -> None:
        with self._lock:
            self._nicknames.discard(key)

    def nickname_online(self, key: str) -> bool:
        with self._lock:
            return key in self._nicknames

    def add_to_room(self, room: str, username: str) -> None:
        with self._lock:
            self._rooms.setdefault(room, set()).add(username)

    def remove_from_room(self, room: str, username: str) -> None:
        with self._lock:
            members = self._rooms.get(room)
            if members is not None:
                members.discard(username)
                if not members:
                    del self._rooms[room]

    def presence(self, room: str) -> list[str]:
        with self._lock:
            return _sorted_names(self._rooms.get(room, ()))

    def append_message(self, room: str, username: str, text: str) -> ChatMessage:
        with self._lock:
            ts = utc_timestamp()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (last,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages WHERE room = ?",
                                           (room,)).fetchone()
                message = ChatMessage(last + 1, room, username, text, ts)
                self._db.execute("INSERT INTO messages (room, id, username, text, ts) VALUES (?,?,?,?,?)",
                                 (room, message.id, username, text, ts))
                self._db.execute("COMMIT")  # durable before anyone is told about it
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return message

    def history(self, room: str, limit: int = HISTORY_LIMIT) -> list[ChatMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, room, username, text, ts FROM messages WHERE room = ? "
                "ORDER BY id DESC LIMIT ?", (room, limit)).fetchall()
        return [ChatMessage(*row) for row in reversed(rows)]

    def next_private_id(self) -> int:
        with self._lock:
            (value,) = self._db.execute(
                "INSERT INTO counters (name, value) VALUES ('private', 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value").fetchone()
            return value

    @contextmanager
    def presence_lock(self, room: str) -> Iterator[None]:
        with self._presence_lock:
            yield

    def close(self) -> None:
        with self._lock:
            self._db.close()


# A nickname held by an instance whose heartbeat expired is free again. Atomic in a script so two
# instances cannot both see "free" and both take it.
_CLAIM_SCRIPT = """
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner and owner ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. owner) == 1 then
  return 0
end
if owner == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Delete a hash field only if this instance owns it (never release someone else's nickname).
_RELEASE_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class RedisStore:
    """Shared store for several server instances.

    Keys (prefix `chat:` by default):
      chat:instance:<id>      heartbeat, TTL `heartbeat_ttl` seconds, refreshed by a thread
      chat:instances          set of instance ids that may still own entries (for the reaper)
      chat:rooms              set of rooms that have (had) presence entries (for the reaper)
      chat:nicknames          hash nickname-key -> instance id
      chat:presence:<room>    hash username -> instance id
      chat:seq:<room>         INCR counter: the room's message ids
      chat:history:<room>     sorted set, score = id, member = the message as JSON; trimmed to 50
      chat:private-seq        INCR counter: private message ids
    """

    def __init__(self, url: str, prefix: str = "chat", heartbeat_ttl: float = 10.0,
                 history_keep: int = HISTORY_LIMIT):
        self.redis = redis.Redis.from_url(url, decode_responses=True)
        self.redis.ping()  # fail at start-up with a clear error, not at the first message
        self.prefix = prefix
        self.instance_id = uuid.uuid4().hex[:12]
        self.heartbeat_ttl = heartbeat_ttl
        self.history_keep = history_keep
        self._claim = self.redis.register_script(_CLAIM_SCRIPT)
        self._release = self.redis.register_script(_RELEASE_SCRIPT)
        self._stop = threading.Event()
        self._beat()
        self.redis.sadd(self._key("instances"), self.instance_id)
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="chat-heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _beat(self) -> None:
        self.redis.set(self._key("instance", self.instance_id), str(time.time()),
                       px=int(self.heartbeat_ttl * 1000))

    def _heartbeat_loop(self) -> None:
        # Refresh at a third of the TTL: two missed beats in a row are still not a false death.
        while not self._stop.wait(self.heartbeat_ttl / 3):
            try:
                self._beat()
            except redis.RedisError:
                pass  # Redis down: the next beat retries; handlers will report errors meanwhile

    def _live_instances(self, instance_ids: set[str]) -> set[str]:
        ids = sorted(instance_ids)
        with self.redis.pipeline(transaction=False) as pipe:
            for instance in ids:
                pipe.exists(self._key("instance", instance))
            alive = pipe.execute()
        return {instance for instance, ok in zip(ids, alive, strict=True) if ok}

    def claim_nickname(self, key: str) -> bool:
        return bool(self._claim(keys=[self._key("nicknames")],
                                args=[key, self.instance_id, self._key("instance") + ":"]))

    def release_nickname(self, key: str) -> None:
        self._release(keys=[self._key("nicknames")], args=[key, self.instance_id])

    def nickname_online(self, key: str) -> bool:
        owner = self.redis.hget(self._key("nicknames"), key)
        return owner is not None and bool(self._live_instances({owner}))

    def add_to_room(self, room: str, username: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self._key("rooms"), room)
            pipe.hset(self._key("presence", room), username, self.instance_id)
            pipe.execute()

    def remove_from_room(self, room: str, username: str) -> None:
        self._release(keys=[self._key("presence", room)], args=[username, self.instance_id])

    def presence(self, room: str) -> list[str]:
        entries = self.redis.hgetall(self._key("presence", room))
        alive = self._live_instances(set(entries.values()))
        stale = [name for name, owner in entries.items() if owner not in alive]
        for name in stale:  # a crashed instance's users: tidy them away (only if still stale)
            self._release(keys=[self._key("presence", room)], args=[name, entries[name]])
        return _sorted_names(name for name, owner in entries.items() if owner in alive)

    def reap_dead_instances(self) -> list[str]:
        """Remove the entries of instances whose heartbeat expired; return the rooms that changed.

        Run periodically by every instance. A SET NX "reaping" marker makes one instance do each
        dead instance's clean-up (and so broadcast the new presence lists) instead of all of them.
        """
        known = set(self.redis.smembers(self._key("instances"))) - {self.instance_id}
        dead = known - self._live_instances(known)
        changed: set[str] = set()
        for instance in sorted(dead):
            if not self.redis.set(self._key("reaping", instance), self.instance_id, nx=True, ex=60):
                continue
            for room in self.redis.smembers(self._key("rooms")):
                entries = self.redis.hgetall(self._key("presence", room))
                for name, owner in entries.items():
                    if owner == instance:
                        self._release(keys=[self._key("presence", room)], args=[name, instance])
                        changed.add(room)
            for key, owner in self.redis.hgetall(self._key("nicknames")).items():
                if owner == instance:
                    self._release(keys=[self._key("nicknames")], args=[key, instance])
            self.redis.srem(self._key("instances"), instance)
        return sorted(changed)

    def append_message(self, room: str, username: str, text: str) -> ChatMessage:
        message_id = self.redis.incr(self._key("seq", room))
        message = ChatMessage(message_id, room, username, text, utc_timestamp())
        history_key = self._key("history", room)
        # A sorted set ordered by id, not a list: two instances may store ids 7 and 8 in either
        # order, and the history must still come out 7, 8.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(history_key, {json.dumps(message.payload()): message_id})
            pipe.zremrangebyrank(history_key, 0, -self.history_keep - 1)
            pipe.execute()
        return message

    def history(self, room: str, limit: int = HISTORY_LIMIT) -> list[ChatMessage]:
        members = self.redis.zrange(self._key("history", room), -limit, -1)
        return [ChatMessage(**json.loads(member)) for member in members]

    def next_private_id(self) -> int:
        return int(self.redis.incr(self._key("private-seq")))

    @contextmanager
    def presence_lock(self, room: str) -> Iterator[None]:
        # A short lease: if the holder is SIGKILLed mid-broadcast, the room unblocks in 5 s.
        # Polling every 5 ms (not redis-py's default 100 ms) keeps joins snappy under contention.
        lock = self.redis.lock(self._key("presence-lock", room), timeout=5, sleep=0.005,
                               blocking_timeout=5)
        acquired = lock.acquire()
        try:
            yield
        finally:
            if acquired:
                try:
                    lock.release()
                except redis.exceptions.LockError:
                    pass  # the lease expired first; nothing of ours to release

    def close(self) -> None:
        """Stop the heartbeat and say we are gone, so our users drop out of presence at once."""
        self._stop.set()
        self._heartbeat.join(timeout=2)
        try:
            self.redis.delete(self._key("instance", self.instance_id))
            self.redis.srem(self._key("instances"), self.instance_id)
        except redis.RedisError:
            pass
        self.redis.close()
