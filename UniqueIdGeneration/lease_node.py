"""One ID-issuing node: lease a worker id from Redis, then issue Snowflake IDs until stopped.

    python -m UniqueIdGeneration.lease_node --redis-url redis://127.0.0.1:6379/0 --ttl-ms 1000

It prints one line per event, which is what the fault-injection tests read:

    leased worker_id=3 node=host:1234:ab12cd34 ttl_ms=1000
    issued 123456789012345 worker_id=3            (every --interval-ms)
    refused: worker id 3 lease may have expired: ...        (then exits with status 3)

Exit status: 0 stopped (Ctrl-C / SIGTERM, lease released), 1 Redis unreachable, 2 no free worker id
(or a mistake in the arguments), 3 lease lost (the node refused to issue IDs).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import redis

from common import cli

from .worker_lease import LeaseExpiredError, NoFreeWorkerIdError, WorkerLease

EXIT_REDIS_UNAVAILABLE = 1
EXIT_NO_FREE_ID = 2
EXIT_LEASE_LOST = 3


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m UniqueIdGeneration.lease_node", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", type=cli.redis_url, default=os.environ.get("REDIS_URL"),
                        help="Redis holding the worker:<id> leases, e.g. redis://127.0.0.1:6379/0 "
                             "(default: $REDIS_URL)")
    parser.add_argument("--ttl-ms", type=cli.positive_int, default=10_000,
                        help="lease time to live (default 10000)")
    parser.add_argument("--interval-ms", type=cli.positive_int, default=20,
                        help="issue one ID this often (default 20)")
    parser.add_argument("--node-id", default=None, help="name stored in the lease (default host:pid:random)")
    args = parser.parse_args(argv)
    if args.redis_url is None:
        parser.error("--redis-url: required (or set REDIS_URL), e.g. --redis-url redis://127.0.0.1:6379/0")

    stopping = threading.Event()
    # SIGTERM (what the test fixtures and service managers send) ends the loop like Ctrl-C, so the
    # lease is released instead of lingering until its ttl.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        lease = WorkerLease(args.redis_url, node_id=args.node_id, ttl_ms=args.ttl_ms)
    except ValueError as exc:       # a --ttl-ms too short to renew within
        parser.error(f"--ttl-ms: {exc}")
    try:
        lease.acquire()
    except NoFreeWorkerIdError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_NO_FREE_ID
    except redis.RedisError as exc:
        print(f"error: cannot lease a worker id from {args.redis_url}: {exc}", file=sys.stderr, flush=True)
        return EXIT_REDIS_UNAVAILABLE
    try:
        print(f"leased worker_id={lease.worker_id} node={lease.node_id} ttl_ms={lease.ttl_ms}", flush=True)
        generator = lease.generator()
        while not stopping.wait(args.interval_ms / 1000):
            try:
                snowflake_id = generator.next_id()
            except LeaseExpiredError as exc:
                print(f"refused: {exc}", flush=True)
                return EXIT_LEASE_LOST
            print(f"issued {snowflake_id} worker_id={lease.worker_id}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        lease.close()
    print("stopped: lease released", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
