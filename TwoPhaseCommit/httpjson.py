"""The thin HTTP layer both services share: JSON request handlers and a JSON client with timeouts.

Why the standard library's ThreadingHTTPServer and urllib rather than Flask or aiohttp: the subject is
the protocol, not the web stack. A thread per request matches the blocking SQLite calls, the code has
no dependencies to learn, and a SIGKILL of a process that owns a few threads is exactly the crash we
want to study. It is not a production server (no keep-alive tuning, no TLS) and does not pretend to be.

Every client call has a timeout: in 2PC a call that never returns is indistinguishable from a crashed
peer, and the coordinator must be able to decide "abort" instead of waiting forever.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from common import cli


class HttpError(Exception):
    """Raised by a handler to answer with a status and an error message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Unreachable(Exception):
    """The peer refused the connection, dropped it, or did not answer within the timeout."""


class JsonServer(ThreadingHTTPServer):
    daemon_threads = True       # a stuck request must not keep the process alive on shutdown
    allow_reuse_address = True  # restart on the same port right after a crash (TIME_WAIT)
    request_queue_size = 128    # chaos sends bursts of concurrent orders


def bind(factory: Callable[[], JsonServer], host: str, port: int) -> JsonServer:
    """Create a server, turning a failed bind (port in use, not allowed) into one `error:` line."""
    try:
        return factory()
    except OSError as exc:
        raise cli.bind_error(exc, host, port) from None


def serve(server: JsonServer, say: Callable[[str], None], stop_threads: Iterable = ()) -> None:
    """Serve until Ctrl-C or SIGTERM (`cli.run` raises both as KeyboardInterrupt in the main thread),
    then stop the background threads (each has a `stopping` event) and close the socket.

    The coordinator and the participants share this ending; `cli.run` turns the interrupt into the
    exit status (130 or 143)."""
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        say("stopping")
        raise
    finally:
        for thread in stop_threads:
            thread.stopping.set()
        server.server_close()


class JsonHandler(BaseHTTPRequestHandler):
    """Routes to `handle_get(path)` / `handle_post(path, body)`; both return (status, JSON object)."""

    server_version = "TwoPhaseCommit/1"

    def handle_get(self, path: str) -> tuple[int, dict]:
        raise HttpError(404, f"no such endpoint: GET {path}")

    def handle_post(self, path: str, body: dict) -> tuple[int, dict]:
        raise HttpError(404, f"no such endpoint: POST {path}")

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's naming)
        self._dispatch(lambda: self.handle_get(self.path))

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(lambda: self.handle_post(self.path, self._read_json_object()))

    def _read_json_object(self) -> dict:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpError(400, "Content-Length is not a number") from None
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(400, f"malformed JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object, e.g. {\"txid\": \"...\"}")
        return body

    def _dispatch(self, action) -> None:
        try:
            status, payload = action()
        except HttpError as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception as exc:  # a bug must not kill the server: answer 500 and keep serving others
            self.log_message("internal error: %r", exc)
            status, payload = 500, {"error": f"internal error: {exc!r}"}
        self._send_json(status, payload)

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller timed out and left; the outcome is durable, it will ask again

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass  # one line per protocol event is printed by the services; no access log noise


def call_json(method: str, url: str, body: dict | None = None, timeout: float = 2.0) -> tuple[int, dict]:
    """Send a JSON request and return (status, JSON object). Raises Unreachable on any network failure.

    4xx/5xx answers are returned, not raised: they carry the peer's message and the caller decides.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _decode(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decode(exc.read())
    except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # HTTPException covers a peer that dies half-way through its answer (BadStatusLine, ...)
        raise Unreachable(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None


def _decode(raw: bytes) -> dict:
    try:
        value = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"error": f"non-JSON answer: {raw[:200]!r}"}
    return value if isinstance(value, dict) else {"value": value}
