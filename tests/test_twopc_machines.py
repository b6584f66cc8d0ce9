"""Unit tests of the pure parts (state machines, order rules, crash plans) and of the SQLite store alone."""

from __future__ import annotations

import threading

import pytest

from TwoPhaseCommit.coordinator_machine import (
    RULES,
    AbortUndecided,
    Decision,
    Phase,
    Protocol,
    Redrive,
    TxRecord,
    VoteKind,
    VoteResult,
    answer_query,
    decide,
    decided_early,
    pending_acks,
    phase,
    phase2_targets,
    recovery_plan,
)
from TwoPhaseCommit.crash import ALL_POINTS, COORDINATOR_POINTS, PARTICIPANT_POINTS, BadCrashPoint, CrashPlan
from TwoPhaseCommit.participant_machine import (
    BadOrder,
    Order,
    ProtocolViolation,
    Step,
    TxState,
    cooperative_decision,
    free_courier,
    on_abort,
    on_commit,
    on_decision_answer,
    on_prepare,
    parse_couriers,
    parse_order,
    parse_stock,
    peer_status,
    stock_vote,
)
from TwoPhaseCommit.participant_store import ParticipantStore

P = ("inventory", "delivery")


def yes(name):
    return VoteResult(name, VoteKind.YES, "ok")


# --- participant state machine ---------------------------------------------------------------------

@pytest.mark.parametrize("state, step", [
    (None, Step.RESERVE), (TxState.PREPARED, Step.VOTE_YES_AGAIN),
    (TxState.COMMITTED, Step.VOTE_YES_AGAIN), (TxState.ABORTED, Step.VOTE_NO_AGAIN)])
def test_prepare_transitions(state, step):
    assert on_prepare(state) is step


@pytest.mark.parametrize("state, step", [
    (TxState.PREPARED, Step.APPLY_COMMIT), (TxState.COMMITTED, Step.ACK),
    (TxState.ABORTED, Step.CONFLICT), (None, Step.CONFLICT)])
def test_commit_transitions(state, step):
    assert on_commit(state) is step


@pytest.mark.parametrize("state, step", [
    (TxState.PREPARED, Step.RELEASE), (TxState.ABORTED, Step.ACK),
    (None, Step.TOMBSTONE), (TxState.COMMITTED, Step.CONFLICT)])
def test_abort_transitions(state, step):
    assert on_abort(state) is step


def test_in_doubt_answers():
    assert on_decision_answer(TxState.PREPARED, "commit") is Step.APPLY_COMMIT
    assert on_decision_answer(TxState.PREPARED, "abort") is Step.RELEASE
    assert on_decision_answer(TxState.PREPARED, "pending") is Step.WAIT
    with pytest.raises(ProtocolViolation):
        on_decision_answer(TxState.PREPARED, "maybe")


def test_last_unit_can_be_sold_and_no_more():
    assert stock_vote({"burger": 1}, Order("burger", 1, "x")).yes          # >=, not >
    assert stock_vote({"burger": 3}, Order("burger", 3, "x")).yes
    refused = stock_vote({"burger": 2}, Order("burger", 3, "x"))
    assert not refused.yes and "2 available" in refused.reason
    with pytest.raises(BadOrder, match="unknown item"):
        stock_vote({"burger": 2}, Order("sushi", 1, "x"))


def test_free_courier_in_roster_order():
    assert free_courier(["John", "Jane"], []) == "John"
    assert free_courier(["John", "Jane"], ["John"]) == "Jane"
    assert free_courier(["John", "Jane"], ["Jane", "John"]) is None


@pytest.mark.parametrize("body, message", [
    ({"quantity": 1, "address": "a"}, "missing field"),
    ({"item": "burger", "address": "a"}, "missing field"),
    ({"item": "burger", "quantity": 1}, "missing field"),
    ({"item": "burger", "quantity": 0, "address": "a"}, "at least 1"),
    ({"item": "burger", "quantity": -2, "address": "a"}, "at least 1"),
    ({"item": "burger", "quantity": 1.5, "address": "a"}, "integer"),
    ({"item": "burger", "quantity": "2", "address": "a"}, "integer"),
    ({"item": "burger", "quantity": True, "address": "a"}, "integer"),
    ({"item": "", "quantity": 1, "address": "a"}, "item"),
    ({"item": "burger", "quantity": 1, "address": " "}, "address"),
    ([1, 2], "JSON object"),
])
def test_bad_orders_are_refused_with_a_message(body, message):
    with pytest.raises(BadOrder, match=message):
        parse_order(body)


