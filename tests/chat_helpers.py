"""Helpers for the RealTimeChat tests: start a real server process, connect scripted users."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from common import free_port
from RealTimeChat.client import ChatClient


def start_chat(spawn, *args: str, db: str | None = None, redis: str | None = None):
    """Spawn `python -m RealTimeChat.app` on a free port; returns (child, base URL)."""
    port = free_port()
    argv = ["--port", str(port)]
    if redis:
        argv += ["--redis", redis]
    if db:
        argv += ["--db", db]
    child = spawn("RealTimeChat.app", *argv, *args, port=port)
    return child, f"http://127.0.0.1:{port}"


@contextmanager
def users(url: str, count: int) -> Iterator[list[ChatClient]]:
    """`count` connected clients, dropped afterwards.

    Dropping (closing the TCP connection) rather than `disconnect()` keeps each test fast: the
    polite goodbye can cost 3 s per client (see RealTimeChat.client.disconnect_all), and the
    server must cope with vanishing clients anyway. The polite path has its own test.
    """
    clients: list[ChatClient] = []
    try:
        for index in range(count):
            clients.append(ChatClient(url, name=f"client{index}").connect())
        yield clients
    finally:
        for client in clients:
            client.drop()


def barrier(client: ChatClient, room: str, marker: str) -> None:
    """Send a marker message and wait for its echo.

    The server writes to each connection in order, so once the echo of a message sent *after*
    event X is back, anything X would have delivered to this client has been delivered already:
    checking "did not receive" after a barrier is not a guess.
    """
    client.say(room, marker)
    client.wait_for("message", lambda m: m["text"] == marker)
