"""The tour: run every concept's headline demo, one after another, and summarise.

    python tour.py                 run every demo that exists (what `make demo` does)
    python tour.py --list          list the concepts and whether each has a demo yet
    python tour.py Threading       run one (or several) by name
    python tour.py --bench         run the benchmarks instead (what `make bench` does)

Each demo runs in its own subprocess from the repository root (`python -m Concept.demo`), so one
failing demo cannot take the others down. A demo prints a readable transcript; its last line is a
one-line result, which the summary table repeats. The exit status is non-zero if any demo failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import cli

ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Concept:
    name: str
    demo: tuple[str, ...]   # arguments after `python`
    bench: tuple[str, ...]

    def has(self, kind: str) -> bool:
        """Does the script for `kind` ("demo" or "bench") exist yet?"""
        return script_file(getattr(self, kind)).exists()


def script_file(argv: tuple[str, ...]) -> Path:
    """("-m", "A.b") -> A/b.py;  ("X.py", ...) -> X.py"""
    if argv[0] == "-m":
        return ROOT / (argv[1].replace(".", "/") + ".py")
    return ROOT / argv[0]


CONCEPTS = [
    Concept("Threading", ("-m", "Threading.demo"), ("-m", "Threading.compare")),
    Concept("BlockingQueue", ("BlockingQueue.py", "demo"), ("BlockingQueue.py", "bench")),
    Concept("WebSockets", ("-m", "WebSockets.demo"), ("-m", "WebSockets.bench")),
    Concept("RealTimeChat", ("-m", "RealTimeChat.demo"), ("-m", "RealTimeChat.bench")),
    Concept("TwoPhaseCommit", ("-m", "TwoPhaseCommit.demo"),
            ("-m", "TwoPhaseCommit.bench")),
    Concept("UniqueIdGeneration", ("-m", "UniqueIdGeneration.demo"),
            ("-m", "UniqueIdGeneration.bench")),
    Concept("SimpleCDN", ("-m", "SimpleCDN.demo"), ("-m", "SimpleCDN.bench")),
    Concept("ConsistentHashing", ("-m", "ConsistentHashing.demo"),
            ("-m", "ConsistentHashing.bench")),
    Concept("DistributedLocking", ("-m", "DistributedLocking.demo"),
            ("-m", "DistributedLocking.bench")),
]


@dataclass
class Outcome:
    concept: str
    ok: bool
    seconds: float
    result: str


def run_one(concept: Concept, argv: tuple[str, ...], quiet: bool, timeout: float) -> Outcome:
    """Run one script, echoing its output indented, and keep its last non-empty line."""
    start = time.monotonic()
    last_line = ""
    proc = subprocess.Popen([sys.executable, "-u", *argv], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                last_line = line.strip().removeprefix("result:").strip()
            if not quiet:
                print("    " + line, end="", flush=True)
            if time.monotonic() - start > timeout:
                proc.kill()
                last_line = f"timed out after {timeout:.0f}s"
                break
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    ok = proc.returncode == 0
    if not ok and not last_line.startswith("timed out"):
        last_line = f"exit status {proc.returncode}: {last_line}"
    return Outcome(concept.name, ok, time.monotonic() - start, last_line)


def print_summary(outcomes: list[Outcome]) -> None:
    width = max(len(o.concept) for o in outcomes)
    print("\nSummary")
    print(f"  {'concept'.ljust(width)}  status  seconds  result")
    for o in outcomes:
        status = "ok" if o.ok else "FAILED"
        print(f"  {o.concept.ljust(width)}  {status:6}  {o.seconds:7.1f}  {o.result}")


def parse_args(argv: list[str] | None):
    parser = cli.ArgumentParser(prog="python tour.py",
                                description="Run every concept's demo (or benchmark) and summarise.")
    parser.add_argument("concepts", nargs="*", metavar="CONCEPT",
                        help="run only these (see --list); default: all that exist")
    parser.add_argument("--list", action="store_true", help="list the concepts and exit")
    parser.add_argument("--bench", action="store_true", help="run the benchmarks instead of the demos")
    parser.add_argument("--quiet", action="store_true", help="show only progress and the summary")
    parser.add_argument("--timeout", type=cli.positive_float, default=600.0,
                        help="seconds per script (default 600)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kind = "bench" if args.bench else "demo"
    if args.list:
        for concept in CONCEPTS:
            state = "ready" if concept.has(kind) else "not built yet"
            print(f"{concept.name:20} {state:14} python {' '.join(getattr(concept, kind))}")
        return 0
    by_name = {c.name.lower(): c for c in CONCEPTS}
    unknown = [name for name in args.concepts if name.lower() not in by_name]
    if unknown:
        raise cli.UsageError(f"unknown concept(s): {', '.join(unknown)}; see python tour.py --list")
    chosen = [by_name[name.lower()] for name in args.concepts] or CONCEPTS
    runnable = [c for c in chosen if c.has(kind)]
    if not runnable:
        print(f"No concept has a {kind} yet; nothing to run.")
        return 0
    outcomes = []
    for index, concept in enumerate(runnable, 1):
        print(f"[{index}/{len(runnable)}] {concept.name}: python {' '.join(getattr(concept, kind))}",
              flush=True)
        outcome = run_one(concept, getattr(concept, kind), args.quiet, args.timeout)
        print(f"[{index}/{len(runnable)}] {concept.name}: {'ok' if outcome.ok else 'FAILED'} "
              f"in {outcome.seconds:.1f}s", flush=True)
        outcomes.append(outcome)
    print_summary(outcomes)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
