"""ConsistentHashRing: errors, stable hashing, collisions, monotonicity, movement, balance, replicas,
weights. Pure logic: no I/O except the PYTHONHASHSEED subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ConsistentHashing.ring import (
    ConsistentHashRing,
    DuplicateNodeError,
    EmptyRingError,
    NotEnoughNodesError,
    UnknownNodeError,
    hash_keys,
    stable_hash64,
)
from ConsistentHashing.theory import (
    ideal_moved_on_add,
    ideal_moved_on_remove,
    load_relative_std,
    max_load_bound,
)

REPO = Path(__file__).resolve().parent.parent
SHARDS = [f"shard-{i:04d}" for i in range(1000)]
KEYS = [f"key-{i}" for i in range(100_000)]


@pytest.fixture(scope="module")
def positions() -> np.ndarray:
    return hash_keys(KEYS)


@pytest.fixture(scope="module")
def big_ring() -> ConsistentHashRing:
    return ConsistentHashRing(SHARDS, vnodes=160)


# ---- errors ---------------------------------------------------------------------------------

def test_empty_ring_lookups_raise_a_clear_error():
    ring = ConsistentHashRing()
    with pytest.raises(EmptyRingError, match="add_node"):
        ring.get_node("k")
    with pytest.raises(EmptyRingError):
        ring.get_nodes("k", 1)
    with pytest.raises(EmptyRingError):
        ring.assign(["k"])
    ring.add_node("a")
    ring.remove_node("a")
    with pytest.raises(EmptyRingError):
        ring.get_node("k")


def test_asking_for_more_replicas_than_nodes_is_a_clear_error():
    ring = ConsistentHashRing(["a", "b", "c"])
    assert len(ring.get_nodes("k", 3)) == 3
    with pytest.raises(NotEnoughNodesError, match="only 3"):
        ring.get_nodes("k", 4)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            ring.get_nodes("k", bad)


def test_membership_errors():
    ring = ConsistentHashRing(["a"])
    with pytest.raises(DuplicateNodeError):
        ring.add_node("a")
    with pytest.raises(UnknownNodeError, match="'zz' is not on the ring"):
        ring.remove_node("zz")
    for weight in (0, -1, float("nan"), float("inf"), "2"):
        with pytest.raises(ValueError):
            ring.add_node("b", weight=weight)
    assert "b" not in ring  # a rejected add leaves no trace
    for vnodes in (0, -3, 2.5):
        with pytest.raises(ValueError):
            ConsistentHashRing(vnodes=vnodes)
    with pytest.raises(TypeError):
        ring.add_node("")
    with pytest.raises(TypeError, match="keys must be"):
        ring.get_node(1.5)


def test_container_protocol():
    ring = ConsistentHashRing(["b", "a"], vnodes=10)
    ring.add_node("c", weight=2)
    assert ring.nodes == ["a", "b", "c"] and len(ring) == 3 and "a" in ring and "z" not in ring
    assert ring.total_vnodes == 40
    assert abs(sum(ring.ownership().values()) - 1) < 1e-12


# ---- stable hashing -------------------------------------------------------------------------

def test_hash_is_blake2b_64_and_keys_of_any_spelling_agree():
    expected = int.from_bytes(hashlib.blake2b(b"user:1", digest_size=8).digest(), "big")
    assert stable_hash64(b"user:1") == expected
    ring = ConsistentHashRing([f"n{i}" for i in range(20)])
    assert ring.get_node("user:1") == ring.get_node(b"user:1")
    assert ring.get_node(12345) == ring.get_node("12345")
    assert ring.get_node("ключ") == ring.get_node("ключ".encode())


PROBE = """
import json
from ConsistentHashing.ring import ConsistentHashRing
ring = ConsistentHashRing([f"node-{i}" for i in range(50)], vnodes=40)
ring.add_node("heavy", weight=2.5)
keys = [f"key-{i}" for i in range(300)]
print(json.dumps({"one": [ring.get_node(k) for k in keys],
                  "three": [ring.get_nodes(k, 3) for k in keys[:50]],
                  "bulk": list(ring.assign(keys))}))
