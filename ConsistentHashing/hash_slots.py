"""Redis Cluster's answer to "which server holds this key": 16,384 hash slots and a table.

Redis Cluster does not use a ring. Every key maps to one of 16,384 slots,

    slot = CRC16(key) mod 16384         (CRC-16/XMODEM; only the {hash tag} if the key has one)

and the cluster keeps an explicit table of which master owns each slot. Adding a master means
moving some slots to it; the keys that move are exactly the keys in those slots, and which slots
move is the operator's choice, not the hash's. This module is the pure part: the slot function
(checked against the server's CLUSTER KEYSLOT in the tests) and a reshard plan.

Source: the Redis Cluster specification, "Key distribution model" and "Hash tags" (and its
Appendix A for the CRC16 reference implementation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SLOT_COUNT = 16_384  # 2**14: CRC16's 16 bits, 14 of them used


def _crc16_table() -> list[int]:
    """CRC-16/XMODEM: polynomial 0x1021, initial value 0, no reflection, no final XOR."""
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM of `data` (crc16(b"123456789") == 0x31C3, the spec's check value)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[(crc >> 8) ^ byte]
    return crc


def hash_tag(key: bytes) -> bytes:
    """The part of the key that is hashed: the text between the first '{' and the next '}', if
    that is non-empty; otherwise the whole key. So user:{42}:name and user:{42}:cart share a slot
    (and can be used together in one multi-key command)."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def key_slot(key: str | bytes) -> int:
    """The hash slot of a key, as CLUSTER KEYSLOT computes it."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    return crc16(hash_tag(data)) % SLOT_COUNT


def plan_reshard(slots_of: Mapping[str, Iterable[int]], count: int) -> dict[str, list[int]]:
    """Which slots to move to a new, empty master: `count` slots, taken from the current masters in
    proportion to what they own; each gives its highest-numbered slots, so a master that owned
    one contiguous range still does. Returns {source: [slots]}.

    The plan is made *before* the move, so the keys that will move can be predicted from it:
    exactly the keys whose slot is in the plan.
    """
    owned = {source: sorted(slots) for source, slots in slots_of.items()}
    total = sum(len(slots) for slots in owned.values())
    if not 0 <= count <= total:
        raise ValueError(f"can move between 0 and {total} slots, not {count}")
    # Largest remainder: every source gives floor(share) and the biggest remainders one more.
    shares = {source: count * len(slots) / total for source, slots in owned.items()} if total else {}
    quota = {source: int(share) for source, share in shares.items()}
    leftover = count - sum(quota.values())
    for source in sorted(shares, key=lambda s: (quota[s] - shares[s], s))[:leftover]:
        quota[source] += 1
    return {source: slots[len(slots) - quota[source]:] if quota[source] else []
            for source, slots in owned.items()}
