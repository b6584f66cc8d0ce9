"""The blog example: posts land on the shard of their user, and list newest first by ID alone."""

from __future__ import annotations

import sqlite3

import pytest

from tests.uid_helpers import START_MS, SteppedClock
from UniqueIdGeneration.blog_service import (
    BlogService,
    InvalidPostError,
    InvalidUserIdError,
    PostNotFoundError,
)
from UniqueIdGeneration.snowflake import SnowflakeGenerator, parse


def shard_rows(path) -> set[tuple[int, int]]:
    with sqlite3.connect(path) as connection:
        return set(connection.execute("SELECT post_id, user_id FROM posts"))


def test_posts_land_on_their_users_shard_and_list_newest_first(data_dir):
    clock = SteppedClock()
    # Two app servers (worker ids 1 and 2) writing alternately, one millisecond apart.
    servers = [SnowflakeGenerator(worker_id, clock=clock) for worker_id in (1, 2)]
    blogs = [BlogService(data_dir, generator, shard_count=3) for generator in servers]
    created = []
    try:
        for n in range(30):
            clock.now_ms += 1
            user_id = n % 5
            created.append(blogs[n % 2].create_post(user_id, f"post {n}", f"body {n}"))

        for shard in range(3):
            expected = {(p.post_id, p.user_id) for p in created if p.user_id % 3 == shard}
            assert shard_rows(blogs[0].shard_path(shard)) == expected

        for user_id in range(5):
            mine = [p for p in created if p.user_id == user_id]
            listed = blogs[0].list_posts(user_id, limit=100)
            assert [p.title for p in listed] == [p.title for p in reversed(mine)], "not newest first"
            assert [p.created_at for p in listed] == sorted((p.created_at for p in listed), reverse=True)
        assert len(blogs[1].list_posts(0, limit=2)) == 2

        post = created[7]
        assert blogs[1].get_post(post.user_id, post.post_id) == post
        assert parse(post.post_id).timestamp_ms == START_MS + 8   # created_at comes from the ID
    finally:
        for blog in blogs:
            blog.close()


def test_bad_input_gets_specific_errors(data_dir):
    with BlogService(data_dir, SnowflakeGenerator(1), shard_count=2) as blog:
        post = blog.create_post(4, "hello", "world")
        with pytest.raises(PostNotFoundError, match="user 5 has no post"):
            blog.get_post(5, post.post_id)             # right id, wrong user -> wrong shard anyway
        with pytest.raises(InvalidUserIdError):
            blog.create_post(-1, "t", "b")
        with pytest.raises(InvalidUserIdError):
            blog.list_posts("4")
        with pytest.raises(InvalidPostError, match="non-empty title"):
            blog.create_post(4, "  ", "b")
        assert blog.list_posts(4) == [post]            # still serving after the errors