def test_parse_config():
    assert parse_stock("burger=5, fries=10") == {"burger": 5, "fries": 10}
    assert parse_couriers("John,Jane") == ["John", "Jane"]
    for bad in ("burger", "burger=x", ""):
        with pytest.raises(ValueError):
            parse_stock(bad)
    with pytest.raises(ValueError, match="duplicate"):
        parse_couriers("John,John")


# --- coordinator state machine ---------------------------------------------------------------------

def test_commit_only_if_everyone_votes_yes_or_read_only():
    assert decide(P, [yes("inventory"), yes("delivery")])[0] is Decision.COMMIT
    read_only = VoteResult("delivery", VoteKind.READ_ONLY, "pick-up")
    assert decide(P, [yes("inventory"), read_only])[0] is Decision.COMMIT
    no = VoteResult("delivery", VoteKind.NO, "no courier available")
    assert decide(P, [yes("inventory"), no]) == (Decision.ABORT, "delivery: no courier available")
    # parallel prepare: the refusal explains the abort even when an earlier participant has not voted
    assert decide(P, [no]) == (Decision.ABORT, "delivery: no courier available")
    down = VoteResult("inventory", VoteKind.UNREACHABLE, "timed out")
    assert decide(P, [down])[0] is Decision.ABORT
    assert decide(P, [yes("inventory")])[0] is Decision.ABORT  # a missing vote is not a yes
    assert not decided_early(yes("inventory")) and not decided_early(read_only) and decided_early(no)


# The R* paper's table (Mohan, Lindsay & Obermarck 1986), written out here independently of
# variants.py: for each variant, which records are forced, which decisions are acknowledged, and
# what "no information" means on an inquiry.
PAPER = {
    #                 collecting forced, commit forced, abort forced, commit acked, abort acked, no info
    Protocol.BASIC: (False, True, True, True, True, "abort"),
    Protocol.PA: (False, True, False, True, False, "abort"),
    Protocol.PC: (True, True, True, False, True, "commit"),
}


@pytest.mark.parametrize("protocol", list(Protocol))
def test_each_variant_forces_and_acks_what_the_paper_says(protocol):
    collecting, commit_forced, abort_forced, commit_acked, abort_acked, no_info = PAPER[protocol]
    rules = RULES[protocol]
    assert rules.forces_collecting is collecting
    assert (rules.forces[Decision.COMMIT], rules.forces[Decision.ABORT]) == (commit_forced, abort_forced)
    assert (rules.acked[Decision.COMMIT], rules.acked[Decision.ABORT]) == (commit_acked, abort_acked)
    # a participant forces its decision record exactly when it must acknowledge it
    assert rules.participant_forces(Decision.COMMIT) is commit_acked
    assert rules.participant_forces(Decision.ABORT) is abort_acked
    assert answer_query(None, in_flight=False, protocol=protocol) == no_info


@pytest.mark.parametrize("protocol", list(Protocol))
def test_acks_due_and_phases_per_variant(protocol):
    for decision in Decision:
        record = TxRecord("t", P, 0.0, protocol, decision, acked=frozenset({"inventory"}))
        wants_acks = RULES[protocol].acked[decision]
        assert pending_acks(record) == (["delivery"] if wants_acks else [])
        finished = Phase.COMMITTED if decision is Decision.COMMIT else Phase.ABORTED
        assert (phase(record) is finished) is not wants_acks
        assert phase(TxRecord("t", P, 0.0, protocol, decision, ended=True)) is finished


