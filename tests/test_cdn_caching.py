"""Each RFC 9111 rule the edge implements, over real HTTP on loopback.

One origin process and one edge process serve the whole module; every test scripts its own fresh
path on the origin (exact response headers), so tests never share cache entries. The origin's
per-path request counter is the oracle: a HIT is proven by the counter *not* moving.
"""

from __future__ import annotations

import json

import pytest

from tests.cdn_helpers import UniquePaths, edge_stats, http_date, request

# `origin` and `edge` (module-scoped, one pair per file) come from tests/cdn_fixtures.py.


@pytest.fixture
def fresh():
    return UniquePaths()


def get(port, path, **headers):
    return request(port, path, headers={k.replace("_", "-"): v for k, v in headers.items()})


# --------------------------------------------------------------------------------- freshness

def test_max_age_is_served_from_cache_with_status_headers_and_body_replayed(origin, edge, fresh):
    path = fresh("maxage")
    origin.script(path, [("Cache-Control", "max-age=100"), ("Content-Type", "text/x-test"),
                         ("X-Custom", "kept")], body="payload {n}", status=200)
    first, second = get(edge, path), get(edge, path)
    assert (first.x_cache, second.x_cache) == ("MISS", "HIT")
    assert second.status == 200 and second.body == first.body == b"payload 1"
    assert second.headers["content-type"] == "text/x-test"
    assert second.headers["x-custom"] == "kept"
    assert int(second.headers["age"]) >= 0
    assert origin.count(path) == 1


def test_s_maxage_wins_over_max_age_in_a_shared_cache(origin, edge, fresh):
    shared_short = fresh("smaxage-short")
    origin.script(shared_short, [("Cache-Control", "max-age=1000, s-maxage=0")])
    shared_long = fresh("smaxage-long")
    origin.script(shared_long, [("Cache-Control", "max-age=0, s-maxage=1000")])
    for path in (shared_short, shared_long):
        get(edge, path)
        get(edge, path)
    assert origin.count(shared_short) == 2
    assert origin.count(shared_long) == 1


def test_expires_minus_date_gives_the_lifetime(origin, edge, fresh):
    future = fresh("expires-future")
    origin.script(future, [("Date", http_date()), ("Expires", http_date(+300))])
    past = fresh("expires-past")
    origin.script(past, [("Date", http_date()), ("Expires", http_date(-300))])
    invalid = fresh("expires-invalid")
    origin.script(invalid, [("Expires", "0")])
    for path in (future, past, invalid):
        get(edge, path)
        get(edge, path)
    assert origin.count(future) == 1
    assert origin.count(past) == 2
    assert origin.count(invalid) == 2  # RFC 9111 §5.3: an invalid Expires means already expired


def test_max_age_overrides_expires(origin, edge, fresh):
    path = fresh("maxage-over-expires")
    origin.script(path, [("Date", http_date()), ("Expires", http_date(-300)),
                         ("Cache-Control", "max-age=300")])
    get(edge, path)
    assert get(edge, path).x_cache == "HIT"
    assert origin.count(path) == 1


def test_heuristic_freshness_from_last_modified(origin, edge, fresh):
    path = fresh("heuristic")
    origin.script(path, [("Last-Modified", http_date(-10 * 86400))])
    get(edge, path)
    assert get(edge, path).x_cache == "HIT"
    assert origin.count(path) == 1


def test_no_freshness_and_no_validator_is_not_stored(origin, edge, fresh):
    path = fresh("nothing")
    origin.script(path, [])
    assert [get(edge, path).x_cache for _ in range(2)] == ["BYPASS", "BYPASS"]
    assert origin.count(path) == 2


def test_age_accounts_for_upstream_age_and_old_date(origin, edge, fresh):
    with_age = fresh("upstream-age")
    origin.script(with_age, [("Cache-Control", "max-age=1000"), ("Age", "300")])
    old_date = fresh("old-date")
    origin.script(old_date, [("Cache-Control", "max-age=1000"), ("Date", http_date(-200))])
    # The MISS is answered before its freshness facts are worked out: its Age is computed on its own.
    misses = [get(edge, with_age), get(edge, old_date)]
    assert [reply.x_cache for reply in misses] == ["MISS", "MISS"]
    assert 300 <= int(misses[0].headers["age"]) < 400 and 200 <= int(misses[1].headers["age"]) < 300
    assert 300 <= int(get(edge, with_age).headers["age"]) < 400
    assert 200 <= int(get(edge, old_date).headers["age"]) < 300


