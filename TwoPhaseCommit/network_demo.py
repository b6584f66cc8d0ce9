"""Network faults, not crashes: 2PC across a partition and a lost reply, through real TCP fault proxies.

    python -m TwoPhaseCommit.network_demo [--scene a|b|c] [--trace FILE]

Every process keeps running; only the network between them fails (common/faultproxy.py sits on the
links named in each scene). Three scenes, each ending with the invariant audit:

(a) delivery is cut off from everyone *after it voted yes*: it is in doubt, asks the coordinator and
    its peer, gets no answer, and keeps asking - it may not decide alone. Heal: it learns "commit".
(b) delivery is cut off *before* it votes: the coordinator's wait for its vote times out, and the
    decision is abort everywhere. Heal: the held prepare arrives late and is answered "abort".
(c) delivery commits but its reply is lost (the connection is reset after the request went through):
    the coordinator re-sends the commit, and delivery acknowledges it again without applying it twice.

To hold the decision back until the scene has cut the link, inventory's replies to the coordinator
are slowed down (800 ms), so inventory's vote is the last to arrive.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common import cli, spawn_module
from common.trace import add_trace_argument

from .audit import AuditReport, audit, settle
from .cluster import Cluster
from .httpjson import Unreachable, call_json

ISOLATE_DELIVERY = ("coordinator->delivery", "delivery->coordinator", "delivery->inventory")
SLOW_INVENTORY_MS = 800  # inventory's replies come this late: its vote is the last to arrive


def say(text: str = "") -> None:
    print(text, flush=True)


class OrderInFlight(threading.Thread):
    """A client placing one order in the background (the scene acts while it waits)."""

    def __init__(self, cluster: Cluster, body: dict):
        super().__init__(daemon=True)
        self.cluster, self.body = cluster, body
        self.answer: dict | None = None

    def run(self) -> None:
        try:
            url = f"{self.cluster.coordinator_url}/orders"
            self.answer = call_json("POST", url, self.body, timeout=30)[1]
        except Unreachable:
            self.answer = None


def state(cluster: Cluster, name: str) -> dict:
    return call_json("GET", f"{cluster.url(name)}/state", timeout=5)[1]  # direct, not through a proxy


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def in_doubt(cluster: Cluster, name: str) -> list[str]:
    return [tx["txid"] for tx in state(cluster, name)["in_doubt"]]


def finish(cluster: Cluster) -> AuditReport:
    settle(cluster.coordinator_url, cluster.participant_urls, timeout=60)
    return audit(cluster.coordinator_url, cluster.participant_urls)


def make_cluster(workdir: Path, links: tuple[str, ...], trace: Path | None, spawner, **overrides) -> Cluster:
    settings = {"rpc_timeout": 1.5, "retry_interval": 0.3, "resolve_interval": 0.4, "decision_timeout": 5.0,
                **overrides}
    return Cluster(workdir, links=links, trace=trace, spawner=spawner, **settings)


# --- (a) partitioned after voting yes -----------------------------------------------------------------

def order_until_delivery_votes_yes(cluster: Cluster) -> tuple[OrderInFlight, str]:
    """Start the cluster and place an order; return once delivery has voted yes (it is in doubt).

    Inventory's link is slowed so its vote arrives later: the scene acts between the two votes.
    """
    cluster.start_all()
    cluster.proxies["coordinator->inventory"].delay(SLOW_INVENTORY_MS, direction="downstream")
    client = OrderInFlight(cluster, {"item": "burger", "quantity": 2, "address": "1 Main St"})
    client.start()
    wait_for(lambda: in_doubt(cluster, "delivery"), "delivery to vote yes")
    (txid,) = in_doubt(cluster, "delivery")
    return client, txid


def scene_partition_after_yes(workdir: Path, trace: Path | None = None, spawner=spawn_module) -> dict:
    cluster = make_cluster(workdir, (*ISOLATE_DELIVERY, "coordinator->inventory"), trace, spawner)
    try:
        client, txid = order_until_delivery_votes_yes(cluster)
        for link in ISOLATE_DELIVERY:
            cluster.proxies[link].partition()  # black hole: connections hang until the caller gives up
        say(f"  delivery voted yes on {txid}; now it is cut off from the coordinator and from inventory")
        client.join()
        say(f"  the client is told: {client.answer and client.answer['outcome']} "
            "(the decision is logged; delivery's commit is stuck in the partition)")
        output = lambda: cluster.processes["delivery"].output()  # noqa: E731
        wait_for(lambda: "BLOCKED" in output(), "delivery to find nobody to ask")
        asked_before = inquiries(cluster, txid)
        # it keeps asking (two more rounds), and nothing changes while the partition lasts
        wait_for(lambda: inquiries(cluster, txid) >= asked_before + 2, "delivery to ask again")
        still = in_doubt(cluster, "delivery")
        asked = inquiries(cluster, txid)
        say(f"  delivery: {next(line for line in output().splitlines() if 'BLOCKED' in line)}")
        say(f"  two rounds later delivery is still in doubt ({still == [txid]}); it has asked the "
            f"coordinator {asked} times")
        for proxy in cluster.proxies.values():
            proxy.heal()
        report = finish(cluster)
        recovered = [line for line in output().splitlines() if f"recovered {txid}" in line or
                     f"commit {txid}" in line]
        say(f"  healed: delivery {recovered[-1].split('] ', 1)[-1] if recovered else 'committed'}")
        return {"txid": txid, "told": client.answer and client.answer["outcome"], "still_in_doubt": still,
                "inquiries": asked, "inquiries_at_blocked": asked_before, "report": report,
                "final": final_states(cluster, txid)}
    finally:
        cluster.stop_all()


def inquiries(cluster: Cluster, txid: str) -> int:
    costs = call_json("GET", f"{cluster.url('delivery')}/costs/{txid}", timeout=5)[1]
    return costs["messages"].get("sent:coordinator:inquiry", 0)


def final_states(cluster: Cluster, txid: str) -> dict:
    out = {}
    for name in ("inventory", "delivery"):
        st = state(cluster, name)
        out[name] = next((tx["state"] for tx in st["in_doubt"] + st["decided"] if tx["txid"] == txid), None)
    return out


# --- (b) partitioned before voting ------------------------------------------------------------------

def scene_partition_before_vote(workdir: Path, trace: Path | None = None, spawner=spawn_module) -> dict:
    cluster = make_cluster(workdir, ("coordinator->delivery",), trace, spawner)
    try:
        cluster.start_all()
        cluster.proxies["coordinator->delivery"].partition()
        say("  the coordinator's link to delivery is a black hole; an order of 2 burgers")
        started = time.monotonic()
        answer = call_json("POST", f"{cluster.coordinator_url}/orders",
                           {"item": "burger", "quantity": 2, "address": "1 Main St"}, timeout=30)[1]
        reason = answer["reason"].split(" (")[0]
        say(f"  after {time.monotonic() - started:.1f}s: {answer['outcome']} [{reason}]")
        wait_for(lambda: not in_doubt(cluster, "inventory"), "inventory to hear the abort")
        burgers = state(cluster, "inventory")["resources"]["burger"]["available"]
        say(f"  inventory released its 2 burgers: {burgers} available")
        cluster.proxies["coordinator->delivery"].heal()  # the held prepare (and abort) arrive late
        report = finish(cluster)
        held = final_states(cluster, answer["txid"])["delivery"]
        say(f"  healed: delivery ends with {held or 'nothing: it never prepared'}")
        return {"txid": answer["txid"], "told": answer["outcome"], "reason": answer["reason"],
                "report": report, "final": final_states(cluster, answer["txid"]),
                "burgers": state(cluster, "inventory")["resources"]["burger"]["available"],
                "courier": state(cluster, "delivery")["resources"]["John"]["carrying"]}
    finally:
        cluster.stop_all()


# --- (c) a lost phase-2 reply -----------------------------------------------------------------------

def scene_lost_reply(workdir: Path, trace: Path | None = None, spawner=spawn_module) -> dict:
    cluster = make_cluster(workdir, ("coordinator->delivery", "coordinator->inventory"), trace, spawner)
    try:
        client, txid = order_until_delivery_votes_yes(cluster)
        cluster.proxies["coordinator->delivery"].cut_after(0, once=True)  # the next reply is reset
        say("  delivery voted yes; the next reply on the coordinator's link to it will be reset")
        client.join()
        report = finish(cluster)
        costs = call_json("GET", f"{cluster.url('delivery')}/costs/{txid}", timeout=5)[1]
        received = costs["messages"].get("received:coordinator:commit", 0)
        applied = costs["writes"].get("forced:committed", 0) + costs["writes"].get("lazy:committed", 0)
        coordinator = [line for line in cluster.processes["coordinator"].output().splitlines()
                       if txid in line and ("no ack" in line or "recovery" in line)]
        for line in coordinator:
            say(f"  {line}")
        say(f"  delivery received the commit {received} times and applied it {applied} time(s): the re-sent "
            "commit was only acknowledged")
        return {"txid": txid, "told": client.answer and client.answer["outcome"],
                "commits_received": received, "commits_applied": applied,
                "coordinator_lines": coordinator, "report": report, "final": final_states(cluster, txid),
                "burgers": state(cluster, "inventory")["resources"]["burger"]["available"]}
    finally:
        cluster.stop_all()


SCENES = {
    "a": ("partitioned after voting yes: in doubt, keeps asking, heal -> resolved",
          scene_partition_after_yes),
    "b": ("partitioned before voting: timeout -> abort everywhere", scene_partition_before_vote),
    "c": ("a lost phase-2 reply: re-sent, answered idempotently", scene_lost_reply),
}


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m TwoPhaseCommit.network_demo",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--scene", choices=sorted(SCENES), action="append",
                        help="run only this scene (repeat for several; default all)")
    add_trace_argument(parser)
    args = parser.parse_args(argv)
    ok = True
    # Ctrl-C / SIGTERM: cli.run turns them into 130 / 143; each scene's `finally` stops its processes
    for key in args.scene or sorted(SCENES):
        title, scene = SCENES[key]
        say(f"\n== ({key}) {title}")
        with tempfile.TemporaryDirectory(prefix=f"twopc-net-{key}-") as workdir:
            result = scene(Path(workdir), trace=args.trace)
        for line in result["report"].lines():
            say(line)
        ok = ok and result["report"].ok
    if args.trace:
        say(f"\ntrace: {args.trace}; draw it with python -m common.trace render {args.trace}")
    say(f"\nresult: {len(args.scene or SCENES)} network scene(s), invariant {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
