"""A race condition you can see: threads doing read-modify-write on a shared counter lose updates.

    python -m Threading.race_condition                  8 threads x 100,000 increments, no lock
    python -m Threading.race_condition --safe           the same under a threading.Lock: nothing lost
    python -m Threading.race_condition --workload append   list.append: nothing lost even without a lock

Why updates get lost: an increment is three steps - read the value, compute value + 1, write it
back. If thread A is switched out after reading 41 and thread B then reads 41 and writes 42 (many
times, perhaps), A resumes and writes *its* 42: every increment B made in between is overwritten.

The GIL does not prevent this. It guarantees only that one thread at a time runs bytecode; CPython
may switch threads between any two of the three steps. In CPython 3.11 the interpreter checks for a
pending switch at function calls and backward jumps, so the compute step here is a call
(`plus_one`), and the switch interval is shortened from 5 ms to 1 us so that switches are frequent.
Without the call (`counter.value += 1` in a loop) 3.11 almost never switches mid-update and the bug
hides - which is exactly why such bugs survive testing and strike in production.

Why `list.append` shows no race: it is a single call into C that does the whole read-modify-write
of the list (size, storage, new item) while holding the GIL; no thread switch can happen inside it.
That atomicity is a CPython implementation detail (free-threaded builds use per-object locks to keep
it); it does not make `counter.value += 1`, `d[k] = d.get(k, 0) + 1` or check-then-act code atomic.
"""

from __future__ import annotations

import argparse
import sys

from common import cli

from .race import describe, run_race


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        prog="python -m Threading.race_condition",
        description="Threads doing read-modify-write on a shared counter lose updates unless they "
                    "hold a lock.")
    parser.add_argument("--threads", type=cli.positive_int, default=8, help="threads (default 8)")
    parser.add_argument("--iterations", type=cli.positive_int, default=100_000,
                        help="increments per thread (default 100000)")
    parser.add_argument("--safe", action="store_true", help="hold a threading.Lock around each increment")
    parser.add_argument("--workload", choices=["counter", "append"], default="counter",
                        help="counter: read-modify-write (races); append: list.append (atomic under the GIL)")
    parser.add_argument("--switch-interval", type=cli.positive_float, default=1e-6,
                        help="sys.setswitchinterval during the run, seconds "
                             "(default 1e-6; CPython's is 0.005)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"Python {sys.version.split()[0]}: {args.threads} threads x {args.iterations:,} updates, "
          f"switch interval {args.switch_interval:g}s")
    result = run_race(args.threads, args.iterations, args.safe, args.workload, args.switch_interval)
    print(f"expected {result.expected:,}")
    print(f"actual   {result.actual:,}")
    print(f"lost     {result.lost:,}")
    print(f"result: {describe(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
