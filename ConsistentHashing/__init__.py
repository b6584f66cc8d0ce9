"""Consistent hashing: the ring done well, its rivals measured, and real Redis shards rebalanced.

    from ConsistentHashing import ConsistentHashRing
    ring = ConsistentHashRing(["cache-a", "cache-b", "cache-c"])
    ring.get_node("user:42")

Modules: ring (the ring), alternatives (modulo, rendezvous, jump, Maglev, bounded loads), theory (the
numbers to expect), sharded_store (a Redis client over N servers placed by the ring); scripts:
simulate, compare, demo, bench (run each with `python -m ConsistentHashing.<name> --help`).
"""

from .alternatives import (
    BoundedLoadsRing,
    JumpHashing,
    KeyPlacement,
    MaglevHashing,
    ModuloHashing,
    RendezvousHashing,
    UnsupportedWeightError,
    jump_hash,
    mix64,
)
from .ring import (
    ConsistentHashRing,
    DuplicateNodeError,
    EmptyRingError,
    NotEnoughNodesError,
    RingError,
    UnknownNodeError,
    hash_key,
    hash_keys,
    stable_hash64,
)

__all__ = [
    "BoundedLoadsRing", "ConsistentHashRing", "DuplicateNodeError", "EmptyRingError", "JumpHashing",
    "KeyPlacement", "MaglevHashing", "ModuloHashing", "NotEnoughNodesError", "RendezvousHashing", "RingError",
    "UnknownNodeError", "UnsupportedWeightError", "hash_key", "hash_keys", "jump_hash", "mix64",
    "stable_hash64",
]