def test_response_already_older_than_max_age_is_stale_on_arrival(origin, edge, fresh):
    path = fresh("born-stale")
    origin.script(path, [("Cache-Control", "max-age=100"), ("Age", "500")])
    get(edge, path)
    get(edge, path)
    assert origin.count(path) == 2


# ------------------------------------------------------------------------------ not storable

@pytest.mark.parametrize("cache_control", ["no-store", "private", "private, max-age=100",
                                           'private="Set-Cookie", max-age=100'])
def test_no_store_and_private_are_never_stored(origin, edge, fresh, cache_control):
    path = fresh("nostore")
    origin.script(path, [("Cache-Control", cache_control)])
    replies = [get(edge, path) for _ in range(3)]
    assert [r.x_cache for r in replies] == ["BYPASS"] * 3
    assert [r.body for r in replies] == [b"body 1", b"body 2", b"body 3"]
    assert origin.count(path) == 3


@pytest.mark.parametrize("status, headers, origin_fetches", [
    (404, [("Cache-Control", "max-age=100")], 1),
    (500, [("Cache-Control", "max-age=100")], 1),        # RFC 9111 §3: any final status, if allowed
    (599, [("Cache-Control", "max-age=100")], 1),        # ... even one this cache does not know
    (299, [("Expires", http_date(100))], 1),
    (404, [("Last-Modified", http_date(-86400))], 1),     # heuristically cacheable (RFC 9110 §15.1)
    (418, [("Last-Modified", http_date(-86400))], 2),     # not: no heuristic for 418 ...
    (418, [("Cache-Control", "public"), ("Last-Modified", http_date(-86400))], 1),  # ... unless public
    (302, [("Location", "/elsewhere"), ("Last-Modified", http_date(-86400))], 2),
    (302, [("Location", "/elsewhere"), ("Cache-Control", "max-age=100")], 1),
    # must-understand (§5.2.2.3): a cache that understands the status ignores no-store ...
    (200, [("Cache-Control", "must-understand, no-store, max-age=100")], 1),
    # ... and one that does not, does not store it.
    (599, [("Cache-Control", "must-understand, no-store, max-age=100")], 2),
    (206, [("Cache-Control", "max-age=100"), ("Content-Range", "bytes 0-5/100")], 2),  # a part not asked for
])
def test_which_statuses_are_stored(origin, edge, fresh, status, headers, origin_fetches):
    path = fresh(f"status-{status}")
    origin.script(path, headers, status=status)
    replies = [get(edge, path) for _ in range(2)]
    assert [r.status for r in replies] == [status, status]
    assert origin.count(path) == origin_fetches
    if origin_fetches == 1:
        assert replies[1].x_cache == "HIT" and replies[1].body == replies[0].body


def test_vary_star_is_never_served_from_cache(origin, edge, fresh):
    path = fresh("vary-star")
    origin.script(path, [("Cache-Control", "max-age=100"), ("Vary", "*")])
    assert [get(edge, path).x_cache for _ in range(2)] == ["BYPASS", "BYPASS"]
    assert origin.count(path) == 2


def test_request_with_authorization_needs_an_explicitly_shareable_response(origin, edge, fresh):
    plain = fresh("auth-plain")
    origin.script(plain, [("Cache-Control", "max-age=100")])
    public = fresh("auth-public")
    origin.script(public, [("Cache-Control", "public, max-age=100")])
    for path in (plain, public):
        get(edge, path, Authorization="Bearer secret")
        get(edge, path, Authorization="Bearer secret")
    assert origin.count(plain) == 2
    assert origin.count(public) == 1


# -------------------------------------------------------------------------------- Set-Cookie

def test_set_cookie_without_public_is_not_stored_and_each_user_gets_their_own(origin, edge, fresh):
    path = fresh("cookie")
    origin.script(path, [("Cache-Control", "max-age=100"), ("Set-Cookie", "session=user{n}")],
                  body="hello {n}")
    # {n} is only expanded in the body; use the body to tell the two responses apart.
    first, second = get(edge, path), get(edge, path)
    assert (first.x_cache, second.x_cache) == ("BYPASS", "BYPASS")
    assert (first.body, second.body) == (b"hello 1", b"hello 2")
    assert "set-cookie" in first.headers and "set-cookie" in second.headers


