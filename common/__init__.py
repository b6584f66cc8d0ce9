"""Shared infrastructure for every concept: real redis-servers, free ports, child processes, CLI edges.

No concept logic lives here. See README.md "Set-up" for REDIS_URL.
"""

from .ports import LOOPBACK, free_port, port_is_open, wait_for_port
from .processes import REPO_ROOT, ChildProcess, SpawnError, spawn_command, spawn_module, stop_process
from .redis_launcher import (
    REDIS_URL_ENV,
    RedisServer,
    RedisUnavailable,
    check_reachable,
    find_redis_server_binary,
    redis_server,
    redis_servers,
    with_db,
)

__all__ = [
    "LOOPBACK", "REDIS_URL_ENV", "REPO_ROOT", "ChildProcess", "RedisServer", "RedisUnavailable",
    "SpawnError", "check_reachable", "find_redis_server_binary", "free_port", "port_is_open", "redis_server",
    "redis_servers", "spawn_command", "spawn_module", "stop_process", "wait_for_port", "with_db",
]
