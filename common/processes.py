"""Start `python -m <module> ...` as a child process, wait until it listens, stop it for sure.

Tests and demos of every concept run real servers as real processes, so they can be killed
(SIGKILL), paused (SIGSTOP) and restarted. The child's stdout and stderr go to a log file rather
than a pipe: a pipe nobody reads fills up and freezes the child, a file never does, and its tail is
what we show when the child dies at start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .ports import LOOPBACK, wait_for_port

# The repository root: children run from here so `python -m Concept.module` resolves.
REPO_ROOT = Path(__file__).resolve().parent.parent


def _thread_state(stat: Path) -> str:
    """The one-letter state in a /proc/<pid>/task/<tid>/stat file; "" if the thread is gone."""
    try:
        # The command name (field 2) is in parentheses and may contain spaces: split after it.
        return stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


class SpawnError(RuntimeError):
    """A child process died or never listened during start-up. The message includes its output."""


class ChildProcess:
    """A running child process whose output is captured in a log file."""

    def __init__(self, popen: subprocess.Popen, log_path: Path, description: str, port: int | None,
                 owns_log: bool = False):
        self.popen = popen
        self.log_path = log_path
        self.description = description
        self.port = port
        # A log we created in the system temp dir is ours to delete once the child is gone (demos
        # would otherwise leave a file behind per child); its text is kept so output() still works.
        self._owns_log = owns_log
        self._final_output: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the child has printed so far (stdout and stderr interleaved)."""
        if self._final_output is not None:
            return self._final_output
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        """Send a signal (SIGKILL, SIGSTOP, SIGCONT ...) if the child is still there."""
        if self.alive():
            os.kill(self.pid, signum)

    def pause(self, timeout: float = 10.0) -> None:
        """SIGSTOP, and return once every thread of the child is stopped (state T in /proc).

        kill() returns when the signal is queued, not when it has acted: each thread stops on its own
        way back to user space. A test that pauses a server and at once sends it a request must not
        let a thread that is still finishing its last answer (a ThreadingHTTPServer handler) serve
        the new one too. Without /proc (not Linux), it returns after sending the signal."""
        self.signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.pid}/task")
        if not tasks.is_dir():
            return
        deadline = time.monotonic() + timeout
        while not all(_thread_state(stat) in ("T", "t", "Z", "X", "") for stat in tasks.glob("*/stat")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.description} (pid {self.pid}) did not stop within {timeout:g}s")
            time.sleep(0.001)

    def kill(self) -> None:
        """SIGKILL and reap: the crash no handler can intercept."""
        self.signal(signal.SIGKILL)
        self.popen.wait()
        self._release_log()

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit code."""
        code = stop_process(self.popen, grace)
        self._release_log()
        return code

    def _release_log(self) -> None:
        if self._owns_log and self._final_output is None:
            self._final_output = self.output()
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"<ChildProcess {self.description} pid={self.pid} {state}>"


def stop_process(popen: subprocess.Popen, grace: float = 5.0) -> int | None:
    """Stop a child: SIGTERM, wait up to `grace` seconds, then SIGKILL. Safe to call twice.

    A stopped (SIGSTOP) child cannot act on SIGTERM, so it is continued first.
    """
    if popen.poll() is not None:
        return popen.returncode
    try:
        popen.send_signal(signal.SIGCONT)
        popen.terminate()
        return popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        return popen.wait()
    except ProcessLookupError:
        return popen.wait()


def spawn_module(
    module: str,
    *args: str,
    port: int | None = None,
    host: str = LOOPBACK,
    env: Mapping[str, str] | None = None,
    timeout: float = 15.0,
    log_dir: str | os.PathLike | None = None,
) -> ChildProcess:
    """Run `python -m module *args` from the repository root and return once it is ready.

    With `port`, "ready" means the port accepts connections; without, it means started. If the
    child dies first or the port never opens, the child is stopped and SpawnError carries its
    output. `env` entries are added to the current environment.
    """
    return spawn_command([sys.executable, "-u", "-m", module, *args], port=port, host=host,
                         env=env, timeout=timeout, log_dir=log_dir, description=module)


def spawn_command(
    argv: Sequence[str],
    *,
    port: int | None = None,
    host: str = LOOPBACK,
    env: Mapping[str, str] | None = None,
    timeout: float = 15.0,
    log_dir: str | os.PathLike | None = None,
    description: str | None = None,
) -> ChildProcess:
    """Like spawn_module, for any command line (e.g. a redis-server binary)."""
    description = description or Path(argv[0]).name
    fd, log_name = tempfile.mkstemp(prefix=f"{description.replace('/', '_')}-", suffix=".log",
                                    dir=log_dir)
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with os.fdopen(fd, "wb") as log_file:
        popen = subprocess.Popen(
            list(argv), cwd=REPO_ROOT, env=child_env, stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT,
        )
    child = ChildProcess(popen, Path(log_name), description, port, owns_log=log_dir is None)
    if port is not None:
        try:
            wait_for_port(port, host, timeout, still_alive=child.alive)
        except (TimeoutError, RuntimeError) as exc:
            child.stop(grace=1.0)
            raise SpawnError(
                f"{description} {' '.join(argv[1:])} did not start: {exc}\n"
                f"--- its output (last lines) ---\n{child.tail()}"
            ) from None
        except BaseException:
            # Ctrl-C (or any other interruption) while we wait: the caller never gets the child,
            # so nobody else could stop it or remove its log.
            child.stop(grace=1.0)
            raise
    return child
