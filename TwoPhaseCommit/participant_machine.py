"""The participant's side of 2PC as a pure state machine: no sockets, no SQLite, no clock.

A participant's transaction goes through at most these states:

    (unknown) --prepare, resources free--> PREPARED --commit--> COMMITTED
        |                                      |
        +--prepare refused / abort------> ABORTED <--abort--+

The rules that make duplicated and reordered messages harmless:
- prepare is answered from the recorded state when the transaction is known (same vote again);
- commit of a COMMITTED transaction and abort of an ABORTED one are acknowledged and change nothing;
- abort of an unknown transaction records an ABORTED tombstone, so a prepare that arrives late (the
  coordinator already gave up on it) votes "no" instead of reserving resources nobody will release;
- commit of an ABORTED (or unknown) transaction, or abort of a COMMITTED one, is a protocol violation
  and is refused loudly: a correct coordinator never sends it.

Once the participant has voted yes it may not decide alone: only the decision moves a PREPARED
transaction. Usually the coordinator tells it; when the coordinator is unreachable, *cooperative
termination* lets it ask the other participants (`peer_status`, `cooperative_decision`): one that voted
no, or already knows the decision, settles it. If every other participant is in doubt too, nobody but
the coordinator knows - that is the blocking problem of 2PC, and it is the point of the `PREPARED` state.

A participant with nothing to change for a transaction (a pick-up order needs no courier) votes
*read-only*: it records nothing and takes no part in phase 2.

The resource rules are here too: stock is reserved only if `available >= quantity` (so the last unit
can be sold), and a courier is free if they hold no prepared or undelivered committed order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class TxState(StrEnum):
    PREPARED = "prepared"
    COMMITTED = "committed"
    ABORTED = "aborted"


class Step(StrEnum):
    """What the I/O layer must do in answer to a message."""
    RESERVE = "reserve"            # new transaction: try to reserve, then vote
    VOTE_YES_AGAIN = "vote-yes"    # duplicate prepare: we already voted yes
    VOTE_NO_AGAIN = "vote-no"      # prepare of a transaction we refused or already aborted
    APPLY_COMMIT = "apply-commit"  # PREPARED -> COMMITTED (the reservation becomes final)
    RELEASE = "release"            # PREPARED -> ABORTED (give back exactly what was reserved)
    TOMBSTONE = "tombstone"        # unknown -> ABORTED (so a late prepare votes no)
    ACK = "ack"                    # duplicate decision: already applied, acknowledge again
    WAIT = "wait"                  # in doubt and the coordinator has not decided: keep waiting
    CONFLICT = "conflict"          # protocol violation: refuse


class ProtocolViolation(Exception):
    """A decision contradicts what this participant recorded (e.g. commit after abort)."""


class BadOrder(ValueError):
    """The order is malformed (missing field, wrong type, quantity <= 0, unknown item)."""


def on_prepare(state: TxState | None) -> Step:
    if state is None:
        return Step.RESERVE
    if state is TxState.ABORTED:
        return Step.VOTE_NO_AGAIN
    return Step.VOTE_YES_AGAIN  # PREPARED or COMMITTED: our vote was yes and still is


def on_commit(state: TxState | None) -> Step:
    if state is TxState.PREPARED:
        return Step.APPLY_COMMIT
    if state is TxState.COMMITTED:
        return Step.ACK
    return Step.CONFLICT  # commit of something we never prepared, or aborted: never valid


def on_abort(state: TxState | None) -> Step:
    if state is None:
        return Step.TOMBSTONE
    if state is TxState.PREPARED:
        return Step.RELEASE
    if state is TxState.ABORTED:
        return Step.ACK
    return Step.CONFLICT  # abort after commit: never valid


def peer_status(state: TxState | None) -> str:
    """What this participant tells an in-doubt peer about a transaction (cooperative termination).

    "unknown" teaches the peer nothing: it may mean "never prepared" - but also "voted read-only and
    forgot", so it must not be read as "abort" (the textbook lets an un-voted participant abort on the
    spot; a read-only voter cannot, because the transaction may have committed without it).
    """
    if state is TxState.COMMITTED:
        return "commit"
    if state is TxState.ABORTED:
        return "abort"  # it voted no, or was told abort: either way the decision can only be abort
    if state is TxState.PREPARED:
        return "uncertain"
    return "unknown"


def cooperative_decision(peer_answers: Iterable[str]) -> str | None:
    """The decision an in-doubt participant may take from its peers' answers, or None: still blocked."""
    answers = set(peer_answers)
    if "commit" in answers:
        return "commit"
    if "abort" in answers:
        return "abort"
    return None  # everyone reachable is uncertain (or knows nothing): only the coordinator knows


