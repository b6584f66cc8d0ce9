"""A 2PC participant as an HTTP service: the inventory (stock) or the delivery (couriers) of the shop.

    python -m TwoPhaseCommit.participant --kind inventory --port 8101 --db inventory.db
    python -m TwoPhaseCommit.participant --kind delivery  --port 8102 --db delivery.db --couriers John,Jane

Endpoints (JSON):
    POST /prepare {txid, order: {item, quantity, address}, coordinator?}  -> {vote: "yes"|"no", reason}
    POST /commit  {txid}   -> {txid, state: "committed"}     (idempotent; 409 if it was aborted here)
    POST /abort   {txid}   -> {txid, state: "aborted"}       (idempotent; 409 if it was committed here)
    POST /deliver {txid}   -> the courier of a committed order is free again (delivery only)
    GET  /state            -> resources, in_doubt (prepared, undecided) and decided transactions

A background resolver asks the coordinator about every transaction that has been in doubt for a while
(GET <coordinator>/transactions/<txid>/decision) and applies the answer. While the coordinator is down
it can only keep asking: a participant that voted yes may not decide alone. That is 2PC's blocking.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
import threading
import time
from urllib.parse import quote

from .crash import PARTICIPANT_POINTS, BadCrashPoint, CrashPlan
from .httpjson import HttpError, JsonHandler, JsonServer, Unreachable, call_json
from .participant_machine import BadOrder, ProtocolViolation, parse_couriers, parse_order, parse_stock
from .participant_store import KINDS, ParticipantStore

DEFAULT_STOCK = "burger=5,fries=10,drink=8,pizza=3"
DEFAULT_COURIERS = "John,Jane"


def required_txid(body: dict) -> str:
    txid = body.get("txid")
    if not isinstance(txid, str) or not txid.strip():
        raise HttpError(400, 'missing or empty "txid" (a non-empty string)')
    return txid


class ParticipantHandler(JsonHandler):
    server: ParticipantServer

    def handle_get(self, path: str) -> tuple[int, dict]:
        if path == "/state":
            return 200, self.server.store.snapshot()
        return super().handle_get(path)

    def handle_post(self, path: str, body: dict) -> tuple[int, dict]:
        store, name = self.server.store, self.server.store.kind
        if path not in ("/prepare", "/commit", "/abort", "/deliver"):
            return super().handle_post(path, body)
        txid = required_txid(body)
        try:
            if path == "/prepare":
                order = parse_order(body.get("order"))
                vote = store.prepare(txid, order, body.get("coordinator") or self.server.coordinator)
                log(name, f"prepare {txid}: vote {'yes' if vote.yes else 'no'} ({vote.reason})")
                return 200, {"txid": txid, "vote": "yes" if vote.yes else "no", "reason": vote.reason}
            if path == "/commit":
                state = store.commit(txid)
                log(name, f"commit {txid}: {state.value}")
                return 200, {"txid": txid, "state": state.value}
            if path == "/abort":
                state = store.abort(txid)
                log(name, f"abort {txid}: {state.value}")
                return 200, {"txid": txid, "state": state.value}
            if path == "/deliver":
                store.deliver(txid)
                log(name, f"deliver {txid}: courier free again")
                return 200, {"txid": txid, "delivered": True}
        except BadOrder as exc:
            raise HttpError(400, str(exc)) from None
        except ProtocolViolation as exc:
            log(name, f"REFUSED {path} {txid}: {exc}")
            raise HttpError(409, str(exc)) from None
        raise AssertionError(f"unrouted path {path}")  # unreachable: the paths are checked above


class ParticipantServer(JsonServer):
    def __init__(self, address: tuple[str, int], store: ParticipantStore, coordinator: str | None):
        super().__init__(address, ParticipantHandler)
        self.store = store
        self.coordinator = coordinator


class InDoubtResolver(threading.Thread):
    """Recovery for a participant: ask the coordinator about old in-doubt transactions, apply answers."""

    def __init__(self, store: ParticipantStore, interval: float, in_doubt_after: float, timeout: float):
        super().__init__(name="in-doubt-resolver", daemon=True)
        self.store, self.interval, self.timeout = store, interval, timeout
        self.in_doubt_after = in_doubt_after
        self.stopping = threading.Event()
        self._complained: set[str] = set()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                for tx in self.store.in_doubt(prepared_before=time.time() - self.in_doubt_after):
                    self.resolve(tx)
            except Exception as exc:  # e.g. "database is locked": one bad round must not end recovery
                log(self.store.kind, f"in-doubt check failed ({exc!r}); trying again")
            self.stopping.wait(self.interval)

    def resolve(self, tx: dict) -> None:
        txid, coordinator = tx["txid"], tx.get("coordinator")
        if not coordinator:
            return  # nobody to ask: the coordinator will re-drive its decision when it comes back
        try:
            status, answer = call_json("GET", f"{coordinator}/transactions/{quote(txid)}/decision",
                                       timeout=self.timeout)
        except Unreachable as exc:
            if txid not in self._complained:  # say it once, not every second
                self._complained.add(txid)
                log(self.store.kind, f"IN DOUBT {txid}: coordinator unreachable ({exc}); holding the "
                                     "reservation and asking again")
            return
        decision = answer.get("decision")
        if status != 200 or decision not in ("commit", "abort", "pending"):
            return
        if decision != "pending":
            try:
                self.store.apply_decision(txid, decision)
            except ProtocolViolation as exc:
                log(self.store.kind, f"REFUSED recovery answer for {txid}: {exc}")
                return
            log(self.store.kind, f"recovered {txid}: the coordinator says {decision}")


def log(name: str, message: str) -> None:
    print(f"[{name}] {message}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m TwoPhaseCommit.participant",
                                     description="A 2PC participant (inventory or delivery) over HTTP+JSON.")
    parser.add_argument("--kind", choices=KINDS, required=True, help="which resource this participant owns")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8101, help="port to listen on (default 8101)")
    parser.add_argument("--db", required=True, help="SQLite file for durable state (created if missing)")
    parser.add_argument("--stock", default=DEFAULT_STOCK,
                        help=f"initial stock on first start, item=count,... (default {DEFAULT_STOCK})")
    parser.add_argument("--couriers", default=DEFAULT_COURIERS,
                        help=f"courier roster on first start (default {DEFAULT_COURIERS})")
    parser.add_argument("--coordinator", default=None,
                        help="coordinator URL to ask when in doubt (default: the one named in each prepare)")
    parser.add_argument("--resolve-interval", type=float, default=1.0,
                        help="seconds between in-doubt checks (default 1.0)")
    parser.add_argument("--in-doubt-after", type=float, default=1.0,
                        help="ask the coordinator about a prepared transaction this many seconds old")
    parser.add_argument("--rpc-timeout", type=float, default=2.0, help="timeout of each call (default 2.0 s)")
    parser.add_argument("--crash-at", default=None, metavar="POINT[:N]",
                        help="SIGKILL this process at a point: " + ", ".join(PARTICIPANT_POINTS)
                             + " (also via $TWOPC_CRASH_AT)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        crash = CrashPlan.from_cli_or_env(args.crash_at, PARTICIPANT_POINTS)
        store = ParticipantStore(args.db, args.kind, stock=parse_stock(args.stock),
                                 couriers=parse_couriers(args.couriers), crash=crash)
        server = ParticipantServer((args.host, args.port), store, args.coordinator)
    except (BadCrashPoint, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"error: cannot use --db {args.db}: {exc}", file=sys.stderr)
        return 2
    except (OSError, OverflowError) as exc:  # port in use, or outside 0-65535
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    resolver = InDoubtResolver(store, args.resolve_interval, args.in_doubt_after, args.rpc_timeout)
    resolver.start()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    in_doubt = len(store.in_doubt())
    log(args.kind, f"listening on http://{args.host}:{args.port} db={args.db} in-doubt={in_doubt}"
                   + (f" crash-at={crash.point}" if crash.point else ""))
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        log(args.kind, "stopping")
    finally:
        resolver.stopping.set()
        server.server_close()
    return 0


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
