"""Every script fails well: `--help` works, and each common mistake is one `error:` line.

The table `SCRIPTS` names every runnable script in the repository (a module with an
`if __name__ == "__main__":` block) with the bad invocations a newcomer is likely to try. A script
that is not in the table fails `test_every_script_is_in_the_table`, so a new script cannot skip this.

For each bad invocation the script must exit non-zero with exactly one non-empty line on stderr,
starting `error:`, and no traceback (DEVELOPERS' rule 3: a traceback reads as "the project is broken").
Placeholders in argv: {busy_port} is a port another process listens on; {unwritable} is a path in a
folder that does not exist under a file; {tmp} is a fresh temporary folder.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE_REDIS = {"REDIS_URL": "redis://127.0.0.1:1/0"}


@dataclass(frozen=True)
class Bad:
    """One bad invocation: argv after the script, extra environment, and a phrase the error names."""
    argv: tuple[str, ...]
    says: str = ""                       # a substring the error line must contain (case-insensitive)
    env: dict = field(default_factory=dict)


def bad(*argv: str, says: str = "", env: dict | None = None) -> Bad:
    return Bad(tuple(argv), says, env or {})


# Script id: "Package.module" (run as `python -m Package.module`) or "file.py" (run as `python file.py`).
SCRIPTS: dict[str, list[Bad]] = {
    # --- repository root and common/ ------------------------------------------------------------
    "tour.py": [
        bad("NoSuchConcept", says="unknown concept"),
        bad("--timeout", "-1", says="--timeout"),
    ],
    "common.faultproxy": [
        bad("--to", "localhost", says="--to"),
        bad("--to", "127.0.0.1:6379", "--listen", "127.0.0.1:70000", says="--listen"),
        bad("--to", "127.0.0.1:6379", "--listen", "127.0.0.1:{busy_port}", says="already in use"),
    ],
    "common.faultproxy_bench": [
        bad("--repeats", "0", says="--repeats"),
        bad("--size", "lots", says="--size"),
    ],
    "common.faultproxy_demo": [
        bad("--out", "{unwritable}", says="--out"),
        bad("--out", "{tmp}/diagram.txt", says=".png or .svg"),
    ],
    "common.trace": [
        bad(says="render"),
        bad("render", "{tmp}/missing.jsonl", says="cannot read"),
        bad("render", "tests/conftest.py", "--out", "{tmp}/x.png", says="not a trace event"),
        bad("render", "x.jsonl", "--out", "{unwritable}", says="--out"),
        bad("render", "x.jsonl", "--out", "{tmp}/x.pdf", says=".png or .svg"),
        bad("render", "x.jsonl", "--spacing", "log", says="--spacing"),
    ],
    "common.redis_server": [
        bad("--port", "0", says="--port"),
        bad("--port", "70000", says="--port"),
        bad("--port", "{busy_port}", says="already in use"),
    ],
    # --- BlockingQueue.py / Threading / UniqueIdGeneration -----------------------------------------
    "BlockingQueue.py": [
        bad("--capacity", "abc", says="--capacity: expected a whole number >= 1, got 'abc'"),
        bad("--capacity", "0", says="--capacity"),
        bad("demo", "--items", "0", says="--items"),
        bad("demo", "--seed", "x", says="--seed"),
        bad("demo", "--plot", "{unwritable}", says="--plot"),
        bad("bench", "--repeat", "0", says="--repeat"),
        bad("frobnicate", says="invalid choice"),
    ],
    "Threading.compare": [
        bad("--workers", "2", "0", says="--workers"),
        bad("--n", "1", says="--n"),
        bad("--delay-ms", "-5", says="--delay-ms"),
        bad("--repeat", "0", says="--repeat"),
        bad("--experiment", "gpu", says="--experiment"),
        bad("--start-method", "threads", says="--start-method"),
        bad("--plot", "{unwritable}", says="--plot"),
    ],
    "Threading.demo": [
        bad("--repeat", "0", says="--repeat"),
        bad("--n", "abc", says="--n"),
    ],
    "Threading.race_condition": [
        bad("--threads", "0", says="--threads"),
        bad("--iterations", "-1", says="--iterations"),
        bad("--switch-interval", "0", says="--switch-interval"),
        bad("--workload", "dict", says="--workload"),
    ],
    "UniqueIdGeneration.bench": [
        bad("--repeats", "3", says="--repeats"),
        bad("--calls", "10", says="--calls"),
    ],
    "UniqueIdGeneration.demo": [
        bad("--ids", "2", says="--ids"),
        bad(env=UNREACHABLE_REDIS, says="redis://127.0.0.1:1/0"),
    ],
    "UniqueIdGeneration.lease_node": [
        bad(says="--redis-url"),
        bad("--redis-url", "not-a-url", says="--redis-url"),
        bad("--redis-url", "redis://127.0.0.1:1/0", says="redis://127.0.0.1:1/0"),
        bad("--redis-url", "redis://127.0.0.1:1/0", "--ttl-ms", "0", says="--ttl-ms"),
        bad("--redis-url", "redis://127.0.0.1:1/0", "--interval-ms", "x", says="--interval-ms"),
    ],
    "UniqueIdGeneration.sortable_keys": [
        bad("--rows", "0", says="--rows"),
        bad("--batch", "-3", says="--batch"),
        bad("--plot", "{unwritable}", says="--plot"),
        bad("--dir", "{unwritable}", says="--dir"),
    ],
    # --- WebSockets -----------------------------------------------------------------------------
    "WebSockets.bench": [
        bad("--rounds", "0", says="--rounds"),
        bad("--round-trips", "abc", says="--round-trips"),
        bad("--big-messages", "-1", says="--big-messages"),
    ],
    "WebSockets.client": [
        bad("ws://127.0.0.1:1/", says="refused"),
        bad("wss://example.com/", says="TLS"),
        bad("http://127.0.0.1/", says="ws://"),
    ],
    "WebSockets.demo": [],
    "WebSockets.lib_client": [
        bad("ws://127.0.0.1:1/", says="127.0.0.1:1"),
        bad("http://127.0.0.1/", says="http://127.0.0.1/"),
    ],
    "WebSockets.lib_server": [
        bad("--port", "-1", says="--port"),
        bad("--port", "70000", says="--port"),
        bad("--port", "{busy_port}", says="already in use"),
        bad("--max-size", "0", says="--max-size"),
    ],
    "WebSockets.server": [
        bad("--port", "-1", says="--port"),
        bad("--port", "70000", says="--port"),
        bad("--port", "{busy_port}", says="already in use"),
        bad("--max-size", "0", says="--max-size"),
        bad("--max-size", "lots", says="--max-size"),
        bad("--handshake-timeout", "nan", says="--handshake-timeout"),
        bad("--mode", "shout", says="--mode"),
        bad("--compression", "gzip", says="--compression"),
        bad("--ping-interval", "-1", says="--ping-interval"),
        bad("--ping-timeout", "0", says="--ping-timeout"),
        bad("--read-timeout", "inf", says="--read-timeout"),
        bad("--max-buffered", "0", says="--max-buffered"),
        bad("--max-send-queue", "x", says="--max-send-queue"),
    ],
    # --- RealTimeChat ---------------------------------------------------------------------------
    "RealTimeChat.app": [
        bad("--port", "-1", says="--port"),
        bad("--port", "70000", says="--port"),
        bad("--port", "{busy_port}", "--db", "{tmp}/chat.sqlite3", says="already in use"),
        bad("--redis", "redis://127.0.0.1:1/0", says="cannot use Redis"),
        bad("--db", "{unwritable}", says="--db"),
        bad("--async-mode", "eventlet", says="--async-mode"),
    ],
    "RealTimeChat.bench": [bad("--clients", "1", says="--clients")],
    "RealTimeChat.chaos": [bad("--partition-seconds", "0", says="--partition-seconds")],
    "RealTimeChat.demo": [],
    "RealTimeChat.screenshot": [bad("--out", "{unwritable}", says="--out")],
    # --- TwoPhaseCommit -------------------------------------------------------------------------
    "TwoPhaseCommit.bench": [
        bad("--orders", "0", says="--orders"),
        bad("--repeats", "x", says="--repeats"),
    ],
    "TwoPhaseCommit.chaos": [
        bad("--orders", "0", says="--orders"),
        bad("--crashes", "-1", says="--crashes"),
        bad("--protocol", "xa", says="--protocol"),
        bad("--rpc-timeout", "0", says="--rpc-timeout"),
        bad("--partitions", "-1", says="--partitions"),
    ],
    "TwoPhaseCommit.coordinator": [
        bad("--log", "{tmp}/c.db", "--participant", "inventory=http://127.0.0.1:1", "--port", "70000",
            says="--port"),
        bad("--log", "{tmp}/c.db", "--participant", "inventory=http://127.0.0.1:1", "--port", "{busy_port}",
            says="already in use"),
        bad("--log", "{unwritable}", "--participant", "inventory=http://127.0.0.1:1", says="--log"),
        bad("--log", "{tmp}/c.db", "--participant", "inventory", says="--participant"),
        bad("--log", "{tmp}/c.db", says="--participant"),
        bad("--log", "{tmp}/c.db", "--participant", "a=http://127.0.0.1:1", "--participant",
            "a=http://127.0.0.1:2", says="given twice"),
        bad("--log", "{tmp}/c.db", "--participant", "a=http://127.0.0.1:1", "--protocol", "3pc",
            says="--protocol"),
        bad("--log", "{tmp}/c.db", "--participant", "a=http://127.0.0.1:1", "--crash-at",
            "after-prepare-recorded", says="unknown crash point"),
        bad("--log", "{tmp}/c.db", "--participant", "a=http://127.0.0.1:1", "--port", "{busy_port}",
            says="TWOPC_CRASH_AT", env={"TWOPC_CRASH_AT": "nowhere"}),
        bad("--log", "{tmp}/c.db", "--participant", "a=http://127.0.0.1:1", "--decision-timeout", "-1",
            says="--decision-timeout"),
    ],
    "TwoPhaseCommit.demo": [
        bad("--rpc-timeout", "0", says="--rpc-timeout"),
    ],
    "TwoPhaseCommit.participant": [
        bad("--kind", "inventory", "--db", "{tmp}/i.db", "--port", "0", says="--port"),
        bad("--kind", "inventory", "--db", "{tmp}/i.db", "--port", "{busy_port}", says="already in use"),
        bad("--kind", "inventory", "--db", "{unwritable}", says="--db"),
        bad("--kind", "kitchen", "--db", "{tmp}/i.db", says="--kind"),
        bad("--kind", "inventory", "--db", "{tmp}/i.db", "--stock", "burger", says="--stock"),
        bad("--kind", "delivery", "--db", "{tmp}/d.db", "--couriers", "John,John", says="--couriers"),
        bad("--kind", "delivery", "--db", "{tmp}/d.db", "--crash-at", "mid-phase2",
            says="unknown crash point"),
        bad("--kind", "inventory", "--db", "{tmp}/i.db", "--resolve-interval", "0",
            says="--resolve-interval"),
        bad("--db", "{tmp}/i.db", says="--kind"),
        bad("--kind", "inventory", "--db", "{tmp}/i.db", "--peer", "delivery", says="--peer"),
        bad("--kind", "delivery", "--store", "postgres", "--dsn", "postgresql://u@127.0.0.1:1/x",
            says="--store postgres is for --kind inventory"),
        bad("--kind", "inventory", "--store", "postgres", says="--dsn", env={"POSTGRES_DSN": ""}),
        bad("--kind", "inventory", "--store", "postgres", "--dsn", "postgresql://postgres@127.0.0.1:1/x",
            says="cannot use --dsn"),
    ],
    "TwoPhaseCommit.postgres_demo": [],
    "TwoPhaseCommit.diagrams": [
        bad("--out-dir", "{unwritable}", says="expected"),
    ],
    "TwoPhaseCommit.network_demo": [
        bad("--scene", "d", says="--scene"),
        bad("--trace", "{unwritable}", says="--trace"),
    ],
    # --- SimpleCDN ------------------------------------------------------------------------------
    "SimpleCDN.bench": [
        bad("--repeats", "0", says="--repeats"),
        bad("--seconds", "soon", says="--seconds"),
    ],
    "SimpleCDN.cdn_server": [
        bad("--port", "70000", says="--port"),
        bad("--port", "{busy_port}", says="already in use"),
        bad("--origin", "ftp://x", says="--origin"),
        bad("--cache-size", "lots", says="--cache-size"),
        bad("--cache-size", "0", says="--cache-size"),
        bad("--origin-timeout", "-1", says="--origin-timeout"),
        bad("--workers", "0", says="--workers"),
        bad("--workers", "2", "--port", "{busy_port}", says="already in use"),
        bad("--origin", "https://127.0.0.1:1", "--origin-cafile", "{tmp}/none.pem", says="--origin-cafile"),
    ],
    "SimpleCDN.demo": [],
    "SimpleCDN.loadgen": [
        bad("--port", "0", says="--port"),
        bad("--port", "1", "--connections", "0", says="--connections"),
        bad("--port", "1", "--seconds", "0.2", says="cannot reach"),
    ],
    "SimpleCDN.origin": [
        bad("--latency-ms", "-5", says="--latency-ms"),
        bad("--port", "-1", says="--port"),
        bad("--port", "{busy_port}", says="already in use"),
        bad("--tls-cert", "{tmp}/missing.pem", says="--tls-cert"),
    ],
    "SimpleCDN.router": [
        bad("--edge", "nonsense", says="--edge"),
        bad("--edge", "a=http://127.0.0.1:1@-5", says="--edge"),
        bad("--edge", "a=http://127.0.0.1:1@5", "--check-interval", "0", says="--check-interval"),
        bad("--edge", "a=http://127.0.0.1:1@5", "--port", "{busy_port}", says="already in use"),
    ],
    # --- ConsistentHashing ----------------------------------------------------------------------
    "ConsistentHashing.bench": [
        bad("--rounds", "2", says="--rounds"),
        bad("--keys", "abc", says="--keys"),
    ],
    "ConsistentHashing.compare": [
        bad("--out", "{unwritable}", says="--out"),
        bad("--shards", "1", says="--shards"),
        bad("--remove", "1000", says="--remove"),
    ],
    "ConsistentHashing.demo": [
        bad(env=UNREACHABLE_REDIS, says="REDIS_URL"),
        bad("--servers", "1", says="--servers"),
    ],
    "ConsistentHashing.redis_cluster": [
        bad("--slots", "0", says="--slots"),
        bad("--slots", "16384", says="--slots"),
        bad("--clients", "0", says="--clients"),
        bad("--out", "{unwritable}", says="--out"),
    ],
    "ConsistentHashing.simulate": [
        bad("--out", "{unwritable}", says="--out"),
        bad("--out", "/etc/passwd/x", says="/etc/passwd is a file"),
        bad("--keys", "0", says="--keys"),
        bad("--remove", "1000", says="--remove"),
        bad("--no-plots", says="--no-plots"),   # the one flag is --no-plot, as in compare
    ],
    # --- DistributedLocking ---------------------------------------------------------------------
    "DistributedLocking.bench": [
        bad("--pairs", "abc", says="--pairs"),
        bad("--work-ms", "-1", says="--work-ms"),
        bad(env=UNREACHABLE_REDIS, says="REDIS_URL"),
    ],
    "DistributedLocking.demo": [
        bad("--racers", "1", says="--racers"),
        bad("--payment-s", "-5", says="--payment-s"),
        bad(env=UNREACHABLE_REDIS, says="REDIS_URL"),
    ],
    "DistributedLocking.partition": [
        bad("--ttl-ms", "100", says="--ttl-ms"),
        bad("--diagram", "{unwritable}", says="--diagram"),
        bad(env=UNREACHABLE_REDIS, says="REDIS_URL"),
    ],
    "DistributedLocking.simulation": [
        bad("--users", "0", says="--users"),
        bad("--cancel", "2", says="--cancel"),
        bad(env=UNREACHABLE_REDIS, says="REDIS_URL"),
    ],
}

MARKERS = {"BlockingQueue": "blocking_queue", "Threading": "threading", "WebSockets": "ws",
           "RealTimeChat": "chat", "TwoPhaseCommit": "twopc", "UniqueIdGeneration": "uid",
           "SimpleCDN": "cdn", "ConsistentHashing": "hashing", "DistributedLocking": "locking",
           "common": "common", "tour": "common"}
MAIN_BLOCK = re.compile(r'^if __name__ == "__main__":', re.MULTILINE)


def discovered_scripts() -> list[str]:
    """Every module in the repository that runs as a script."""
    found = []
    for path in sorted(ROOT.glob("*.py")) + sorted(ROOT.glob("*/*.py")):
        top = path.parts[len(ROOT.parts)]
        if top in ("tests", ".venv", "out") or not MAIN_BLOCK.search(path.read_text()):
            continue
        relative = path.relative_to(ROOT)
        found.append(str(relative) if len(relative.parts) == 1 else
                     ".".join(relative.with_suffix("").parts))
    return found


def command(script: str) -> list[str]:
    return [sys.executable, script] if script.endswith(".py") else [sys.executable, "-m", script]


def marked(script: str, *values):
    marker = MARKERS[script.split(".")[0]]
    return pytest.param(*values, marks=getattr(pytest.mark, marker), id=f"{script}-{len(values)}")


def run_script(script: str, argv: list[str], env: dict | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if env is not None and "REDIS_URL" not in env:
        full_env.pop("REDIS_URL", None)
    return subprocess.run(command(script) + argv, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def test_every_script_is_in_the_table():
    missing = sorted(set(discovered_scripts()) - set(SCRIPTS))
    assert not missing, f"add these scripts to SCRIPTS in {Path(__file__).name}: {missing}"
    gone = sorted(set(SCRIPTS) - set(discovered_scripts()))
    assert not gone, f"these scripts in SCRIPTS no longer exist: {gone}"


@pytest.mark.parametrize("script", [marked(s, s) for s in SCRIPTS])
def test_help_exits_zero(script):
    result = run_script(script, ["--help"])
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout.lower()
    prog = script if script.endswith(".py") else f"-m {script}"
    assert prog in result.stdout, f"usage line should show how to run it: python {prog}"


CASES = [marked(script, script, case) for script, cases in SCRIPTS.items()
         for case in [*cases, bad("--no-such-flag", says="--no-such-flag")]]


@pytest.fixture
def busy_port():
    """A port that another socket is listening on for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("script,case", CASES)
def test_bad_invocation_is_one_error_line(script, case, busy_port, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    values = {"busy_port": busy_port, "unwritable": blocker / "sub" / "x.png", "tmp": tmp_path}
    argv = [arg.format(**values) for arg in case.argv]
    result = run_script(script, argv, env=case.env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, f"{script} {argv} should fail; stdout: {result.stdout[-500:]}"
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), \
        f"expected one 'error:' line on stderr, got:\n{result.stderr}"
    assert case.says.lower() in lines[0].lower(), f"the error should mention {case.says!r}: {lines[0]}"
