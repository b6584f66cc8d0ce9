"""The blog example: why time-sortable IDs matter once data is sharded.

Posts live in N SQLite databases ("shards"); a user's posts all go to shard `user_id % N`, so one
user's timeline is one query on one shard. Post IDs come from a SnowflakeGenerator, which gives
two things a database auto-increment cannot once there are several shards and app servers:

- uniqueness without coordination: every app server mints IDs on its own (its own worker id),
  and no two shards ever hand out the same post id;
- order for free: an ID starts with its millisecond, so "newest first" is `ORDER BY post_id DESC`
  on the primary key — no created_at column, no extra index. (Within one millisecond, IDs from
  different workers order by worker id: Snowflake IDs are *k-sorted*, exact to the millisecond.)

The creation time of a post is read back out of its ID (`created_at`), not stored.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .snowflake import DEFAULT_EPOCH_MS, SnowflakeGenerator, parse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    post_id INTEGER PRIMARY KEY,     -- the Snowflake ID; as the rowid it *is* the table's B-tree key
    user_id INTEGER NOT NULL,
    title   TEXT NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS posts_by_user ON posts (user_id, post_id);
"""

MAX_TITLE_LENGTH = 200


class BlogError(Exception):
    """Base class of blog-service errors."""


class InvalidUserIdError(BlogError, ValueError):
    """User ids are non-negative integers."""


class InvalidPostError(BlogError, ValueError):
    """A post needs a non-empty title of at most MAX_TITLE_LENGTH characters and a string body."""


class PostNotFoundError(BlogError, LookupError):
    """No post with that id for that user."""


@dataclass(frozen=True)
class Post:
    post_id: int
    user_id: int
    title: str
    body: str
    epoch_ms: int = DEFAULT_EPOCH_MS

    @property
    def created_at(self) -> datetime:
        """When the post was created — decoded from its ID, to the millisecond."""
        return parse(self.post_id, epoch_ms=self.epoch_ms).datetime_utc


class BlogService:
    """Posts in `shard_count` SQLite files under `data_dir`, sharded by user id."""

    def __init__(self, data_dir: str | Path, generator: SnowflakeGenerator, *, shard_count: int = 4):
        if shard_count < 1:
            raise ValueError(f"shard_count must be at least 1, got {shard_count}")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.generator = generator
        self.shard_count = shard_count
        # One connection per shard, used under a lock: sqlite3 connections are not to be shared by
        # threads concurrently, and these are tiny transactions.
        self._lock = threading.Lock()
        self._shards = [self._open_shard(index) for index in range(shard_count)]

    # --- public API ---------------------------------------------------------------------------

    def shard_for(self, user_id: int) -> int:
        """The shard holding all of this user's posts."""
        _check_user_id(user_id)
        return user_id % self.shard_count

    def shard_path(self, index: int) -> Path:
        return self.data_dir / f"posts-shard-{index}.sqlite3"

    def create_post(self, user_id: int, title: str, body: str) -> Post:
        _check_post(title, body)
        shard = self._shards[self.shard_for(user_id)]
        post = Post(self.generator.next_id(), user_id, title, body, self.generator.epoch_ms)
        with self._lock, shard:
            shard.execute("INSERT INTO posts (post_id, user_id, title, body) VALUES (?, ?, ?, ?)",
                          (post.post_id, post.user_id, post.title, post.body))
        return post

    def get_post(self, user_id: int, post_id: int) -> Post:
        """Fetch by (user, post id): the user id alone says which shard to ask."""
        shard = self._shards[self.shard_for(user_id)]
        with self._lock:
            row = shard.execute("SELECT post_id, user_id, title, body FROM posts "
                                "WHERE post_id = ? AND user_id = ?", (post_id, user_id)).fetchone()
        if row is None:
            raise PostNotFoundError(f"user {user_id} has no post {post_id}")
        return Post(*row, epoch_ms=self.generator.epoch_ms)

    def list_posts(self, user_id: int, limit: int = 20) -> list[Post]:
        """The user's posts, newest first — ordered by post id alone."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        shard = self._shards[self.shard_for(user_id)]
        with self._lock:
            rows = shard.execute("SELECT post_id, user_id, title, body FROM posts WHERE user_id = ? "
                                 "ORDER BY post_id DESC LIMIT ?", (user_id, limit)).fetchall()
        return [Post(*row, epoch_ms=self.generator.epoch_ms) for row in rows]

    def close(self) -> None:
        with self._lock:
            for shard in self._shards:
                shard.close()

    def __enter__(self) -> BlogService:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- helpers ------------------------------------------------------------------------------

    def _open_shard(self, index: int) -> sqlite3.Connection:
        connection = sqlite3.connect(self.shard_path(index), check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(_SCHEMA)
        return connection


def _check_user_id(user_id: int) -> None:
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id < 0:
        raise InvalidUserIdError(f"user_id must be a non-negative int, got {user_id!r}")


def _check_post(title: str, body: str) -> None:
    if not isinstance(title, str) or not title.strip():
        raise InvalidPostError("a post needs a non-empty title")
    if len(title) > MAX_TITLE_LENGTH:
        raise InvalidPostError(f"title is {len(title)} characters; the limit is {MAX_TITLE_LENGTH}")
    if not isinstance(body, str):
        raise InvalidPostError(f"body must be a string, got {type(body).__name__}")
