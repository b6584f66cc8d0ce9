"""Maglev hashing (Eisenbud et al., NSDI 2016, section 3.4): the table's properties, and how much
more than the minimum a membership change moves.

The paper's promises, in its own terms: every slot of the lookup table is filled, each backend
owns about M/N slots (with the round-robin fill: exactly floor(M/N) or ceil(M/N)), and when a
backend leaves, its slots go to the others while *most* other slots keep their owner ("minimal
disruption" is a goal, not a guarantee). The extra disruption shrinks as the table grows relative
to N. Measured with M >= 100 N (the paper's choice, which keeps shares within 1%): 1.7x the
minimum here (N = 40, M = 5,003), 2.6x at N = 100, M = 10,007 (compare.py); we assert < 2x here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ConsistentHashing.alternatives import MaglevHashing, UnsupportedWeightError
from ConsistentHashing.ring import DuplicateNodeError, EmptyRingError, UnknownNodeError, hash_keys

SMALL_PRIME = 5003  # > 100 x 40 backends, and fast to fill in pure Python
NODES = [f"backend-{i:02d}" for i in range(40)]


def changed_slots(before: list[str], after: list[str]) -> int:
    return sum(old != new for old, new in zip(before, after, strict=True))


def test_every_slot_is_filled_and_shares_differ_by_at_most_one():
    for count in (1, 7, 40, 997):
        table_size = SMALL_PRIME if count < SMALL_PRIME // 5 else 65_537
        nodes = [f"n{i}" for i in range(count)]
        maglev = MaglevHashing(nodes, table_size=table_size)
        counts = maglev.slot_counts()
        assert sum(counts.values()) == table_size  # every slot has an owner
        assert set(counts) == set(nodes)
        low, high = table_size // count, math.ceil(table_size / count)
        assert all(low <= c <= high for c in counts.values()), (count, min(counts.values()),
                                                                max(counts.values()))


def test_the_table_depends_on_the_member_set_not_the_join_order():
    forward = MaglevHashing(NODES, table_size=SMALL_PRIME)
    backward = MaglevHashing(table_size=SMALL_PRIME)
    for node in reversed(NODES + ["extra"]):
        backward.add_node(node)
    backward.remove_node("extra")
    assert forward.table() == backward.table()


def test_removing_a_backend_moves_its_slots_and_a_bounded_few_others():
    maglev = MaglevHashing(NODES, table_size=SMALL_PRIME)
    before = maglev.table()
    leaver = NODES[17]
    own = before.count(leaver)
    maglev.remove_node(leaver)
    after = maglev.table()
    assert leaver not in after
    changed = changed_slots(before, after)
    # Not minimal: survivors trade some slots among themselves when the turn order shifts...
    assert changed > own
    # ...but at this table size (125 slots per backend) it stays under twice the minimum (1.66x).
    assert changed < 2 * own, (changed, own)
    # and the survivors' shares are still within one slot of each other
    counts = maglev.slot_counts().values()
    assert max(counts) - min(counts) <= 1


def test_adding_a_backend_takes_its_share_and_moves_a_bounded_few_others():
    maglev = MaglevHashing(NODES, table_size=SMALL_PRIME)
    before = maglev.table()
    maglev.add_node("newcomer")
    after = maglev.table()
    gained = after.count("newcomer")
    assert gained in (SMALL_PRIME // 41, math.ceil(SMALL_PRIME / 41))
    assert gained < changed_slots(before, after) < 2 * gained


def test_a_small_table_disrupts_more_than_a_large_one():
    """The paper's point about table size: with M close to N, far more than the minimum moves."""
    def disruption(table_size: int) -> float:
        maglev = MaglevHashing(NODES, table_size=table_size)
        before = maglev.table()
        maglev.remove_node(NODES[3])
        return changed_slots(before, maglev.table()) / table_size

    assert disruption(211) > 1.5 * disruption(SMALL_PRIME)  # 211 is prime: ~5 slots per node


def test_lookups_single_and_bulk_agree():
    maglev = MaglevHashing(NODES, table_size=SMALL_PRIME)
    keys = [f"key-{i}" for i in range(3000)]
    assert list(maglev.assign(keys)) == [maglev.get_node(k) for k in keys]
    shares = np.unique(maglev.assign_hashes(hash_keys(keys)), return_counts=True)[1]
    assert len(shares) == len(NODES)


def test_clear_errors():
    with pytest.raises(ValueError, match="prime"):
        MaglevHashing(NODES, table_size=5000)
    with pytest.raises(ValueError, match="more table slots than nodes"):
        MaglevHashing([f"n{i}" for i in range(8)], table_size=7)
    maglev = MaglevHashing(["a"], table_size=7)
    with pytest.raises(DuplicateNodeError):
        maglev.add_node("a")
    with pytest.raises(UnknownNodeError):
        maglev.remove_node("b")
    with pytest.raises(UnsupportedWeightError):
        maglev.add_node("b", weight=2)
    maglev.remove_node("a")
    with pytest.raises(EmptyRingError):
        maglev.get_node("k")