def test_phase2_skips_read_only_and_no_voters_but_not_missing_votes():
    read_only = VoteResult("delivery", VoteKind.READ_ONLY, "pick-up")
    assert phase2_targets(Decision.COMMIT, P, [yes("inventory"), read_only]) == ("inventory",)
    no = VoteResult("delivery", VoteKind.NO, "no courier")
    assert phase2_targets(Decision.ABORT, P, [yes("inventory"), no]) == ("inventory",)
    # inventory's vote never arrived (the "no" came first): it may have voted yes, so it is told
    assert phase2_targets(Decision.ABORT, P, [no]) == ("inventory",)


def test_phases_and_pending_acks():
    record = TxRecord("t", P, created_at=0.0)
    assert phase(record) is Phase.COLLECTING and pending_acks(record) == []
    committing = TxRecord("t", P, 0.0, Protocol.BASIC, Decision.COMMIT, acked=frozenset({"inventory"}))
    assert phase(committing) is Phase.COMMITTING and pending_acks(committing) == ["delivery"]
    done = TxRecord("t", P, 0.0, Protocol.BASIC, Decision.ABORT, acked=frozenset(P))
    assert phase(done) is Phase.ABORTED and pending_acks(done) == []


def test_inquiry_answers():
    for protocol in Protocol:
        # still collecting votes (in flight): never the presumption, whatever the variant
        assert answer_query(None, in_flight=True, protocol=protocol) == "pending"
        assert answer_query(TxRecord("t", P, 0.0, protocol), False, protocol) == "pending"
        assert answer_query(TxRecord("t", P, 0.0, protocol, Decision.COMMIT), False, protocol) == "commit"
        assert answer_query(TxRecord("t", P, 0.0, protocol, Decision.ABORT), False, protocol) == "abort"


def test_cooperative_termination_rules():
    assert [peer_status(s) for s in (TxState.COMMITTED, TxState.ABORTED, TxState.PREPARED, None)] == [
        "commit", "abort", "uncertain", "unknown"]
    assert cooperative_decision(["abort"]) == "abort"            # the peer voted no (or was told abort)
    assert cooperative_decision(["uncertain", "commit"]) == "commit"
    # everyone uncertain, or knowing nothing (a read-only voter forgets): still blocked
    assert cooperative_decision(["uncertain"]) is None
    assert cooperative_decision(["unknown", "unreachable"]) is None


def test_recovery_plan():
    started = 100.0
    basic = Protocol.BASIC
    old_undecided = TxRecord("old", P, created_at=50.0)                  # left by a previous run
    young_undecided = TxRecord("young", P, created_at=101.0)             # votes still being collected
    expired = TxRecord("expired", P, created_at=101.0)
    unacked = TxRecord("unacked", P, 101.0, basic, Decision.COMMIT, acked=frozenset({"inventory"}),
                       decided_at=101.0)
    fresh = TxRecord("fresh", P, 104.9, basic, Decision.ABORT, decided_at=104.9)  # its request is sending
    finished = TxRecord("done", P, 101.0, basic, Decision.COMMIT, acked=frozenset(P), decided_at=101.0)
    pa_abort = TxRecord("pa-abort", P, 101.0, Protocol.PA, Decision.ABORT, decided_at=101.0)  # never acked
    plan = recovery_plan([old_undecided, young_undecided, unacked, fresh, finished, pa_abort], now=105.0,
                         decision_timeout=10.0, incarnation_started=started, redrive_after=0.5)
    assert plan == [AbortUndecided("old"), Redrive("unacked", Decision.COMMIT, ("delivery",))]
    assert recovery_plan([expired], now=112.0, decision_timeout=10.0,
                         incarnation_started=started) == [AbortUndecided("expired")]


# --- crash plans -----------------------------------------------------------------------------------

def test_crash_plan_parsing():
    assert set(ALL_POINTS) == set(COORDINATOR_POINTS) | set(PARTICIPANT_POINTS) and len(ALL_POINTS) == 7
    plan = CrashPlan.parse("mid-phase2:3", COORDINATOR_POINTS)
    assert (plan.point, plan.occurrence) == ("mid-phase2", 3)
    assert CrashPlan.parse("", COORDINATOR_POINTS).point is None
    with pytest.raises(BadCrashPoint, match="choose one of"):
        CrashPlan.parse("after-prepare-recorded", COORDINATOR_POINTS)
    with pytest.raises(BadCrashPoint, match="positive"):
        CrashPlan.parse("mid-phase2:0", COORDINATOR_POINTS)
    CrashPlan.parse("mid-phase2:2", COORDINATOR_POINTS).reached("mid-phase2")  # 1st of 2: no crash


