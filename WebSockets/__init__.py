"""WebSockets: RFC 6455 and RFC 7692 from scratch (sans-I/O protocol and permessage-deflate,
asyncio server, blocking client), beside the same server and client written with `websockets`."""

from .deflate import DeflateParameters, PerMessageDeflate, ServerDeflateConfig
from .protocol import (
    CloseCode,
    CloseReceived,
    ConnectionClosed,
    ConnectionFailed,
    Frame,
    FrameDecoder,
    HandshakeError,
    Message,
    Opcode,
    Ping,
    Pong,
    ProtocolError,
    Role,
    State,
    WebSocketConnection,
    WebSocketError,
    accept_key,
    apply_mask,
    encode_frame,
    validate_client_request,
)

# server and client are also `python -m` entry points: importing them here would make runpy warn
# that the module is already in sys.modules, so they are loaded on first use instead.
_LAZY = {"Connection": ".client", "connect": ".client", "WebSocketServer": ".server"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CloseCode", "CloseReceived", "Connection", "ConnectionClosed", "ConnectionFailed", "DeflateParameters",
    "Frame", "PerMessageDeflate", "ServerDeflateConfig",
    "FrameDecoder", "HandshakeError", "Message", "Opcode", "Ping", "Pong", "ProtocolError", "Role",
    "State", "WebSocketConnection", "WebSocketError", "WebSocketServer", "accept_key", "apply_mask",
    "connect", "encode_frame", "validate_client_request",
]
