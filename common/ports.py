"""Loopback ports: find a free one, and wait until a server accepts connections on one.

Every server in this project binds 127.0.0.1. Tests and demos pick a port the kernel says is free
(bind to port 0) instead of hard-coding one, so several runs can share a machine.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on `host` right now.

    The kernel may hand the same port to someone else before our server binds it; on loopback in a
    test run that is rare, and the caller sees a clear "address in use" error if it happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int,
    host: str = LOOPBACK,
    timeout: float = 10.0,
    still_alive: Callable[[], bool] | None = None,
) -> None:
    """Poll until host:port accepts a connection.

    `still_alive` lets the caller stop waiting as soon as the server process has died, instead of
    sitting out the whole timeout. Raises TimeoutError or RuntimeError with a message that says which.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if port_is_open(port, host):
            return
        if still_alive is not None and not still_alive():
            raise RuntimeError(f"the server exited before it listened on {host}:{port}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listened on {host}:{port} within {timeout:.1f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)  # start fast, then back off: polling, not a fixed sleep