"""


def test_placement_is_identical_across_processes_with_different_hash_seeds():
    outputs = []
    for seed in ("0", "1", "12345", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120, check=True)
        outputs.append(json.loads(done.stdout))
    assert all(out == outputs[0] for out in outputs)
    # ...and a salted hash() really would have differed: the test could fail.
    salted = [subprocess.run([sys.executable, "-c", "print(hash('key-1'))"], env={**os.environ,
              "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True).stdout
              for seed in ("1", "2")]
    assert salted[0] != salted[1]
    assert outputs[0]["one"] == outputs[0]["bulk"]


# ---- collisions -----------------------------------------------------------------------------

def test_colliding_virtual_nodes_resolve_to_the_smaller_name():
    ring = ConsistentHashRing(["m", "b", "x"], vnodes=5, hash_fn=lambda data: 7)
    assert {ring.get_node(f"k{i}") for i in range(20)} == {"b"}
    assert ring.get_nodes("k", 3) == ["b", "m", "x"]
    assert ring.ownership()["b"] == 1.0


@settings(derandomize=True, max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False))
def test_ring_depends_on_the_member_set_not_the_join_order(rnd: random.Random):
    coarse = lambda data: stable_hash64(data) % 64  # noqa: E731  (a tiny circle: many collisions)
    names = [f"n{i}" for i in range(12)]
    first = ConsistentHashRing(names, vnodes=6, hash_fn=coarse)
    shuffled = names[:]
    rnd.shuffle(shuffled)
    second = ConsistentHashRing(vnodes=6, hash_fn=coarse)
    for name in shuffled + ["extra"]:
        second.add_node(name)
    second.remove_node("extra")
    keys = [f"k{i}" for i in range(200)]
    assert [first.get_node(k) for k in keys] == [second.get_node(k) for k in keys]
    assert [first.get_nodes(k, 4) for k in keys] == [second.get_nodes(k, 4) for k in keys]
    assert list(first.assign(keys)) == [first.get_node(k) for k in keys]


# ---- bulk path ------------------------------------------------------------------------------

def test_bulk_assign_equals_single_lookups_including_wraparound():
    ring = ConsistentHashRing([f"n{i}" for i in range(30)], vnodes=7)
    keys = [f"k{i}" for i in range(5000)]
    assert list(ring.assign(keys)) == [ring.get_node(k) for k in keys]
    edges = np.array([0, 1, ring._points[0], ring._points[-1], ring._points[-1] + 1, 2**64 - 1],
                     dtype=np.uint64)
    assert list(ring.assign_hashes(edges)) == [ring.get_node_for_hash(int(p)) for p in edges]
    assert ring.get_node_for_hash(2**64 - 1) == ring.get_node_for_hash(0)  # past the end wraps


# ---- monotonicity and movement --------------------------------------------------------------

@settings(derandomize=True, max_examples=25, deadline=None)
@given(nodes=st.integers(2, 40), vnodes=st.integers(1, 20), data=st.data())
def test_monotonicity_removal_and_addition(nodes: int, vnodes: int, data):
    names = [f"node-{i}" for i in range(nodes)]
    ring = ConsistentHashRing(names, vnodes=vnodes)
    keys = [f"k{i}" for i in range(400)]
    before = [ring.get_node(k) for k in keys]
    gone = data.draw(st.sampled_from(names))
    smaller = ring.copy()
    smaller.remove_node(gone)
    for key, old in zip(keys, before, strict=True):
        new = smaller.get_node(key)
        assert new == old or old == gone  # only the removed node's keys move
        assert new != gone
    bigger = ring.copy()
    bigger.add_node("newcomer")
    for key, old in zip(keys, before, strict=True):
        new = bigger.get_node(key)
        assert new == old or new == "newcomer"  # keys move only to the new node


def test_movement_is_within_1_5_points_of_ideal_at_1000_shards(positions, big_ring):
    rng = random.Random(9)
    removed = rng.sample(SHARDS, 50)
    before = big_ring.assign_hashes(positions)
    after_remove = ConsistentHashRing(sorted(set(SHARDS) - set(removed)), vnodes=160).assign_hashes(positions)
    after_add = ConsistentHashRing(SHARDS + [f"new-{i}" for i in range(50)],
                                   vnodes=160).assign_hashes(positions)
    moved_remove = 100 * np.mean(before != after_remove)
    moved_add = 100 * np.mean(before != after_add)
    assert abs(moved_remove - 100 * ideal_moved_on_remove(1000, 50)) <= 1.5
    assert abs(moved_add - 100 * ideal_moved_on_add(1000, 50)) <= 1.5
    assert np.isin(before[before != after_remove], removed).all()  # monotone at scale too


# ---- balance --------------------------------------------------------------------------------

def test_balance_with_160_vnodes_is_under_the_theoretical_bound(positions, big_ring):
    """Why these bounds (theory.py has the derivation): under a random hash a node with v points
    owns a Beta(v, nv - v) share of the circle, dominated by Gamma(v)/(nv); its key count is then
    dominated by a Gamma-Poisson mixture. A Chernoff bound plus a union bound over the n = 1,000
    nodes gives a max/mean that a random hash exceeds with probability <= 1e-6:
      share of the circle:  max/mean <= 1.599   (v(d - ln(1+d)) = ln(n / 1e-6))
      100 keys per node:    max/mean <= 1.98
    A ring that ignored vnodes (one point per node) would show ~7x; 3 vnodes ~4x."""
    arc_bound = max_load_bound(1000, 160)
    key_bound = max_load_bound(1000, 160, keys_per_node=100)
    assert 1.59 < arc_bound < 1.61 and 1.97 < key_bound < 1.99  # the numbers quoted above

    shares = np.array(list(big_ring.ownership().values()))
    assert shares.max() * 1000 <= arc_bound

    counts = np.unique(big_ring.assign_hashes(positions), return_counts=True)[1]
    assert len(counts) == 1000
    assert counts.max() / counts.mean() <= key_bound
    # the spread itself matches sqrt(1/v + 1/mu) (within sampling error of 1,000 nodes)
    assert 0.8 < (counts.std() / counts.mean()) / load_relative_std(160, 100) < 1.2


def test_few_vnodes_really_are_unbalanced(positions):
    """The balance test can fail: with 1 vnode the same measurement blows through the bound."""
    ring = ConsistentHashRing(SHARDS, vnodes=1)
    counts = np.unique(ring.assign_hashes(positions), return_counts=True)[1]
    assert counts.max() / (len(KEYS) / 1000) > max_load_bound(1000, 160, keys_per_node=100)


def test_theory_bound_solves_its_own_equation():
    import math

    bound = max_load_bound(1000, 160)
    d = bound - 1
    assert math.isclose(160 * (d - math.log1p(d)), math.log(1000 / 1e-6), rel_tol=1e-6)
    assert max_load_bound(1000, 500) < max_load_bound(1000, 160) < max_load_bound(1000, 10)


# ---- replicas -------------------------------------------------------------------------------

@settings(derandomize=True, max_examples=40, deadline=None)
@given(n=st.integers(1, 5), key=st.text(min_size=1, max_size=12), data=st.data())
def test_replicas_are_distinct_and_stable_under_unrelated_changes(n: int, key: str, data):
    names = [f"r{i}" for i in range(8)]
    ring = ConsistentHashRing(names, vnodes=20)
    prefs = ring.get_nodes(key, n)
    assert len(prefs) == n == len(set(prefs)) and prefs[0] == ring.get_node(key)
    assert ring.get_nodes(key, n) == prefs  # stable across calls

    grown = ring.copy()
    grown.add_node("joiner")
    after = grown.get_nodes(key, n)
    if "joiner" in after:
        assert [x for x in after if x != "joiner"] == prefs[:n - 1]
    else:
        assert after == prefs

    leaver = data.draw(st.sampled_from(names))
    shrunk = ring.copy()
    shrunk.remove_node(leaver)
    after = shrunk.get_nodes(key, min(n, 7))
    if leaver in prefs:
        assert after[:n - 1] == [x for x in prefs if x != leaver]
    else:
        assert after == prefs[:min(n, 7)]


# ---- weights --------------------------------------------------------------------------------

def test_weights_give_proportional_load(positions):
    ring = ConsistentHashRing(vnodes=160)
    weights = {1.0: 20, 2.0: 20, 0.5: 20}
    for weight, count in weights.items():
        for i in range(count):
            ring.add_node(f"w{weight}-{i}", weight=weight)
    assert ring.total_vnodes == 20 * 160 + 20 * 320 + 20 * 80
    total_weight = sum(w * c for w, c in weights.items())
    owners = ring.assign_hashes(positions)
    shares = ring.ownership()
    for weight, count in weights.items():
        group = [f"w{weight}-{i}" for i in range(count)]
        expected = weight * count / total_weight
        arc = sum(shares[g] for g in group)
        keys = np.isin(owners, group).mean()
        # a group of 20 nodes has >= 1,600 points: relative spread ~1/sqrt(1600) = 2.5%
        assert abs(arc / expected - 1) < 0.1, (weight, arc, expected)
        assert abs(keys / expected - 1) < 0.1, (weight, keys, expected)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(key=st.text(max_size=30))
def test_inlined_str_lookup_equals_the_generic_path(key: str):
    fast = ConsistentHashRing([f"n{i}" for i in range(25)], vnodes=9)
    generic = ConsistentHashRing([f"n{i}" for i in range(25)], vnodes=9,
                                 hash_fn=lambda data: stable_hash64(data))
    assert fast._points == generic._points
    assert fast.get_node(key) == generic.get_node(key) == fast.get_node(key.encode("utf-8"))


def test_docstring_example_and_hash_fn_contract():
    ring = ConsistentHashRing(["a", "b", "c"])
    assert ring.get_node("user:42") == "a" and ring.get_nodes("user:42", 2) == ["a", "c"]
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        ConsistentHashRing(["a"], hash_fn=lambda data: -1)
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        ConsistentHashRing(["a"], hash_fn=lambda data: 2**64)


def test_incremental_changes_equal_a_fresh_build_and_the_lookup_index_is_exact():
    """add_node/remove_node splice points in and out; the lookup index narrows each bisect.
    Both must give exactly what a fresh build and a plain bisect over all points give."""
    from bisect import bisect_left

    rng = random.Random(7)
    ring = ConsistentHashRing([f"n{i}" for i in range(50)], vnodes=40)
    members = set(ring.nodes)
    for step in range(40):
        if members and rng.random() < 0.5:
            leaver = rng.choice(sorted(members))
            ring.remove_node(leaver)
            members.discard(leaver)
        else:
            joiner = f"j{step}"
            ring.add_node(joiner, weight=rng.choice([0.5, 1.0, 2.0]))
            members.add(joiner)
        fresh = ConsistentHashRing(vnodes=40)
        for name in sorted(members):
            fresh.add_node(name, weight=ring.weight(name))
        rebuilt = ConsistentHashRing(sorted(members), vnodes=40)
        assert ring._points == fresh._points and ring._owners == fresh._owners
        if all(ring.weight(n) == 1.0 for n in members):
            assert ring._owners == rebuilt._owners
    edges = [b << ring._shift for b in range(len(ring._starts) - 1)]
    probes = [rng.getrandbits(64) for _ in range(3000)] + edges + [e - 1 for e in edges if e] + \
        [p for p in ring._points] + [2**64 - 1]
    for position in probes:
        assert ring.get_node_for_hash(position) == ring._owners[bisect_left(ring._points, position)]
