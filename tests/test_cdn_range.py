"""Range requests served from a stored complete 200 (RFC 9110 §14, RFC 9111 §3.4), through the
real edge: random single ranges (hypothesis, seeded) checked byte for byte and header by header
against an independent oracle, 416 past the end, If-Range, and multi-range requests forwarded."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cdn_helpers import UniquePaths, request

# `origin` and `edge` (module-scoped, one pair per file) come from tests/cdn_fixtures.py.

BODY = "".join(chr(ord("a") + (i * 7) % 26) for i in range(1000))  # 1,000 known bytes


@pytest.fixture(scope="module")
def stored(origin, edge):
    """A path whose complete 200 is in the edge's store (one origin fetch, then hits only)."""
    path = UniquePaths()("range")
    origin.script(path, [("Cache-Control", "max-age=600"), ("ETag", '"r1"'), ("X-Kept", "yes")], body=BODY)
    assert request(edge, path).x_cache == "MISS"
    return path


def expected_part(first: int | None, last: int | None, length: int) -> tuple[int, int] | None:
    """The oracle, written from RFC 9110 §14.1.2 separately from cache_policy."""
    if first is None:
        return None if last == 0 else (max(0, length - last), length - 1)
    if first >= length:
        return None
    return first, min(length - 1, last if last is not None else length - 1)


ranges = st.one_of(
    st.tuples(st.integers(0, 1100), st.integers(0, 1100)).map(lambda t: (min(t), max(t))),
    st.tuples(st.integers(0, 1100), st.none()),
    st.tuples(st.none(), st.integers(0, 1100)),
)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=ranges)
def test_a_random_single_range_is_cut_from_the_stored_response(origin, edge, stored, spec):
    first, last = spec
    text = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    reply = request(edge, stored, headers={"Range": text})
    part = expected_part(first, last, len(BODY))
    if part is None:
        assert reply.status == 416
        assert reply.headers["content-range"] == f"bytes */{len(BODY)}"
    else:
        start, end = part
        assert reply.status == 206
        assert reply.body == BODY[start:end + 1].encode()
        assert reply.headers["content-range"] == f"bytes {start}-{end}/{len(BODY)}"
        assert reply.headers["content-length"] == str(end - start + 1)
        assert (reply.headers["etag"], reply.headers["x-kept"]) == ('"r1"', "yes")  # §3.4: stored fields
    assert reply.x_cache == "HIT"
    assert origin.count(stored) == 1  # every range came from the store


def test_if_range_with_another_validator_gets_the_whole_response(edge, stored):
    reply = request(edge, stored, headers={"Range": "bytes=0-9", "If-Range": '"r0"'})
    assert (reply.status, reply.body) == (200, BODY.encode())
    assert request(edge, stored, headers={"Range": "bytes=0-9", "If-Range": '"r1"'}).status == 206


def test_an_origin_that_ignores_range_has_its_200_stored_and_cut(origin, edge):
    """The edge forwards the one range (test_cdn_partial.py); an origin that answers with the whole
    200 anyway (RFC 9110 §14.2 lets it) gets that stored, and the range cut from it."""
    path = UniquePaths()("range-miss")
    origin.script(path, [("Cache-Control", "max-age=600")], body=BODY)
    first = request(edge, path, headers={"Range": "bytes=10-19"})
    assert (first.status, first.x_cache, first.body) == (206, "MISS", BODY[10:20].encode())
    assert request(edge, path).body == BODY.encode()
    assert origin.count(path) == 1


def test_several_ranges_and_an_invalid_range(origin, edge):
    path = UniquePaths()("range-multi")
    origin.script(path, [("Cache-Control", "max-age=600")], body=BODY)
    request(edge, path)
    multi = request(edge, path, headers={"Range": "bytes=0-1,5-6"})
    assert multi.x_cache == "BYPASS"  # multipart/byteranges is the origin's job
    assert origin.count(path) == 2
    invalid = request(edge, path, headers={"Range": "bytes=9-1"})
    assert (invalid.status, invalid.x_cache, invalid.body) == (200, "HIT", BODY.encode())  # ignored
