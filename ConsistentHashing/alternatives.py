"""The ring's rivals, behind the same small interface, so they can be measured side by side.

Every class here has `nodes`, `len()`, `in`, `add_node(node)`, `remove_node(node)`,
`get_node(key)` and a bulk `assign(keys)` / `assign_hashes(positions)`. Keys are hashed with the
same stable 64-bit hash as the ring (`ring.stable_hash64`), so differences come from placement
alone.

- ModuloHashing:        node = nodes[hash % N]. The naive baseline: perfect balance, but changing N
                        moves ~all keys.
- RendezvousHashing:    highest random weight (Thaler & Ravishankar 1998): every node scores the key,
                        the highest score wins. Minimal movement and good balance with no virtual
                        nodes, at O(N) per lookup.
- JumpHashing:          jump consistent hash (Lamping & Veach 2014): O(log N) time, no memory, near
                        perfect balance, but buckets are numbered 0..N-1 and only the last can go.
                        Removing another node is handled here with a tombstone (see the class).
- MaglevHashing:        Google's Maglev load balancer (Eisenbud et al., NSDI 2016, section 3.4): a
                        lookup table of M entries (M prime) that the nodes fill in turns, each
                        following its own permutation of the slots. O(1) lookups and shares equal to
                        within one entry, but a change moves a little more than the minimum.
- BoundedLoadsRing:     consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam
                        2016): a ring where no node may hold more than ceil(c * mean) keys; a key
                        whose node is full walks on clockwise. Stateful: it remembers placements.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np

from .ring import (
    ConsistentHashRing,
    DuplicateNodeError,
    EmptyRingError,
    HashFn,
    Key,
    UnknownNodeError,
    hash_keys,
    key_bytes,
    stable_hash64,
)

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: SplitMix64's increment


class UnsupportedWeightError(ValueError):
    """This scheme has no notion of node weight; use ConsistentHashRing for weighted nodes."""


class KeyPlacement(Protocol):
    """The interface shared by the ring and its rivals."""

    @property
    def nodes(self) -> list[str]: ...
    def __len__(self) -> int: ...
    def __contains__(self, node: object) -> bool: ...
    def add_node(self, node: str, weight: float = 1.0) -> None: ...
    def remove_node(self, node: str) -> None: ...
    def get_node(self, key: Key) -> str: ...
    def assign(self, keys: Iterable[Key]) -> np.ndarray: ...


def mix64(z: int) -> int:
    """SplitMix64's finaliser (Steele, Lea, Flood 2014): a bijection on 64-bit ints that scrambles
    every input bit into every output bit. Used to derive independent-looking scores."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def mix64_array(z: np.ndarray) -> np.ndarray:
    """mix64 over a uint64 array (NumPy's uint64 multiply wraps modulo 2**64, as in C)."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _check_unweighted(scheme: str, weight: float) -> None:
    if weight != 1.0:
        raise UnsupportedWeightError(f"{scheme} does not support node weights (got {weight!r}); "
                                     f"use ConsistentHashRing, where weight scales virtual nodes")


def _check_new_node(node: str, existing: Iterable[str]) -> None:
    if not isinstance(node, str) or not node:
        raise TypeError(f"node names must be non-empty str, got {node!r}")
    if node in existing:
        raise DuplicateNodeError(f"node {node!r} is already present")


def _empty(scheme: str) -> EmptyRingError:
    return EmptyRingError(f"{scheme} has no nodes; add_node() before looking up keys")


# ---- modulo ---------------------------------------------------------------------------------


class ModuloHashing:
    """node = nodes[hash(key) % N], nodes in the order they joined. The baseline to beat."""

    def __init__(self, nodes: Iterable[str] = (), *, hash_fn: HashFn | None = None):
        self.hash_fn = hash_fn or stable_hash64
        self._nodes: list[str] = []
        for node in nodes:
            self.add_node(node)

    def add_node(self, node: str, weight: float = 1.0) -> None:
        _check_unweighted("modulo hashing", weight)
        _check_new_node(node, self._nodes)
        self._nodes.append(node)

    def remove_node(self, node: str) -> None:
        if node not in self._nodes:
            raise UnknownNodeError(f"node {node!r} is not present; nothing to remove")
        self._nodes.remove(node)  # every later node shifts down one index: that is the problem

    def get_node(self, key: Key) -> str:
        if not self._nodes:
            raise _empty("modulo hashing")
        return self._nodes[self.hash_fn(key_bytes(key)) % len(self._nodes)]

    def assign_hashes(self, positions: np.ndarray) -> np.ndarray:
        if not self._nodes:
            raise _empty("modulo hashing")
        index = np.asarray(positions, dtype=np.uint64) % np.uint64(len(self._nodes))
        return np.asarray(self._nodes, dtype=object)[index.astype(np.int64)]

    def assign(self, keys: Iterable[Key]) -> np.ndarray:
        return self.assign_hashes(hash_keys(keys, self.hash_fn))

    @property
    def nodes(self) -> list[str]:
        return sorted(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._nodes


# ---- rendezvous -----------------------------------------------------------------------------


class RendezvousHashing:
    """Highest random weight: score(key, node) = mix64(hash(key) XOR seed(node)); highest wins.

    Removing a node moves exactly the keys for which it had the top score (each to its
    runner-up); adding one takes exactly the keys it now tops. Because mix64 is a bijection, one
    key's scores on nodes with distinct seeds are distinct; equal seeds (a 64-bit collision of two
    node names) are broken by node name, the smaller name winning.
    """

    def __init__(self, nodes: Iterable[str] = (), *, hash_fn: HashFn | None = None):
        self.hash_fn = hash_fn or stable_hash64
        self._seeds: dict[str, int] = {}
        self._sorted: list[tuple[str, int]] = []
        for node in nodes:
            self.add_node(node)

    def add_node(self, node: str, weight: float = 1.0) -> None:
        _check_unweighted("rendezvous hashing", weight)
        _check_new_node(node, self._seeds)
        self._seeds[node] = self.hash_fn(node.encode("utf-8"))
        self._sorted = sorted(self._seeds.items())

    def remove_node(self, node: str) -> None:
        if node not in self._seeds:
            raise UnknownNodeError(f"node {node!r} is not present; nothing to remove")
        del self._seeds[node]
        self._sorted = sorted(self._seeds.items())

    def get_node(self, key: Key) -> str:
        if not self._sorted:
            raise _empty("rendezvous hashing")
        h = self.hash_fn(key_bytes(key))
        best_node, best_score = "", -1
        for node, seed in self._sorted:  # sorted by name: on a tie the first (smallest) stays
            score = mix64(h ^ seed)
            if score > best_score:
                best_node, best_score = node, score
        return best_node

    def assign_hashes(self, positions: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Vectorised: a (keys x nodes) score matrix per chunk; argmax takes the first maximum,
        i.e. the smallest name, as get_node does."""
        if not self._sorted:
            raise _empty("rendezvous hashing")
        names = np.asarray([name for name, _ in self._sorted], dtype=object)
        seeds = np.asarray([seed for _, seed in self._sorted], dtype=np.uint64)
        positions = np.asarray(positions, dtype=np.uint64)
        winners = np.empty(len(positions), dtype=np.int64)
        chunk = max(1, chunk * 256 // max(256, len(seeds)))  # bound the matrix to ~1M scores
        for start in range(0, len(positions), chunk):
            block = positions[start:start + chunk, None] ^ seeds[None, :]
            winners[start:start + chunk] = np.argmax(mix64_array(block), axis=1)
        return names[winners]

    def assign(self, keys: Iterable[Key]) -> np.ndarray:
        return self.assign_hashes(hash_keys(keys, self.hash_fn))

    @property
    def nodes(self) -> list[str]:
        return [name for name, _ in self._sorted]

    def __len__(self) -> int:
        return len(self._seeds)

    def __contains__(self, node: object) -> bool:
        return node in self._seeds


# ---- jump -----------------------------------------------------------------------------------


def jump_hash(key: int, num_buckets: int) -> int:
    """Jump consistent hash, transcribed from Lamping & Veach (2014), figure 1:

        int32_t JumpConsistentHash(uint64_t key, int32_t num_buckets) {
            int64_t b = -1, j = 0;
            while (j < num_buckets) {
                b = j;
                key = key * 2862933555777941757ULL + 1;
                j = (b + 1) * (double(1LL << 31) / double((key >> 33) + 1));
            }
            return b;
        }

    `key` is taken modulo 2**64 (as the C++ uint64_t is) and the multiply wraps at 64 bits. The
    double arithmetic is IEEE-754 binary64 in both languages and int() truncates like the C++
    conversion, so this returns the same bucket as the paper's code, in [0, num_buckets).
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    key &= MASK64
    b, j = -1, 0
    while j < num_buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def jump_hash_array(keys: np.ndarray, num_buckets: int) -> np.ndarray:
    """jump_hash over a uint64 array: the same loop, run on every key still jumping."""
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    key = np.asarray(keys, dtype=np.uint64).copy()
    b = np.full(key.shape, -1, dtype=np.int64)
    j = np.zeros(key.shape, dtype=np.int64)
    active = np.ones(key.shape, dtype=bool)
    multiplier, one = np.uint64(2862933555777941757), np.uint64(1)
    while active.any():
        idx = np.nonzero(active)[0]
        b[idx] = j[idx]
        key[idx] = key[idx] * multiplier + one
        ratio = float(1 << 31) / ((key[idx] >> np.uint64(33)) + one).astype(np.float64)
        j[idx] = ((b[idx] + 1).astype(np.float64) * ratio).astype(np.int64)
        active[idx] = j[idx] < num_buckets
    return b


class JumpHashing:
    """Nodes in jump-hash buckets 0..B-1; arbitrary removal via tombstones.

    Jump hash itself only supports growing or shrinking at the end. To remove bucket i from the
    middle we leave a tombstone: a key that jumps to a dead bucket rehashes (attempt a uses
    mix64(hash + a * GOLDEN_GAMMA)) and jumps again over the same B buckets until it hits a live
    one (the idea behind Memento hashing, Coluzzi et al. 2023). Only keys whose chain stopped at
    the removed node move. A new node fills the lowest tombstone first (only keys whose chain
    passes through that slot move, all to the new node), else it is appended as bucket B (by
    jump's own property, only keys moving to bucket B move). Removing the last live bucket shrinks
    B by one, which also moves only that bucket's keys. Lookups cost one jump (O(log B)) per
    attempt and B/live attempts on average.
    """

    def __init__(self, nodes: Iterable[str] = (), *, hash_fn: HashFn | None = None):
        self.hash_fn = hash_fn or stable_hash64
        self._buckets: list[str | None] = []
        self._bucket_of: dict[str, int] = {}
        for node in nodes:
            self.add_node(node)

    def add_node(self, node: str, weight: float = 1.0) -> None:
        _check_unweighted("jump hashing", weight)
        _check_new_node(node, self._bucket_of)
        holes = [i for i, owner in enumerate(self._buckets) if owner is None]
        slot = holes[0] if holes else len(self._buckets)
        if slot == len(self._buckets):
            self._buckets.append(node)
        else:
            self._buckets[slot] = node
        self._bucket_of[node] = slot

    def remove_node(self, node: str) -> None:
        if node not in self._bucket_of:
            raise UnknownNodeError(f"node {node!r} is not present; nothing to remove")
        slot = self._bucket_of.pop(node)
        if slot == len(self._buckets) - 1:
            self._buckets.pop()  # jump hash's native shrink; trailing tombstones are kept (see doc)
        else:
            self._buckets[slot] = None
        if not self._bucket_of:
            self._buckets.clear()  # no live node, so no key placement to preserve

    def _bucket_for(self, h: int) -> int:
        buckets = self._buckets
        bucket = jump_hash(h, len(buckets))
        attempt = 0
        while buckets[bucket] is None:
            attempt += 1
            bucket = jump_hash(mix64((h + attempt * GOLDEN_GAMMA) & MASK64), len(buckets))
        return bucket

    def get_node(self, key: Key) -> str:
        if not self._bucket_of:
            raise _empty("jump hashing")
        return self._buckets[self._bucket_for(self.hash_fn(key_bytes(key)))]  # type: ignore[return-value]

    def assign_hashes(self, positions: np.ndarray) -> np.ndarray:
        if not self._bucket_of:
            raise _empty("jump hashing")
        positions = np.asarray(positions, dtype=np.uint64)
        count = len(self._buckets)
        live = np.array([owner is not None for owner in self._buckets])
        bucket = jump_hash_array(positions, count)
        attempt = 0
        dead = ~live[bucket]
        while dead.any():
            attempt += 1
            idx = np.nonzero(dead)[0]
            rehashed = mix64_array(positions[idx] + np.uint64((attempt * GOLDEN_GAMMA) & MASK64))
            bucket[idx] = jump_hash_array(rehashed, count)
            dead[idx] = ~live[bucket[idx]]
        return np.asarray(self._buckets, dtype=object)[bucket]

    def assign(self, keys: Iterable[Key]) -> np.ndarray:
        return self.assign_hashes(hash_keys(keys, self.hash_fn))

    @property
    def nodes(self) -> list[str]:
        return sorted(self._bucket_of)

    def __len__(self) -> int:
        return len(self._bucket_of)

    def __contains__(self, node: object) -> bool:
        return node in self._bucket_of


# ---- maglev ---------------------------------------------------------------------------------


MAGLEV_TABLE_SIZE = 65_537  # prime; the paper's default-sized table (and Envoy's default)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


class MaglevHashing:
    """Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
    Balancer", NSDI 2016, section 3.4): node = table[hash(key) % M].

    Each node i has a permutation of the M slots, permutation_i[j] = (offset_i + j * skip_i) % M,
    with offset_i = h1(i) % M and skip_i = h2(i) % (M - 1) + 1. Because M is prime and
    1 <= skip_i < M, that walk visits every slot exactly once. The table is filled in rounds: in
    each round every node, in turn, takes the next slot of its permutation that is still free.
    So every slot is filled and each node gets floor(M/N) or ceil(M/N) slots: balance to within
    one entry, with an O(1) lookup.

    What it gives up: when a node leaves or joins, the table is filled again from scratch. The
    other nodes' permutations are unchanged, so most slots keep their owner, but the turn order
    shifts, and some slots change hands between nodes that stayed. The paper trades exactly
    this: "minimal disruption" is a goal, balance comes first. The paper picks M > 100 N so that
    shares differ by at most 1%; a larger table also moves fewer extra slots (compare.py measures
    it: 2.6x the minimum at M = 100 N, 1.6x at 650 N). Nodes fill in name order, so the table
    depends only on the set of members, never on the order they joined.
    """

    def __init__(self, nodes: Iterable[str] = (), *, table_size: int = MAGLEV_TABLE_SIZE,
                 hash_fn: HashFn | None = None):
        if not isinstance(table_size, int) or isinstance(table_size, bool) or not is_prime(table_size):
            raise ValueError(f"table_size must be a prime number (e.g. 65537), got {table_size!r}: "
                             f"a prime M makes every node's walk visit every slot")
        self.table_size = table_size
        self.hash_fn = hash_fn or stable_hash64
        self._names: list[str] = []
        self._table = array("I")  # slot -> index into _names
        for node in nodes:
            _check_new_node(node, self._names)
            self._names.append(node)
        self._populate()

    def add_node(self, node: str, weight: float = 1.0) -> None:
        _check_unweighted("maglev hashing", weight)
        _check_new_node(node, self._names)
        self._names.append(node)
        self._populate()

    def remove_node(self, node: str) -> None:
        if node not in self._names:
            raise UnknownNodeError(f"node {node!r} is not present; nothing to remove")
        self._names.remove(node)
        self._populate()

    def _permutation(self, node: str) -> tuple[int, int]:
        """(offset, skip) of a node's walk over the slots, from two independent hashes of its name."""
        m, name = self.table_size, node.encode("utf-8")
        offset = self.hash_fn(b"maglev-offset:" + name) % m
        skip = self.hash_fn(b"maglev-skip:" + name) % (m - 1) + 1
        return offset, skip

    def _populate(self) -> None:
        """The paper's Pseudocode 1: nodes take turns claiming their next free slot until all are taken."""
        self._names.sort()
        m, count = self.table_size, len(self._names)
        if count > m:
            raise ValueError(f"maglev needs more table slots than nodes: {count} nodes, "
                             f"table_size {m}; use a larger prime")
        self._table = array("I")
        if not count:
            return
        walks = [self._permutation(name) for name in self._names]
        # Where each node's walk stands: permutation_i[steps] = (offset + steps * skip) % M,
        # advanced by adding skip (and wrapping) rather than recomputed with a multiply and a mod.
        cursor = [offset for offset, _ in walks]
        skips = [skip for _, skip in walks]
        taken = bytearray(m)  # taken[slot] = 1 once some node owns it
        table = [0] * m
        filled = 0
        while True:
            for i in range(count):  # one round: every node, in turn, claims one slot
                slot, skip = cursor[i], skips[i]
                while taken[slot]:  # its next preferred slot that is still free
                    slot += skip
                    if slot >= m:
                        slot -= m
                taken[slot] = 1
                table[slot] = i
                cursor[i] = slot + skip - m if slot + skip >= m else slot + skip
                filled += 1
                if filled == m:
                    self._table = array("I", table)
                    return

    def get_node(self, key: Key) -> str:
        if not self._names:
            raise _empty("maglev hashing")
        return self._names[self._table[self.hash_fn(key_bytes(key)) % self.table_size]]

    def assign_hashes(self, positions: np.ndarray) -> np.ndarray:
        if not self._names:
            raise _empty("maglev hashing")
        slots = np.asarray(positions, dtype=np.uint64) % np.uint64(self.table_size)
        owners = np.frombuffer(self._table, dtype=np.uint32)[slots.astype(np.int64)]
        return np.asarray(self._names, dtype=object)[owners]

    def assign(self, keys: Iterable[Key]) -> np.ndarray:
        return self.assign_hashes(hash_keys(keys, self.hash_fn))

    def slot_counts(self) -> dict[str, int]:
        """How many table slots each node owns (its share of the keys is this / table_size)."""
        counts = Counter(self._table)
        return {name: counts.get(i, 0) for i, name in enumerate(self._names)}

    def table(self) -> list[str]:
        """The owner of every slot, in slot order (to measure how many change on a membership change)."""
        return [self._names[i] for i in self._table] if self._names else []

    @property
    def nodes(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, node: object) -> bool:
        return node in self._names


# ---- bounded loads --------------------------------------------------------------------------


class BoundedLoadsRing:
    """Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam; arXiv 2016, SODA 2018).

    Each node may hold at most capacity = ceil(c * m / n) keys, where m counts the keys placed
    (including the one being placed) and n the nodes. A key goes to the first node clockwise from
    its hash that is below capacity. Since n * capacity >= c * m > m - 1, some node always has
    room, and no node ever exceeds ceil(c * mean). The price is state: the placement depends on
    the order keys arrived, so this class remembers it. `get_node(key)` returns a known key's
    node and places an unknown key (looking up a new key = inserting it, as in the paper).

    Membership changes and removals that leave a node above the new capacity re-place every key
    in arrival order (`rebalance`), which keeps the bound exact; `compare.py` measures how many
    more keys that moves than the plain ring.
    """

    def __init__(self, nodes: Iterable[str] = (), *, c: float = 1.25, vnodes: int = 160,
                 hash_fn: HashFn | None = None):
        if not (isinstance(c, int | float) and math.isfinite(c) and c > 1):
            raise ValueError(f"c must be a number > 1 (the allowed max/mean load), got {c!r}")
        self.c = float(c)
        # c as an exact fraction p/q, so capacity = ceil(p*m / (q*n)) in integers: a float
        # ceil could round 1.25 * 8 / 2 = 5.000000001 up to 6 (or down, with a fudge).
        self._c_num, self._c_den = self.c.as_integer_ratio()
        self.ring = ConsistentHashRing(nodes, vnodes=vnodes, hash_fn=hash_fn)
        self.hash_fn = self.ring.hash_fn
        self._placement: dict[bytes, str] = {}  # insertion-ordered: arrival order
        self._loads: Counter[str] = Counter()

    def capacity(self, keys: int | None = None) -> int:
        """ceil(c * keys / nodes): the most keys any node may hold (keys defaults to the count)."""
        if not len(self.ring):
            raise _empty("the bounded-loads ring")
        m = len(self._placement) if keys is None else keys
        return -(-self._c_num * m // (self._c_den * len(self.ring)))  # exact integer ceil

    def get_node(self, key: Key) -> str:
        data = key_bytes(key)
        known = self._placement.get(data)
        if known is not None:
            return known
        return self._place(data)

    place = get_node

    def _place(self, data: bytes) -> str:
        if not len(self.ring):
            raise _empty("the bounded-loads ring")
        cap = self.capacity(len(self._placement) + 1)
        loads = self._loads
        for node in self.ring.successors(self.hash_fn(data)):
            if loads[node] < cap:
                loads[node] += 1
                self._placement[data] = node
                return node
        raise AssertionError("unreachable: n * capacity > m guarantees a node with room")

    def forget(self, key: Key) -> None:
        """Remove a key. If that lowers capacity below some node's load, rebalance."""
        data = key_bytes(key)
        if data not in self._placement:
            raise KeyError(f"key {key!r} was never placed; nothing to forget")
        node = self._placement.pop(data)
        self._loads[node] -= 1
        if self._placement and max(self._loads.values()) > self.capacity():
            self.rebalance()

    def rebalance(self) -> None:
        """Re-place every known key in arrival order under the current membership."""
        keys = list(self._placement)
        self._placement.clear()
        self._loads.clear()
        if len(self.ring):
            for data in keys:
                self._place(data)

    def add_node(self, node: str, weight: float = 1.0) -> None:
        # The cap is the same for every node, so a heavier node could not use its extra arcs.
        _check_unweighted("bounded loads (one capacity for all nodes)", weight)
        self.ring.add_node(node)
        self.rebalance()

    def remove_node(self, node: str) -> None:
        self.ring.remove_node(node)
        if not len(self.ring) and self._placement:
            self._placement.clear()  # nowhere left to keep them
            self._loads.clear()
        self.rebalance()

    def assign(self, keys: Iterable[Key]) -> np.ndarray:
        """Forget everything, place `keys` in order, return their nodes (object array)."""
        self._placement.clear()
        self._loads.clear()
        return np.asarray([self._place(key_bytes(k)) for k in keys], dtype=object)

    def loads(self) -> dict[str, int]:
        return {node: self._loads.get(node, 0) for node in self.ring.nodes}

    def placements(self) -> Iterator[tuple[bytes, str]]:
        return iter(self._placement.items())

    @property
    def nodes(self) -> list[str]:
        return self.ring.nodes

    def __len__(self) -> int:
        return len(self.ring)

    def __contains__(self, node: object) -> bool:
        return node in self.ring
