"""The ring's rivals: jump hash against published reference values, rendezvous and jump
monotonicity, the bounded-loads cap, modulo's mass movement, and the shared interface."""

from __future__ import annotations

import ctypes
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ConsistentHashing.alternatives import (
    BoundedLoadsRing,
    JumpHashing,
    ModuloHashing,
    RendezvousHashing,
    UnsupportedWeightError,
    jump_hash,
    jump_hash_array,
    mix64,
    mix64_array,
)
from ConsistentHashing.ring import (
    ConsistentHashRing,
    DuplicateNodeError,
    EmptyRingError,
    UnknownNodeError,
    hash_keys,
)

# (key, buckets, bucket) published by other implementations of Lamping & Veach's algorithm:
# the Go/C/Python ports' shared vectors, and Guava's Hashing.consistentHash golden values
# (Guava's LCG formulation of the same algorithm).
PUBLISHED = [
    (1, 1, 0), (42, 57, 43), (0xDEAD10CC, 1, 0), (0xDEAD10CC, 666, 361), (256, 1024, 520),
    (1, 128, 55), (129, 128, 120), (128, 100_000_000, 38_172_097), (128, 2**31, 1_644_467_860),
    (2**64 - 1, 128, 92), (0xA9993E364706816ABA3E25717850C26C9CD0D89D, 5, 2), (-42, 57, 8),
    (10863919174838991, 11, 6), (2016238256797177309, 11, 3), (1673758223894951030, 11, 5),
    (2, 100001, 80343), (2201, 100001, 22152), (2202, 100001, 15018),
]
GUAVA_GOLDEN_100 = [0, 55, 62, 8, 45, 59, 86, 97, 82, 59, 73, 37, 17, 56, 86, 21, 90, 37, 38, 83]


def jump_reference(key: int, num_buckets: int) -> int:
    """A second, independent transcription of the paper's C++ using ctypes' fixed-width types
    (c_uint64 wraps on assignment like uint64_t; c_double is the C double)."""
    k = ctypes.c_uint64(key)
    b, j = ctypes.c_int64(-1), ctypes.c_int64(0)
    while j.value < num_buckets:
        b.value = j.value
        k.value = k.value * 2862933555777941757 + 1
        divisor = ctypes.c_double((k.value >> 33) + 1)
        quotient = ctypes.c_double(ctypes.c_double(1 << 31).value / divisor.value)
        j.value = int(ctypes.c_double(b.value + 1).value * quotient.value)
    return b.value


@pytest.mark.parametrize(("key", "buckets", "expected"), PUBLISHED)
def test_jump_hash_matches_published_values(key, buckets, expected):
    assert jump_hash(key, buckets) == expected
    assert jump_reference(key, buckets) == expected
    assert int(jump_hash_array(np.array([key & (2**64 - 1)], dtype=np.uint64), buckets)[0]) == expected


def test_jump_hash_matches_guava_golden_values():
    assert [jump_hash(i, 100) for i in range(20)] == GUAVA_GOLDEN_100


@settings(derandomize=True, max_examples=300, deadline=None)
@given(key=st.integers(0, 2**64 - 1), buckets=st.integers(1, 2**31 - 1))
def test_jump_hash_equals_the_ctypes_transcription(key, buckets):
    assert jump_hash(key, buckets) == jump_reference(key, buckets)


def test_vectorised_jump_and_mix_equal_the_scalar_ones():
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 2**64 - 1, size=3000, dtype=np.uint64, endpoint=True)
    for buckets in (1, 2, 7, 1000, 2**31 - 1):
        assert list(jump_hash_array(keys, buckets)) == [jump_hash(int(k), buckets) for k in keys]
    assert list(mix64_array(keys)) == [mix64(int(k)) for k in keys]


@settings(derandomize=True, max_examples=100, deadline=None)
@given(key=st.integers(0, 2**64 - 1), buckets=st.integers(1, 5000))
def test_jump_hash_growth_moves_keys_only_to_the_new_bucket(key, buckets):
    before, after = jump_hash(key, buckets), jump_hash(key, buckets + 1)
    assert 0 <= before < buckets
    assert after in (before, buckets)


def test_jump_hash_rejects_empty_bucket_count():
    with pytest.raises(ValueError):
        jump_hash(1, 0)


# ---- shared interface -----------------------------------------------------------------------

SCHEMES = [ModuloHashing, RendezvousHashing, JumpHashing, BoundedLoadsRing, ConsistentHashRing]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_interface_and_errors(scheme):
    placement = scheme()
    with pytest.raises(EmptyRingError):
        placement.get_node("k")
    for name in ("a", "b", "c"):
        placement.add_node(name)
    assert placement.nodes == ["a", "b", "c"] and len(placement) == 3 and "b" in placement
    with pytest.raises(DuplicateNodeError):
        placement.add_node("a")
    with pytest.raises(UnknownNodeError):
        placement.remove_node("zz")
    keys = [f"k{i}" for i in range(2000)]
    assert list(placement.assign(keys)) == [placement.get_node(k) for k in keys]
    assert set(placement.assign(keys)) == {"a", "b", "c"}


