"""A 2PC participant as an HTTP service: the inventory (stock) or the delivery (couriers) of the shop.

    python -m TwoPhaseCommit.participant --kind inventory --port 8101 --db inventory.db
    python -m TwoPhaseCommit.participant --kind delivery  --port 8102 --db delivery.db --couriers John,Jane

Endpoints (JSON):
    POST /prepare {txid, order: {item, quantity, address, pickup?}, coordinator?, protocol?, participants?}
                           -> {vote: "yes"|"no"|"read-only", reason}
    POST /commit  {txid, protocol?} -> {txid, state: "committed", ack}  (idempotent; 409 if aborted here)
    POST /abort   {txid, protocol?} -> {txid, state: "aborted", ack}    (idempotent; 409 if committed here)
    POST /deliver {txid}   -> the courier of a committed order is free again (delivery only)
    GET  /state            -> resources, in_doubt (prepared, undecided) and decided transactions
    GET  /transactions/<txid>/status -> {status: commit|abort|uncertain|unknown}, for in-doubt peers
    GET  /costs/<txid>     -> the log writes and messages this process counted for the transaction

`protocol` (basic, pa, pc) is the variant the coordinator runs; the participant follows the one named
in the prepare. `ack` in a phase-2 answer says whether this variant acknowledges that decision.

A background resolver asks the coordinator about every transaction that has been in doubt for a while
(GET <coordinator>/transactions/<txid>/decision) and applies the answer. If the coordinator does not
answer, it asks the other participants named in the prepare (cooperative termination): one that voted
no or knows the decision settles it. If every one of them is in doubt too, it can only keep asking: a
participant that voted yes may not decide alone. That is 2PC's blocking.
"""

from __future__ import annotations

import argparse
import re
import signal
import sqlite3
import sys
import threading
import time
from urllib.parse import quote, unquote

from .crash import PARTICIPANT_POINTS, BadCrashPoint, CrashPlan
from .httpjson import HttpError, JsonHandler, JsonServer, Unreachable, call_json
from .participant_machine import (
    BadOrder,
    ProtocolViolation,
    cooperative_decision,
    parse_couriers,
    parse_order,
    parse_stock,
)
from .participant_store import KINDS, ParticipantStore
from .variants import RULES, Decision, Protocol

STATUS_PATH = re.compile(r"^/transactions/([^/]+)/status$")
COSTS_PATH = re.compile(r"^/costs/([^/]+)$")

DEFAULT_STOCK = "burger=5,fries=10,drink=8,pizza=3"
DEFAULT_COURIERS = "John,Jane"


def required_txid(body: dict) -> str:
    txid = body.get("txid")
    if not isinstance(txid, str) or not txid.strip():
        raise HttpError(400, 'missing or empty "txid" (a non-empty string)')
    return txid


def protocol_of(body: dict) -> Protocol:
    value = body.get("protocol", Protocol.BASIC.value)
    if value not in set(Protocol):
        raise HttpError(400, f"unknown protocol {value!r}; expected one of: basic, pa, pc")
    return Protocol(value)


def peers_of(body: dict) -> dict[str, str]:
    peers = body.get("participants") or {}
    if not isinstance(peers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in peers.items()):
        raise HttpError(400, '"participants" must be an object {"name": "http://..."}')
    return peers


