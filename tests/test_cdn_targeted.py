"""Targeted Cache-Control (RFC 9213), the Set-Cookie policy and Vary normalisation, through the real
edge (issue 16).

Two edges share one origin: the default one (target list SimpleCDN-Cache-Control, CDN-Cache-Control;
responses with Set-Cookie not stored) and one started with `--targeted-cc Acme-Cache-Control
--store-set-cookie --normalise-vary` (RFC 9111 §3.1 to the letter; Accept-* compared by meaning).
The origin's per-path counter is the oracle.
"""

from __future__ import annotations

import pytest

from tests.cdn_helpers import UniquePaths, request, start_edge

# `origin` and `edge` (module-scoped, one pair per file) come from tests/cdn_fixtures.py.


@pytest.fixture(scope="module")
def acme_edge(origin):
    child, port = start_edge(origin.url, "--targeted-cc", "Acme-Cache-Control", "--store-set-cookie",
                             "--normalise-vary")
    yield port
    child.stop()


@pytest.fixture
def fresh():
    return UniquePaths()


def twice(port: int, path: str):
    return request(port, path), request(port, path)


def test_cdn_cache_control_overrides_cache_control_and_both_go_downstream(origin, edge, fresh):
    path = fresh("cdn-cc")
    origin.script(path, [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=600")])
    first, second = twice(edge, path)
    assert (first.x_cache, second.x_cache) == ("MISS", "HIT")
    assert origin.count(path) == 1
    for reply in (first, second):  # browsers still get no-store; the next CDN still gets its field
        assert reply.headers["cache-control"] == "no-store"
        assert reply.headers["cdn-cache-control"] == "max-age=600"


def test_the_edges_own_field_wins_and_is_consumed(origin, edge, fresh):
    path = fresh("own-cc")
    origin.script(path, [("CDN-Cache-Control", "max-age=600"), ("SimpleCDN-Cache-Control", "no-store")])
    first, second = twice(edge, path)
    assert (first.x_cache, second.x_cache) == ("BYPASS", "BYPASS")
    assert origin.count(path) == 2
    assert "simplecdn-cache-control" not in first.headers  # meant for this edge only
    assert first.headers["cdn-cache-control"] == "max-age=600"


@pytest.mark.parametrize("invalid", ["Max-Age=600", "max-age=600,", "max-age=600 public", ""])
def test_an_invalid_targeted_field_is_ignored_not_obeyed(origin, edge, fresh, invalid):
    stored = fresh("invalid-cc")
    origin.script(stored, [("Cache-Control", "max-age=600"), ("CDN-Cache-Control", invalid)])
    assert [r.x_cache for r in twice(edge, stored)] == ["MISS", "HIT"]  # Cache-Control rules
    refused = fresh("invalid-cc-nostore")
    origin.script(refused, [("Cache-Control", "no-store"), ("CDN-Cache-Control", invalid)])
    assert [r.x_cache for r in twice(edge, refused)] == ["BYPASS", "BYPASS"]


def test_targeted_must_revalidate_and_no_cache_are_honoured(origin, edge, fresh):
    path = fresh("cdn-no-cache")
    origin.script(path, [("Cache-Control", "max-age=600"), ("CDN-Cache-Control", "no-cache"),
                         ("ETag", '"v1"')])
    first, second = twice(edge, path)
    assert (first.x_cache, second.x_cache) == ("MISS", "REVALIDATED")
    assert origin.not_modified(path) == 1


def test_a_field_not_on_the_target_list_changes_nothing(origin, acme_edge, fresh):
    path = fresh("acme")
    origin.script(path, [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=600")])
    assert [r.x_cache for r in twice(acme_edge, path)] == ["BYPASS", "BYPASS"]
    acme = fresh("acme-own")
    origin.script(acme, [("Cache-Control", "no-store"), ("Acme-Cache-Control", "max-age=600")])
    assert [r.x_cache for r in twice(acme_edge, acme)] == ["MISS", "HIT"]


def test_set_cookie_responses_are_not_stored_by_default(origin, edge, fresh):
    path = fresh("cookie")
    origin.script(path, [("Cache-Control", "max-age=600"), ("Set-Cookie", "session=abc")])
    first, second = twice(edge, path)
    assert (first.x_cache, second.x_cache) == ("BYPASS", "BYPASS")
    assert (first.body, second.body) == (b"body 1", b"body 2")  # each fetched for its own client
    assert first.headers["set-cookie"] == second.headers["set-cookie"] == "session=abc"


def test_store_set_cookie_follows_rfc_9111_to_the_letter(origin, acme_edge, fresh):
    """--store-set-cookie: the response is stored with its Set-Cookie and replayed to every client
    (RFC 9111 §3.1, §7.3) — which is exactly why an operator usually leaves it off."""
    path = fresh("cookie-rfc")
    origin.script(path, [("Cache-Control", "max-age=600"), ("Set-Cookie", "session=abc")])
    first, second = twice(acme_edge, path)
    assert (first.x_cache, second.x_cache) == ("MISS", "HIT")
    assert (first.body, second.body) == (b"body 1", b"body 1")
    assert second.headers["set-cookie"] == "session=abc"  # one user's cookie, replayed to the next
    assert origin.count(path) == 1


EQUAL_BUT_WRITTEN_DIFFERENTLY = [
    {"Accept-Encoding": "gzip, br", "Accept-Language": "en-US, de;q=0.8"},
    {"Accept-Encoding": "BR,gzip;q=1.0", "Accept-Language": "de;q=0.80, EN-us"},
]


def test_vary_normalisation_is_off_by_default(origin, edge, fresh):
    path = fresh("vary-norm")
    origin.script(path, [("Cache-Control", "max-age=600"), ("Vary", "Accept-Encoding, Accept-Language")])
    replies = [request(edge, path, headers=h) for h in EQUAL_BUT_WRITTEN_DIFFERENTLY]
    assert [r.x_cache for r in replies] == ["MISS", "MISS"]


def test_normalise_vary_lets_equal_accept_values_share_a_variant(origin, acme_edge, fresh):
    path = fresh("vary-norm")
    origin.script(path, [("Cache-Control", "max-age=600"), ("Vary", "Accept-Encoding, Accept-Language")])
    replies = [request(acme_edge, path, headers=h) for h in EQUAL_BUT_WRITTEN_DIFFERENTLY]
    assert [r.x_cache for r in replies] == ["MISS", "HIT"]
    other = request(acme_edge, path, headers={"Accept-Encoding": "gzip;q=0.5, br",
                                              "Accept-Language": "en-US, de;q=0.8"})
    assert other.x_cache == "MISS"  # a different weight is a different preference
    assert origin.count(path) == 2
