"""The 2PC coordinator as an HTTP service: takes orders, runs the two phases, recovers after crashes.

    python -m TwoPhaseCommit.coordinator --port 8100 --log coordinator.db \
        --participant inventory=http://127.0.0.1:8101 --participant delivery=http://127.0.0.1:8102

Endpoints (JSON):
    POST /orders {item, quantity, address}  -> {txid, outcome: "committed"|"aborted", reason}
                                               (400 with a message for a bad order: nothing reserved)
    GET  /transactions                       -> every transaction with its phase and decision
    GET  /transactions/<txid>                -> one transaction
    GET  /transactions/<txid>/decision       -> {decision: "commit"|"abort"|"pending"} for in-doubt
                                               participants ("abort" for a txid never logged)

One order, step by step (the crash points in brackets):
    log begin -> prepare each participant (stop at the first "no") -> [before-decision-logged]
    -> log the decision -> [after-decision-logged] -> send it to each participant, logging each ack
    ([mid-phase2] between two of them) -> answer the client.
A recovery thread, run at start and then every --retry-interval, re-sends every decision that some
participant has not acknowledged, and aborts undecided transactions older than --decision-timeout
(or left by a previous run of this process).
"""

from __future__ import annotations

import argparse
import re
import signal
import sqlite3
import sys
import threading
import time
import uuid
from urllib.parse import unquote

from .coordinator_log import CoordinatorLog
from .coordinator_machine import (
    AbortUndecided,
    Decision,
    TxRecord,
    VoteKind,
    VoteResult,
    answer_query,
    client_outcome,
    decide,
    keep_preparing,
    pending_acks,
    phase,
    recovery_plan,
    summarize,
)
from .crash import COORDINATOR_POINTS, BadCrashPoint, CrashPlan
from .httpjson import HttpError, JsonHandler, JsonServer, Unreachable, call_json
from .participant_machine import BadOrder, parse_order

TX_PATH = re.compile(r"^/transactions/([^/]+)(/decision)?$")