class ParticipantHandler(JsonHandler):
    server: ParticipantServer

    def handle_get(self, path: str) -> tuple[int, dict]:
        store = self.server.store
        if path == "/state":
            return 200, store.snapshot()
        match = STATUS_PATH.match(path)
        if match:  # an in-doubt peer asking (cooperative termination)
            txid = unquote(match.group(1))
            return 200, {"txid": txid, "status": store.peer_status(txid)}
        match = COSTS_PATH.match(path)
        if match:
            return 200, {"txid": unquote(match.group(1)), **store.costs.of(unquote(match.group(1)))}
        return super().handle_get(path)

    def handle_post(self, path: str, body: dict) -> tuple[int, dict]:
        store, name = self.server.store, self.server.store.kind
        if path not in ("/prepare", "/commit", "/abort", "/deliver"):
            return super().handle_post(path, body)
        txid = required_txid(body)
        try:
            if path == "/prepare":
                order = parse_order(body.get("order"))
                protocol = protocol_of(body)
                store.costs.received(txid, "coordinator", "prepare")
                vote = store.prepare(txid, order, body.get("coordinator") or self.server.coordinator,
                                     protocol, peers_of(body))
                store.costs.sent(txid, "coordinator", "vote")
                log(name, f"prepare {txid} ({protocol.value}): vote {vote.kind} ({vote.reason})")
                return 200, {"txid": txid, "vote": vote.kind, "reason": vote.reason}
            if path in ("/commit", "/abort"):
                decision = Decision(path.removeprefix("/"))
                protocol = protocol_of(body)
                store.costs.received(txid, "coordinator", decision.value)
                state = store.commit(txid) if decision is Decision.COMMIT else store.abort(txid, protocol)
                ack = RULES[protocol].acked[decision]
                if ack:  # otherwise this HTTP answer is transport only: the coordinator ignores it
                    store.costs.sent(txid, "coordinator", "ack")
                log(name, f"{decision.value} {txid}: {state.value}")
                return 200, {"txid": txid, "state": state.value, "ack": ack}
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
        self._complained: set[tuple[str, str]] = set()

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
        decision, source = (self.ask_coordinator(tx) if coordinator else None), "the coordinator says"
        if decision is None:
            decision, source = self.ask_peers(tx)
        if decision is None or decision == "pending":
            return
        try:
            self.store.apply_decision(txid, decision)
        except ProtocolViolation as exc:
            log(self.store.kind, f"REFUSED recovery answer for {txid}: {exc}")
            return
        log(self.store.kind, f"recovered {txid}: {source} {decision}")  # after applying: tests wait for it

    def ask_coordinator(self, tx: dict) -> str | None:
        """The coordinator's answer ("commit", "abort", "pending"), or None if it did not answer."""
        txid = tx["txid"]
        url = f"{tx['coordinator']}/transactions/{quote(txid)}/decision?protocol={tx['protocol']}"
        self.store.costs.sent(txid, "coordinator", "inquiry")
        try:
            status, answer = call_json("GET", url, timeout=self.timeout)
        except Unreachable as exc:
            self.say_once(txid, "coordinator", f"IN DOUBT {txid}: coordinator unreachable ({exc}); "
                                               "holding the reservation and asking again")
            return None
        decision = answer.get("decision")
        if status != 200 or decision not in ("commit", "abort", "pending"):
            return None
        self.store.costs.received(txid, "coordinator", "answer")
        return decision

    def ask_peers(self, tx: dict) -> tuple[str | None, str]:
        """Cooperative termination: a decision learnt from the other participants (None: blocked), and
        what they said."""
        txid, answers = tx["txid"], {}
        for peer, url in tx.get("peers", {}).items():
            self.store.costs.sent(txid, peer, "inquiry")
            try:
                status, answer = call_json("GET", f"{url}/transactions/{quote(txid)}/status",
                                           timeout=self.timeout)
            except Unreachable:
                answers[peer] = "unreachable"
                continue
            if status == 200:
                self.store.costs.received(txid, peer, "answer")
                answers[peer] = answer.get("status", "unknown")
        decision = cooperative_decision(answers.values())
        told = ", ".join(f"{peer} says {status}" for peer, status in answers.items()) or "no peers"
        if decision is None:
            self.say_once(txid, "peers", f"BLOCKED {txid}: coordinator unreachable and no peer knows the "
                                         f"decision ({told}); only the coordinator can end it")
        return decision, f"cooperative termination ({told}):"

    def say_once(self, txid: str, about: str, message: str) -> None:
        if (txid, about) not in self._complained:  # say it once, not every second
            self._complained.add((txid, about))
            log(self.store.kind, message)


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
