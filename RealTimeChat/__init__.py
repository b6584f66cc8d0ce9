"""Real-time chat on Flask + Flask-SocketIO: rooms, presence, history, private messages, safe
input, a browser UI, and scale-out through Redis. See README "Real-Time Chat".
"""

from .rules import (
    HISTORY_LIMIT,
    MAX_TEXT_CHARS,
    ChatError,
    ChatMessage,
    TokenBucket,
    parse_join,
    parse_leave,
    parse_message,
    parse_private_message,
    parse_typing,
)


def __getattr__(name: str):
    # The server and the stores are imported on first use, not here: `python -m RealTimeChat.app`
    # would otherwise find the server already imported by the package and warn, and with
    # `--async-mode gevent` the stores' redis import would load ssl before gevent can patch it.
    if name in ("ChatServer", "create_app"):
        from . import app
        return getattr(app, name)
    if name in ("ChatStore", "LocalStore", "RedisStore"):
        from . import store
        return getattr(store, name)
    raise AttributeError(f"module 'RealTimeChat' has no attribute {name!r}")


__all__ = [
    "HISTORY_LIMIT", "MAX_TEXT_CHARS", "ChatError", "ChatMessage", "ChatServer", "ChatStore",
    "LocalStore", "RedisStore", "TokenBucket", "create_app", "parse_join", "parse_leave",
    "parse_message", "parse_private_message", "parse_typing",
]