class Coordinator:
    """The protocol driver: the pure state machine's decisions, applied with real I/O and a real log."""

    def __init__(self, log: CoordinatorLog, participants: dict[str, str], self_url: str,
                 rpc_timeout: float = 2.0, decision_timeout: float = 10.0, retry_interval: float = 0.5,
                 crash: CrashPlan | None = None):
        self.log = log
        self.participants = participants  # name -> base URL, in prepare order
        self.self_url = self_url
        self.rpc_timeout = rpc_timeout
        self.decision_timeout = decision_timeout
        self.retry_interval = retry_interval
        self.crash = crash or CrashPlan.none()
        self.started_at = time.time()

    # --- one order ----------------------------------------------------------------------------------

    def place_order(self, body: dict) -> tuple[int, dict]:
        try:
            order = parse_order(body)  # shape errors: 400 before anything is logged or reserved
        except BadOrder as exc:
            raise HttpError(400, str(exc)) from None
        txid = uuid.uuid4().hex[:12]
        names = tuple(self.participants)
        self.log.begin(txid, order.to_json(), names)
        votes = self._collect_votes(txid, order.to_json(), names)
        self.crash.reached("before-decision-logged")
        # durable before any phase-2 message; if the timeout sweeper decided first, its decision holds
        decision, reason = self.log.log_decision(txid, *decide(names, votes))
        log(f"{txid} decided {decision.value} (logged): {reason}")
        self.crash.reached("after-decision-logged")
        self.send_phase2(txid, decision, names)
        rejected = [vote for vote in votes if vote.kind is VoteKind.REJECTED]
        if rejected:  # the order itself was invalid (unknown item): a client error, nothing reserved
            raise HttpError(400, rejected[0].reason)
        return 200, {"txid": txid, "outcome": client_outcome(decision), "reason": reason}

    def _collect_votes(self, txid: str, order: dict, names: tuple[str, ...]) -> list[VoteResult]:
        votes = []
        for name in names:
            vote = self._prepare(name, txid, order)
            log(f"{txid} {name} votes {vote.kind.value}: {vote.reason}")
            votes.append(vote)
            if not keep_preparing(vote):
                break  # one "no" decides abort: do not make the others reserve for nothing
        return votes

    def _prepare(self, name: str, txid: str, order: dict) -> VoteResult:
        body = {"txid": txid, "order": order, "coordinator": self.self_url}
        try:
            status, answer = call_json("POST", f"{self.participants[name]}/prepare", body, self.rpc_timeout)
        except Unreachable as exc:
            return VoteResult(name, VoteKind.UNREACHABLE, f"no answer to prepare ({exc})")
        if status == 400:
            return VoteResult(name, VoteKind.REJECTED, answer.get("error", "bad order"))
        if status == 200 and answer.get("vote") == "yes":
            return VoteResult(name, VoteKind.YES, answer.get("reason", ""))
        if status == 200 and answer.get("vote") == "no":
            return VoteResult(name, VoteKind.NO, answer.get("reason", ""))
        return VoteResult(name, VoteKind.NO, f"unexpected answer {status}: {answer}")

    # --- phase 2 and recovery -----------------------------------------------------------------------

    def send_phase2(self, txid: str, decision: Decision, names: tuple[str, ...]) -> bool:
        """Send the decision once to each named participant; True if all acknowledged."""
        all_acked = True
        for i, name in enumerate(names):
            try:
                status, answer = call_json("POST", f"{self.participants[name]}/{decision.value}",
                                           {"txid": txid}, self.rpc_timeout)
            except Unreachable as exc:
                log(f"{txid} {decision.value} -> {name}: no ack ({exc}); will retry")
                all_acked = False
                continue
            if status != 200:
                log(f"{txid} {decision.value} -> {name}: refused {status} {answer.get('error')}; will retry")
                all_acked = False
                continue
            self.log.record_ack(txid, name)
            if i < len(names) - 1:
                self.crash.reached("mid-phase2")  # some participants know the decision, others do not
        return all_acked

    def recover_once(self) -> None:
        """Finish what is unfinished: abort expired undecided transactions, re-drive unacked decisions."""
        now = time.time()
        for action in recovery_plan(self.log.unfinished(), now, self.decision_timeout, self.started_at,
                                    redrive_after=self.retry_interval):
            if isinstance(action, AbortUndecided):
                decision, _ = self.log.log_decision(action.txid, Decision.ABORT,
                                                    "no decision before the timeout")
                record = self.log.get(action.txid)
                log(f"{action.txid} recovery: undecided -> {decision.value}")
                self.send_phase2(action.txid, decision, tuple(pending_acks(record)))
            else:
                if self.send_phase2(action.txid, action.decision, action.participants):
                    log(f"{action.txid} recovery: {action.decision.value} acknowledged by all")

    def describe(self, record: TxRecord) -> dict:
        return {"txid": record.txid, "phase": phase(record).value,
                "decision": record.decision.value if record.decision else None,
                "outcome": client_outcome(record.decision) if record.decision else None,
                "reason": record.reason, "participants": list(record.participants),
                "acked": sorted(record.acked), "order": self.log.order(record.txid),
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
        if path == "/transactions":
            records = coordinator.log.all()
            return 200, {"transactions": [coordinator.describe(r) for r in records],
                         "summary": dict(summarize(records))}
        match = TX_PATH.match(path)
        if match:
            txid = unquote(match.group(1))
            record = coordinator.log.get(txid)
            if match.group(2):  # an in-doubt participant asking
                return 200, {"txid": txid, "decision": answer_query(record)}
            if record is None:
                raise HttpError(404, f"no transaction {txid} (never logged, so never committed)")
            return 200, coordinator.describe(record)
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


def parse_participants(values: list[str]) -> dict[str, str]:
    participants: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name or not url.startswith("http"):
            raise ValueError(f"bad --participant {value!r}; write NAME=URL, e.g. inventory=http://127.0.0.1:8101")
        if name in participants:
            raise ValueError(f"participant {name!r} given twice")
        participants[name] = url.rstrip("/")
    return participants


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m TwoPhaseCommit.coordinator",
                                     description="The 2PC coordinator of the food-delivery shop (HTTP+JSON).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8100, help="port to listen on (default 8100)")
    parser.add_argument("--log", required=True, help="SQLite file of the coordinator's durable log")
    parser.add_argument("--participant", action="append", required=True, metavar="NAME=URL",
                        help="a participant, in prepare order; repeat for each")
    parser.add_argument("--rpc-timeout", type=float, default=2.0,
                        help="timeout of each prepare/commit/abort call (default 2.0 s)")
    parser.add_argument("--retry-interval", type=float, default=0.5,
                        help="seconds between recovery rounds that re-send unacked decisions (default 0.5)")
    parser.add_argument("--decision-timeout", type=float, default=10.0,
                        help="abort a transaction still undecided after this many seconds (default 10)")
    parser.add_argument("--crash-at", default=None, metavar="POINT[:N]",
                        help="SIGKILL this process at a point: " + ", ".join(COORDINATOR_POINTS)
                             + " (also via $TWOPC_CRASH_AT)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        crash = CrashPlan.from_cli_or_env(args.crash_at, COORDINATOR_POINTS)
        participants = parse_participants(args.participant)
        coordinator = Coordinator(CoordinatorLog(args.log), participants, f"http://{args.host}:{args.port}",
                                  rpc_timeout=args.rpc_timeout, decision_timeout=args.decision_timeout,
                                  retry_interval=args.retry_interval, crash=crash)
        server = CoordinatorServer((args.host, args.port), coordinator)
    except (BadCrashPoint, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"error: cannot use --log {args.log}: {exc}", file=sys.stderr)
        return 2
    except (OSError, OverflowError) as exc:  # port in use, or outside 0-65535
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    unfinished = len(coordinator.log.unfinished())
    log(f"listening on http://{args.host}:{args.port} log={args.log} unfinished={unfinished}"
        + (f" crash-at={crash.point}" if crash.point else ""))
    recovery = RecoveryLoop(coordinator)
    recovery.start()  # its first round runs now: re-drive what the previous run left unfinished
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        log("stopping")
    finally:
        recovery.stopping.set()
        server.server_close()
    return 0


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
