"""common/cli.py: argument types that name the flag, one-line errors, exit codes; the Makefile's guard.

The table-driven check of every script is tests/test_cli.py; these are the pieces it relies on.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common import cli

ROOT = Path(__file__).resolve().parents[1]


def parse_error(parser: cli.ArgumentParser, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_a_type_error_is_one_line_naming_the_flag_and_the_form(capsys):
    parser = cli.ArgumentParser(prog="python X.py")
    parser.add_argument("--capacity", type=cli.positive_int)
    err = parse_error(parser, ["--capacity", "abc"], capsys)
    assert err == "error: --capacity: expected a whole number >= 1, got 'abc' (see python X.py --help)\n"


@pytest.mark.parametrize("kind,text", [
    (cli.port, "-1"), (cli.port, "70000"), (cli.port, "0"), (cli.port, "8o"),
    (cli.positive_int, "0"), (cli.non_negative_int, "-1"), (cli.positive_float, "0"),
    (cli.non_negative_float, "-5"), (cli.non_negative_float, "nan"), (cli.positive_float, "inf"),
    (cli.fraction, "1.5"), (cli.host_port, "localhost"), (cli.host_port, "h:99999"),
    (cli.redis_url, "http://x"), (cli.bytes_size, "12 parsecs"), (cli.bytes_size, "0"),
])
def test_types_refuse_nonsense(kind, text):
    with pytest.raises(Exception, match="expected") as info:
        kind(text)
    assert info.type.__name__ == "ArgumentTypeError"


def test_types_accept_the_forms_they_promise():
    assert cli.port("65535") == 65535 and cli.port_or_zero("0") == 0
    assert cli.host_port("127.0.0.1:7001") == ("127.0.0.1", 7001)
    assert cli.host_port("[::1]:80") == ("::1", 80)
    assert cli.bytes_size("32MiB") == 32 * 2**20 and cli.bytes_size("1k") == 1024
    assert cli.bytes_size("1MB") == 10**6 and cli.bytes_size("4096") == 4096
    assert cli.float_range(0, 1)("0.25") == 0.25
    assert cli.redis_url("redis://127.0.0.1:6379/0")


def test_writable_path_is_checked_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    deep = tmp_path / "new" / "deeper" / "x.png"
    assert cli.writable_path(str(deep)) == deep
    for text in ["/etc/passwd/x", str(blocker / "x.png"), str(tmp_path)]:
        with pytest.raises(Exception, match="expected"):
            cli.writable_path(text)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        with pytest.raises(Exception, match="not writable"):
            cli.writable_path(str(locked / "x.png"))


def test_output_path_is_under_the_ignored_out_folder():
    path = cli.output_path("Concept", "plot.png")
    assert path == ROOT / "out" / "Concept" / "plot.png"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT)
    assert ignored.returncode == 0, "out/ must be git-ignored"


@pytest.mark.parametrize("raised,code,stderr_start", [
    (cli.UsageError("bad thing; do this"), 1, "error: bad thing; do this"),
    (cli.PortInUse("127.0.0.1", 8080), 1, "error: port 8080 on 127.0.0.1 is already in use"),
    (KeyboardInterrupt(), 130, ""),
    (cli.Terminated(), 143, ""),
])
def test_run_turns_known_endings_into_exit_codes(raised, code, stderr_start, capsys):
    def main():
        raise raised

    assert cli.run(main) == code
    assert capsys.readouterr().err.strip().startswith(stderr_start)


def test_run_keeps_the_traceback_of_a_bug():
    def main():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        cli.run(main)


def test_bind_error_names_the_port():
    import errno

    error = cli.bind_error(OSError(errno.EADDRINUSE, "Address already in use"), "127.0.0.1", 5001)
    assert isinstance(error, cli.PortInUse) and "5001" in str(error) and "--port" in str(error)
    other = OSError(errno.ENOMEM, "no memory")
    assert cli.bind_error(other, "127.0.0.1", 5001) is other
    # A script whose address flag is --listen says so, for every bind error it explains.
    for code in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
        message = str(cli.bind_error(OSError(code, "x"), "127.0.0.1", 80,
                                     port_flag="--listen", host_flag="--listen"))
        assert "--listen" in message and "--port" not in message and "--host" not in message


def test_unreachable_redis_url_is_one_line_naming_it():
    code = ("import sys\nfrom common import cli, redis_server\n"
            "def main():\n    with redis_server():\n        pass\nsys.exit(cli.run(main))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=60)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "REDIS_URL=redis://127.0.0.1:1/0" in result.stderr and "unset REDIS_URL" in result.stderr


def test_a_closed_pipe_is_a_quiet_exit():
    # `python tour.py --list | head -1`: the reader goes away after one line.
    result = subprocess.run(f"{sys.executable} tour.py --list | head -1", shell=True, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.count("\n") == 1
    assert result.stderr == ""


def test_progress_prints_plain_lines_when_piped():
    stream = io.StringIO()
    assert list(cli.progress(range(20), label="rounds", stream=stream)) == list(range(20))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in stream.getvalue()
    assert lines[-1].strip().startswith("rounds 20/20")


# --- the Makefile's interpreter guard -----------------------------------------------------------------

def fake_python(folder: Path, version: str) -> Path:
    """A 'python' that claims to be `version` whatever it is asked (like a pyenv shim of an old one)."""
    script = folder / f"python{version}"
    script.write_text(f"#!/bin/sh\necho {version}\n")
    script.chmod(0o755)
    return script


def test_make_refuses_an_old_python_before_installing_anything(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / "requirements-dev.txt").write_text("")
    old = fake_python(tmp_path, "3.10.13")
    result = subprocess.run(["make", f"PYTHON={old}", "demo"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "needs Python >= 3.11, found 3.10.13; set PYTHON=python3.11" in result.stderr
    assert not (tmp_path / ".venv").exists(), "nothing may be created with the wrong Python"


def test_make_rebuilds_a_venv_made_by_another_python(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    stale = tmp_path / ".venv" / "bin"
    stale.mkdir(parents=True)
    fake_python(stale, "3.10.13").rename(stale / "python")
    (tmp_path / ".venv" / "marker").write_text("made by 3.10")
    result = subprocess.run(["make", f"PYTHON={sys.executable}", "python-check"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "rebuilding it" in result.stdout
    assert not (tmp_path / ".venv" / "marker").exists()


def test_a_ctrl_c_swallowed_by_a_fork_hook_still_stops_the_script():
    # CPython prints and drops a KeyboardInterrupt raised in a fork hook or a finalizer ("Exception
    # ignored in: <function _releaseLock>" when Ctrl-C landed while multiprocessing forked a worker);
    # the Threading demo then ran on. run() sends such a Ctrl-C again, so the script stops with 130.
    code = (
        "import os, sys, threading\n"
        "from common import cli\n"
        "def main():\n"
        "    def swallowed():\n"
        "        raise KeyboardInterrupt\n"
        "    os.register_at_fork(after_in_parent=swallowed)\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "    threading.Event().wait(60)\n"
        "    return 0\n"
        "sys.exit(cli.run(main))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 130, result.stderr
