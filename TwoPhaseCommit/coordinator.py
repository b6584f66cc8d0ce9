"""The 2PC coordinator as an HTTP service: takes orders, runs the two phases, recovers after crashes.

    python -m TwoPhaseCommit.coordinator --port 8100 --log coordinator.db --protocol pa \
        --participant inventory=http://127.0.0.1:8101 --participant delivery=http://127.0.0.1:8102

Endpoints (JSON):
    POST /orders {item, quantity, address, pickup?} -> {txid, outcome: "committed"|"aborted", reason}
                                               (400 with a message for a bad order: nothing reserved)
    GET  /transactions                       -> every logged transaction with its phase and decision
    GET  /transactions/<txid>                -> one transaction
    GET  /transactions/<txid>/decision       -> {decision: "commit"|"abort"|"pending"} for in-doubt
                                               participants (no record: the variant's presumption)
    GET  /costs/<txid>                       -> the log writes and messages this process counted

One order, step by step (the crash points in brackets):
    [PC: force the collecting record] -> prepare every participant *at once* -> collect votes until all
    are in, or the first "no"/refusal, or --decision-timeout -> [before-decision-logged] -> write the
    decision (forced or lazy, per variant) -> [after-decision-logged] -> send it to each participant that
    must hear it ([mid-phase2] between two of them): waiting for acks if the variant wants them, else
    in the background without retries -> answer the client.
A recovery thread, run at start and then every --retry-interval, re-sends every decision whose acks are
still due and aborts PC transactions left undecided (by a previous run, or past --decision-timeout).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import re
import sqlite3
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from urllib.parse import parse_qs, unquote, urlsplit

from common import cli
from common.trace import NULL_TRACER, add_trace_argument, open_tracer

from .coordinator_log import CoordinatorLog
from .coordinator_machine import (
    RULES,
    AbortUndecided,
    Decision,
    Protocol,
    TxRecord,
    VoteKind,
    VoteResult,
    answer_query,
    client_outcome,
    decide,
    decided_early,
    phase,
    phase2_targets,
    recovery_plan,
    summarize,
)
from .crash import COORDINATOR_POINTS, CRASH_ENV, BadCrashPoint, CrashPlan
from .httpjson import HttpError, JsonHandler, JsonServer, Unreachable, bind, call_json, serve
from .participant_machine import BadOrder, parse_order

TX_PATH = re.compile(r"^/transactions/([^/]+)(/decision)?$")
COSTS_PATH = re.compile(r"^/costs/([^/]+)$")


class Coordinator:
    """The protocol driver: the pure state machine's decisions, applied with real I/O and a real log."""

    def __init__(self, log: CoordinatorLog, participants: dict[str, str], self_url: str,
                 protocol: Protocol = Protocol.PA, rpc_timeout: float = 2.0, decision_timeout: float = 10.0,
                 retry_interval: float = 0.5, crash: CrashPlan | None = None, tracer=NULL_TRACER):
        self.log = log
        self.costs = log.costs
        self.participants = participants  # name -> base URL
        self.self_url = self_url
        self.protocol = protocol
        self.rpc_timeout = rpc_timeout
        self.decision_timeout = decision_timeout
        self.retry_interval = retry_interval
        self.crash = crash or CrashPlan.none()
        self.tracer = tracer  # --trace: every message as a send/recv event (common/trace.py)
        self.crash.tracer = tracer
        self._message_ids = itertools.count(1)
        self.started_at = time.time()
        # prepares go out in parallel, and decisions nobody acknowledges are sent in the background
        self.pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="rpc")
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()           # collecting votes: the answer to an inquiry is "pending"
        self._acked: dict[str, set[str]] = {}       # acks are kept in memory; the end record is logged
        self._sending: set[str] = set()             # phase 2 under way in the request: recovery waits

    # --- one order ----------------------------------------------------------------------------------

    def place_order(self, body: dict) -> tuple[int, dict]:
        try:
            order = parse_order(body)  # shape errors: 400 before anything is logged or reserved
        except BadOrder as exc:
            raise HttpError(400, str(exc)) from None
        txid = uuid.uuid4().hex[:12]
        names = tuple(self.participants)
        with self._lock:
            self._in_flight.add(txid)
        try:
            self.log.collecting(txid, self.protocol, order.to_json(), names)  # PC only
            if RULES[self.protocol].forces_collecting:
                self.tracer.local("log collecting (forced)")
            votes = self._collect_votes(txid, order.to_json(), names)
            self.crash.reached("before-decision-logged")
            decision, reason = decide(names, votes)
            targets = phase2_targets(decision, names, votes)
            # written before any phase-2 message; if the timeout sweeper decided first, its decision holds
            decision, reason = self.log.log_decision(txid, self.protocol, order.to_json(), targets,
                                                     decision, reason)
        finally:
            with self._lock:  # only now: an inquiry that misses the in-flight mark finds the decision
                self._in_flight.discard(txid)
        forced = "forced" if RULES[self.protocol].forces[decision] else "lazy"
        self.tracer.local(f"log {decision.value} ({forced})")
        log(f"{txid} decided {decision.value} ({self.protocol.value}, {forced}): {reason}")
        self.crash.reached("after-decision-logged")
        with self._lock:
            self._sending.add(txid)
        try:
            self.send_phase2(self.log.get(txid))
        finally:
            with self._lock:
                self._sending.discard(txid)
        rejected = [vote for vote in votes if vote.kind is VoteKind.REJECTED]
        if rejected:  # the order itself was invalid (unknown item): a client error, nothing reserved
            raise HttpError(400, rejected[0].reason)
        return 200, {"txid": txid, "outcome": client_outcome(decision), "reason": reason,
                     "protocol": self.protocol.value}

    def _collect_votes(self, txid: str, order: dict, names: tuple[str, ...]) -> list[VoteResult]:
        """Prepare everyone at once; stop at the first vote that decides abort, or at the deadline."""
        futures: dict[Future, str] = {self.pool.submit(self._prepare, name, txid, order, names): name
                                      for name in names}
        deadline = time.monotonic() + self.decision_timeout
        votes: list[VoteResult] = []
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=max(0.0, deadline - time.monotonic()),
                                 return_when=FIRST_COMPLETED)
            if not done:  # the decision timeout: a vote that has not arrived counts as a no
                votes += [VoteResult(futures[f], VoteKind.UNREACHABLE,
                                     f"no vote within the decision timeout ({self.decision_timeout:g} s)")
                          for f in pending]
                break
            for future in done:
                vote = future.result()
                log(f"{txid} {vote.participant} votes {vote.kind.value}: {vote.reason}")
                votes.append(vote)
            if any(decided_early(vote) for vote in votes):
                break  # abort is certain: do not wait for the others (they are told abort in phase 2)
        return votes

    def _prepare(self, name: str, txid: str, order: dict, names: tuple[str, ...]) -> VoteResult:
        # the other participants travel with the prepare, for cooperative termination
        peers = {other: self.participants[other] for other in names if other != name}
        body = {"txid": txid, "order": order, "coordinator": self.self_url, "protocol": self.protocol.value,
                "participants": peers}
        body["msg"] = msg = f"{txid}/prepare/{name}"
        self.costs.sent(txid, name, "prepare")
        self.tracer.send(name, msg, "prepare")
        try:
            status, answer = call_json("POST", f"{self.participants[name]}/prepare", body, self.rpc_timeout)
        except Unreachable as exc:
            self.tracer.timeout(name, "no vote", msg_id=msg)
            return VoteResult(name, VoteKind.UNREACHABLE, f"no answer to prepare ({exc})")
        if status == 400:
            return VoteResult(name, VoteKind.REJECTED, answer.get("error", "bad order"))
        kinds = {"yes": VoteKind.YES, "no": VoteKind.NO, "read-only": VoteKind.READ_ONLY}
        if status == 200 and answer.get("vote") in kinds:
            self.costs.received(txid, name, "vote")
            self.tracer.recv(name, f"{msg}/vote", answer["vote"])
            return VoteResult(name, kinds[answer["vote"]], answer.get("reason", ""))
        return VoteResult(name, VoteKind.NO, f"unexpected answer {status}: {answer}")

    # --- phase 2 and recovery -----------------------------------------------------------------------

    def send_phase2(self, record: TxRecord | None, only: tuple[str, ...] | None = None) -> bool:
        """Send the decision to the participants that must hear it; True if every due ack is in.

        A decision the variant acknowledges is sent now and re-sent by recovery until acked; one it does
        not (a PA abort, a PC commit) is sent once, in the background: a participant that misses it will
        ask, and the record or the presumption answers.
        """
        if record is None or record.decision is None:
            return False
        names = only if only is not None else record.participants
        if not RULES[record.protocol].acked[record.decision]:
            self.pool.submit(self._send_decisions, record, names, False)
            return True
        self._send_decisions(record, names, True)
        return self._maybe_end(record)

    def _send_decisions(self, record: TxRecord, names: tuple[str, ...], want_ack: bool) -> None:
        txid, decision = record.txid, record.decision
        for i, name in enumerate(names):
            if i > 0:
                self.crash.reached("mid-phase2")  # some participants know the decision, others do not
            self.costs.sent(txid, name, decision.value)
            msg = f"{txid}/{decision.value}/{name}/{next(self._message_ids)}"  # every re-send its own id
            self.tracer.send(name, msg, decision.value)
            try:
                status, answer = call_json("POST", f"{self.participants[name]}/{decision.value}",
                                           {"txid": txid, "protocol": record.protocol.value, "msg": msg},
                                           self.rpc_timeout)
            except Unreachable as exc:
                if want_ack:
                    self.tracer.timeout(name, "no ack", msg_id=msg)
                    log(f"{txid} {decision.value} -> {name}: no ack ({exc}); will retry")
                continue
            if status != 200:
                log(f"{txid} {decision.value} -> {name}: refused {status} {answer.get('error')}")
                continue
            if want_ack:
                self.costs.received(txid, name, "ack")
                self.tracer.recv(name, f"{msg}/ack", "ack")
                with self._lock:
                    self._acked.setdefault(txid, set()).add(name)

    def _maybe_end(self, record: TxRecord) -> bool:
        with self._lock:
            acked = self._acked.get(record.txid, set())
            done = set(record.participants) <= acked
            if done:
                self._acked.pop(record.txid, None)
        if done:
            self.log.log_end(record.txid)  # lazy: losing it only costs one more round of re-sends
            self.tracer.local("end (lazy)")
        return done

    def _with_acks(self, record: TxRecord) -> TxRecord:
        with self._lock:
            acked = frozenset(self._acked.get(record.txid, ()))
        return dataclasses.replace(record, acked=acked)

    def recover_once(self) -> None:
        """Finish what is unfinished: abort stale undecided (PC) transactions, re-send unacked decisions."""
        now = time.time()
        with self._lock:  # not what a request is still deciding or sending: duplicates would be noise
            busy = self._in_flight | self._sending
        records = [self._with_acks(r) for r in self.log.unfinished() if r.txid not in busy]
        for action in recovery_plan(records, now, self.decision_timeout, self.started_at,
                                    redrive_after=self.retry_interval):
            record = self.log.get(action.txid)
            if isinstance(action, AbortUndecided):
                decision, _ = self.log.log_decision(action.txid, record.protocol, self.log.order(action.txid)
                                                    or {}, record.participants, Decision.ABORT,
                                                    "no decision before the timeout")
                log(f"{action.txid} recovery: undecided -> {decision.value}")
                self.send_phase2(self.log.get(action.txid))
            elif self.send_phase2(record, action.participants):
                log(f"{action.txid} recovery: {action.decision.value} acknowledged by all")

    def decision_for(self, txid: str, protocol: Protocol | None) -> str:
        with self._lock:  # in flight first, then the log: the collector writes before it un-marks
            in_flight = txid in self._in_flight
        return answer_query(self.log.get(txid), in_flight, protocol or self.protocol)

    def describe(self, record: TxRecord) -> dict:
        record = self._with_acks(record)
        if record.ended and record.decision and RULES[record.protocol].acked[record.decision]:
            record = dataclasses.replace(record, acked=frozenset(record.participants))  # the end record
        return {"txid": record.txid, "phase": phase(record).value, "protocol": record.protocol.value,
                "decision": record.decision.value if record.decision else None,
                "outcome": client_outcome(record.decision) if record.decision else None,
                "reason": record.reason, "participants": list(record.participants),
                "acked": sorted(record.acked), "ended": record.ended, "order": self.log.order(record.txid),
                "created_at": record.created_at}