# --- the SQLite store alone ------------------------------------------------------------------------

@pytest.fixture
def inventory(tmp_path):
    return ParticipantStore(tmp_path / "inv.db", "inventory", stock={"burger": 5, "pizza": 3})


def available(store, item):
    return store.snapshot()["resources"][item]["available"]


def test_abort_restores_exactly_what_was_reserved(inventory):
    assert inventory.prepare("t1", Order("burger", 3, "a")).yes
    assert available(inventory, "burger") == 2
    inventory.abort("t1")
    inventory.abort("t1")  # duplicate: must not give back twice
    assert available(inventory, "burger") == 5


def test_duplicates_and_reordering_in_the_store(inventory):
    assert inventory.prepare("t1", Order("pizza", 2, "a")).yes
    assert inventory.prepare("t1", Order("pizza", 2, "a")).yes  # duplicate prepare: no second reservation
    assert available(inventory, "pizza") == 1
    inventory.commit("t1")
    inventory.commit("t1")
    assert available(inventory, "pizza") == 1
    with pytest.raises(ProtocolViolation):
        inventory.abort("t1")
    inventory.abort("t2")  # abort overtook its prepare
    vote = inventory.prepare("t2", Order("pizza", 1, "a"))
    assert not vote.yes and available(inventory, "pizza") == 1
    with pytest.raises(ProtocolViolation):
        inventory.commit("t2")


def test_state_survives_reopening(tmp_path, inventory):
    inventory.prepare("t1", Order("burger", 2, "a"))
    reopened = ParticipantStore(tmp_path / "inv.db", "inventory", stock={"burger": 99})  # seed ignored
    assert [tx["txid"] for tx in reopened.in_doubt()] == ["t1"]
    assert available(reopened, "burger") == 3


def test_concurrent_prepares_never_oversell(inventory):
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def buy(i: int) -> None:
        try:
            vote = inventory.prepare(f"t{i}", Order("pizza", 1, "a"))
        except BaseException as exc:  # e.g. "database is locked" from a DEFERRED read-then-write upgrade
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(vote.yes)

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], "every concurrent prepare must get a vote, not an error"
    assert len(results) == 16
    assert results.count(True) == 3 and available(inventory, "pizza") == 0


def test_delivery_store_holds_one_order_per_courier(tmp_path):
    delivery = ParticipantStore(tmp_path / "d.db", "delivery", couriers=["John"])
    order = Order("burger", 1, "a")
    assert delivery.prepare("t1", order).yes
    assert not delivery.prepare("t2", order).yes  # John is held by a prepared order
    delivery.commit("t1")
    assert not delivery.prepare("t3", order).yes  # ... and by a committed, undelivered one
    with pytest.raises(ProtocolViolation):
        delivery.deliver("t3")
    delivery.deliver("t1")
    assert delivery.prepare("t4", order).yes


# --- the audit catches broken states ---------------------------------------------------------------

def healthy():
    coordinator = {"t1": {"txid": "t1", "phase": "committed", "decision": "commit"},
                   "t2": {"txid": "t2", "phase": "aborted", "decision": "abort"}}
    inventory = {"kind": "inventory", "resources": {"burger": {"available": 3, "initial": 5}}, "in_doubt": [],
                 "decided": [{"txid": "t1", "state": "committed", "item": "burger", "quantity": 2},
                             {"txid": "t2", "state": "aborted", "item": "burger", "quantity": 1}]}
    delivery = {"kind": "delivery", "resources": {"John": {}, "Jane": {}}, "in_doubt": [],
                "decided": [{"txid": "t1", "state": "committed", "courier": "John", "delivered": False},
                            {"txid": "t2", "state": "aborted", "courier": "Jane", "delivered": False}]}
    return coordinator, {"inventory": inventory, "delivery": delivery}, {"t1": "committed", "t2": "aborted"}


