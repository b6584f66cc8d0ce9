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
transaction under a lock; Redis: INCR inside a Lua script). A message may carry the sender's
`client_id`; a resend with the same (room, sender, client_id) returns the original message and
stores nothing. That dedup record is written in the same transaction (SQLite) or the same script
(Redis) as the message itself, so there is no moment where one exists without the other.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .rules import CATCH_UP_LIMIT, HISTORY_LIMIT, ChatMessage, nickname_key, utc_timestamp


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

    def append_message(self, room: str, username: str, text: str,
                       client_id: str | None = None) -> tuple[ChatMessage, bool]:
        """Store a room message; assigns its per-room id and its UTC timestamp. Returns (message,
        True), or — when this sender already stored `client_id` in this room — (the original
        message, False) and stores nothing. The dedup record is written atomically with the message."""

    def history(self, room: str, limit: int = HISTORY_LIMIT, since: int | None = None) -> list[ChatMessage]:
        """The last `limit` messages of the room (only those with id > `since`), oldest first."""

    def record_private(self, sender: str, client_id: str | None = None) -> tuple[int, str, bool]:
        """A private message's (id, ts, new): a fresh id, or the original one for a resend."""

    def presence_lock(self, room: str) -> AbstractContextManager[None]:
        """Held while a room's membership changes and its new presence list is broadcast, so the
        snapshots go out in the order the changes happened."""

    def close(self) -> None: ...


_COLUMNS = "id, room, username, text, ts, client_id"   # ChatMessage's fields, in order


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
            CREATE TABLE IF NOT EXISTS private_sends (
                sender_key TEXT NOT NULL, client_id TEXT NOT NULL, id INTEGER NOT NULL,
                ts TEXT NOT NULL, PRIMARY KEY (sender_key, client_id));
        """)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        if "client_id" not in columns:  # a history file from before acknowledged sends
            self._db.execute("ALTER TABLE messages ADD COLUMN client_id TEXT")
            self._db.execute("ALTER TABLE messages ADD COLUMN sender_key TEXT")
        # The dedup record is the message row itself: one row per (room, sender, client_id).
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id "
                         "ON messages (room, sender_key, client_id) WHERE client_id IS NOT NULL")
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

    def append_message(self, room: str, username: str, text: str,
                       client_id: str | None = None) -> tuple[ChatMessage, bool]:
        with self._lock, self._transaction():
            if client_id is not None:
                row = self._db.execute(
                    f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND sender_key = ? AND client_id = ?",
                    (room, nickname_key(username), client_id)).fetchone()
                if row is not None:
                    return ChatMessage(*row), False   # a resend: the original, nothing stored
            (last,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages WHERE room = ?",
                                       (room,)).fetchone()
            message = ChatMessage(last + 1, room, username, text, utc_timestamp(), client_id)
            self._db.execute("INSERT INTO messages (room, id, username, text, ts, client_id, sender_key) "
                             "VALUES (?,?,?,?,?,?,?)",
                             (room, message.id, username, text, message.ts, client_id,
                              nickname_key(username)))
            return message, True   # committed (durable) when the transaction ends, before any ack

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def history(self, room: str, limit: int = HISTORY_LIMIT, since: int | None = None) -> list[ChatMessage]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND id > ? "
                "ORDER BY id DESC LIMIT ?", (room, since or 0, limit)).fetchall()
        return [ChatMessage(*row) for row in reversed(rows)]

    def record_private(self, sender: str, client_id: str | None = None) -> tuple[int, str, bool]:
        with self._lock, self._transaction():
            if client_id is not None:
                row = self._db.execute("SELECT id, ts FROM private_sends WHERE sender_key = ? AND "
                                       "client_id = ?", (nickname_key(sender), client_id)).fetchone()
                if row is not None:
                    return row[0], row[1], False
            (message_id,) = self._db.execute(
                "INSERT INTO counters (name, value) VALUES ('private', 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value").fetchone()
            ts = utc_timestamp()
            if client_id is not None:
                self._db.execute("INSERT INTO private_sends (sender_key, client_id, id, ts) VALUES (?,?,?,?)",
                                 (nickname_key(sender), client_id, message_id, ts))
            return message_id, ts, True

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


# Store a room message and its dedup record in one atomic step (a Lua script runs alone in Redis).
# KEYS: seq counter, history zset, dedup hash (sender+client_id -> message JSON), dedup order zset.
# ARGV: dedup field ('' = no client_id), the message as JSON without its id, history kept, dedup kept.
# Returns {1, json} for a new message, {0, json of the original} for a resend.
_APPEND_SCRIPT = """
if ARGV[1] ~= '' then
  local original = redis.call('HGET', KEYS[3], ARGV[1])
  if original then return {0, original} end
end
local id = redis.call('INCR', KEYS[1])
local message = cjson.decode(ARGV[2])
message['id'] = id
local encoded = cjson.encode(message)
redis.call('ZADD', KEYS[2], id, encoded)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[3]) - 1)
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[1], encoded)
  redis.call('ZADD', KEYS[4], id, ARGV[1])
  local excess = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[4])
  if excess > 0 then
    local oldest = redis.call('ZPOPMIN', KEYS[4], excess)
    for i = 1, #oldest, 2 do redis.call('HDEL', KEYS[3], oldest[i]) end
  end
end
return {1, encoded}
"""

# The same for a private message's id: KEYS private-seq, dedup hash, dedup order; ARGV field, ts, kept.
_PRIVATE_SCRIPT = """
if ARGV[1] ~= '' then
  local original = redis.call('HGET', KEYS[2], ARGV[1])
  if original then return {0, original} end
