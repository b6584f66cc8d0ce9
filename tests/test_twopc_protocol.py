"""2PC over real processes: last units under concurrency, duplicated and reordered phase-2 messages,
participants that are down or stalled during prepare, an unknown txid answered "abort", and bad input."""

from __future__ import annotations

import json
import signal
import threading
import urllib.request

import pytest

from tests.twopc_helpers import (
    available,
    make_cluster,
    post_order,
    settle_and_audit,
    state,
    transactions,
    tx_state,
    wait_until,
)
from TwoPhaseCommit.httpjson import call_json


def test_concurrent_orders_for_the_last_units(spawn, tmp_path):
    couriers = ",".join(f"c{i}" for i in range(20))
    cluster = make_cluster(spawn, tmp_path, stock="pizza=3,burger=5", couriers=couriers)
    cluster.start_all()
    answers: dict[str, str] = {}
    lock = threading.Lock()
    start = threading.Barrier(12)

    def buy() -> None:
        start.wait()
        status, answer = post_order(cluster, "pizza", 1)
        assert status == 200
        with lock:
            answers[answer["txid"]] = answer["outcome"]

    threads = [threading.Thread(target=buy) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 12, "every order must get an answer (an assert in a thread fails silently)"
    assert list(answers.values()).count("committed") == 3  # exactly the stock, the last unit included
    assert available(cluster, "pizza") == 0
    settle_and_audit(cluster, answers)


def test_ordering_exactly_what_is_left_succeeds(spawn, tmp_path):
    cluster = make_cluster(spawn, tmp_path)
    cluster.start_all()
    assert post_order(cluster, "pizza", 3)[1]["outcome"] == "committed"  # all 3: `>=`, not `>`
    assert post_order(cluster, "burger", 6)[1]["outcome"] == "aborted"
    assert available(cluster, "pizza") == 0 and available(cluster, "burger") == 5
    settle_and_audit(cluster)


def test_duplicate_and_reordered_phase2_messages(spawn, tmp_path, free_port):
    inventory = spawn("TwoPhaseCommit.participant", "--kind", "inventory", "--port", free_port,
                      "--db", tmp_path / "inv.db", "--stock", "burger=5", port=free_port)
    url = f"http://127.0.0.1:{free_port}"

    def send(endpoint, txid, quantity=2):
        body = {"txid": txid, "order": {"item": "burger", "quantity": quantity, "address": "a"}}
        return call_json("POST", f"{url}/{endpoint}", body, timeout=10)

    def burgers():
        return call_json("GET", f"{url}/state", timeout=10)[1]["resources"]["burger"]["available"]

    assert send("prepare", "t1")[1]["vote"] == "yes"
    assert send("prepare", "t1")[1]["vote"] == "yes"          # duplicate prepare: same vote, no new hold
    assert burgers() == 3
    assert send("commit", "t1") == send("commit", "t1") == (200, {"txid": "t1", "state": "committed",
                                                                   "ack": True})
    status, body = send("abort", "t1")                        # abort after commit: refused, nothing moves
    assert status == 409 and "committed" in body["error"] and burgers() == 3

    assert send("prepare", "t2", 3)[1]["vote"] == "yes"
    assert burgers() == 0
    assert send("abort", "t2")[0] == send("abort", "t2")[0] == 200
    assert burgers() == 3                                     # exactly the 3 reserved, given back once
    assert send("commit", "t2")[0] == 409

    assert send("abort", "t3")[1]["state"] == "aborted"        # the abort overtook its prepare ...
    late = send("prepare", "t3")[1]                           # ... so the late prepare reserves nothing
    assert late["vote"] == "no" and burgers() == 3
    assert "Unreachable" not in inventory.output()


@pytest.mark.parametrize("protocol", ["basic", "pa"])
def test_participant_down_during_prepare_means_abort(protocol, spawn, tmp_path):
    cluster = make_cluster(spawn, tmp_path, protocol=protocol)
    cluster.start_all()
    cluster.kill("delivery")
    status, answer = post_order(cluster, "burger", 2)
    assert (status, answer["outcome"]) == (200, "aborted")
    assert "delivery: no answer to prepare" in answer["reason"]
    # inventory had reserved 2 and gives exactly 2 back (a PA abort is sent without waiting for it)
    wait_until(lambda: available(cluster, "burger") == 5, what="inventory to release the burgers")
    cluster.start("delivery")
    settle_and_audit(cluster, {answer["txid"]: "aborted"})
    # basic 2PC re-sends the abort until delivery acknowledges it; presumed abort sends it once and
    # forgets: delivery never prepared, so it holds nothing and never needs to know
    assert tx_state(cluster, "delivery", answer["txid"]) == ("aborted" if protocol == "basic" else None)


def test_stalled_participant_times_out_and_the_coordinator_aborts(spawn, tmp_path):
    # delivery is SIGSTOPped: the TCP connection is accepted by the kernel but nobody answers
    cluster = make_cluster(spawn, tmp_path, rpc_timeout=5.0, decision_timeout=0.3)
    cluster.start_all()
    delivery = cluster.processes["delivery"]
    delivery.signal(signal.SIGSTOP)

    def wake_delivery_once_decided() -> None:
        try:
            wait_until(lambda: any(tx["decision"] for tx in transactions(cluster).values()),
                       what="the coordinator to decide")
        finally:
            delivery.signal(signal.SIGCONT)

    waker = threading.Thread(target=wake_delivery_once_decided)
    waker.start()
    try:
        status, answer = post_order(cluster, "burger", 2)
    finally:
        waker.join()
    assert (status, answer["outcome"]) == (200, "aborted")
    # the decision timeout (0.3 s) ended the wait for votes long before the 5 s call timeout
    assert "delivery: no vote within the decision timeout" in answer["reason"]
    # delivery wakes up and handles the stale prepare (or the abort first): either way nothing is held.
    # Wait for its own outcome first: settle() cannot see a prepare that is still being handled
    wait_until(lambda: tx_state(cluster, "delivery", answer["txid"]) == "aborted", what="delivery to abort")
    settle_and_audit(cluster, {answer["txid"]: "aborted"})
    assert available(cluster, "burger") == 5
    assert state(cluster, "delivery")["resources"]["John"]["carrying"] is None


def test_in_doubt_participant_asks_and_an_unknown_txid_is_answered_abort(spawn, tmp_path, free_port):
    cluster = make_cluster(spawn, tmp_path)
    cluster.start("coordinator")  # its participants are not even running: it only answers questions
    inventory = spawn("TwoPhaseCommit.participant", "--kind", "inventory", "--port", free_port,
                      "--db", tmp_path / "inv.db", "--resolve-interval", "0.2", "--in-doubt-after", "0.2",
                      port=free_port)
    url = f"http://127.0.0.1:{free_port}"
    body = {"txid": "never-logged", "coordinator": cluster.coordinator_url,
            "order": {"item": "fries", "quantity": 4, "address": "a"}}
    assert call_json("POST", f"{url}/prepare", body, timeout=10)[1]["vote"] == "yes"
    # the coordinator never logged this txid: it answers "abort", and the participant releases the hold
    wait_until(lambda: "recovered never-logged: the coordinator says abort" in inventory.output(),
               what="the participant to resolve its in-doubt transaction")
    snapshot = call_json("GET", f"{url}/state", timeout=10)[1]
    assert snapshot["in_doubt"] == [] and snapshot["resources"]["fries"]["available"] == 10


BAD_ORDERS = [
    (b"{not json", "malformed JSON"),
    (b'["burger", 1]', "JSON object"),
    (json.dumps({"quantity": 1, "address": "a"}).encode(), "missing field(s): item"),
    (json.dumps({"item": "burger", "address": "a"}).encode(), "missing field(s): quantity"),
    (json.dumps({"item": "burger", "quantity": 1}).encode(), "missing field(s): address"),
    (json.dumps({"item": "burger", "quantity": 0, "address": "a"}).encode(), "at least 1"),
    (json.dumps({"item": "burger", "quantity": -1, "address": "a"}).encode(), "at least 1"),
    (json.dumps({"item": "burger", "quantity": 1.5, "address": "a"}).encode(), "integer"),
    (json.dumps({"item": "burger", "quantity": "2", "address": "a"}).encode(), "integer"),
    (json.dumps({"item": "sushi", "quantity": 1, "address": "a"}).encode(), "unknown item 'sushi'"),
]


def test_bad_input_is_400_and_reserves_nothing(spawn, tmp_path):
    cluster = make_cluster(spawn, tmp_path)
    cluster.start_all()
    for raw, message in BAD_ORDERS:
        request = urllib.request.Request(f"{cluster.coordinator_url}/orders", data=raw, method="POST",
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        assert caught.value.code == 400
        assert message in json.loads(caught.value.read())["error"], raw
    assert call_json("GET", f"{cluster.coordinator_url}/nowhere", timeout=10)[0] == 404
    assert call_json("POST", f"{cluster.url('inventory')}/prepare", {"order": {}}, timeout=10)[0] == 400

    settle_and_audit(cluster)
    inventory, delivery = state(cluster, "inventory"), state(cluster, "delivery")
    assert all(row["available"] == row["initial"] for row in inventory["resources"].values())
    assert all(row["carrying"] is None for row in delivery["resources"].values())
    assert inventory["in_doubt"] == delivery["in_doubt"] == []
    assert all(tx["outcome"] == "aborted" for tx in transactions(cluster).values())  # only the unknown item
    # and the services keep serving good orders
    assert post_order(cluster, "burger", 1)[1]["outcome"] == "committed"


def test_prepares_go_out_in_parallel(spawn, tmp_path):
    # inventory is SIGSTOPped: a coordinator that prepared one participant at a time, inventory first,
    # would never reach delivery; in parallel, delivery prepares while inventory is still frozen
    cluster = make_cluster(spawn, tmp_path, rpc_timeout=20.0, decision_timeout=30.0)
    cluster.start_all()
    inventory = cluster.processes["inventory"]
    inventory.signal(signal.SIGSTOP)
    answers: list[dict] = []
    client = threading.Thread(target=lambda: answers.append(post_order(cluster, "burger", 1, timeout=60)[1]))
    client.start()
    try:
        wait_until(lambda: len(state(cluster, "delivery")["in_doubt"]) == 1, timeout=20,
                   what="delivery to prepare while inventory is frozen")
    finally:
        inventory.signal(signal.SIGCONT)
        client.join()
    assert answers and answers[0]["outcome"] == "committed"
    settle_and_audit(cluster)