class RecoveryLoop(threading.Thread):
    def __init__(self, coordinator: Coordinator):
        super().__init__(name="recovery", daemon=True)
        self.coordinator = coordinator
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.coordinator.recover_once()
            except Exception as exc:  # keep recovering: one bad round must not end recovery for good
                log(f"recovery round failed: {exc!r}")
            self.stopping.wait(self.coordinator.retry_interval)


class CoordinatorHandler(JsonHandler):
    server: CoordinatorServer

    def handle_get(self, path: str) -> tuple[int, dict]:
        coordinator = self.server.coordinator
        url = urlsplit(path)
        if url.path == "/transactions":
            records = coordinator.log.all()
            return 200, {"transactions": [coordinator.describe(r) for r in records],
                         "summary": dict(summarize(records))}
        match = TX_PATH.match(url.path)
        if match:
            txid = unquote(match.group(1))
            if match.group(2):  # an in-doubt participant asking; it names the variant of its prepare
                query = parse_qs(url.query)
                asked = query.get("protocol", [None])[0]
                protocol = Protocol(asked) if asked in set(Protocol) else None
                msg, peer = query.get("msg", [None])[0], query.get("from", ["participant"])[0]
                if msg:
                    coordinator.tracer.recv(peer, msg, "inquiry")
                decision = coordinator.decision_for(txid, protocol)
                if msg:
                    coordinator.tracer.send(peer, f"{msg}/answer", decision)
                return 200, {"txid": txid, "decision": decision}
            record = coordinator.log.get(txid)
            if record is None:
                raise HttpError(404, f"no transaction {txid} in the log")
            return 200, coordinator.describe(record)
        match = COSTS_PATH.match(url.path)
        if match:
            return 200, {"txid": unquote(match.group(1)), **coordinator.costs.of(unquote(match.group(1)))}
        return super().handle_get(path)

    def handle_post(self, path: str, body: dict) -> tuple[int, dict]:
        if path == "/orders":
            return self.server.coordinator.place_order(body)
        return super().handle_post(path, body)


