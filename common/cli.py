"""What every script shares at its edges: argument types, one-line errors, exit codes, progress.

A learner reads a traceback as "the project is broken", so a user's mistake must end in one line:

    error: --capacity: expected a whole number >= 1, got 'abc' (see --help)

Every script is written the same way:

    from common import cli

    def main(argv=None) -> int:
        parser = cli.ArgumentParser(prog="python -m Concept.script", description=__doc__)
        parser.add_argument("--port", type=cli.port, default=8000)
        args = parser.parse_args(argv)
        ...
        return 0

    if __name__ == "__main__":
        sys.exit(cli.run(main))

`run()` owns the endings: Ctrl-C exits 130 and SIGTERM 143 (both raised as KeyboardInterrupt so
`finally:` blocks clean up), a closed pipe (`| head`) exits quietly, and the project's known
errors (`UsageError`, an unreachable Redis, a port already in use) become one `error:` line with
exit status 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from .processes import REPO_ROOT

OUT_DIR = REPO_ROOT / "out"
T = TypeVar("T")


# --- errors ----------------------------------------------------------------------------------------

class UsageError(Exception):
    """A mistake the user can fix: `run()` prints it as one `error:` line and exits 1."""


class PortInUse(UsageError):
    def __init__(self, host: str, port: int, flag: str = "--port"):
        super().__init__(f"port {port} on {host} is already in use by another program; "
                         f"pick another with {flag}")
        self.host, self.port = host, port


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so the same clean-up as Ctrl-C runs."""


def bind_error(exc: OSError, host: str, port: int, *, port_flag: str = "--port",
               host_flag: str = "--host") -> UsageError | OSError:
    """The UsageError that explains a failed bind(), or `exc` itself when it is not the user's.

    The message names the flag that fixes it: a script that takes one `--listen HOST:PORT`
    passes port_flag=host_flag="--listen", so the user is never sent to a flag it does not have.
    """
    if exc.errno == errno.EADDRINUSE:
        return PortInUse(host, port, port_flag)
    if exc.errno == errno.EACCES:
        return UsageError(f"not allowed to listen on {host}:{port} (ports below 1024 need root); "
                          f"pick another with {port_flag}")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
        return UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                          f"use an address of this machine with {host_flag} (e.g. 127.0.0.1)")
    return exc


# --- the parser: one line per mistake ---------------------------------------------------------------

