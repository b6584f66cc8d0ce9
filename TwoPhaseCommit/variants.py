"""The three variants of 2PC, as data: which log writes are forced and which messages are acknowledged.

From Mohan, Lindsay & Obermarck, "Transaction Management in the R* Distributed Database Management
System" (ACM TODS 11(4), 1986). Both state machines ask `RULES[protocol]` instead of branching on the
variant's name, so the three variants are one code path:

    variant  coordinator:                                  participant (a yes voter):     no information
             collecting  commit  abort   acks wanted for     prepare  commit  abort         means
    basic    -           forced  forced  commit, abort       forced   forced  forced        abort
    pa       -           forced  lazy    commit              forced   forced  lazy          abort
    pc       forced      forced  forced  abort               forced   lazy    forced        commit

A participant forces its decision record exactly when it must acknowledge it (an ack promises the
decision is applied durably, so the coordinator may forget it); a decision nobody acknowledges can be
written lazily, because if it is lost the participant asks again and the presumption - or the
coordinator's record - answers the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Protocol(StrEnum):
    BASIC = "basic"
    PA = "pa"   # presumed abort
    PC = "pc"   # presumed commit


class Decision(StrEnum):
    COMMIT = "commit"
    ABORT = "abort"


@dataclass(frozen=True)
class Rules:
    """What one variant forces and acknowledges (see the module docstring's table)."""
    forces_collecting: bool            # the participant list is forced before the first prepare
    forces: Mapping[Decision, bool]    # is the decision record forced (else written lazily)?
    acked: Mapping[Decision, bool]     # must participants acknowledge the decision?
    presumption: Decision              # the answer to an inquiry about a transaction with no record

    def needs_end_record(self, decision: Decision) -> bool:
        """An end record (lazy) says "every ack is in: forget this transaction". Only if acks are due."""
        return self.acked[decision]

    def participant_forces(self, decision: Decision) -> bool:
        """A participant forces its commit/abort record iff it must acknowledge it."""
        return self.acked[decision]

    def participant_forces_no_vote(self) -> bool:
        """A "no" voter has aborted on its own: its record is forced like any abort record of the variant."""
        return self.participant_forces(Decision.ABORT)


RULES: dict[Protocol, Rules] = {
    Protocol.BASIC: Rules(False, {Decision.COMMIT: True, Decision.ABORT: True},
                          {Decision.COMMIT: True, Decision.ABORT: True}, Decision.ABORT),
    Protocol.PA: Rules(False, {Decision.COMMIT: True, Decision.ABORT: False},
                       {Decision.COMMIT: True, Decision.ABORT: False}, Decision.ABORT),
    Protocol.PC: Rules(True, {Decision.COMMIT: True, Decision.ABORT: True},
                       {Decision.COMMIT: False, Decision.ABORT: True}, Decision.COMMIT),
}
