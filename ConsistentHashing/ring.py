"""A consistent hash ring with virtual nodes: which server owns a key, and who replicates it.

Why a ring? With `hash(key) % N` almost every key changes server when N changes (adding one server
to 1,000 moves ~99.9% of keys). On a ring, servers and keys hash onto the same circle of 2**64
positions and a key belongs to the first server point clockwise from it. Adding a server only
takes over the arcs just before its points; removing one only hands its arcs to the next points.
So only ~K/N keys move — the minimum possible (Karger et al., STOC 1997).

Why virtual nodes? One point per server gives arcs of wildly different lengths (the largest of N
random arcs is ~ln(N) times the mean). Each server therefore gets `vnodes` points ("virtual
nodes"); its load is the sum of `vnodes` arcs, whose relative spread shrinks like 1/sqrt(vnodes)
(see `theory.py`). A node's `weight` scales its number of points, so a twice-as-big server gets
about twice the keys.

Design choices a copy of this code must keep:
- Stable hashing: positions come from BLAKE2b (8-byte digest) of UTF-8 bytes, never from
  Python's built-in `hash()`, which is salted per process (PYTHONHASHSEED): two clients would
  disagree about where every key lives.
- Deterministic collisions: if two virtual nodes land on the same 64-bit position, both stay in
  the sorted list, ordered by node name; a lookup takes the first. The ring is then a function of
  the *set* of members, never of the order they joined, so every client builds the same ring.
- Lookups are O(log V) with `bisect` over a sorted array of 64-bit positions (V = total virtual
  nodes), narrowed first by a small index of where each 1/2^k-th of the circle starts, so a lookup
  compares against a couple of positions instead of ~17. `assign()` / `assign_hashes()` do the
  same search for millions of keys at once with NumPy's `searchsorted`.
- A membership change splices the new points in (or the old ones out) in one pass of memory
  copies, instead of re-sorting all V points or inserting them one at a time: adding or removing
  one node of 1,000 with 160 virtual nodes takes a few milliseconds (see bench.py).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from hashlib import blake2b

import numpy as np

Key = str | bytes | int
HashFn = Callable[[bytes], int]

RING_BITS = 64
RING_SIZE = 1 << RING_BITS  # positions are integers in [0, 2**64)
MAX_INDEX_BITS = 16  # the lookup index has at most 2**16 + 1 entries (512 KiB)


class RingError(Exception):
    """Base class of every error raised by the ring."""


class EmptyRingError(RingError, LookupError):
    """A lookup on a ring with no nodes: there is nowhere to put the key."""


class NotEnoughNodesError(RingError, ValueError):
    """get_nodes(key, n) asked for more distinct nodes than the ring has."""


class UnknownNodeError(RingError, KeyError):
    """remove_node() of a node that is not on the ring."""

    def __str__(self) -> str:  # KeyError would quote the whole message; keep it readable
        return str(self.args[0])


class DuplicateNodeError(RingError, ValueError):
    """add_node() of a node that is already on the ring."""


def key_bytes(key: Key) -> bytes:
    """The bytes we hash for a key: str as UTF-8, bytes as they are, int as its decimal text.

    Redis hands keys back as bytes; `b"user:1"` and `"user:1"` must land on the same node, so we
    hash the UTF-8 encoding of strings rather than their repr.
    """
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode("ascii")
    raise TypeError(f"keys must be str, bytes or int, not {type(key).__name__}: {key!r}")


def stable_hash64(data: bytes) -> int:
    """A 64-bit position on the ring: BLAKE2b with an 8-byte digest, read big-endian.

    The same bytes give the same position in every process, on every machine, in every Python
    version (unlike the built-in `hash()`). BLAKE2b is fast in CPython and its output bits are
    uniform, which is all a ring needs (it is not used for security here).
    """
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def hash_key(key: Key, hash_fn: HashFn | None = None) -> int:
    """The ring position of `key` (with the ring's hash function)."""
    return (hash_fn or stable_hash64)(key_bytes(key))


def hash_keys(keys: Iterable[Key], hash_fn: HashFn | None = None) -> np.ndarray:
    """Ring positions of many keys as a uint64 array (hash once, then assign to many rings)."""
    fn = hash_fn or stable_hash64
    return np.fromiter((fn(key_bytes(k)) for k in keys), dtype=np.uint64)


def vnode_count(vnodes: int, weight: float) -> int:
    """How many points a node of `weight` gets: round(vnodes * weight), at least 1."""
    return max(1, round(vnodes * weight))


class ConsistentHashRing:
    """Nodes (str names) on a hash ring; keys map to the first node point clockwise.

        ring = ConsistentHashRing(["a", "b", "c"])          # 160 virtual nodes each
        ring.get_node("user:42")      -> "a"
        ring.get_nodes("user:42", 2)  -> ["a", "c"]          # primary + 1 replica, distinct
        ring.add_node("d", weight=2)  # ~2x the keys of a weight-1 node

    `hash_fn(data: bytes) -> int` must return a position in [0, 2**64); the default is
    `stable_hash64`. Every client of the same data must use the same hash_fn and vnodes.
    """

    def __init__(self, nodes: Iterable[str] = (), *, vnodes: int = 160, hash_fn: HashFn | None = None):
        if not isinstance(vnodes, int) or isinstance(vnodes, bool) or vnodes < 1:
            raise ValueError(f"vnodes must be a positive int (virtual nodes per unit of weight), "
                             f"got {vnodes!r}")
        self.vnodes = vnodes
        self.hash_fn: HashFn = hash_fn or stable_hash64
        self._weights: dict[str, float] = {}
        self._node_points: dict[str, list[int]] = {}
        # Parallel sorted sequences: _points[i] is a position (a compact array of unsigned 64-bit
        # ints: one memory copy to splice, and NumPy reads it without copying), _owners[i] the
        # node there. _owners has one extra entry, a copy of _owners[0], so a key past the last
        # point wraps around to the first without a branch: _owners[bisect_left(_points, h)].
        self._points = array("Q")
        self._owners: list[str] = []
        # The lookup index: _starts[b] = the first i with _points[i] >= b << _shift, for the
        # 2**bits equal slices of the circle (and _starts[-1] = V). A key in slice b can only land
        # in _points[_starts[b]:_starts[b + 1] + 1], so bisect searches a couple of entries.
        self._starts = array("Q", [0, 0])
        self._shift = RING_BITS - 1
        self._numpy_cache: tuple[np.ndarray, np.ndarray, list[str]] | None = None
        for node in nodes:  # validate and hash every node, then sort once: O(V log V) in all
            self._register(node, 1.0)
        self._rebuild()

    # ---- membership -------------------------------------------------------------------------

    def add_node(self, node: str, weight: float = 1.0) -> None:
        """Put `node` on the ring with round(vnodes * weight) virtual nodes (at least one)."""
        new_points = sorted(self._register(node, weight))
        # Where each new point goes in the current order. Equal positions (a collision) stay
        # ordered by node name, exactly as _rebuild would order them.
        slots = []
        for point in new_points:
            slot = bisect_left(self._points, point)
            while slot < len(self._points) and self._points[slot] == point and self._owners[slot] < node:
                slot += 1
            slots.append(slot)
        # One pass of slice copies (memcpy for the array) instead of V-long memmoves per point.
        # Every slot is <= V, so the wrap-around entry stays last; _after_change renews it.
        self._points = _splice_in(self._points, slots, new_points, array("Q"))
        self._owners = _splice_in(self._owners, slots, [node] * len(new_points), [])
        self._after_change()

    def _register(self, node: str, weight: float) -> list[int]:
        """Validate a new member and record its virtual-node positions (not yet in the lists)."""
        if not isinstance(node, str) or not node:
            raise TypeError(f"node names must be non-empty str, got {node!r}")
        if node in self._weights:
            raise DuplicateNodeError(f"node {node!r} is already on the ring; remove it first to "
                                     f"change its weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float) \
                or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"weight must be a finite number > 0, got {weight!r}")
        points = self._vnode_positions(node, vnode_count(self.vnodes, weight))
        if min(points) < 0 or max(points) >= RING_SIZE:
            raise ValueError(f"hash_fn returned a position outside [0, 2**64) for node {node!r}; "
                             f"it must return an unsigned 64-bit int")
        self._weights[node] = float(weight)
        self._node_points[node] = points
        return points

    def remove_node(self, node: str) -> None:
        """Take `node` off the ring; its arcs fall to the next points clockwise."""
        if node not in self._weights:
            raise UnknownNodeError(f"node {node!r} is not on the ring (nodes: {len(self)}); "
                                   f"nothing to remove")
        # Find the node's own entries by bisecting for its known positions (O(v log V)), then
        # copy the runs between them: the survivors' order (collisions included) is unchanged.
        doomed: set[int] = set()
        for point in self._node_points[node]:
            index = bisect_left(self._points, point)
            while self._owners[index] != node or index in doomed:
                index += 1  # another node's point at the same position, or our own twin
            doomed.add(index)
        cuts = sorted(doomed)
        del self._weights[node]
        del self._node_points[node]
        self._points = _splice_out(self._points, cuts, array("Q"))
        self._owners = _splice_out(self._owners, cuts, [])  # every cut < V: the wrap-around stays last
        self._after_change()

    def copy(self) -> ConsistentHashRing:
        """An independent ring with the same members: plan a change before making it."""
        twin = ConsistentHashRing(vnodes=self.vnodes, hash_fn=self.hash_fn)
        twin._weights = dict(self._weights)
        twin._node_points = dict(self._node_points)  # the point lists are never mutated in place
        twin._points = array("Q", self._points)
        twin._owners = list(self._owners)
        twin._starts = array("Q", self._starts)
        twin._shift = self._shift
        return twin

    def _vnode_positions(self, node: str, count: int) -> list[int]:
        # "name#index": distinct labels per virtual node. The index is always the text after the
        # LAST '#', so two different (name, index) pairs can never produce the same label.
        hash_fn, prefix = self.hash_fn, node.encode("utf-8") + b"#"
        return [hash_fn(prefix + str(i).encode("ascii")) for i in range(count)]

    def _rebuild(self) -> None:
        # Concatenate the points node by node in name order, then sort stably by position: equal
        # positions (collisions) keep name order, so the ring depends only on the set of members.
        # (A stable NumPy argsort of the uint64 positions is ~10x faster than sorting tuples.)
        names = sorted(self._node_points)
        points = np.array([p for name in names for p in self._node_points[name]], dtype=np.uint64)
        owners = [name for name in names for _ in self._node_points[name]]
        order = np.argsort(points, kind="stable")
        self._points = array("Q", points[order].tobytes())
        self._owners = [owners[i] for i in order.tolist()]
        self._after_change()

    def _after_change(self) -> None:
        """Renew the wrap-around entry and rebuild the lookup index after any membership change."""
        del self._owners[len(self._points):]
        if self._points:
            self._owners.append(self._owners[0])
        # About one point per slice of the circle: 2**bits slices for V points, at most 2**16.
        bits = min(MAX_INDEX_BITS, max(1, len(self._points).bit_length()))
        self._shift = RING_BITS - bits
        # starts[b] = how many points lie in slices before b: one linear pass (a count per slice,
        # then a running sum), cheaper than 2**bits binary searches into the points.
        slices = np.frombuffer(self._points, dtype=np.uint64) >> np.uint64(self._shift)
        per_slice = np.bincount(slices.view(np.int64), minlength=2**bits)  # slices < 2**16: same bits
        starts = np.zeros(2**bits + 1, dtype=np.int64)
        np.cumsum(per_slice, out=starts[1:])
        self._starts = array("Q", starts.tobytes())
        self._numpy_cache = None

    # ---- lookups ----------------------------------------------------------------------------

    def get_node(self, key: Key) -> str:
        """The node that owns `key`: the first virtual node at or after hash(key), wrapping."""
        points = self._points
        if not points:
            raise EmptyRingError("the ring has no nodes; add_node() before looking up keys")
        if self.hash_fn is stable_hash64 and key.__class__ is str:
            # The hot path, inlined: the same bytes and hash as stable_hash64(key_bytes(key)),
            # minus two Python calls (~30% of a lookup). A test checks both paths agree.
            position = int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "big")
        else:
            position = self.hash_fn(key_bytes(key))
        # _index_of(position), inlined for the same reason: a Python call costs as much as the search.
        starts, b = self._starts, position >> self._shift
        return self._owners[bisect_left(points, position, starts[b], starts[b + 1])]

    def _index_of(self, position: int) -> int:
        """bisect_left(_points, position), searching only the slice of the circle it falls in."""
        starts, b = self._starts, position >> self._shift
        return bisect_left(self._points, position, starts[b], starts[b + 1])

    def get_node_for_hash(self, position: int) -> str:
        """The owner of a precomputed ring position (see hash_key)."""
        if not self._points:
            raise EmptyRingError("the ring has no nodes; add_node() before looking up keys")
        return self._owners[self._index_of(position)]

    def get_nodes(self, key: Key, n: int) -> list[str]:
        """`n` distinct nodes for `key`, walking clockwise: the primary first, then replicas.

        This is a preference list (Dynamo, section 4.3): adding or removing a node that is not in
        a key's list leaves the list unchanged; removing one that is in it shifts the rest up
        and appends the next distinct node clockwise.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if not self._points:
            raise EmptyRingError("the ring has no nodes; add_node() before looking up keys")
        if n > len(self._weights):
            raise NotEnoughNodesError(f"asked for {n} distinct nodes but the ring has only "
                                      f"{len(self._weights)}; add nodes or ask for fewer replicas")
        return list(self._walk(self.hash_fn(key_bytes(key)), n))

    def _walk(self, position: int, n: int) -> Iterator[str]:
        seen: set[str] = set()
        for node in self.successors(position):
            if node not in seen:
                seen.add(node)
                yield node
                if len(seen) == n:
                    return

    def successors(self, position: int) -> Iterator[str]:
        """Owners of the virtual nodes clockwise from `position`, once around (with repeats)."""
        start = self._index_of(position)
        count = len(self._points)
        owners = self._owners
        for step in range(count):
            yield owners[(start + step) % count]

    # ---- bulk (NumPy) -----------------------------------------------------------------------

    def assign_hashes(self, positions: np.ndarray) -> np.ndarray:
        """Owners of many precomputed positions (uint64 array): an object array of node names.

        Same rule as get_node (first point at or after the position, wrapping), vectorised:
        one `searchsorted` instead of a Python-level bisect per key.
        """
        indices, names = self.assign_indices(positions)
        return np.asarray(names, dtype=object)[indices]

    def assign_indices(self, positions: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Like assign_hashes, but returns (node index per key, node names) — cheapest to compare."""
        if not self._points:
            raise EmptyRingError("the ring has no nodes; add_node() before assigning keys")
        points, owner_index, names = self._numpy_view()
        positions = np.asarray(positions, dtype=np.uint64)
        slots = np.searchsorted(points, positions, side="left")  # == bisect_left
        return owner_index[slots], names  # owner_index has the wrap-around entry at the end

    def assign(self, keys: Iterable[Key]) -> np.ndarray:
        """Owners of many keys (hashes them, then assign_hashes). Equal to [get_node(k) ...]."""
        return self.assign_hashes(hash_keys(keys, self.hash_fn))

    def _numpy_view(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if self._numpy_cache is None:
            names = sorted(self._weights)
            index_of = {name: i for i, name in enumerate(names)}
            points = np.frombuffer(self._points, dtype=np.uint64)  # a view, no copy
            owner_index = np.array([index_of[o] for o in self._owners], dtype=np.int64)
            self._numpy_cache = (points, owner_index, names)
        return self._numpy_cache

    # ---- introspection ----------------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        """Node names, sorted."""
        return sorted(self._weights)

    def weight(self, node: str) -> float:
        return self._weights[node]

    @property
    def total_vnodes(self) -> int:
        return len(self._points)

    def ownership(self) -> dict[str, float]:
        """Fraction of the circle each node owns (its expected share of uniformly hashed keys)."""
        if not self._points:
            return {}
        share = dict.fromkeys(self._weights, 0)
        previous = self._points[-1] - RING_SIZE  # the arc before the first point wraps around
        for point, owner in zip(self._points, self._owners, strict=False):
            share[owner] += point - previous
            previous = point
        return {node: arc / RING_SIZE for node, arc in share.items()}

    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, node: object) -> bool:
        return node in self._weights

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __repr__(self) -> str:
        return f"ConsistentHashRing({len(self)} nodes, {self.total_vnodes} virtual nodes)"


def _splice_in(old, slots: list[int], items: list, out):
    """`old` with items[j] inserted before old[slots[j]] (slots ascending), built into `out`."""
    previous = 0
    for slot, item in zip(slots, items, strict=True):
        out += old[previous:slot]
        out.append(item)
        previous = slot
    out += old[previous:]
    return out


def _splice_out(old, cuts: list[int], out):
    """`old` without the entries at the ascending indices `cuts`, built into `out`."""
    previous = 0
    for cut in cuts:
        out += old[previous:cut]
        previous = cut + 1
    out += old[previous:]
    return out
