"""The headline demo: Snowflake IDs taken apart bit by bit, worker-id leasing on a real Redis, and
the sharded blog listing posts newest first by sorting IDs alone.

    python -m UniqueIdGeneration.demo

Starts a private redis-server (or uses $REDIS_URL), a temporary directory for the SQLite shards,
and stops/removes both. The last line is a one-line result for the tour.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time

import redis

from common import cli, redis_server

from .blog_service import BlogService
from .snowflake import (
    IDS_PER_MS_PER_WORKER,
    SnowflakeGenerator,
    format_bits,
    parse,
)
from .worker_lease import NoFreeWorkerIdError, WorkerLease


def show_ids(count: int) -> int:
    """Issue IDs from 4 threads on one generator, check them, and decode a few."""
    print("== 1. Snowflake IDs: 6 unused | 41-bit ms since 2023-01-01 | 5-bit worker | 12-bit sequence")
    generator = SnowflakeGenerator(worker_id=3)
    per_thread: list[list[int]] = [[] for _ in range(4)]

    def work(out: list[int]) -> None:
        for _ in range(count // 4):
            out.append(generator.next_id())

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    every_id = [i for ids in per_thread for i in ids]
    unique = len(set(every_id)) == len(every_id)
    increasing = all(ids == sorted(ids) for ids in per_thread)
    print(f"   {len(every_id):,} IDs from 4 threads sharing one generator in {elapsed * 1000:.0f} ms: "
          f"{'all distinct' if unique else 'DUPLICATES'}, "
          f"{'increasing in every thread' if increasing else 'OUT OF ORDER'}")
    print(f"   (the layout allows {IDS_PER_MS_PER_WORKER:,} IDs per ms per worker; "
          f"more waits for the next ms)")
    for snowflake_id in sorted(every_id)[:2] + sorted(every_id)[-1:]:
        parts = parse(snowflake_id)
        print(f"   {snowflake_id}")
        print(f"     bits      {format_bits(snowflake_id)}")
        print(f"     decoded   {parts.datetime_utc.isoformat(timespec='milliseconds')}  "
              f"worker {parts.worker_id}  sequence {parts.sequence}")
    if not (unique and increasing):
        raise AssertionError("the generator produced duplicate or out-of-order IDs")
    return len(every_id)


def show_leasing(redis_url: str) -> list[int]:
    """Three nodes lease worker ids; one leaves (its id stays taken for the skew margin); newcomers join."""
    print("\n== 2. Worker-id leasing: SET worker:<id> <node> NX PX <ttl>, renewed in the background")
    ttl_ms = 2000
    leases = [WorkerLease(redis_url, node_id=f"node-{name}", ttl_ms=ttl_ms).acquire() for name in "abc"]
    client = redis.Redis.from_url(redis_url)
    try:
        for lease in leases:
            generator = lease.generator()
            print(f"   {lease.node_id} holds worker id {lease.worker_id} "
                  f"(ttl {ttl_ms} ms, trusted locally for {lease.remaining_ms():.0f} ms more) "
                  f"-> first ID {generator.next_id()}")
        leaving = leases.pop(1)
        leaving.close()
        margin_ms = leaving.max_clock_skew_ms
        print(f"   {leaving.node_id} closes: worker id {leaving.worker_id} is released, but stays taken for "
              f"the {margin_ms} ms skew margin")
        print("     (a newcomer whose clock runs behind could otherwise reuse node-b's last milliseconds)")
        joining_now = WorkerLease(redis_url, node_id="node-d", ttl_ms=ttl_ms).acquire()
        leases.append(joining_now)
        print(f"   {joining_now.node_id} joins at once and gets worker id {joining_now.worker_id}, "
              f"the lowest free one: id {leaving.worker_id} is still inside its margin")
        waited_ms = wait_until_free(client, leaving.key(leaving.worker_id))
        print(f"   {waited_ms:.0f} ms later {leaving.key(leaving.worker_id)} has expired in Redis")
        joining_later = WorkerLease(redis_url, node_id="node-e", ttl_ms=ttl_ms).acquire()
        leases.append(joining_later)
        print(f"   {joining_later.node_id} joins and gets worker id {joining_later.worker_id}")
        try:
            WorkerLease(redis_url, node_id="node-f", ttl_ms=ttl_ms, worker_ids=range(4)).acquire()
        except NoFreeWorkerIdError as exc:
            print(f"   with only ids 0-3 in the pool, node-f is refused: {exc}")
        return sorted(lease.worker_id for lease in leases)
    finally:
        for lease in leases:
            lease.close()
        client.close()


def wait_until_free(client: redis.Redis, key: str, timeout: float = 10.0) -> float:
    """Poll until `key` is gone from Redis; return the milliseconds waited."""
    started = time.monotonic()
    while client.exists(key):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{key} did not expire within {timeout:.0f} s")
        time.sleep(0.01)
    return (time.monotonic() - started) * 1000


def show_blog(data_dir: str) -> tuple[int, int, bool]:
    """Two app servers write posts into 3 shards; one user's timeline comes back newest first."""
    print("\n== 3. The blog: posts in 3 SQLite shards by user id, listed newest first by ID alone")
    app_servers = [SnowflakeGenerator(worker_id) for worker_id in (1, 2)]
    blogs = [BlogService(data_dir, generator, shard_count=3) for generator in app_servers]
    try:
        titles = ["Hello, world", "Why Snowflake IDs", "Sharding by user", "Clocks lie",
                  "Leases, not config files", "Sorting by ID"]
        created = []
        for n, title in enumerate(titles):
            user_id = 42 if n % 2 == 0 else 7
            post = blogs[n % 2].create_post(user_id, title, f"post number {n}")
            created.append(post)
            print(f"   app server {n % 2 + 1} -> user {user_id} (shard {blogs[0].shard_for(user_id)}): "
                  f"post {post.post_id} {title!r}")
            time.sleep(0.002)   # so the demo's posts are visibly a few ms apart
        timeline = blogs[0].list_posts(42)
        print("   user 42's posts, ORDER BY post_id DESC:")
        for post in timeline:
            created_at = post.created_at.isoformat(timespec="milliseconds")
            print(f"     {created_at}  {post.post_id}  {post.title!r}")
        expected = [p.post_id for p in reversed(created) if p.user_id == 42]
        newest_first = [p.post_id for p in timeline] == expected
        fetched = blogs[1].get_post(7, created[1].post_id)
        print(f"   fetch (user 7, post {fetched.post_id}) -> {fetched.title!r}")
        return len(created), len({blogs[0].shard_for(p.user_id) for p in created}), newest_first
    finally:
        for blog in blogs:
            blog.close()


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m UniqueIdGeneration.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=cli.int_range(4), default=100_000,
                        help="IDs to generate in part 1 (default 100000, at least 4)")
    args = parser.parse_args(argv)

    # Redis first: an unreachable $REDIS_URL is reported (one line, by cli.run) before any work.
    with redis_server() as url:
        id_count = show_ids(args.ids)
        worker_ids = show_leasing(url)
    with tempfile.TemporaryDirectory(prefix="blog-shards-") as data_dir:
        posts, shards, newest_first = show_blog(data_dir)
    if not newest_first:
        print("result: FAILED — the timeline was not newest first")
        return 1
    print(f"\nresult: {id_count:,} IDs distinct and ordered; leased worker ids {worker_ids}; "
          f"{posts} posts on {shards} shards listed newest first by ID")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