def on_decision_answer(state: TxState | None, answer: str) -> Step:
    """An in-doubt participant asked the coordinator and got "commit", "abort" or "pending"."""
    if answer == "commit":
        return on_commit(state)
    if answer == "abort":
        return on_abort(state)
    if answer == "pending":
        return Step.WAIT
    raise ProtocolViolation(f"the coordinator answered {answer!r}; expected commit, abort or pending")


# --- orders and resources ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Order:
    item: str
    quantity: int
    address: str
    pickup: bool = False  # the customer collects it: no courier, so delivery votes read-only

    def to_json(self) -> dict:
        body = {"item": self.item, "quantity": self.quantity, "address": self.address}
        return {**body, "pickup": True} if self.pickup else body


def parse_order(value: object) -> Order:
    """Validate an order's shape. Raises BadOrder with a message saying what to send instead."""
    if not isinstance(value, Mapping):
        raise BadOrder('the order must be a JSON object {"item": str, "quantity": int, "address": str}')
    missing = [name for name in ("item", "quantity", "address") if name not in value]
    if missing:
        raise BadOrder(f"missing field(s): {', '.join(missing)}")
    item, quantity, address = value["item"], value["quantity"], value["address"]
    if not isinstance(item, str) or not item.strip():
        raise BadOrder("item must be a non-empty string, e.g. \"burger\"")
    # bool is a subclass of int in Python; `true` is not a quantity
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        raise BadOrder(f"quantity must be an integer, got {quantity!r}")
    if quantity <= 0:
        raise BadOrder(f"quantity must be at least 1, got {quantity}")
    if not isinstance(address, str) or not address.strip():
        raise BadOrder("address must be a non-empty string")
    pickup = value.get("pickup", False)
    if not isinstance(pickup, bool):
        raise BadOrder(f"pickup must be true or false, got {pickup!r}")
    return Order(item.strip(), quantity, address.strip(), pickup)


@dataclass(frozen=True)
class Vote:
    yes: bool
    reason: str
    read_only: bool = False  # yes, and nothing to change here: no phase 2 for this participant

    @property
    def kind(self) -> str:
        return "read-only" if self.read_only else ("yes" if self.yes else "no")


def stock_vote(available: Mapping[str, int], order: Order) -> Vote:
    """Can `order` be reserved from `available`? Raises BadOrder for an item we do not sell."""
    if order.item not in available:
        raise BadOrder(f"unknown item {order.item!r}; we sell: {', '.join(sorted(available))}")
    left = available[order.item]
    # `>=`, not `>`: ordering exactly the units that are left must succeed (the last burger sells)
    if left >= order.quantity:
        return Vote(True, f"reserved {order.quantity} {order.item} ({left - order.quantity} left)")
    return Vote(False, f"not enough {order.item}: {order.quantity} wanted, {left} available")


def free_courier(couriers: Iterable[str], busy: Iterable[str]) -> str | None:
    """The first courier (in roster order) who carries nothing, or None."""
    taken = set(busy)
    return next((name for name in couriers if name not in taken), None)


def parse_stock(spec: str) -> dict[str, int]:
    """"burger=5,fries=10" -> {"burger": 5, "fries": 10}. Raises ValueError with the bad part."""
    stock: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, count = part.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise ValueError(f"bad stock entry {part!r}; write item=count, e.g. burger=5")
        stock[name.strip()] = int(count)
    if not stock:
        raise ValueError("the stock is empty; write e.g. burger=5,fries=10")
    return stock


def parse_couriers(spec: str) -> list[str]:
    """"John,Jane" -> ["John", "Jane"] (order kept; duplicates refused)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise ValueError("no couriers; write e.g. John,Jane")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate courier names in {spec!r}")
    return names