class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr (`error: ... (see --help)`), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse says "argument --capacity: ..."; the flag alone reads better.
        message = message.removeprefix("argument ")
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _expected(form: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {form}, got {text!r}")


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number within [lo, hi] (either bound may be open)."""
    if lo is not None and hi is not None:
        form = f"a whole number from {lo} to {hi}"
    elif lo is not None:
        form = f"a whole number >= {lo}"
    elif hi is not None:
        form = f"a whole number <= {hi}"
    else:
        form = "a whole number"

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise _expected(form, text) from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _expected(form, text)
        return value

    parse.__name__ = form
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number within [lo, hi] ((lo, hi] with lo_open=True)."""
    low = "" if lo is None else (f"> {lo:g}" if lo_open else f">= {lo:g}")
    high = "" if hi is None else f"<= {hi:g}"
    form = "a number" + (f" {low}" if low else "") + (" and" if low and high else "") + \
        (f" {high}" if high else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _expected(form, text) from None
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        if not math.isfinite(value) or too_low or (hi is not None and value > hi):
            raise _expected(form, text)
        return value

    parse.__name__ = form
    return parse


port = int_range(1, 65535)
port_or_zero = int_range(0, 65535)       # 0: let the operating system pick a free port
positive_int = int_range(1)
non_negative_int = int_range(0)
positive_float = float_range(0, lo_open=True)
non_negative_float = float_range(0)
fraction = float_range(0, 1)


def host_port(text: str) -> tuple[str, int]:
    """'127.0.0.1:7001' -> ('127.0.0.1', 7001); '[::1]:7001' for IPv6."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise _expected("HOST:PORT, e.g. 127.0.0.1:7001", text)
    try:
        number = port(port_text)
    except argparse.ArgumentTypeError:
        raise _expected("HOST:PORT with a port from 1 to 65535", text) from None
    return host.strip("[]"), number


def redis_url(text: str) -> str:
    """A redis:// (or rediss:// / unix://) URL, e.g. redis://127.0.0.1:6379/0."""
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
        raise _expected("a redis URL like redis://127.0.0.1:6379/0", text)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise _expected("a redis URL with a port from 1 to 65535", text) from None
    return text


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024 ** 2, "mb": 1000 ** 2,
               "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3}


def bytes_size(text: str) -> int:
    """'1048576', '64KiB', '32MiB', '1k' (1024), '1MB' (10**6) -> a whole number of bytes >= 1."""
    stripped = text.strip().lower()
    digits = stripped.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = stripped[len(digits):].strip()
    try:
        value = float(digits) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise _expected("a size in bytes like 1048576, 64KiB or 32MiB", text) from None
    if not math.isfinite(value) or value < 1:
        raise _expected("a size of at least 1 byte", text)
    return int(value)


def writable_path(text: str) -> Path:
    """A file path we can write: its folder exists (or can be made) and is writable.

    Checked when the arguments are parsed, so a typo fails before a long run, not after it.
    """
    path = Path(text)
    if path.is_dir():
        raise _expected("a file path, not a folder", text)
    folder = path.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise _expected(f"a path whose folder can exist ({existing} is a file)", text)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _expected(f"a path in a folder you can write ({existing} is not writable)", text)
    if path.exists() and not os.access(path, os.W_OK):
        raise _expected("a file you can write (it exists and is read-only)", text)
    return path


def output_path(concept: str, name: str) -> Path:
    """Default place for a script's plot or data: out/<concept>/<name> (git-ignored; folder made)."""
    path = OUT_DIR / concept / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def ensure_parent(path: Path) -> Path:
    """Create the folder a file is about to be written into; return the path."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return Path(path)


# --- progress --------------------------------------------------------------------------------------

def progress(items: Iterable[T], total: int | None = None, label: str = "rounds",
             stream=None) -> Iterator[T]:
    """Yield `items`, reporting progress on stderr.

    On a terminal: one line that updates in place. Piped or in CI: a plain line about every 10 %
    (and at the end), so logs stay readable.
    """
    stream = stream or sys.stderr
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    tty = stream.isatty()
    step = max(1, (total or 10) // 10)
    start = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        if tty or done % step == 0 or done == total:
            elapsed = time.monotonic() - start
            of = f"/{total}" if total else ""
            line = f"  {label} {done}{of}  ({elapsed:.1f} s)"
            if tty:
                stream.write("\r" + line + ("\n" if done == total else ""))
            else:
                stream.write(line + "\n")
            stream.flush()
    if tty and done != total:
        stream.write("\n")
        stream.flush()


# --- the ending every script shares -----------------------------------------------------------------

def _known_error_message(exc: BaseException) -> str | None:
    """The one-line message for an error that is the user's to fix, or None for a bug."""
    from .redis_launcher import RedisUnavailable

    if isinstance(exc, UsageError | RedisUnavailable):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return "address already in use: another program has the port; pick another with --port"
    try:
        import redis
    except ImportError:  # pragma: no cover - redis is a runtime requirement
        return None
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        url = os.environ.get("REDIS_URL")
        where = f" at REDIS_URL={url}" if url else ""
        hint = "; unset REDIS_URL to start a private server" if url else ""
        return f"lost the connection to Redis{where}: {exc}{hint}"
    return None


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def keep_ctrl_c() -> None:
    """Make sure a Ctrl-C stops the script wherever it lands (`run()` calls this).

    CPython raises KeyboardInterrupt in whatever Python code the main thread runs when SIGINT
    arrives — a finalizer (a multiprocessing queue being garbage-collected) or a fork hook
    (logging's `_releaseLock`) included — and there it is printed as "Exception ignored in ..." and
    dropped: the script carried on while its children had already stopped. This hook sends such a
    Ctrl-C to the main thread again a moment later, from another thread, once the finalizer is done:
    a real signal, so that it also interrupts a blocking wait.
    """
    previous = sys.unraisablehook
    if getattr(previous, "keeps_ctrl_c", False):
        return                                    # installed already
    main_thread = threading.main_thread().ident

    def hook(unraisable) -> None:
        if unraisable.exc_type is not KeyboardInterrupt:
            previous(unraisable)
            return
        again = threading.Timer(0.01, signal.pthread_kill, (main_thread, signal.SIGINT))
        again.daemon = True
        again.start()

    hook.keeps_ctrl_c = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def run(main: Callable[[], int | None]) -> int:
    """Call `main()` and turn the known endings into exit codes and one-line errors."""
    if threading_is_main():
        signal.signal(signal.SIGTERM, _raise_terminated)
        keep_ctrl_c()
    try:
        code = int(main() or 0)
        sys.stdout.flush()   # inside the try: a reader that went away raises BrokenPipeError here
        return code
    except Terminated:
        return 143
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Point stdout at /dev/null so the
        # interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        message = _known_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def threading_is_main() -> bool:
    return threading.current_thread() is threading.main_thread()