class CoordinatorServer(JsonServer):
    def __init__(self, address: tuple[str, int], coordinator: Coordinator):
        super().__init__(address, CoordinatorHandler)
        self.coordinator = coordinator


def log(message: str) -> None:
    print(f"[coordinator] {message}", flush=True)


def participant_spec(value: str) -> tuple[str, str]:
    """argparse type: "inventory=http://127.0.0.1:8101" -> ("inventory", "http://127.0.0.1:8101")."""
    name, sep, url = value.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected NAME=URL, e.g. inventory=http://127.0.0.1:8101, "
                                         f"got {value!r}")
    return name, url.rstrip("/")


def parse_participants(values: list[tuple[str, str]]) -> dict[str, str]:
    participants: dict[str, str] = {}
    for name, url in values:
        if name in participants:
            raise cli.UsageError(f"--participant {name!r} given twice")
        participants[name] = url
    return participants


def crash_plan(value: str) -> CrashPlan:
    """argparse type for --crash-at (the same check applies to $TWOPC_CRASH_AT in main)."""
    try:
        return CrashPlan.parse(value, COORDINATOR_POINTS)
    except BadCrashPoint as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m TwoPhaseCommit.coordinator",
                                description="The 2PC coordinator of the food-delivery shop (HTTP+JSON).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=cli.port, default=8100, help="port to listen on (default 8100)")
    parser.add_argument("--log", type=cli.writable_path, default=None,
                        help="SQLite file of the coordinator's durable log "
                             "(default out/TwoPhaseCommit/coordinator.db)")
    parser.add_argument("--protocol", choices=[p.value for p in Protocol], default=Protocol.PA.value,
                        help="basic 2PC, presumed abort (pa, the default) or presumed commit (pc)")
    # checked after parsing rather than `required=True`, so that a misspelt flag is the error reported
    parser.add_argument("--participant", action="append", metavar="NAME=URL", type=participant_spec,
                        help="a participant; repeat for each (at least one)")
    parser.add_argument("--rpc-timeout", type=cli.positive_float, default=2.0,
                        help="timeout of each prepare/commit/abort call (default 2.0 s)")
    parser.add_argument("--retry-interval", type=cli.positive_float, default=0.5,
                        help="seconds between recovery rounds that re-send unacked decisions (default 0.5)")
    parser.add_argument("--decision-timeout", type=cli.positive_float, default=10.0,
                        help="abort when a vote has not arrived after this many seconds (default 10)")
    parser.add_argument("--crash-at", default=None, metavar="POINT[:N]", type=crash_plan,
                        help="SIGKILL this process at a point: " + ", ".join(COORDINATOR_POINTS)
                             + " (also via $TWOPC_CRASH_AT)")
    add_trace_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.participant:
        parser.error("the following argument is required: --participant NAME=URL")
    args.log = args.log or cli.ensure_parent(cli.output_path("TwoPhaseCommit", "coordinator.db"))
    try:
        crash = args.crash_at or CrashPlan.from_cli_or_env(None, COORDINATOR_POINTS)
    except BadCrashPoint as exc:
        raise cli.UsageError(f"${CRASH_ENV}: {exc}") from None
    participants = parse_participants(args.participant)
    try:
        coordinator_log = CoordinatorLog(args.log)
    except sqlite3.Error as exc:
        raise cli.UsageError(f"cannot use --log {args.log}: {exc}") from None
    tracer = open_tracer(args.trace, "coordinator")
    coordinator = Coordinator(coordinator_log, participants, f"http://{args.host}:{args.port}",
                              protocol=Protocol(args.protocol), rpc_timeout=args.rpc_timeout,
                              decision_timeout=args.decision_timeout, retry_interval=args.retry_interval,
                              crash=crash, tracer=tracer)
    server = bind(lambda: CoordinatorServer((args.host, args.port), coordinator), args.host, args.port)
    unfinished = len(coordinator.log.unfinished())
    log(f"listening on http://{args.host}:{args.port} protocol={args.protocol} log={args.log}"
        f" unfinished={unfinished}" + (f" crash-at={crash.point}" if crash.point else ""))
    recovery = RecoveryLoop(coordinator)
    recovery.start()  # its first round runs now: re-drive what the previous run left unfinished
    try:
        serve(server, log, stop_threads=[recovery])
    finally:
        coordinator.pool.shutdown(wait=False, cancel_futures=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
