"""The coordinator's side of 2PC as a pure state machine: no sockets, no SQLite, no clock.

    collecting --every vote in, all yes/read-only--> COMMITTING --acks (if wanted)--> COMMITTED
        |
        +--a "no", a refusal, a timeout, or no vote in time--> ABORTING --acks (if wanted)--> ABORTED

Three variants of the protocol (variants.py has the table): basic 2PC, presumed abort and presumed
commit, from Mohan, Lindsay & Obermarck's R* paper (1986). They differ only in *which log writes are
forced* and *which messages are acknowledged*; the code asks `RULES[protocol]` instead of branching.

- basic: both decisions are forced and acknowledged; the coordinator writes a lazy "end" record once
  every ack is in, and until then re-sends the decision.
- presumed abort (PA): a transaction the coordinator knows nothing about is aborted, so an abort need
  not be forced, sent reliably or acknowledged - a participant that missed it will ask and be told
  "abort" by the presumption. Commits cost what they cost in basic 2PC.
- presumed commit (PC): "no information" means commit, so commits need no acks (nor an end record).
  For that to be safe the coordinator must never forget a transaction that could still abort, so it
  forces a "collecting" record naming the participants *before* any prepare; aborts are forced and acked.

The decision is the one fact that must never be lost or changed: it is written before any phase-2
message leaves, and it is set at most once.

Read-only participants (R*'s read-only vote): a participant with nothing to change votes read-only and
leaves the protocol - no phase 2 for it, and it writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .variants import RULES, Decision, Protocol


class Phase(StrEnum):
    COLLECTING = "collecting"    # votes being collected; no decision yet
    COMMITTING = "committing"    # decision commit written; some acknowledgement still due
    ABORTING = "aborting"        # decision abort written; some acknowledgement still due
    COMMITTED = "committed"      # finished: every ack the variant needs is in (or none is needed)
    ABORTED = "aborted"


class VoteKind(StrEnum):
    YES = "yes"
    READ_ONLY = "read-only"      # nothing to change here: no phase 2 for this participant
    NO = "no"                    # the participant refused (no stock, no courier)
    UNREACHABLE = "unreachable"  # refused connection, no answer within the timeout, or no vote in time
    REJECTED = "rejected"        # the participant said the order itself is invalid (HTTP 400)


@dataclass(frozen=True)
class VoteResult:
    participant: str
    kind: VoteKind
    reason: str


@dataclass(frozen=True)
class TxRecord:
    """What the coordinator knows about one transaction (its log row plus the acks seen in memory)."""
    txid: str
    participants: tuple[str, ...]  # who phase 2 must reach (PC's collecting record: everyone asked)
    created_at: float
    protocol: Protocol = Protocol.BASIC
    decision: Decision | None = None
    reason: str = ""
    acked: frozenset[str] = field(default_factory=frozenset)
    ended: bool = False            # the end record is written: every ack is in
    decided_at: float | None = None


def phase(record: TxRecord) -> Phase:
    if record.decision is None:
        return Phase.COLLECTING
    done = not pending_acks(record)
    if record.decision is Decision.COMMIT:
        return Phase.COMMITTED if done else Phase.COMMITTING
    return Phase.ABORTED if done else Phase.ABORTING


def decide(participants: Sequence[str], votes: Iterable[VoteResult]) -> tuple[Decision, str]:
    """Commit only if every participant voted yes or read-only; otherwise abort, saying why."""
    by_participant = {vote.participant: vote for vote in votes}
    for name in participants:  # an explicit refusal explains the abort better than a missing vote
        vote = by_participant.get(name)
        if vote is not None and vote.kind not in (VoteKind.YES, VoteKind.READ_ONLY):
            return Decision.ABORT, f"{name}: {vote.reason}"
    for name in participants:
        if name not in by_participant:
            return Decision.ABORT, f"{name}: no vote"
    return Decision.COMMIT, "all participants voted yes" + (
        "" if all(v.kind is VoteKind.YES for v in by_participant.values()) else " or read-only")


def decided_early(vote: VoteResult) -> bool:
    """Does this vote alone decide the outcome? Any vote but yes/read-only means abort: stop waiting."""
    return vote.kind not in (VoteKind.YES, VoteKind.READ_ONLY)


def phase2_targets(decision: Decision, asked: Sequence[str], votes: Iterable[VoteResult]) -> tuple[str, ...]:
    """Who must be told the decision: everyone asked, except read-only voters (they left the protocol)
    and, for an abort, those who voted no (they aborted on their own). A participant whose vote never
    arrived is told: it may have voted yes."""
    by_participant = {vote.participant: vote for vote in votes}
    skip = {VoteKind.READ_ONLY} | ({VoteKind.NO, VoteKind.REJECTED} if decision is Decision.ABORT else set())
    return tuple(name for name in asked
                 if name not in by_participant or by_participant[name].kind not in skip)


def pending_acks(record: TxRecord) -> list[str]:
    """The participants whose acknowledgement is still due (empty before a decision, once the end
    record is written, and always for a decision the variant does not acknowledge)."""
    if record.decision is None or record.ended or not RULES[record.protocol].acked[record.decision]:
        return []
    return [name for name in record.participants if name not in record.acked]


def answer_query(record: TxRecord | None, in_flight: bool, protocol: Protocol) -> str:
    """What to tell an in-doubt participant: "commit", "abort" or "pending" (still collecting votes).

    `in_flight` must be read *before* the log (see Coordinator.decision_for): the collector writes the
    decision before it stops being in flight, so one of the two reads always sees it.
    """
    if in_flight:
        return "pending"
    if record is None:
        return RULES[protocol].presumption.value  # the presumption that names the variant
    if record.decision is None:
        return "pending"  # PC's collecting record of a live transaction (recovery aborts stale ones)
    return record.decision.value


def should_abort_undecided(record: TxRecord, now: float, decision_timeout: float,
                           incarnation_started: float) -> bool:
    """Abort an undecided (PC collecting) transaction that a previous run of the coordinator left behind
    (its vote collector died with it, so nobody else will ever decide it) or that has waited too long."""
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
    """What the recovery loop must do: re-send decisions whose acks are due, abort stale undecided ones.

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
