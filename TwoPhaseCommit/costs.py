"""Counted, not assumed: every log write and every protocol message, per transaction, per process.

What the R* paper tabulates per variant is exactly two numbers per role - log writes (how many of
them *forced*) and messages - so each process counts those as it goes, and `GET /costs/<txid>` shows
them. The benchmark reads them back and prints them beside the paper's table.

- A *forced* write is an SQLite COMMIT under `synchronous=FULL`: the write-ahead log is fsynced
  before COMMIT returns, so the record survives a power cut. (WAL with `synchronous=NORMAL` does not
  fsync on COMMIT - it survives a crash of the process, not of the machine - so it is counted as lazy.)
- A *message* is one the protocol needs: prepare, vote, decision, ack (and, on failure paths, an
  inquiry and its answer). HTTP answers every request; when a variant wants no ack, the coordinator
  neither waits for that answer nor retries, and it is not counted.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict


class Costs:
    """Thread-safe counters: forced/lazy writes and messages sent/received, per txid."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writes: dict[str, Counter[str]] = defaultdict(Counter)
        self._messages: dict[str, Counter[str]] = defaultdict(Counter)

    def write(self, txid: str, forced: bool, what: str) -> None:
        with self._lock:
            self._writes[txid]["forced" if forced else "lazy"] += 1
            self._writes[txid][f"{'forced' if forced else 'lazy'}:{what}"] += 1

    def sent(self, txid: str, peer: str, what: str) -> None:
        with self._lock:
            self._messages[txid][f"sent:{peer}"] += 1
            self._messages[txid][f"sent:{peer}:{what}"] += 1

    def received(self, txid: str, peer: str, what: str) -> None:
        with self._lock:
            self._messages[txid][f"received:{peer}"] += 1
            self._messages[txid][f"received:{peer}:{what}"] += 1

    def of(self, txid: str) -> dict:
        """{"forced": n, "lazy": n, "writes": {...}, "messages": {...}} for one transaction."""
        with self._lock:
            writes, messages = dict(self._writes.get(txid, {})), dict(self._messages.get(txid, {}))
        return {"forced": writes.get("forced", 0), "lazy": writes.get("lazy", 0),
                "writes": writes, "messages": messages}


def messages_with(costs: dict, peer: str) -> int:
    """Messages exchanged with `peer` (both directions) in a `Costs.of()` result."""
    return costs["messages"].get(f"sent:{peer}", 0) + costs["messages"].get(f"received:{peer}", 0)
