"""Pure unit tests of SimpleCDN.cache_policy and SimpleCDN.lru_store: no sockets, fixed clocks."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from SimpleCDN import cache_policy as p
from SimpleCDN.lru_store import ENTRY_OVERHEAD_BYTES, LRUStore, StoredResponse

T0 = 1_700_000_000.0


def date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


# ----------------------------------------------------------------------------- Cache-Control

def test_parse_cache_control_tokens_arguments_quotes_and_case():
    parsed = p.parse_cache_control('Max-Age=60, no-cache="Set-Cookie, X-A", public,  s-maxage = 5 ,,')
    assert parsed == {"max-age": "60", "no-cache": "Set-Cookie, X-A", "public": None, "s-maxage": "5"}


def test_first_directive_wins_and_invalid_deltas_are_none():
    parsed = p.parse_cache_control("max-age=10, max-age=1000")
    assert p.delta_seconds(parsed, "max-age") == 10
    assert p.delta_seconds(p.parse_cache_control("max-age=-1"), "max-age") is None
    assert p.delta_seconds(p.parse_cache_control("max-age=99999999999999"), "max-age") == 2**31


def test_only_sp_and_htab_are_optional_whitespace():
    # RFC 9110 §5.6.3. str.strip() would also remove \x0b, \x0c and \x85 and accept these.
    assert p.split_list(" gzip ,\tbr\t,, ") == ["gzip", "br"]
    assert p.split_list("\x0bchunked") == ["\x0bchunked"]
    assert p.delta_seconds(p.parse_cache_control("max-age=10\x0c"), "max-age") is None
    assert p.freshness_lifetime(200, [("Cache-Control", "max-age=10\x0b")]) == 0.0


# -------------------------------------------------------------------------------- storability

@pytest.mark.parametrize("method, status, request_headers, response_headers, expected", [
    ("GET", 200, [], [("Cache-Control", "max-age=60")], True),
    ("HEAD", 200, [], [("Cache-Control", "max-age=60")], True),
    ("POST", 200, [], [("Cache-Control", "max-age=60")], False),
    ("GET", 200, [], [("Cache-Control", "no-store")], False),
    ("GET", 200, [("Cache-Control", "no-store")], [("Cache-Control", "max-age=60")], False),
    ("GET", 200, [], [("Cache-Control", "private, max-age=60")], False),
    ("GET", 200, [], [("Cache-Control", "no-cache"), ("ETag", '"x"')], True),
    ("GET", 404, [], [("Last-Modified", date(T0 - 1000)), ("Date", date(T0))], True),
    ("GET", 500, [], [("Cache-Control", "max-age=60")], True),         # any final status (§3)
    ("GET", 302, [], [("Last-Modified", date(T0 - 1000)), ("Date", date(T0))], False),
    ("GET", 302, [], [("Cache-Control", "max-age=60")], True),
    ("GET", 206, [], [("Cache-Control", "max-age=60")], False),
    ("GET", 200, [], [("Cache-Control", "max-age=60"), ("Vary", "Accept, *")], False),
    ("GET", 200, [], [], False),
    ("GET", 200, [("Authorization", "x")], [("Cache-Control", "max-age=60")], False),
    ("GET", 200, [("Authorization", "x")], [("Cache-Control", "s-maxage=60")], True),
    ("GET", 200, [("Authorization", "x")], [("Cache-Control", "max-age=60, must-revalidate")], True),
    ("GET", 200, [], [("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")], False),
    ("GET", 200, [], [("Cache-Control", "public, max-age=60"), ("Set-Cookie", "a=b")], True),
    # RFC 9112 §6.3: both framings at once is an error to relay at most, never to keep.
    ("GET", 200, [], [("Cache-Control", "max-age=60"), ("Content-Length", "3"),
                      ("Transfer-Encoding", "chunked")], False),
])
def test_is_storable(method, status, request_headers, response_headers, expected):
    assert p.is_storable(method, status, request_headers, response_headers)[0] is expected


def test_stored_headers_drop_hop_by_hop_connection_named_and_set_cookie():
    stored = p.headers_to_store([("Connection", "X-Hop, close"), ("X-Hop", "1"), ("Keep-Alive", "5"),
                                 ("Transfer-Encoding", "chunked"), ("Set-Cookie", "a=b"),
                                 ("ETag", '"e"'), ("Age", "3")])
    assert stored == [("ETag", '"e"'), ("Age", "3")]


# -------------------------------------------------------------------------------- freshness

@pytest.mark.parametrize("headers, lifetime", [
    ([("Cache-Control", "max-age=100, s-maxage=7")], 7),                       # s-maxage first
    ([("Cache-Control", "max-age=100"), ("Expires", date(T0 + 5)), ("Date", date(T0))], 100),
    ([("Expires", date(T0 + 50)), ("Date", date(T0))], 50),                     # Expires - Date
    ([("Expires", date(T0 - 50)), ("Date", date(T0))], 0),
    ([("Expires", "0"), ("Date", date(T0))], 0),                               # invalid: expired
    ([("Cache-Control", "max-age=abc")], 0),                                   # invalid: stale
    ([("Last-Modified", date(T0 - 1000)), ("Date", date(T0))], 100),           # 10% heuristic
    ([("Last-Modified", date(T0 - 100 * 86400)), ("Date", date(T0))], 86400),  # capped at a day
    ([], 0),                                                                   # none
])
def test_freshness_lifetime_order(headers, lifetime):
    assert p.freshness_lifetime(200, headers) == pytest.approx(lifetime)


def test_expires_without_date_is_measured_from_the_arrival_time():
    # RFC 9111 §4.2.1: "using the time the message was received if [Date] is not present".
    headers = [("Expires", date(T0 + 60))]
    assert p.freshness_lifetime(200, headers, response_time=T0) == pytest.approx(60)
    assert p.Freshness.of(200, headers, T0, T0).lifetime == pytest.approx(60)


def test_non_ascii_digits_are_not_numbers():
    # "\xb2".isdigit() is True but int("\xb2") raises: a hostile field must not become a 500.
    assert p.delta_seconds(p.parse_cache_control("max-age=\xb2"), "max-age") is None
    assert p.freshness_lifetime(200, [("Cache-Control", "max-age=\xb2")]) == 0
    assert p.current_age([("Age", "\xb2"), ("Date", date(T0))], T0, T0, T0 + 5) == pytest.approx(5)


def test_heuristic_only_for_heuristically_cacheable_status():
    headers = [("Last-Modified", date(T0 - 1000)), ("Date", date(T0))]
    assert p.freshness_lifetime(302, headers) == 0


def test_current_age_follows_rfc_9111_section_4_2_3():
    # Date 10 s before we received it (apparent age 10); upstream Age 3 + 2 s request delay = 5.
    headers = [("Date", date(T0 - 10)), ("Age", "3")]
    age = p.current_age(headers, request_time=T0 - 2, response_time=T0, now=T0 + 30)
    assert age == pytest.approx(10 + 30)
    # Upstream Age dominates when the clocks agree.
    headers = [("Date", date(T0)), ("Age", "100")]
    assert p.current_age(headers, T0 - 1, T0, T0 + 5) == pytest.approx(101 + 5)
    # A Date in the future (clock skew) never makes the age negative.
    assert p.current_age([("Date", date(T0 + 500))], T0, T0, T0) == 0


def test_request_directives_force_revalidation():
    assert p.request_needs_revalidation([("Cache-Control", "no-cache")], 0, 100)
    assert p.request_needs_revalidation([("Cache-Control", "max-age=0")], 1, 100)
    assert not p.request_needs_revalidation([("Cache-Control", "max-age=50")], 10, 100)
    assert p.request_needs_revalidation([("Cache-Control", "min-fresh=95")], 10, 100)
    assert p.request_needs_revalidation([("Pragma", "no-cache")], 0, 100)
    assert not p.request_needs_revalidation([("Pragma", "no-cache"), ("Cache-Control", "max-age=50")], 0, 100)
    assert not p.request_needs_revalidation([], 10, 100)


def test_stale_windows_and_what_forbids_them():
    swr = [("Cache-Control", "max-age=10, stale-while-revalidate=30, stale-if-error=100")]
    assert p.may_serve_stale_while_revalidate(swr, age=35, lifetime=10)
    assert not p.may_serve_stale_while_revalidate(swr, age=41, lifetime=10)
    assert p.may_serve_stale_on_error(swr, age=100, lifetime=10)
    assert not p.may_serve_stale_on_error(swr, age=111, lifetime=10)
    for strict in ("must-revalidate", "proxy-revalidate", "s-maxage=10"):
        headers = [("Cache-Control", f"max-age=10, {strict}, stale-while-revalidate=30, stale-if-error=99")]
        assert not p.may_serve_stale_while_revalidate(headers, 12, 10)
        assert not p.may_serve_stale_on_error(headers, 12, 10)


# -------------------------------------------------------------------------------------- Vary

def test_variant_key_normalises_values_and_distinguishes_absent_from_empty():
    names = p.vary_names([("Vary", "Accept-Encoding, accept-language"), ("Vary", "Accept-Encoding")])
    assert names == ("accept-encoding", "accept-language")
    a = p.variant_key(names, [("Accept-Encoding", "gzip,br"), ("Accept-Language", "en")])
    b = p.variant_key(names, [("accept-encoding", "gzip, br"), ("ACCEPT-LANGUAGE", "en")])
    assert a == b
    empty = [("Accept-Encoding", ""), ("Accept-Language", "")]
    assert p.variant_key(names, []) != p.variant_key(names, empty)


# ------------------------------------------------------------------------------- conditionals

def test_conditional_request_matching():
    stored = [("ETag", '"v1"'), ("Last-Modified", date(T0))]
    assert p.conditional_request_matches([("If-None-Match", '"x", W/"v1"')], stored)
    assert p.conditional_request_matches([("If-None-Match", "*")], stored)
    assert not p.conditional_request_matches([("If-None-Match", '"v2"')], stored)
    # If-None-Match takes precedence over If-Modified-Since (RFC 9110 §13.2.2).
    assert not p.conditional_request_matches([("If-None-Match", '"v2"'),
                                              ("If-Modified-Since", date(T0 + 10))], stored)
    assert p.conditional_request_matches([("If-Modified-Since", date(T0))], stored)
    assert not p.conditional_request_matches([("If-Modified-Since", date(T0 - 1))], stored)
    assert not p.conditional_request_matches([("If-Modified-Since", "garbage")], stored)


def test_if_none_match_star_matches_a_stored_response_without_an_etag():
    # RFC 9110 §13.1.2: "*" is false whenever a current representation exists.
    assert p.conditional_request_matches([("If-None-Match", "*")], [("Content-Type", "text/plain")])


def test_revalidation_headers_and_304_merge():
    stored = [("ETag", '"v1"'), ("Last-Modified", date(T0)), ("Content-Length", "5"), ("X-V", "1")]
    assert p.revalidation_headers(stored) == [("If-None-Match", '"v1"'), ("If-Modified-Since", date(T0))]
    merged = p.merge_304_headers(stored, [("X-V", "2"), ("Content-Length", "0"), ("Connection", "close"),
                                          ("Cache-Control", "max-age=5")])
    assert ("X-V", "2") in merged and ("X-V", "1") not in merged
    assert ("Content-Length", "5") in merged                     # framing of the stored body kept
    assert ("Cache-Control", "max-age=5") in merged
    assert all(k.lower() != "connection" for k, _ in merged)
    # The first fetch's Age/Date must not age the refreshed copy.
    refreshed = p.merge_304_headers([("Age", "500"), ("Date", date(T0 - 500)), ("ETag", '"v"')],
                                    [("Date", date(T0))])
    assert ("Date", date(T0)) in refreshed and all(k != "Age" for k, _ in refreshed)


# ---------------------------------------------------------------------------------- targets

@pytest.mark.parametrize("target, normalised", [
    ("/a/b?x=1", "/a/b?x=1"),
    ("/../../etc/passwd", "/etc/passwd"),
    ("/a/./b/../c", "/a/c"),
    ("/a/b/..", "/a/"),
    ("/%2e%2e/%2E%2E/etc/passwd", "/etc/passwd"),
    ("/%7euser/%41", "/~user/A"),
    ("/a%2fb%2F..", "/a%2Fb%2F.."),
    ("/q?%2e=%0d%0a", "/q?.=%0D%0A"),
    ("http://evil.example/x?y", "/x?y"),
    ("https://evil.example", "/"),
])
def test_normalise_target(target, normalised):
    assert p.normalise_target(target) == normalised


@pytest.mark.parametrize("target", ["", "*", "a/b", "/a b", "/a\r\nX: y", "/a\x00", "/a#f", "http://[x/"])
def test_normalise_target_refuses(target):
    with pytest.raises(p.BadTarget):
        p.normalise_target(target)


def test_cache_key_uses_the_configured_origin_only():
    assert p.cache_key("http://origin:9000/", "/x?y") == "http://origin:9000/x?y"


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(["..", ".", "%2e%2e", "%2E.", "a", "b", "", "%2f", "etc"]), max_size=12),
       st.booleans())
def test_no_normalised_path_contains_a_dot_segment(segments, trailing):
    target = "/" + "/".join(segments) + ("/" if trailing else "")
    path = p.normalise_target(target)
    assert path.startswith("/")
    assert ".." not in path.split("/") and "." not in path.split("/")[1:]


# -------------------------------------------------------------------------------- LRU store

def entry(body_size: int, vary: tuple[str, ...] = ()) -> StoredResponse:
    return StoredResponse(200, "OK", [("X", "1")], b"x" * body_size, T0, T0, vary)


def test_lru_evicts_least_recently_used_to_keep_the_byte_bound():
    one = entry(1000).size
    store = LRUStore(max_bytes=3 * one)
    for key in "abc":
        assert store.put(key, entry(1000), [])
    store.lookup("a", [])              # a is now the most recently used
    store.put("d", entry(1000), [])
    assert store.lookup("b", []) is None and store.lookup("a", []) is not None
    assert store.bytes_used <= store.max_bytes and store.evictions == 1


def test_lru_refuses_an_entry_larger_than_the_budget():
    store = LRUStore(max_bytes=500)
    assert not store.put("big", entry(1000), [])
    assert len(store) == 0 and store.bytes_used == 0


def test_lru_a_newer_response_too_big_to_keep_drops_the_older_copy():
    store = LRUStore(max_bytes=500)
    assert store.put("k", entry(10), [])
    assert not store.put("k", entry(1000), [])  # e.g. a forced reload returned a bigger new version
    assert store.lookup("k", []) is None        # the old version is not served as if still current
    assert len(store) == 0 and store.bytes_used == 0


def test_lru_variants_invalidate_and_vary_change():
    store = LRUStore(max_bytes=10**6)
    store.put("k", entry(10, ("accept-language",)), [("Accept-Language", "en")])
    store.put("k", entry(20, ("accept-language",)), [("Accept-Language", "fr")])
    assert len(store) == 2
    assert len(store.lookup("k", [("Accept-Language", "fr")]).body) == 20
    store.put("k", entry(30, ("accept-encoding",)), [("Accept-Encoding", "gzip")])  # Vary changed
    assert len(store) == 1
    assert store.invalidate("k") == 1 and store.bytes_used == 0


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3000), st.booleans()), max_size=60))
def test_lru_byte_accounting_invariant(operations):
    store = LRUStore(max_bytes=8000)
    for key, size, purge in operations:
        if purge:
            store.invalidate(key)
        else:
            store.put(key, entry(size), [])
        assert store.bytes_used <= store.max_bytes
        assert store.bytes_used == sum(e.size for e in store._entries.values())
    assert all(e.size >= ENTRY_OVERHEAD_BYTES for e in store._entries.values())


# ------------------------------------------------------------------ issue 16: strict HTTP-date (§5.6.7)

@pytest.mark.parametrize("value", [
    "Sun, 06 Nov 1994 08:49:37 GMT",      # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",     # obsolete RFC 850 form
    "Sun Nov  6 08:49:37 1994",           # obsolete asctime form
])
def test_the_three_http_date_forms_are_accepted(value):
    assert p.parse_http_date(value) == 784111777.0


@pytest.mark.parametrize("value", [
    "Sun, 06 Nov 94 08:49:37 GMT",        # two-digit year in the IMF form
    "Sun 06 Nov 1994 08:49:37 GMT",       # missing comma
    "Sun,  06 Nov 1994 08:49:37 GMT",     # extra space
    "Sun, 06-Nov-1994 08:49:37 GMT",      # dashes in the IMF form
    "Sun, 06 Nov 1994 08.49.37 GMT",      # periods
    "Sun, 06 Nov 1994 8:49:37 GMT",       # one-digit hour
    "Sun, 06 Nov 1994 08:49:37 UTC",      # a zone other than GMT
    "Sun, 06 Nov 1994 08:49:37 +0000",
    "sun, 06 nov 1994 08:49:37 gmt",      # names are case-sensitive
    "Sun, 31 Feb 1994 08:49:37 GMT",      # no such day
    "Sun, 06 Nov 1994 24:00:00 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",  # two field lines, joined
    "0", "", "-1",
])
def test_anything_else_is_not_an_http_date(value):
    assert p.parse_http_date(value) is None


def test_an_rfc850_year_more_than_50_years_ahead_is_in_the_past():
    now = p.parse_http_date("Sun, 06 Nov 2026 00:00:00 GMT")
    assert p.parse_http_date("Monday, 01-Jan-80 00:00:00 GMT", now=now) == \
        p.parse_http_date("Tue, 01 Jan 1980 00:00:00 GMT")
    assert p.parse_http_date("Monday, 01-Jan-70 00:00:00 GMT", now=now) == \
        p.parse_http_date("Tue, 01 Jan 2070 00:00:00 GMT")  # 44 years ahead: not more than 50
    assert p.parse_http_date("Monday, 01-Jan-30 00:00:00 GMT", now=now) == \
        p.parse_http_date("Tue, 01 Jan 2030 00:00:00 GMT")


@pytest.mark.parametrize("expires", ["Sun, 06 Nov 94 08:49:37 GMT", "0", "tomorrow"])
def test_an_invalid_expires_means_already_expired(expires):
    headers = [("Date", date(T0)), ("Expires", expires)]
    assert p.freshness_lifetime(200, headers) == 0.0


def test_two_expires_field_lines_mean_already_expired():
    headers = [("Date", date(T0)), ("Expires", date(T0 + 100)), ("Expires", date(T0 + 100))]
    assert p.freshness_lifetime(200, headers) == 0.0


# ------------------------------------------------------------- issue 16: any final status (§3, §4.2.2)

def test_heuristic_freshness_only_for_heuristically_cacheable_statuses_or_public():
    headers = [("Date", date(T0)), ("Last-Modified", date(T0 - 1000))]
    assert p.heuristic_lifetime(404, headers) == 100.0
    assert p.heuristic_lifetime(418, headers) == 0.0
    assert p.heuristic_lifetime(418, [*headers, ("Cache-Control", "public")]) == 100.0


@pytest.mark.parametrize("status, cache_control, expected", [
    (500, "max-age=60", True), (599, "max-age=60", True), (418, "public", False),  # no freshness at all
    (200, "must-understand, no-store, max-age=60", True),
    (599, "must-understand, no-store, max-age=60", False),
    (206, "max-age=60", False), (304, "max-age=60", False),
])
def test_storable_statuses(status, cache_control, expected):
    assert p.is_storable("GET", status, [], [("Cache-Control", cache_control)])[0] is expected


# --------------------------------------------------- issue 16: stale when the origin is unreachable

@pytest.mark.parametrize("cache_control, age, expected", [
    ("max-age=10", 1000, True),                       # RFC 9111 §4.2.4: no window given, any age
    ("max-age=10, stale-if-error=60", 50, True),
    ("max-age=10, stale-if-error=60", 100, False),    # the origin's window is honoured
    ("max-age=10, must-revalidate", 11, False),
    ("max-age=10, proxy-revalidate", 11, False),
    ("s-maxage=10", 11, False),
    ("no-cache, max-age=10", 11, False),
])
def test_stale_when_disconnected(cache_control, age, expected):
    assert p.may_serve_stale_when_disconnected([("Cache-Control", cache_control)], age, 10) is expected


def test_no_cache_forbids_stale_if_error_too():
    assert not p.may_serve_stale_on_error([("Cache-Control", "no-cache, stale-if-error=60")], 11, 10)


# ------------------------------------------------------------------------ issue 16: Set-Cookie policy

def test_set_cookie_policy_default_and_rfc_mode():
    headers = [("Cache-Control", "max-age=60"), ("Set-Cookie", "id=1")]
    assert p.is_storable("GET", 200, [], headers)[0] is False
    assert p.is_storable("GET", 200, [], headers, store_set_cookie=True)[0] is True
    assert ("Set-Cookie", "id=1") not in p.headers_to_store(headers)
    assert ("Set-Cookie", "id=1") in p.headers_to_store(headers, keep_set_cookie=True)


# --------------------------------------------------------- issue 16: targeted Cache-Control (RFC 9213)

@pytest.mark.parametrize("text, expected", [
    ("max-age=60", {"max-age": 60}),
    ("max-age=60, must-revalidate", {"max-age": 60, "must-revalidate": True}),
    ("no-cache;x=1, s-maxage=3", {"no-cache": True, "s-maxage": 3}),   # parameters ignored
    ('private="Set-Cookie"', {"private": "Set-Cookie"}),
    ("none", {"none": True}),
    ("", {}),
    ("Max-Age=60", None),          # keys are lower case in Structured Fields
    ("max-age=60,", None),         # trailing comma
    ("max-age=60 no-store", None),
    ("max-age=", None),
])
def test_structured_dictionary_parsing(text, expected):
    assert p.parse_sf_dictionary(text) == expected


TARGETS = ("SimpleCDN-Cache-Control", "CDN-Cache-Control")


@pytest.mark.parametrize("headers, lifetime", [
    ([("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "max-age=600")], 600),
    ([("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=600")], 600),
    ([("Expires", date(T0 + 5)), ("CDN-Cache-Control", "max-age=600")], 600),   # Expires ignored too
    ([("CDN-Cache-Control", "max-age=600"), ("SimpleCDN-Cache-Control", "max-age=7")], 7),  # list order
    ([("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "Max-Age=600")], 60),  # invalid: ignored
    ([("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "")], 60),             # empty: ignored
    ([("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "max-age=1.5")], 0),   # wrong type: stale
    ([("Cache-Control", "max-age=60"), ("Other-Cache-Control", "max-age=600")], 60),  # not targeted
])
def test_targeted_field_replaces_cache_control_and_expires(headers, lifetime):
    view = p.policy_headers([("Date", date(T0)), *headers], TARGETS)
    assert p.freshness_lifetime(200, view) == lifetime


def test_targeted_no_store_and_private_are_honoured():
    for directive in ("no-store", "private"):
        view = p.policy_headers([("Cache-Control", "max-age=60"), ("CDN-Cache-Control", directive)],
                                TARGETS)
        assert p.is_storable("GET", 200, [], view)[0] is False



# ---------------------------------------------------------------------- issue 16: Vary normalisation

@pytest.mark.parametrize("a, b, same", [
    ("gzip, br", "br,gzip", True),
    ("gzip;q=1.0, br", "BR, GZIP", True),
    ("en-US, de;q=0.8", "de;q=0.80,en-us", True),
    ("gzip;q=0.5, br", "gzip, br", False),
    ("gzip;q=0, br", "br", False),       # q=0 means "not acceptable": not the same as absent
    ("gzip;q=2", "gzip", False),          # unparsable weights are kept as written
])
def test_normalised_accept_values(a, b, same):
    names = ("accept-encoding",)
    keys = [p.variant_key(names, [("Accept-Encoding", v)], normalise=True) for v in (a, b)]
    assert (keys[0] == keys[1]) is same
    assert p.variant_key(names, [("Accept-Encoding", "gzip, br")]) != \
        p.variant_key(names, [("Accept-Encoding", "br, gzip")])  # off by default


# ------------------------------------------------------------------------------ issue 16: Range (§14)

@pytest.mark.parametrize("value, expected", [
    ("bytes=0-99", [(0, 99)]), ("bytes=9500-", [(9500, None)]), ("bytes=-500", [(None, 500)]),
    ("Bytes = 1-2, 4-5", [(1, 2), (4, 5)]),
    ("bytes=5-1", None),            # last < first: the whole set is invalid
    ("bytes=", None), ("bytes=a-b", None), ("items=0-1", None), ("bytes 0-1", None), (None, None),
])
def test_parse_byte_ranges(value, expected):
    assert p.parse_byte_ranges(value) == expected


@pytest.mark.parametrize("spec, length, expected", [
    ((0, 99), 1000, (0, 99)), ((990, 2000), 1000, (990, 999)), ((None, 10), 1000, (990, 999)),
    ((None, 5000), 1000, (0, 999)), ((500, None), 1000, (500, 999)),
    ((1000, None), 1000, None), ((None, 0), 1000, None), ((0, 0), 0, None),
])
def test_resolve_byte_range(spec, length, expected):
    assert p.resolve_byte_range(spec, length) == expected


def test_if_range_needs_the_stored_strong_validator():
    stored = [("ETag", '"v1"'), ("Last-Modified", date(T0 - 100)), ("Date", date(T0))]
    assert p.if_range_matches(None, stored)
    assert p.if_range_matches('"v1"', stored)
    assert not p.if_range_matches('"v2"', stored)
    assert not p.if_range_matches('W/"v1"', stored)                       # weak: never for Range
    assert not p.if_range_matches('"v1"', [("ETag", 'W/"v1"')])
    assert p.if_range_matches(date(T0 - 100), stored)
    assert not p.if_range_matches(date(T0 - 100), [("Last-Modified", date(T0)), ("Date", date(T0))])


def test_a_304_updates_a_stored_set_cookie_only_in_rfc_mode():
    stored = [("ETag", '"v1"'), ("Set-Cookie", "id=1")]
    fresh = [("ETag", '"v1"'), ("Set-Cookie", "id=2")]
    assert ("Set-Cookie", "id=2") in p.merge_304_headers(stored, fresh, keep_set_cookie=True)
    assert ("Set-Cookie", "id=2") not in p.merge_304_headers(stored, fresh)


def test_indexed_fields_answer_like_the_plain_list():
    """p.Fields finds a field through its index; every answer must be the plain list's."""
    pairs = [("Cache-Control", "max-age=60"), ("ETag", '"a"'), ("cache-control", "public"),
             ("X-Empty", ""), ("Set-Cookie", "a=1"), ("SET-COOKIE", "b=2")]
    fields = p.Fields(pairs)
    for name in ("cache-control", "CACHE-CONTROL", "etag", "x-empty", "set-cookie", "age", "x"):
        assert p.header_values(fields, name) == p.header_values(pairs, name)
        assert p.get_header(fields, name) == p.get_header(pairs, name)
    assert p.cache_control(fields) == {"max-age": "60", "public": None}
    p.header_values(fields, "set-cookie").append("c=3")  # a caller's copy, not the index
    assert p.get_header(fields, "set-cookie") == "a=1, b=2"
    assert list(fields) == pairs


def test_a_remembered_cache_control_parse_cannot_be_changed_by_a_caller():
    """parse_cache_control is memoised by value: a caller that changed its answer would change
    every later answer for that value."""
    directives = p.parse_cache_control("max-age=5")
    with pytest.raises(TypeError):
        directives["max-age"] = "999"  # type: ignore[index]
    assert p.parse_cache_control("max-age=5") == {"max-age": "5"}
