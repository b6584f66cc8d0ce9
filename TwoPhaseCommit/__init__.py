"""Two-phase commit between real processes: a coordinator, an inventory and a delivery participant.

Three variants (basic, presumed abort, presumed commit: variants), pure state machines
(coordinator_machine, participant_machine), counted writes and messages (costs), durable SQLite state
(coordinator_log, participant_store), a thin HTTP+JSON layer (httpjson, coordinator, participant),
fault injection (crash), the invariant audit (audit) and a process launcher (cluster). See README.md.
"""

from .audit import AuditReport, Check, audit, audit_states, settle
from .coordinator_log import CoordinatorLog
from .coordinator_machine import Decision, Phase, TxRecord, VoteKind, VoteResult, decide
from .costs import Costs
from .crash import ALL_POINTS, COORDINATOR_POINTS, CRASH_ENV, PARTICIPANT_POINTS, BadCrashPoint, CrashPlan
from .participant_machine import BadOrder, Order, ProtocolViolation, TxState, Vote, parse_order
from .participant_store import ParticipantStore
from .variants import RULES, Protocol, Rules

__all__ = [
    "ALL_POINTS", "COORDINATOR_POINTS", "CRASH_ENV", "PARTICIPANT_POINTS", "RULES", "AuditReport",
    "BadCrashPoint", "BadOrder", "Check", "CoordinatorLog", "Costs", "CrashPlan", "Decision", "Order",
    "ParticipantStore", "Phase", "Protocol", "ProtocolViolation", "Rules", "TxRecord", "TxState", "Vote",
    "VoteKind", "VoteResult", "audit", "audit_states", "decide", "parse_order", "settle",
]
