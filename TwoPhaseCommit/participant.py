"""A 2PC participant as an HTTP service: the inventory (stock) or the delivery (couriers) of the shop.

    python -m TwoPhaseCommit.participant --kind inventory --port 8101 --db inventory.db
    python -m TwoPhaseCommit.participant --kind delivery  --port 8102 --db delivery.db --couriers John,Jane
    python -m TwoPhaseCommit.participant --kind inventory --port 8101 --store postgres --dsn postgresql://...

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
import itertools
import os
import re
import sqlite3
import sys
import threading
import time
from urllib.parse import parse_qs, quote, unquote, urlsplit

from common import cli
from common.trace import NULL_TRACER, add_trace_argument, open_tracer

from .crash import CRASH_ENV, PARTICIPANT_POINTS, BadCrashPoint, CrashPlan
from .httpjson import HttpError, JsonHandler, JsonServer, Unreachable, bind, call_json, serve
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
        store, tracer = self.server.store, self.server.tracer
        url = urlsplit(path)
        if url.path == "/state":
            return 200, store.snapshot()
        match = STATUS_PATH.match(url.path)
        if match:  # an in-doubt peer asking (cooperative termination)
            txid = unquote(match.group(1))
            query = parse_qs(url.query)
            msg, peer = query.get("msg", [None])[0], query.get("from", ["peer"])[0]
            if msg:
                tracer.recv(peer, msg, "status?")
            status = store.peer_status(txid)
            if msg:
                tracer.send(peer, f"{msg}/answer", status)
            return 200, {"txid": txid, "status": status}
        match = COSTS_PATH.match(url.path)
        if match:
            return 200, {"txid": unquote(match.group(1)), **store.costs.of(unquote(match.group(1)))}
        return super().handle_get(path)

    def handle_post(self, path: str, body: dict) -> tuple[int, dict]:
        store, name, tracer = self.server.store, self.server.store.kind, self.server.tracer
        if path not in ("/prepare", "/commit", "/abort", "/deliver"):
            return super().handle_post(path, body)
        txid = required_txid(body)
        msg = body.get("msg") if isinstance(body.get("msg"), str) else None
        try:
            if path == "/prepare":
                order = parse_order(body.get("order"))
                protocol = protocol_of(body)
                store.costs.received(txid, "coordinator", "prepare")
                if msg:
                    tracer.recv("coordinator", msg, "prepare")
                vote = store.prepare(txid, order, self.server.coordinator or body.get("coordinator"),
                                     protocol, {**peers_of(body), **self.server.peers})
                if vote.yes and not vote.read_only:
                    tracer.local("prepared (forced)")
                store.costs.sent(txid, "coordinator", "vote")
                if msg:
                    tracer.send("coordinator", f"{msg}/vote", vote.kind)
                log(name, f"prepare {txid} ({protocol.value}): vote {vote.kind} ({vote.reason})")
                return 200, {"txid": txid, "vote": vote.kind, "reason": vote.reason}
            if path in ("/commit", "/abort"):
                decision = Decision(path.removeprefix("/"))
                protocol = protocol_of(body)
                store.costs.received(txid, "coordinator", decision.value)
                if msg:
                    tracer.recv("coordinator", msg, decision.value)
                state = store.commit(txid) if decision is Decision.COMMIT else store.abort(txid, protocol)
                ack = RULES[protocol].acked[decision]
                if ack:  # otherwise this HTTP answer is transport only: the coordinator ignores it
                    store.costs.sent(txid, "coordinator", "ack")
                    if msg:
                        tracer.send("coordinator", f"{msg}/ack", "ack")
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
    def __init__(self, address: tuple[str, int], store: ParticipantStore, coordinator: str | None,
                 peers: dict[str, str] | None = None, tracer=NULL_TRACER):
        super().__init__(address, ParticipantHandler)
        self.store = store
        self.coordinator = coordinator  # --coordinator: overrides the URL named in each prepare
        self.peers = peers or {}        # --peer: override the peers' URLs named in each prepare
        self.tracer = tracer


class InDoubtResolver(threading.Thread):
    """Recovery for a participant: ask the coordinator about old in-doubt transactions, apply answers."""

    def __init__(self, store: ParticipantStore, interval: float, in_doubt_after: float, timeout: float,
                 tracer=NULL_TRACER):
        super().__init__(name="in-doubt-resolver", daemon=True)
        self.tracer = tracer
        self._message_ids = itertools.count(1)
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
        self.tracer.local(f"{decision} (recovered)")
        log(self.store.kind, f"recovered {txid}: {source} {decision}")  # after applying: tests wait for it

    def ask_coordinator(self, tx: dict) -> str | None:
        """The coordinator's answer ("commit", "abort", "pending"), or None if it did not answer."""
        txid, me = tx["txid"], self.store.kind
        msg = f"{txid}/inquiry/{me}/{next(self._message_ids)}"
        url = (f"{tx['coordinator']}/transactions/{quote(txid)}/decision?protocol={tx['protocol']}"
               f"&msg={quote(msg)}&from={me}")
        self.store.costs.sent(txid, "coordinator", "inquiry")
        self.tracer.send("coordinator", msg, "decision?")
        try:
            status, answer = call_json("GET", url, timeout=self.timeout)
        except Unreachable as exc:
            self.tracer.timeout("coordinator", "no answer", msg_id=msg)
            self.say_once(txid, "coordinator", f"IN DOUBT {txid}: coordinator unreachable ({exc}); "
                                               "holding the reservation and asking again")
            return None
        decision = answer.get("decision")
        if status != 200 or decision not in ("commit", "abort", "pending"):
            return None
        self.store.costs.received(txid, "coordinator", "answer")
        self.tracer.recv("coordinator", f"{msg}/answer", decision)
        return decision

    def ask_peers(self, tx: dict) -> tuple[str | None, str]:
        """Cooperative termination: a decision learnt from the other participants (None: blocked), and
        what they said."""
        txid, answers = tx["txid"], {}
        for peer, url in tx.get("peers", {}).items():
            msg = f"{txid}/status/{self.store.kind}/{next(self._message_ids)}"
            self.store.costs.sent(txid, peer, "inquiry")
            self.tracer.send(peer, msg, "status?")
            try:
                status, answer = call_json(
                    "GET", f"{url}/transactions/{quote(txid)}/status?msg={quote(msg)}&from={self.store.kind}",
                    timeout=self.timeout)
            except Unreachable:
                self.tracer.timeout(peer, "no answer", msg_id=msg)
                answers[peer] = "unreachable"
                continue
            if status == 200:
                self.store.costs.received(txid, peer, "answer")
                answers[peer] = answer.get("status", "unknown")
                self.tracer.recv(peer, f"{msg}/answer", answers[peer])
        decision = cooperative_decision(answers.values())
        told = ", ".join(f"{peer} says {status}" for peer, status in answers.items()) or "no peers"
        if decision is None:
            if (txid, "peers") not in self._complained:
                self.tracer.local("blocked")
            self.say_once(txid, "peers", f"BLOCKED {txid}: coordinator unreachable and no peer knows the "
                                         f"decision ({told}); only the coordinator can end it")
        return decision, f"cooperative termination ({told}):"

    def say_once(self, txid: str, about: str, message: str) -> None:
        if (txid, about) not in self._complained:  # say it once, not every second
            self._complained.add((txid, about))
            log(self.store.kind, message)


