"""The chat's rules, with no I/O: payload validation, nickname/room rules, the rate limiter.

Everything a client sends is untrusted. Before a handler in `app.py` touches a payload, one of the
`parse_*` functions below turns it into a small typed value or raises `ChatError`, whose `code` and
`message` become the `error` event the client receives. Keeping this pure (no sockets, no Flask)
means every rule is unit-tested in microseconds, and the server code reads as "parse, then act".
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

MAX_TEXT_CHARS = 2_000        # the limit on one message
HISTORY_LIMIT = 50            # messages of a room sent on join
CATCH_UP_LIMIT = 500          # at most this many on a join with `since` (a reconnect filling a gap)
DEFAULT_ROOM = "lobby"
MAX_ROOMS_PER_CONNECTION = 20  # bounds the state one connection can make us hold
MAX_MESSAGE_ID = 2**63 - 1     # SQLite's largest INTEGER: a `since` beyond it is not a message id

# Nicknames: 1-24 of letters, digits, '_' and '-'. Uniqueness is case-insensitive, so "Alice" and
# "alice" cannot both be online (an easy impersonation otherwise). Room names: lower-case, 1-32.
NICKNAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,24}")
# A sender's own id for one message (a UUID fits), so a resend can be recognised: 1-64 characters.
CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
ROOM_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

# Error codes (the `code` field of the `error` event). Clients branch on these, so they are stable.
BAD_REQUEST = "bad_request"
INVALID_NICKNAME = "invalid_nickname"
NICKNAME_TAKEN = "nickname_taken"
NICKNAME_MISMATCH = "nickname_mismatch"
INVALID_ROOM = "invalid_room"
NOT_JOINED = "not_joined"
NOT_IN_ROOM = "not_in_room"
TOO_MANY_ROOMS = "too_many_rooms"
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
UNKNOWN_USER = "unknown_user"
UNKNOWN_EVENT = "unknown_event"
RATE_LIMITED = "rate_limited"
INTERNAL_ERROR = "internal_error"


class ChatError(Exception):
    """A request the server refuses. Sent to the client as `error` {code, message}."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def payload(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


# ---- validated requests ------------------------------------------------------------------------

@dataclass(frozen=True)
class JoinRequest:
    room: str
    username: str
    since: int | None = None      # the last message id the client has: send only what came after


@dataclass(frozen=True)
class RoomMessage:
    room: str
    text: str
    client_id: str | None = None  # the sender's id for this message: a resend is recognised by it


@dataclass(frozen=True)
class PrivateMessageRequest:
    to: str
    text: str
    client_id: str | None = None


def nickname_key(username: str) -> str:
    """The identity used for uniqueness and private-message routing: case-insensitive."""
    return username.lower()


def parse_join(args: tuple[Any, ...]) -> JoinRequest:
    """`join` {room, username, since?}; room defaults to 'lobby'."""
    data = _single_object(args, "join", required=("username",), optional=("room", "since"))
    room = data.get("room", DEFAULT_ROOM)
    since = data.get("since")
    # bool is an int in Python; `true` is not a message id.
    # ... and JSON has no integer limit: above SQLite's INTEGER range (2**63 - 1) the store's query
    # raised OverflowError, an internal_error for what is bad input.
    if since is not None and (not isinstance(since, int) or isinstance(since, bool)
                              or not 0 <= since <= MAX_MESSAGE_ID):
        raise ChatError(BAD_REQUEST, "'since' must be a message id (a whole number from 0 to 2**63 - 1)")
    return JoinRequest(room=check_room(room), username=check_nickname(data["username"]), since=since)


def parse_leave(args: tuple[Any, ...]) -> str:
    """`leave` {room} -> the room name."""
    data = _single_object(args, "leave", required=("room",))
    return check_room(data["room"])


def parse_message(args: tuple[Any, ...]) -> RoomMessage:
    """`message` {room, text, client_id?}."""
    data = _single_object(args, "message", required=("room", "text"), optional=("client_id",))
    return RoomMessage(room=check_room(data["room"]), text=check_text(data["text"]),
                       client_id=check_client_id(data.get("client_id")))


def parse_private_message(args: tuple[Any, ...]) -> PrivateMessageRequest:
    """`private_message` {to, text, client_id?}."""
    data = _single_object(args, "private_message", required=("to", "text"), optional=("client_id",))
    return PrivateMessageRequest(to=check_nickname(data["to"]), text=check_text(data["text"]),
                                 client_id=check_client_id(data.get("client_id")))


