"""Stored partial content (RFC 9111 §3.3-3.4): 206 responses from the origin are kept, pieces of
the same strong validator are combined — into a complete 200 once they cover the representation —
and a later range is served from the pieces when they hold it. First the pure policy pieces, then
the same rules through the real edge with a scripted origin that answers ranges with 206."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from SimpleCDN import cache_policy as p
from SimpleCDN.lru_store import LRUStore, StoredResponse
from tests.cdn_helpers import UniquePaths, request, start_edge

# `origin` and `edge` (module-scoped, one pair per file) come from tests/cdn_fixtures.py.

BODY = bytes((i * 7 + 3) % 251 for i in range(1000))  # 1,000 known bytes
TEXT = "".join(chr(ord("a") + (i * 7) % 26) for i in range(1000))
OTHER = "".join(chr(ord("A") + (i * 5) % 26) for i in range(1000))  # another version, same length


# ------------------------------------------------------------------------------------ pure policy

@pytest.mark.parametrize("value, expected", [
    ("bytes 0-99/1000", (0, 99, 1000)), ("bytes 999-999/1000", (999, 999, 1000)),
    (" bytes 5-9/10 ", (5, 9, 10)),
    ("bytes 0-99/*", None),         # unknown complete length: the pieces could never be whole
    ("bytes 0-1000/1000", None),    # past the end
    ("bytes 9-5/10", None), ("bytes */1000", None), ("bytes=0-99/1000", None), ("items 0-1/2", None),
    ("", None), (None, None),
])
def test_parse_content_range(value, expected):
    assert p.parse_content_range(value) == expected


def test_a_piece_needs_a_strong_etag_and_a_body_that_matches_its_content_range():
    headers = [("Content-Range", "bytes 10-19/100"), ("ETag", '"v1"')]
    assert p.partial_piece(headers, 10) == (10, 100, '"v1"')
    assert p.partial_piece(headers, 9) is None                       # body shorter than announced
    assert p.partial_piece([("Content-Range", "bytes 10-19/100"), ("ETag", 'W/"v1"')], 10) is None
    assert p.partial_piece([("Content-Range", "bytes 10-19/100")], 10) is None


@pytest.mark.parametrize("headers, expected", [
    ([("Content-Range", "bytes 0-9/100"), ("ETag", '"v1"')], True),
    ([("Content-Range", "bytes 0-9/100"), ("ETag", 'W/"v1"')], False),  # weak: cannot be combined
    ([("Content-Range", "bytes 0-9/*"), ("ETag", '"v1"')], False),
    ([("ETag", '"v1"')], False),
])
def test_which_206_responses_are_storable(headers, expected):
    fields = [("Cache-Control", "max-age=60"), *headers]
    assert p.is_storable("GET", 206, [("Range", "bytes=0-9")], fields)[0] is expected


pieces = st.lists(st.tuples(st.integers(0, 999), st.integers(1, 300)), min_size=1, max_size=8)


@settings(max_examples=200, derandomize=True)
@given(chosen=pieces)
def test_pieces_merge_into_the_union_of_their_bytes(chosen):
    partial = p.PartialContent('"v1"', len(BODY))
    held = set()
    for first, size in chosen:
        last = min(first + size, len(BODY)) - 1
        partial = partial.with_piece(first, BODY[first:last + 1])
        held.update(range(first, last + 1))
    starts = [start for start, _ in partial.spans]
    for (start, piece), following in zip(partial.spans, [*starts[1:], None], strict=True):
        assert piece == BODY[start:start + len(piece)]                 # every byte in its place
        assert following is None or start + len(piece) < following   # no overlap, no touching
    assert partial.size == len(held)
    assert partial.complete is (len(held) == len(BODY))
    for first, size in chosen:  # every piece added is covered and cut back exactly
        last = min(first + size, len(BODY)) - 1
        assert partial.covers(first, last) and partial.cut(first, last) == BODY[first:last + 1]
    gaps = sorted(set(range(len(BODY))) - held)
    if gaps:
        assert not partial.covers(gaps[0], gaps[0])


def test_adjacent_pieces_become_one_complete_representation():
    partial = p.PartialContent('"v1"', 10).with_piece(5, b"56789").with_piece(0, b"01234")
    assert partial.spans == ((0, b"0123456789"),) and partial.complete


def test_combined_fields_are_the_stored_ones_updated_by_the_newest_piece():
    stored = [("ETag", '"v1"'), ("X-Edition", "1"), ("X-Only-Stored", "kept"), ("Date", "old")]
    newest = [("ETag", '"v1"'), ("X-Edition", "2"), ("Content-Range", "bytes 5-9/10"), ("Date", "new"),
              ("Set-Cookie", "a=b")]
    combined = dict(p.combine_partial_headers(stored, newest))
    assert combined == {"ETag": '"v1"', "X-Edition": "2", "X-Only-Stored": "kept", "Date": "new"}


def test_the_store_charges_the_pieces_bytes():
    store = LRUStore(10_000)
    parts = p.PartialContent('"v1"', 1000).with_piece(0, BODY[:300])
    entry = StoredResponse(206, "Partial Content", [], b"", 0.0, 0.0, partial=parts)
    store.put("k", entry, [])
    assert store.bytes_used == entry.size and entry.size > 300


# ------------------------------------------------------------------------------ through the edge

paths = UniquePaths()


def ranged(origin, stem: str, body: str = TEXT, etag: str = '"v1"', edition: str = "1") -> str:
    path = paths(stem)
    script(origin, path, body, etag, edition)
    return path


def script(origin, path: str, body: str, etag: str, edition: str) -> None:
    origin.script(path, [("Cache-Control", "max-age=600"), ("ETag", etag), ("X-Edition", edition)],
                  body=body, ranges=True)


def get_range(edge: int, path: str, spec: str):
    return request(edge, path, headers={"Range": f"bytes={spec}"})


def test_a_206_from_the_origin_is_stored_and_serves_the_same_and_smaller_ranges(origin, edge):
    path = ranged(origin, "piece")
    first = get_range(edge, path, "100-299")
    assert (first.status, first.x_cache, first.body) == (206, "MISS", TEXT[100:300].encode())
    assert first.headers["content-range"] == "bytes 100-299/1000"
    for spec, (start, end) in [("100-299", (100, 299)), ("150-199", (150, 199))]:
        again = get_range(edge, path, spec)
        assert (again.status, again.x_cache, again.body) == (206, "HIT", TEXT[start:end + 1].encode())
        assert again.headers["content-range"] == f"bytes {start}-{end}/1000"
        assert again.headers["content-length"] == str(end - start + 1)
        assert (again.headers["etag"], again.headers["x-edition"]) == ('"v1"', "1")
    assert origin.count(path) == 1


def test_a_range_outside_the_stored_pieces_goes_to_the_origin(origin, edge):
    path = ranged(origin, "gap")
    get_range(edge, path, "0-99")
    outside = get_range(edge, path, "50-149")  # half of it is not stored
    assert (outside.x_cache, outside.body) == ("MISS", TEXT[50:150].encode())
    whole = request(edge, path)                # pieces never answer a GET without Range
    assert (whole.status, whole.x_cache, whole.body) == (200, "MISS", TEXT.encode())
    assert origin.count(path) == 3


def test_a_later_range_is_cut_across_two_merged_pieces(origin, edge):
    path = ranged(origin, "merged")
    get_range(edge, path, "0-299")
    get_range(edge, path, "300-599")
    across = get_range(edge, path, "250-349")
    assert (across.status, across.x_cache, across.body) == (206, "HIT", TEXT[250:350].encode())
    assert origin.count(path) == 2


def test_pieces_that_cover_the_representation_become_a_complete_200(origin, edge):
    path = ranged(origin, "combined")
    get_range(edge, path, "0-499")
    script(origin, path, TEXT, '"v1"', edition="2")  # same validator, newer fields
    last = get_range(edge, path, "-500")              # a suffix range: bytes 500-999
    assert (last.status, last.x_cache, last.body) == (206, "MISS", TEXT[500:].encode())
    whole = request(edge, path)
    assert (whole.status, whole.x_cache, whole.body) == (200, "HIT", TEXT.encode())
    assert whole.headers["content-length"] == "1000" and "content-range" not in whole.headers
    assert whole.headers["x-edition"] == "2"          # RFC 9111 §3.4: the newest piece's fields
    part = get_range(edge, path, "990-")
    assert (part.status, part.x_cache, part.body) == (206, "HIT", TEXT[990:].encode())
    assert origin.count(path) == 2


def test_a_206_with_another_validator_is_not_combined(origin, edge):
    path = ranged(origin, "other-version")
    get_range(edge, path, "0-499")
    script(origin, path, OTHER, '"v2"', edition="2")  # the representation changed
    second = get_range(edge, path, "500-999")
    assert second.body == OTHER[500:].encode()
    early = get_range(edge, path, "0-99")               # v1's piece is gone, not served with v2's
    assert (early.x_cache, early.body, early.headers["etag"]) == ("MISS", OTHER[:100].encode(), '"v2"')
    whole = request(edge, path)                         # never v1[:500] + v2[500:]
    assert (whole.x_cache, whole.body) == ("MISS", OTHER.encode())
    assert origin.count(path) == 4


def test_a_206_with_a_weak_etag_is_relayed_not_stored(origin, edge):
    path = ranged(origin, "weak", etag='W/"v1"')
    replies = [get_range(edge, path, "0-9") for _ in range(2)]
    assert [(r.status, r.x_cache, r.body) for r in replies] == [(206, "BYPASS", TEXT[:10].encode())] * 2
    assert origin.count(path) == 2


def test_pieces_never_add_up_to_more_than_the_largest_object_stored(origin):
    child, port = start_edge(origin.url, "--max-object-size", "600")
    try:
        path = ranged(origin, "too-big")
        assert [get_range(port, path, "0-499").x_cache for _ in range(2)] == ["MISS", "HIT"]
        second = get_range(port, path, "500-999")  # 1,000 bytes together: over the limit
        assert (second.status, second.x_cache, second.body) == (206, "BYPASS", TEXT[500:].encode())
        assert get_range(port, path, "500-999").x_cache == "BYPASS"  # not stored
        assert get_range(port, path, "0-99").x_cache == "HIT"        # the first piece still is
        assert origin.count(path) == 3
    finally:
        child.stop()