def log(name: str, message: str) -> None:
    print(f"[{name}] {message}", flush=True)


def stock_spec(value: str) -> dict[str, int]:
    try:
        return parse_stock(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def couriers_spec(value: str) -> list[str]:
    try:
        return parse_couriers(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def peer_spec(value: str) -> tuple[str, str]:
    name, sep, url = value.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected NAME=URL, e.g. delivery=http://127.0.0.1:8102, "
                                         f"got {value!r}")
    return name, url.rstrip("/")


def crash_plan(value: str) -> CrashPlan:
    try:
        return CrashPlan.parse(value, PARTICIPANT_POINTS)
    except BadCrashPoint as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m TwoPhaseCommit.participant",
                                description="A 2PC participant (inventory or delivery) over HTTP+JSON.")
    # checked after parsing rather than `required=True`, so that a misspelt flag is the error reported
    parser.add_argument("--kind", choices=KINDS, help="which resource this participant owns (required)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=cli.port, default=8101, help="port to listen on (default 8101)")
    parser.add_argument("--db", type=cli.writable_path, default=None,
                        help="SQLite file for durable state, created if missing "
                             "(default out/TwoPhaseCommit/KIND.db)")
    parser.add_argument("--stock", default=parse_stock(DEFAULT_STOCK), type=stock_spec,
                        help=f"initial stock on first start, item=count,... (default {DEFAULT_STOCK})")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                        help="where the state lives: an SQLite file (--db), or PostgreSQL (--dsn; inventory "
                             "only), where prepare is PREPARE TRANSACTION (default sqlite)")
    parser.add_argument("--dsn", default=None,
                        help="PostgreSQL connection string for --store postgres (default $POSTGRES_DSN)")
    parser.add_argument("--couriers", default=parse_couriers(DEFAULT_COURIERS), type=couriers_spec,
                        help=f"courier roster on first start (default {DEFAULT_COURIERS})")
    parser.add_argument("--coordinator", default=None,
                        help="coordinator URL to ask when in doubt (default: the one named in each prepare)")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=URL", type=peer_spec,
                        help="where to reach another participant when in doubt (default: the URLs named in "
                             "each prepare); repeat for each")
    parser.add_argument("--resolve-interval", type=cli.positive_float, default=1.0,
                        help="seconds between in-doubt checks (default 1.0)")
    parser.add_argument("--in-doubt-after", type=cli.non_negative_float, default=1.0,
                        help="ask the coordinator about a prepared transaction this many seconds old")
    parser.add_argument("--rpc-timeout", type=cli.positive_float, default=2.0,
                        help="timeout of each call (default 2.0 s)")
    parser.add_argument("--crash-at", default=None, metavar="POINT[:N]", type=crash_plan,
                        help="SIGKILL this process at a point: " + ", ".join(PARTICIPANT_POINTS)
                             + " (also via $TWOPC_CRASH_AT)")
    add_trace_argument(parser)
    return parser