def failed_checks(coordinator, states, answers):
    from TwoPhaseCommit.audit import audit_states
    return [check.name for check in audit_states(coordinator, states, answers).checks if not check.ok]


def test_audit_passes_a_healthy_state():
    assert failed_checks(*healthy()) == []


@pytest.mark.parametrize("breakage, failing", [
    ("lost_stock", "stock + committed = initial"),
    ("split", "participants agree with the coordinator"),
    ("in_doubt", "no in-doubt transaction left"),
    ("unacked", "every transaction decided and acknowledged"),
    ("two_orders", "no courier carries more than one order"),
    ("wrong_answer", "clients' answers hold"),
])
def test_audit_catches_each_violation(breakage, failing):
    coordinator, states, answers = healthy()
    inventory, delivery = states["inventory"], states["delivery"]
    if breakage == "lost_stock":
        inventory["resources"]["burger"]["available"] = 4          # an abort gave back one unit too many
    elif breakage == "split":
        delivery["decided"][0]["state"] = "aborted"                # delivery aborted what was committed
    elif breakage == "in_doubt":
        delivery["in_doubt"].append({"txid": "t3", "state": "prepared", "courier": "Jane"})
    elif breakage == "unacked":
        coordinator["t1"]["phase"] = "committing"
    elif breakage == "two_orders":
        delivery["decided"].append({"txid": "t3", "state": "committed", "courier": "John",
                                    "delivered": False})
        coordinator["t3"] = {"txid": "t3", "phase": "committed", "decision": "commit"}
        inventory["decided"].append({"txid": "t3", "state": "committed", "item": "burger", "quantity": 0})
    elif breakage == "wrong_answer":
        answers["t2"] = "committed"
    assert failing in failed_checks(coordinator, states, answers)


def test_in_doubt_resolver_survives_a_failed_round():
    # Regression: an exception in one round (a locked or failing database) ended the resolver thread
    # for good, so the participant never asked about its in-doubt transactions again.
    import sqlite3

    from TwoPhaseCommit.participant import InDoubtResolver

    class FlakyStore:
        kind = "inventory"

        def __init__(self):
            self.rounds = 0
            self.second_round = threading.Event()

        def in_doubt(self, prepared_before=None):
            self.rounds += 1
            if self.rounds == 1:
                raise sqlite3.OperationalError("database is locked")
            self.second_round.set()
            return []

    store = FlakyStore()
    resolver = InDoubtResolver(store, interval=0.01, in_doubt_after=0.0, timeout=1.0)
    resolver.start()
    try:
        assert store.second_round.wait(timeout=30), "the resolver stopped after one failed round"
    finally:
        resolver.stopping.set()
        resolver.join(timeout=30)


def test_participant_crash_points_sit_on_the_named_side_of_each_durable_point(tmp_path):
    # The crash matrix cannot tell before- from after-prepare-recorded (both end aborted), so look at
    # what another connection (= what survives a SIGKILL) sees at the moment each point is reached.
    import sqlite3

    path = tmp_path / "inv.db"

    class Probe(CrashPlan):
        def __init__(self):
            super().__init__(None)
            self.durable_state_at: dict[str, str | None] = {}

        def reached(self, point: str) -> None:
            with sqlite3.connect(path) as conn:
                row = conn.execute("SELECT state FROM transactions WHERE txid='t1'").fetchone()
            self.durable_state_at[point] = row[0] if row else None

    probe = Probe()
    store = ParticipantStore(path, "inventory", stock={"burger": 5}, crash=probe)
    store.prepare("t1", Order("burger", 2, "a"))
    store.commit("t1")
    assert probe.durable_state_at == {
        "before-prepare-recorded": None, "after-prepare-recorded": "prepared",
        "before-commit-applied": "prepared", "after-commit-applied": "committed"}


def test_a_database_of_the_other_kind_is_refused_with_a_clear_error(tmp_path, inventory):
    # Regression: the clear ValueError was masked by "cannot rollback - no transaction is active".
    with pytest.raises(ValueError, match="belongs to the inventory participant, not delivery"):
        ParticipantStore(tmp_path / "inv.db", "delivery", couriers=["John"])