def test_public_response_with_set_cookie_is_stored_without_the_cookie(origin, edge, fresh):
    path = fresh("cookie-public")
    origin.script(path, [("Cache-Control", "public, max-age=100"), ("Set-Cookie", "session=alice")])
    first, second = get(edge, path), get(edge, path)
    assert (first.x_cache, second.x_cache) == ("MISS", "HIT")
    assert first.headers.get("set-cookie") == "session=alice"  # the fetching client gets its cookie
    assert "set-cookie" not in second.headers                 # nobody else ever does
    assert origin.count(path) == 1


# ------------------------------------------------------------------------------ revalidation

def test_no_cache_response_is_revalidated_every_time_with_a_304(origin, edge, fresh):
    path = fresh("nocache")
    origin.script(path, [("Cache-Control", "no-cache"), ("ETag", '"v1"')], body="stable")
    replies = [get(edge, path) for _ in range(3)]
    assert [r.x_cache for r in replies] == ["MISS", "REVALIDATED", "REVALIDATED"]
    assert all(r.body == b"stable" for r in replies)
    assert origin.count(path) == 3
    assert origin.not_modified(path) == 2  # the edge sent If-None-Match and got 304s


def test_304_refreshes_stored_headers_and_the_stored_body_is_served(origin, edge, fresh):
    path = fresh("refresh")
    origin.script(path, [("Cache-Control", "no-cache"), ("ETag", '"same"'), ("X-Version", "1")],
                  body="original body")
    get(edge, path)
    # Same validator, new metadata, and a body the edge must NOT see (the origin answers 304).
    origin.script(path, [("Cache-Control", "no-cache"), ("ETag", '"same"'), ("X-Version", "2")],
                  body="this body is never sent")
    reply = get(edge, path)
    assert reply.x_cache == "REVALIDATED"
    assert reply.headers["x-version"] == "2"
    assert reply.body == b"original body"


def test_changed_resource_replaces_the_stored_copy(origin, edge, fresh):
    path = fresh("changed")
    origin.script(path, [("Cache-Control", "no-cache"), ("ETag", '"a"')], body="version a")
    get(edge, path)
    origin.script(path, [("Cache-Control", "no-cache"), ("ETag", '"b"')], body="version b")
    reply = get(edge, path)
    assert (reply.x_cache, reply.body) == ("MISS", b"version b")


def test_last_modified_revalidation(origin, edge, fresh):
    path = fresh("lastmod")
    origin.script(path, [("Cache-Control", "max-age=0"), ("Last-Modified", http_date(-3600))],
                  body="dated")
    get(edge, path)
    reply = get(edge, path)
    assert (reply.x_cache, reply.body) == ("REVALIDATED", b"dated")
    assert origin.not_modified(path) == 1


@pytest.mark.parametrize("directive", ["no-cache", "max-age=0"])
def test_request_no_cache_or_max_age_zero_forces_revalidation(origin, edge, fresh, directive):
    path = fresh("req-" + directive.replace("=", ""))
    origin.script(path, [("Cache-Control", "max-age=1000"), ("ETag", '"e"')])
    get(edge, path)
    assert get(edge, path).x_cache == "HIT"
    forced = get(edge, path, Cache_Control=directive)
    assert forced.x_cache == "REVALIDATED"
    assert origin.count(path) == 2 and origin.not_modified(path) == 1


def test_must_revalidate_is_revalidated_once_stale(origin, edge, fresh):
    path = fresh("mustreval")
    origin.script(path, [("Cache-Control", "max-age=10, must-revalidate, stale-while-revalidate=100"),
                         ("Age", "20"), ("ETag", '"m"')])
    get(edge, path)
    assert get(edge, path).x_cache == "REVALIDATED"  # never STALE, despite the SWR window


def test_stale_while_revalidate_serves_stale_then_refreshes_in_background(origin, edge, fresh):
    path = fresh("swr")
    origin.script(path, [("Cache-Control", "max-age=10, stale-while-revalidate=1000"), ("Age", "20")],
                  body="edition {n}")
    assert get(edge, path).body == b"edition 1"
    stale = get(edge, path)
    assert (stale.x_cache, stale.body) == ("STALE", b"edition 1")
    assert origin.wait_for_count(path, 2) == 2      # the background refresh reached the origin
    # The refreshed copy (edition 2) replaces the old one once the refresh completes.
    for _ in range(200):
        if get(edge, path).body == b"edition 2":
            break
    else:
        pytest.fail("the background refresh never replaced the stale copy")