def open_store(args: argparse.Namespace, crash: CrashPlan):
    """The SQLite store, or the PostgreSQL one; a bad path, DSN or combination is one `error:` line."""
    if args.store == "postgres":
        if args.kind != "inventory":
            raise cli.UsageError("--store postgres is for --kind inventory (the delivery keeps SQLite)")
        dsn = args.dsn or os.environ.get("POSTGRES_DSN")
        if not dsn:
            raise cli.UsageError("--store postgres needs --dsn postgresql://... (or POSTGRES_DSN)")
        import psycopg

        from .participant_pg import PostgresInventoryStore  # psycopg is needed only here

        try:
            return PostgresInventoryStore(dsn, stock=args.stock, crash=crash)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise cli.UsageError(f"cannot use --dsn {dsn}: {first}") from None
    args.db = args.db or cli.ensure_parent(cli.output_path("TwoPhaseCommit", f"{args.kind}.db"))
    try:
        return ParticipantStore(args.db, args.kind, stock=args.stock, couriers=args.couriers, crash=crash)
    except sqlite3.Error as exc:
        raise cli.UsageError(f"cannot use --db {args.db}: {exc}") from None
    except ValueError as exc:  # the file belongs to the other kind of participant
        raise cli.UsageError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kind is None:
        parser.error("the following argument is required: --kind")
    try:
        crash = args.crash_at or CrashPlan.from_cli_or_env(None, PARTICIPANT_POINTS)
    except BadCrashPoint as exc:
        raise cli.UsageError(f"${CRASH_ENV}: {exc}") from None
    store = open_store(args, crash)
    tracer = open_tracer(args.trace, args.kind)
    crash.tracer = tracer
    server = bind(lambda: ParticipantServer((args.host, args.port), store, args.coordinator,
                                            dict(args.peer), tracer), args.host, args.port)
    resolver = InDoubtResolver(store, args.resolve_interval, args.in_doubt_after, args.rpc_timeout, tracer)
    resolver.start()
    in_doubt = len(store.in_doubt())
    where = f"db={args.db}" if args.store == "sqlite" else "store=postgres"
    log(args.kind, f"listening on http://{args.host}:{args.port} {where} in-doubt={in_doubt}"
                   + (f" crash-at={crash.point}" if crash.point else ""))
    serve(server, lambda message: log(args.kind, message), stop_threads=[resolver])
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
