"""Unique ID generation: Snowflake IDs, worker-id leasing, and the sortable-key experiment.

    python -m UniqueIdGeneration.demo            IDs decoded bit by bit, leasing, the sharded blog
    python -m UniqueIdGeneration.sortable_keys   B-tree inserts: snowflake vs UUIDv4 vs UUIDv7
    python -m UniqueIdGeneration.bench           IDs/s vs the snowflake-id package and uuid4()
"""

from .blog_service import (
    BlogError,
    BlogService,
    InvalidPostError,
    InvalidUserIdError,
    Post,
    PostNotFoundError,
)
from .snowflake import (
    DEFAULT_EPOCH_MS,
    IDS_PER_MS_PER_WORKER,
    MAX_SEQUENCE,
    MAX_WORKER_ID,
    ClockMovedBackwardsError,
    EpochInFutureError,
    InvalidSnowflakeError,
    SnowflakeError,
    SnowflakeGenerator,
    SnowflakeParts,
    TimestampOverflowError,
    WorkerIdOutOfRangeError,
    compose,
    format_bits,
    parse,
)
from .uuidv7 import UUIDv7Generator, compose_uuid7, uuid7_timestamp_ms
from .worker_lease import (
    LeasedSnowflakeGenerator,
    LeaseError,
    LeaseExpiredError,
    NoFreeWorkerIdError,
    WorkerLease,
)

__all__ = [
    "DEFAULT_EPOCH_MS", "IDS_PER_MS_PER_WORKER", "MAX_SEQUENCE", "MAX_WORKER_ID", "BlogError",
    "BlogService", "ClockMovedBackwardsError", "EpochInFutureError", "InvalidPostError",
    "InvalidSnowflakeError", "InvalidUserIdError", "LeaseError", "LeaseExpiredError",
    "LeasedSnowflakeGenerator", "NoFreeWorkerIdError", "Post", "PostNotFoundError", "SnowflakeError",
    "SnowflakeGenerator", "SnowflakeParts", "TimestampOverflowError", "UUIDv7Generator",
    "WorkerIdOutOfRangeError", "WorkerLease", "compose", "compose_uuid7", "format_bits", "parse",
    "uuid7_timestamp_ms",
]