# ---------------------------------------------------------------------- client conditionals

def test_client_if_none_match_is_answered_304_from_cache(origin, edge, fresh):
    path = fresh("client-inm")
    origin.script(path, [("Cache-Control", "max-age=100"), ("ETag", '"abc"')])
    get(edge, path)
    matching = get(edge, path, If_None_Match='W/"abc"')
    other = get(edge, path, If_None_Match='"zzz"')
    assert (matching.status, matching.body, matching.x_cache) == (304, b"", "HIT")
    assert matching.headers["etag"] == '"abc"'
    assert (other.status, other.body) == (200, b"body 1")
    assert origin.count(path) == 1


def test_client_if_modified_since_is_answered_304_from_cache(origin, edge, fresh):
    path = fresh("client-ims")
    modified = http_date(-3600)
    origin.script(path, [("Cache-Control", "max-age=100"), ("Last-Modified", modified)])
    get(edge, path)
    assert get(edge, path, If_Modified_Since=http_date(-60)).status == 304
    assert get(edge, path, If_Modified_Since=http_date(-7200)).status == 200
    assert origin.count(path) == 1


def test_client_conditional_on_a_miss_still_fills_the_cache(origin, edge, fresh):
    path = fresh("client-cond-miss")
    origin.script(path, [("Cache-Control", "max-age=100"), ("ETag", '"k"')])
    first = get(edge, path, If_None_Match='"k"')
    assert (first.status, first.x_cache) == (304, "MISS")
    full = get(edge, path)
    assert (full.status, full.x_cache, full.body) == (200, "HIT", b"body 1")


# --------------------------------------------------------------------------------------- Vary

def test_vary_keeps_one_variant_per_request_header_value(origin, edge, fresh):
    path = fresh("vary")
    origin.script(path, [("Cache-Control", "max-age=100"), ("Vary", "Accept-Language")], body="v{n}")
    english = get(edge, path, Accept_Language="en")
    french = get(edge, path, Accept_Language="fr")
    english_again = get(edge, path, Accept_Language="en")
    french_again = get(edge, path, Accept_Language="fr")
    assert [english.x_cache, french.x_cache] == ["MISS", "MISS"]
    assert [english_again.x_cache, french_again.x_cache] == ["HIT", "HIT"]
    assert (english_again.body, french_again.body) == (english.body, french.body)
    assert english.body != french.body
    assert origin.count(path) == 2


def test_bundled_vary_page_serves_the_right_encoding(origin, edge):
    gzip_reply = get(edge, "/vary", Accept_Encoding="gzip")
    plain_reply = get(edge, "/vary")
    assert gzip_reply.headers.get("content-encoding") == "gzip"
    assert "content-encoding" not in plain_reply.headers
    assert get(edge, "/vary", Accept_Encoding="gzip").headers.get("content-encoding") == "gzip"


# ------------------------------------------------------------------ unsafe methods, HEAD, hops

@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_unsafe_methods_are_forwarded_and_invalidate_the_url(origin, edge, fresh, method):
    path = fresh("unsafe")
    origin.script(path, [("Cache-Control", "max-age=100")], body="read {n}")
    get(edge, path)
    assert get(edge, path).x_cache == "HIT"
    write = request(edge, path, method, body=b"data")
    assert write.x_cache == "BYPASS"
    assert origin.count(path, method) == 1
    after = get(edge, path)
    assert after.x_cache == "MISS"
    assert origin.count(path) == 2


