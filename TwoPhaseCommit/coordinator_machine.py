"""The coordinator's side of 2PC as a pure state machine: no sockets, no SQLite, no clock.

    PREPARING --all voted yes--> COMMITTING --every participant acked--> COMMITTED
        |                                                                  (done)
        +--a "no", a refusal, a timeout, or the decision timeout--> ABORTING --all acked--> ABORTED

The decision is the one fact that must never be lost or changed: it is logged durably *before* any
phase-2 message leaves (if we sent "commit" first and crashed, a restarted coordinator could decide
"abort" and split the transaction). It is set at most once: the first of the vote collector and the
timeout sweeper to log a decision wins, the other reads it.

This is the basic protocol: both decisions are forced to the log and both must be acknowledged before
the coordinator forgets a transaction. It is *not* presumed abort (which would skip forcing and acking
aborts): the one presumption here is the one every variant makes - an undecided transaction can only be
aborted, so a participant asking about a txid the coordinator never logged (it crashed before logging
anything) is told "abort".

Phase 2 is retried until every participant has acknowledged; the I/O layer asks `pending_acks` what
is left to send, both right after deciding and after a restart (recovery re-drives decisions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Decision(StrEnum):
    COMMIT = "commit"
    ABORT = "abort"


class Phase(StrEnum):
    PREPARING = "preparing"      # votes being collected; no decision yet
    COMMITTING = "committing"    # decision commit logged; some participant has not acked yet
    ABORTING = "aborting"        # decision abort logged; some participant has not acked yet
    COMMITTED = "committed"      # commit logged and acked by everyone: finished
    ABORTED = "aborted"          # abort logged and acked by everyone it was sent to: finished


class VoteKind(StrEnum):
    YES = "yes"
    NO = "no"                    # the participant refused (no stock, no courier)
    UNREACHABLE = "unreachable"  # refused connection or no answer within the timeout
    REJECTED = "rejected"        # the participant said the order itself is invalid (HTTP 400)


@dataclass(frozen=True)
class VoteResult:
    participant: str
    kind: VoteKind
    reason: str


@dataclass(frozen=True)
class TxRecord:
    """What the coordinator's log holds about one transaction."""
    txid: str
    participants: tuple[str, ...]  # the participants phase 2 must reach (those sent a prepare)
    created_at: float
    decision: Decision | None = None
    reason: str = ""
    acked: frozenset[str] = field(default_factory=frozenset)
    decided_at: float | None = None


def phase(record: TxRecord) -> Phase:
    if record.decision is None:
        return Phase.PREPARING
    done = not pending_acks(record)
    if record.decision is Decision.COMMIT:
        return Phase.COMMITTED if done else Phase.COMMITTING
    return Phase.ABORTED if done else Phase.ABORTING


def decide(participants: Sequence[str], votes: Iterable[VoteResult]) -> tuple[Decision, str]:
    """Commit only if every participant voted yes; otherwise abort, saying why."""
    by_participant = {vote.participant: vote for vote in votes}
    for name in participants:
        vote = by_participant.get(name)
        if vote is None:
            return Decision.ABORT, f"{name}: no vote"
        if vote.kind is not VoteKind.YES:
            return Decision.ABORT, f"{name}: {vote.reason}"
    return Decision.COMMIT, "all participants voted yes"


def keep_preparing(vote: VoteResult) -> bool:
    """After this vote, is it worth asking the next participant? One "no" already decides abort."""
    return vote.kind is VoteKind.YES


def pending_acks(record: TxRecord) -> list[str]:
    """The participants that still need the phase-2 message (empty before a decision)."""
    if record.decision is None:
        return []
    return [name for name in record.participants if name not in record.acked]


def answer_query(record: TxRecord | None) -> str:
    """What to tell an in-doubt participant: "commit", "abort" or "pending" (still collecting votes)."""
    if record is None:
        return Decision.ABORT.value  # nothing logged: no commit was ever possible
    if record.decision is None:
        return "pending"
    return record.decision.value


def should_abort_undecided(record: TxRecord, now: float, decision_timeout: float,
                           incarnation_started: float) -> bool:
    """Abort an undecided transaction that a previous run of the coordinator left behind (its vote
    collector died with it, so nobody else will ever decide it) or that has waited too long."""
    if record.decision is not None:
        return False
    return record.created_at < incarnation_started or now - record.created_at >= decision_timeout


@dataclass(frozen=True)
class Redrive:
    txid: str
    decision: Decision
    participants: tuple[str, ...]


@dataclass(frozen=True)
class AbortUndecided:
    txid: str


def recovery_plan(records: Iterable[TxRecord], now: float, decision_timeout: float,
                  incarnation_started: float, redrive_after: float = 0.0) -> list[Redrive | AbortUndecided]:
    """What the recovery loop must do: finish unacknowledged decisions, abort expired undecided ones.

    `redrive_after` leaves a decision alone for that many seconds after it was logged, so the request
    that made it can send phase 2 itself first (duplicates would be harmless, only noisy).
    """
    actions: list[Redrive | AbortUndecided] = []
    for record in records:
        if record.decision is None:
            if should_abort_undecided(record, now, decision_timeout, incarnation_started):
                actions.append(AbortUndecided(record.txid))
        elif pending_acks(record) and (
                record.decided_at is None or record.decided_at < incarnation_started
                or now - record.decided_at >= redrive_after):
            actions.append(Redrive(record.txid, record.decision, tuple(pending_acks(record))))
    return actions


def client_outcome(decision: Decision) -> str:
    return "committed" if decision is Decision.COMMIT else "aborted"


def summarize(records: Iterable[TxRecord]) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[phase(record).value] = counts.get(phase(record).value, 0) + 1
    return counts