end
local id = redis.call('INCR', KEYS[1])
local record = id .. ' ' .. ARGV[2]
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], record)
  redis.call('ZADD', KEYS[3], id, ARGV[1])
  local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[3])
  if excess > 0 then
    local oldest = redis.call('ZPOPMIN', KEYS[3], excess)
    for i = 1, #oldest, 2 do redis.call('HDEL', KEYS[2], oldest[i]) end
  end
end
return {1, record}
"""

# How many recent client_ids a room (or the private channel) remembers: a resend older than that
# would be stored again. Clients resend within seconds to minutes, never after 1,000 messages.
DEDUP_KEEP = 1_000
PRIVATE_DEDUP_KEEP = 10_000


def _dedup_field(sender: str, client_id: str | None) -> str:
    return "" if client_id is None else f"{nickname_key(sender)}\n{client_id}"


class RedisStore:
    """Shared store for several server instances.

    Keys (prefix `chat:` by default):
      chat:instance:<id>      heartbeat, TTL `heartbeat_ttl` seconds, refreshed by a thread
      chat:instances          set of instance ids that may still own entries (for the reaper)
      chat:rooms              set of rooms that have (had) presence entries (for the reaper)
      chat:nicknames          hash nickname-key -> instance id
      chat:presence:<room>    hash username -> instance id
      chat:seq:<room>         INCR counter: the room's message ids
      chat:history:<room>     sorted set, score = id, member = the message as JSON; trimmed to 500
                              (the most a reconnecting client can ask for with `since`)
      chat:dedup:<room>       hash "sender\nclient_id" -> the message as JSON (last 1,000 per room)
      chat:dedup-order:<room> sorted set of those fields by id, to forget the oldest
      chat:private-seq        INCR counter: private message ids (+ chat:private-dedup[-order])
    """

    def __init__(self, url: str, prefix: str = "chat", heartbeat_ttl: float = 10.0,
                 history_keep: int = CATCH_UP_LIMIT):
        # Fail fast when Redis is unreachable (a partition, a restart): one quick retry, then the
        # handler answers internal_error and the client's outbox retries. Blocking a connection's
        # thread for seconds would only hide the outage from the user.
        self.redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0,
                                          socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 1))
        self.redis.ping()  # fail at start-up with a clear error, not at the first message
        self.prefix = prefix
        self.instance_id = uuid.uuid4().hex[:12]
        self.heartbeat_ttl = heartbeat_ttl
        self.history_keep = history_keep
        self._claim = self.redis.register_script(_CLAIM_SCRIPT)
        self._release = self.redis.register_script(_RELEASE_SCRIPT)
        self._append = self.redis.register_script(_APPEND_SCRIPT)
        self._private = self.redis.register_script(_PRIVATE_SCRIPT)
        self._stop = threading.Event()
        # Called when our heartbeat was missing long enough for the others to declare us dead
        # (see _heartbeat_loop). The server sets it to disconnect every user of this instance.
        self.on_presumed_dead: Callable[[float], None] | None = None
        self._beat()
        self._last_beat = time.monotonic()
        self.redis.sadd(self._key("instances"), self.instance_id)
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="chat-heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _beat(self) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key("instance", self.instance_id), str(time.time()),
                     px=int(self.heartbeat_ttl * 1000))
            pipe.sadd(self._key("instances"), self.instance_id)   # a reaper may have removed us
            pipe.execute()

    def _heartbeat_loop(self) -> None:
        # Refresh at a third of the TTL: two missed beats in a row are still not a false death.
        while not self._stop.wait(self.heartbeat_ttl / 3):
            try:
                self._beat()
            except redis.RedisError:
                continue  # Redis unreachable: the next beat retries; handlers report errors meanwhile
            now = time.monotonic()
            silent, self._last_beat = now - self._last_beat, now
            if silent > self.heartbeat_ttl and self.on_presumed_dead is not None:
                # Our key expired: the other instances may have reaped our users' presence and
                # freed their nicknames (someone else may hold one now). Our claims are void; the
                # server must not go on acting on them.
                self.on_presumed_dead(silent)

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

    def append_message(self, room: str, username: str, text: str,
                       client_id: str | None = None) -> tuple[ChatMessage, bool]:
        fields = {"room": room, "username": username, "text": text, "ts": utc_timestamp(),
                  "client_id": client_id}
        # History is a sorted set by id, not a list: two instances may store ids 7 and 8 in either
        # order, and the history must still come out 7, 8.
        new, encoded = self._append(
            keys=[self._key("seq", room), self._key("history", room), self._key("dedup", room),
                  self._key("dedup-order", room)],
            args=[_dedup_field(username, client_id), json.dumps(fields), self.history_keep, DEDUP_KEEP])
        return ChatMessage(**json.loads(encoded)), bool(new)

    def history(self, room: str, limit: int = HISTORY_LIMIT, since: int | None = None) -> list[ChatMessage]:
        members = self.redis.zrevrangebyscore(self._key("history", room), "+inf", f"({since or 0}",
                                              start=0, num=limit)
        return [ChatMessage(**json.loads(member)) for member in reversed(members)]

    def record_private(self, sender: str, client_id: str | None = None) -> tuple[int, str, bool]:
        new, record = self._private(
            keys=[self._key("private-seq"), self._key("private-dedup"), self._key("private-dedup-order")],
            args=[_dedup_field(sender, client_id), utc_timestamp(), PRIVATE_DEDUP_KEEP])
        message_id, ts = record.split(" ", 1)
        return int(message_id), ts, bool(new)

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