def test_a_method_of_unknown_safety_is_forwarded_and_invalidates_like_an_unsafe_one(origin, edge, fresh):
    """RFC 9111 §4.4: "including methods whose safety is unknown" — with Location and
    Content-Location on the same origin (relative or absolute), never another origin's URIs."""
    first, second, moved, described, foreign = (fresh("msearch") for _ in range(5))
    origin.script(first, [("Cache-Control", "max-age=100"), ("Location", moved),
                          ("Content-Location", f"http://elsewhere.example{foreign}")], body="read {n}")
    origin.script(second, [("Cache-Control", "max-age=100"),
                           ("Content-Location", f"{origin_base(edge)}{described}")], body="read {n}")
    for path in (moved, described, foreign):
        origin.script(path, [("Cache-Control", "max-age=100")], body="read {n}")
    paths = (first, second, moved, described, foreign)
    for path in paths:
        get(edge, path)
        assert get(edge, path).x_cache == "HIT"
    for path in (first, second):
        answer = request(edge, path, "M-SEARCH")
        assert (answer.status, answer.x_cache) == (200, "BYPASS")
        assert origin.count(path, "M-SEARCH") == 1
    assert [get(edge, path).x_cache for path in paths] == ["MISS", "MISS", "MISS", "MISS", "HIT"]


def test_an_error_answer_to_an_unknown_method_invalidates_nothing(origin, edge, fresh):
    path = fresh("msearch-error")
    origin.script(path, [("Cache-Control", "max-age=100")], status=500)  # a stored 500 (any status)
    get(edge, path)
    assert request(edge, path, "BREW").status == 500
    assert get(edge, path).x_cache == "HIT"


def origin_base(edge_port: int) -> str:
    return edge_stats(edge_port)["origin"]


def test_head_is_answered_from_a_stored_get(origin, edge, fresh):
    path = fresh("head")
    origin.script(path, [("Cache-Control", "max-age=100")], body="twelve bytes")
    get(edge, path)
    head = request(edge, path, "HEAD")
    assert (head.status, head.x_cache, head.body) == (200, "HIT", b"")
    assert head.headers["content-length"] == "12"
    assert origin.count(path, "HEAD") == 0


def test_hop_by_hop_fields_are_not_replayed(origin, edge, fresh):
    path = fresh("hop")
    origin.script(path, [("Cache-Control", "max-age=100"), ("Connection", "X-Hop"), ("X-Hop", "secret"),
                         ("Keep-Alive", "timeout=5"), ("X-End-To-End", "yes")])
    for reply in (get(edge, path), get(edge, path)):
        assert "x-hop" not in reply.headers and "keep-alive" not in reply.headers
        assert reply.headers["x-end-to-end"] == "yes"


def test_stats_endpoint_counts(edge):
    stats = edge_stats(edge)
    for key in ("hits", "misses", "hit_ratio", "bytes_served", "origin_fetches", "entries"):
        assert key in stats
    assert stats["hits"] > 0 and stats["origin_fetches"] > 0


def test_purge_removes_every_variant(origin, edge, fresh):
    path = fresh("purge")
    origin.script(path, [("Cache-Control", "max-age=100"), ("Vary", "Accept-Language")])
    get(edge, path, Accept_Language="en")
    get(edge, path, Accept_Language="de")
    purge = request(edge, path, "PURGE")
    assert purge.status == 200 and json.loads(purge.body)["variants"] == 2
    assert get(edge, path, Accept_Language="en").x_cache == "MISS"
    assert request(edge, path + "-never-stored", "PURGE").status == 404
    admin = request(edge, f"/__purge?url={path}", "POST")
    assert admin.status == 200
    assert get(edge, path, Accept_Language="en").x_cache == "MISS"


@pytest.mark.parametrize("expires, origin_fetches", [
    ("Sun, 06 Nov 2094 08:49:37 GMT", 1),      # IMF-fixdate, 68 years ahead: fresh, a HIT
    ("Sun, 06 Nov 94 08:49:37 GMT", 2),        # two-digit year: invalid, so already expired
    ("Sun 06 Nov 2094 08:49:37 GMT", 2),       # no comma
    ("Sun, 06 Nov 2094 08:49:37 UTC", 2),      # not GMT
    ("Sun, 06-Nov-2094 08:49:37 GMT", 2),      # dashes
])
def test_only_a_strict_http_date_makes_expires_fresh(origin, edge, fresh, expires, origin_fetches):
    """RFC 9110 §5.6.7 and RFC 9111 §5.3: email.utils would read every one of these as 2094."""
    path = fresh("expires")
    origin.script(path, [("Expires", expires)])
    get(edge, path)
    second = get(edge, path)
    assert origin.count(path) == origin_fetches
    assert (second.x_cache == "HIT") is (origin_fetches == 1)