def parse_typing(args: tuple[Any, ...]) -> str:
    """`typing` {room} -> the room name."""
    data = _single_object(args, "typing", required=("room",))
    return check_room(data["room"])


def check_nickname(value: Any) -> str:
    if not isinstance(value, str) or not NICKNAME_PATTERN.fullmatch(value):
        raise ChatError(INVALID_NICKNAME,
                        "a nickname is 1-24 characters: letters, digits, '_' or '-'")
    return value


def check_room(value: Any) -> str:
    if not isinstance(value, str) or not ROOM_PATTERN.fullmatch(value):
        raise ChatError(INVALID_ROOM, "a room name is 1-32 characters: lower-case letters, digits, "
                                      "'_' or '-', starting with a letter or digit")
    return value


def check_client_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not CLIENT_ID_PATTERN.fullmatch(value):
        raise ChatError(BAD_REQUEST, "'client_id' is 1-64 characters: letters, digits, '_', '-', '.' "
                                     "or ':' (a UUID fits)")
    return value


def check_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ChatError(BAD_REQUEST, "'text' must be a string")
    # Check the length before stripping: stripping a megabyte of spaces is work we refuse to do.
    if len(value) > MAX_TEXT_CHARS:
        raise ChatError(TEXT_TOO_LONG, f"a message is at most {MAX_TEXT_CHARS} characters "
                                       f"(this one has {len(value)})")
    if not value.strip():
        raise ChatError(EMPTY_TEXT, "a message needs some text")
    # JSON can carry a lone surrogate ("\ud800"), but it is not a character: UTF-8 cannot encode it,
    # so SQLite, Redis and every other client would choke on it later. Refuse it here, as bad input.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ChatError(BAD_REQUEST, "'text' is not valid Unicode: it contains a lone surrogate "
                                         "(U+D800-U+DFFF)") from None
    return value


def _single_object(args: tuple[Any, ...], event: str, required: tuple[str, ...],
                   optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """The payload must be exactly one JSON object with the required keys and nothing unknown.

    Rejecting unknown keys is what bounds a "huge object": a client cannot make us walk or keep
    ten thousand keys we never asked for.
    """
    if len(args) != 1 or not isinstance(args[0], dict):
        raise ChatError(BAD_REQUEST, f"'{event}' takes one JSON object: "
                                     f"{{{', '.join(required + optional)}}}")
    data = args[0]
    missing = [key for key in required if key not in data]
    if missing:
        raise ChatError(BAD_REQUEST, f"'{event}' is missing {', '.join(repr(k) for k in missing)}")
    unknown = len(data.keys() - set(required) - set(optional))
    if unknown:
        raise ChatError(BAD_REQUEST, f"'{event}' has {unknown} unexpected field(s); "
                                     f"allowed: {', '.join(required + optional)}")
    return data


# ---- what the server sends ---------------------------------------------------------------------

@dataclass(frozen=True)
class ChatMessage:
    """A stored room message. `id` increases per room; `ts` is the server's UTC time (ISO 8601);
    `client_id` is the sender's own id for it (None if the sender gave none)."""
    id: int
    room: str
    username: str
    text: str
    ts: str
    client_id: str | None = None

    def payload(self) -> dict[str, Any]:
        return asdict(self)


def private_message_payload(message_id: int, sender: str, to: str, text: str, ts: str,
                            client_id: str | None = None) -> dict[str, Any]:
    return {"id": message_id, "from": sender, "to": to, "text": text, "ts": ts, "client_id": client_id}


def ack_ok(message_id: int, ts: str) -> dict[str, Any]:
    """The acknowledgement of a `message` / `private_message`: stored (or already stored) as `id`."""
    return {"ok": True, "id": message_id, "ts": ts}


def ack_error(error: ChatError) -> dict[str, Any]:
    """The acknowledgement of a refused event: the same code and message as the `error` event."""
    return {"ok": False, **error.payload()}


def utc_timestamp(now: float | None = None) -> str:
    """Server-assigned time, UTC, millisecond precision: '2026-11-22T01:02:03.456Z'."""
    seconds = time.time() if now is None else now
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds * 1000) % 1000:03d}Z"


# ---- rate limiting -----------------------------------------------------------------------------

class TokenBucket:
    """The classic token bucket: `rate` tokens per second refill up to `burst`; a request costs one.

    A full bucket lets a client send `burst` events at once (a pasted paragraph, a quick reply), then
    at most `rate` per second on average. Thread-safe; `clock` is injectable for tests.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        """Take one token if there is one. Never blocks."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False