@pytest.mark.parametrize("scheme", [ModuloHashing, RendezvousHashing, JumpHashing, BoundedLoadsRing])
def test_unweighted_schemes_refuse_weights(scheme):
    with pytest.raises(UnsupportedWeightError, match="ConsistentHashRing"):
        scheme().add_node("a", weight=2)


# ---- movement -------------------------------------------------------------------------------

KEYS = [f"key-{i}" for i in range(3000)]


@settings(derandomize=True, max_examples=20, deadline=None)
@given(scheme=st.sampled_from([RendezvousHashing, JumpHashing]), data=st.data())
def test_rendezvous_and_jump_are_monotone_under_any_removal_and_addition(scheme, data):
    """Jump too, with tombstones: remove any node (not only the last), then add nodes back."""
    nodes = [f"n{i}" for i in range(data.draw(st.integers(2, 25)))]
    placement = scheme(nodes)
    for step in range(data.draw(st.integers(1, 6))):
        before = placement.assign(KEYS)
        if len(placement) > 1 and data.draw(st.booleans()):
            gone = data.draw(st.sampled_from(placement.nodes))
            placement.remove_node(gone)
            after = placement.assign(KEYS)
            changed = before != after
            assert (before[changed] == gone).all() and not (after == gone).any()
        else:
            new = f"new{step}"
            placement.add_node(new)
            after = placement.assign(KEYS)
            assert (after[before != after] == new).all()
        assert list(after[:300]) == [placement.get_node(k) for k in KEYS[:300]]


def test_jump_fills_a_tombstone_first_and_restores_the_original_placement():
    nodes = [f"n{i}" for i in range(10)]
    jump = JumpHashing(nodes)
    original = jump.assign(KEYS)
    jump.remove_node("n3")
    jump.add_node("n3")  # takes bucket 3 back
    assert (jump.assign(KEYS) == original).all()
    plain = np.array([nodes[jump_hash(int(h), 10)] for h in hash_keys(KEYS)], dtype=object)
    assert (original == plain).all()  # with no tombstones it is exactly the paper's jump hash


def test_modulo_moves_almost_everything():
    modulo = ModuloHashing([f"n{i}" for i in range(10)])
    before = modulo.assign(KEYS)
    modulo.add_node("n10")
    assert np.mean(before != modulo.assign(KEYS)) > 0.85  # ~10/11, versus 1/11 for a ring


# ---- bounded loads --------------------------------------------------------------------------

def cap(c: float, keys: int, nodes: int) -> int:
    """ceil(c * mean) in exact arithmetic."""
    return -(-(Fraction(c) * keys) // nodes)


@settings(derandomize=True, max_examples=40, deadline=None)
@given(c=st.sampled_from([1.01, 1.1, 1.25, 1.5, 2.0]), data=st.data())
def test_bounded_loads_never_exceed_ceil_c_times_mean(c, data):
    ring = BoundedLoadsRing([f"n{i}" for i in range(data.draw(st.integers(1, 12)))], c=c, vnodes=8)
    live_keys: list[str] = []
    for step in range(data.draw(st.integers(1, 60))):
        action = data.draw(st.sampled_from(["place", "place", "place", "forget", "add", "remove"]))
        if action == "place":
            for i in range(data.draw(st.integers(1, 40))):
                key = f"k{step}-{i}"
                ring.get_node(key)
                live_keys.append(key)
        elif action == "forget" and live_keys:
            ring.forget(live_keys.pop(data.draw(st.integers(0, len(live_keys) - 1))))
        elif action == "add":
            ring.add_node(f"joined{step}")
        elif action == "remove" and len(ring) > 1:
            ring.remove_node(data.draw(st.sampled_from(ring.nodes)))
        loads = ring.loads()
        assert sum(loads.values()) == len(live_keys)
        if live_keys:
            assert max(loads.values()) <= cap(c, len(live_keys), len(ring)) == ring.capacity()
        assert {node for _, node in ring.placements()} <= set(ring.nodes)


def test_bounded_loads_at_scale_and_its_degenerate_cases():
    keys = [f"key-{i}" for i in range(20_000)]
    nodes = [f"n{i}" for i in range(200)]
    bounded = BoundedLoadsRing(nodes, c=1.25, vnodes=20)
    owners = bounded.assign(keys)
    counts = np.unique(owners, return_counts=True)[1]
    assert counts.max() <= cap(1.25, 20_000, 200) == 125
    plain = ConsistentHashRing(nodes, vnodes=20).assign(keys)
    assert np.unique(plain, return_counts=True)[1].max() > 125  # the cap really did something
    # A cap nobody reaches leaves the plain ring's placement untouched.
    loose = BoundedLoadsRing(nodes, c=1000, vnodes=20)
    assert (loose.assign(keys) == plain).all()
    assert bounded.get_node(keys[0]) == owners[0]  # known keys keep their node
    with pytest.raises(ValueError):
        BoundedLoadsRing(c=1.0)
    with pytest.raises(KeyError, match="never placed"):
        bounded.forget("nope")
