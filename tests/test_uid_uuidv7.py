"""UUIDv7 (RFC 9562) as implemented for the sortable-key experiment, cross-checked with `uuid6`."""

from __future__ import annotations

import uuid

import pytest
import uuid6

from tests.uid_helpers import START_MS, SteppedClock
from UniqueIdGeneration.uuidv7 import UUIDv7Generator, compose_uuid7, uuid7_timestamp_ms


def test_version_variant_and_timestamp_match_the_reference_package():
    ours = UUIDv7Generator().next_uuid()
    reference = uuid6.uuid7()
    assert ours.version == reference.version == 7
    assert ours.variant == reference.variant == uuid.RFC_4122
    # Both carry "now" in the top 48 bits.
    assert abs(uuid7_timestamp_ms(ours) - uuid7_timestamp_ms(reference)) < 5_000
    assert uuid.UUID(str(ours)) == ours


def test_field_layout_of_rfc_9562_section_5_7():
    value = uuid.UUID(int=compose_uuid7(0x017F22E279B0, 0xCC3, 0x18C4DC0C0C07398F))
    # The example UUIDv7 in RFC 9562 appendix A.6.
    assert str(value) == "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"
    assert uuid7_timestamp_ms(value) == 0x017F22E279B0
    with pytest.raises(ValueError):
        compose_uuid7(1 << 48, 0, 0)


def test_values_strictly_increase_within_and_across_milliseconds():
    clock = SteppedClock()
    generator = UUIDv7Generator(clock=clock)
    values = []
    for _ in range(3):
        values += [generator.next_bytes() for _ in range(5000)]   # > 4096: exercises the rollover
        clock.now_ms += 1
    assert values == sorted(values) and len(set(values)) == len(values)
    assert uuid7_timestamp_ms(int.from_bytes(values[0], "big")) == START_MS
