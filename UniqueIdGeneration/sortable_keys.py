"""The sortable-key experiment: are time-ordered keys really kinder to a B-tree than random UUIDs?

    python -m UniqueIdGeneration.sortable_keys [--rows 1000000] [--plot PATH | --no-plot]

Inserts the same rows into four SQLite tables that differ only in their primary key:

    snowflake   8-byte integer, time-ordered (this package's SnowflakeGenerator)
    uuid4-text  36-character string, random
    uuid4-blob  16 bytes, random
    uuidv7-blob 16 bytes, time-ordered (RFC 9562, our UUIDv7Generator)

Every table is `WITHOUT ROWID`, so the table *is* a B-tree ordered by the key (like a clustered
index in InnoDB or SQL Server). A time-ordered key always lands on the right-most leaf page: pages
fill up completely and the few pages being written stay in cache. A random key lands on a random
leaf: once the tree outgrows the page cache most inserts touch a page that is not in cache, and
pages split half-empty, so the file grows larger too.

Batches of the four tables are interleaved (batch 1 of each, then batch 2 of each, ...), so load
from other processes on the machine affects all four alike. Prints total time, the time of the first
and last batches, and the final file size; saves a PNG of time per batch.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import cli

from .snowflake import SnowflakeGenerator
from .uuidv7 import UUIDv7Generator

DEFAULT_ROWS = 300_000
DEFAULT_BATCH = 10_000
DEFAULT_PLOT = cli.output_path("UniqueIdGeneration", "sortable_keys.png")
PAYLOAD = b"p" * 100            # the same 100-byte payload in every row: only the key differs
PAGE_CACHE_KIB = 8 * 1024       # 8 MiB of page cache: the tables outgrow it, as real tables outgrow RAM


@dataclass
class KeyKind:
    name: str
    column_type: str
    make_keys: Callable[[int, int], list]   # (rows, seed) -> keys in insertion order
    batch_seconds: list[float] = field(default_factory=list)
    file_bytes: int = 0

    @property
    def total_seconds(self) -> float:
        return sum(self.batch_seconds)


def snowflake_keys(rows: int, seed: int) -> list[int]:
    generator = SnowflakeGenerator(1)
    return [generator.next_id() for _ in range(rows)]


def random_uuid4s(rows: int, seed: int) -> list[uuid.UUID]:
    # Seeded (not os.urandom) so a re-run inserts exactly the same keys.
    rng = random.Random(seed)
    return [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(rows)]


def uuid4_text_keys(rows: int, seed: int) -> list[str]:
    return [str(value) for value in random_uuid4s(rows, seed)]


def uuid4_blob_keys(rows: int, seed: int) -> list[bytes]:
    return [value.bytes for value in random_uuid4s(rows, seed)]


def uuidv7_blob_keys(rows: int, seed: int) -> list[bytes]:
    generator = UUIDv7Generator()
    return [generator.next_bytes() for _ in range(rows)]


def key_kinds() -> list[KeyKind]:
    return [
        KeyKind("snowflake (int64)", "INTEGER", snowflake_keys),
        KeyKind("uuid4 (text)", "TEXT", uuid4_text_keys),
        KeyKind("uuid4 (16-byte blob)", "BLOB", uuid4_blob_keys),
        KeyKind("uuidv7 (16-byte blob)", "BLOB", uuidv7_blob_keys),
    ]


def open_table(path: Path, column_type: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)   # we issue BEGIN/COMMIT ourselves
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")             # common production setting with WAL
    connection.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
    connection.execute(f"CREATE TABLE items (id {column_type} PRIMARY KEY, payload BLOB NOT NULL) "
                       "WITHOUT ROWID")
    return connection


def insert_batch(connection: sqlite3.Connection, keys: list) -> float:
    started = time.perf_counter()
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO items (id, payload) VALUES (?, ?)",
                           ((key, PAYLOAD) for key in keys))
    connection.execute("COMMIT")
    return time.perf_counter() - started


def run(rows: int, batch: int, seed: int, directory: Path) -> list[KeyKind]:
    kinds = key_kinds()
    print(f"generating {rows:,} keys of each kind ...", flush=True)
    all_keys = [kind.make_keys(rows, seed) for kind in kinds]
    connections = [open_table(directory / f"{i}.sqlite3", kind.column_type) for i, kind in enumerate(kinds)]
    batches = range(0, rows, batch)
    try:
        for start in cli.progress(batches, label=f"batches of {batch:,} rows"):
            for kind, keys, connection in zip(kinds, all_keys, connections, strict=True):
                kind.batch_seconds.append(insert_batch(connection, keys[start:start + batch]))
    finally:
        for i, connection in enumerate(connections):
            # Fold the WAL into the database file so the size we report is the table's size.
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.close()
            kinds[i].file_bytes = (directory / f"{i}.sqlite3").stat().st_size
    return kinds


def print_table(kinds: list[KeyKind], rows: int, batch: int) -> None:
    base = kinds[0]
    print(f"\n{rows:,} rows in batches of {batch:,}; Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
    header = ("| key | total s | vs snowflake | first batch ms | last batch ms | last/first "
              "| file MB | vs snowflake |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for kind in kinds:
        first, last = _median(kind.batch_seconds[:5]), _median(kind.batch_seconds[-5:])
        print(f"| {kind.name} | {kind.total_seconds:.2f} | {kind.total_seconds / base.total_seconds:.2f}x "
              f"| {first * 1000:.0f} | {last * 1000:.0f} | {last / first:.1f}x "
              f"| {kind.file_bytes / 1e6:.1f} | {kind.file_bytes / base.file_bytes:.2f}x |")
    print("(first/last batch = median of the first/last 5 batches, to damp noise from other processes)")


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def plot(kinds: list[KeyKind], rows: int, batch: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(9, 5))
    for kind in kinds:
        x = [min((i + 1) * batch, rows) for i in range(len(kind.batch_seconds))]
        axes.plot(x, [s * 1000 for s in kind.batch_seconds], label=kind.name, linewidth=1.2)
    axes.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    axes.set_xlabel("rows inserted so far")
    axes.set_ylabel(f"time per batch of {batch:,} inserts (ms)")
    axes.set_title(f"SQLite WITHOUT ROWID B-tree: {rows:,} inserts by primary-key type")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(cli.ensure_parent(path), dpi=110)
    plt.close(figure)
    print(f"plot saved to {os.path.relpath(path)}")


def unusable_directory(directory: Path) -> str | None:
    """Why `directory` cannot hold the experiment's databases (checked before any work), or None."""
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"expected a directory, got '{directory}' ({existing} is a file)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"expected a directory you can write, got '{directory}'"
    if directory.is_dir() and any(directory.glob("*.sqlite3")):
        return f"{directory} already holds *.sqlite3 files; point it at an empty directory"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m UniqueIdGeneration.sortable_keys", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=cli.positive_int, default=DEFAULT_ROWS,
                        help=f"rows per table (default {DEFAULT_ROWS:,})")
    parser.add_argument("--batch", type=cli.positive_int, default=DEFAULT_BATCH,
                        help=f"rows per transaction (default {DEFAULT_BATCH:,})")
    parser.add_argument("--seed", type=cli.int_range(), default=7, help="seed for the random UUIDv4 keys")
    parser.add_argument("--plot", metavar="PATH", type=cli.writable_path, default=DEFAULT_PLOT,
                        help="where to save the PNG (default out/UniqueIdGeneration/sortable_keys.png)")
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    parser.add_argument("--dir", type=Path, default=None,
                        help="an empty directory for the database files (default: a temporary one, "
                             "removed after)")
    args = parser.parse_args(argv)
    if args.dir is not None:
        problem = unusable_directory(args.dir)
        if problem:
            parser.error(f"--dir: {problem}")

    with tempfile.TemporaryDirectory(prefix="sortable-keys-") as temporary:
        directory = args.dir or Path(temporary)
        directory.mkdir(parents=True, exist_ok=True)
        kinds = run(args.rows, args.batch, args.seed, directory)
    print_table(kinds, args.rows, args.batch)
    if not args.no_plot:
        plot(kinds, args.rows, args.batch, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
