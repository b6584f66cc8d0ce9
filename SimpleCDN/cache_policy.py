"""HTTP caching policy for a *shared* cache (RFC 9111), as pure functions: no sockets, no clocks.

Everything the edge decides about caching lives here, so each rule can be unit-tested alone:

- `parse_cache_control`         the Cache-Control field -> {directive: value}
- `is_storable`                 may a shared cache store this response at all? (RFC 9111 §3)
- `freshness_lifetime`          s-maxage > max-age > Expires - Date > heuristic (§4.2.1, §4.2.2)
- `current_age`                 the age calculation of §4.2.3
- `vary_names` / `variant_key`  which stored variant a request selects (§4.1)
- `request_needs_revalidation`  request directives no-cache / max-age / min-fresh (§5.2.1)
- `may_serve_stale_while_revalidate`, `may_serve_stale_on_error`  RFC 5861 extensions
- `conditional_request_matches` a client's If-None-Match / If-Modified-Since vs the stored copy
- `strip_hop_by_hop`, `merge_304_headers`  what is stored and how a 304 refreshes it (§3.2, §4.3.4)
- `normalise_target`            the request target -> a safe, canonical path + query for the cache key
- `parse_byte_ranges`, `PartialContent`  Range requests, stored 206 pieces and combining them (§3.3-3.4)

Headers are passed as lists of (name, value) pairs, names in any case, because HTTP allows a field
to repeat (Set-Cookie, Cache-Control) and a dict would silently drop the repeats.

Set-Cookie policy (a decision RFC 9111 §7.3 leaves to the cache): a response carrying Set-Cookie is
*not stored* unless it says `public` (or `s-maxage`) explicitly; when it is stored, the Set-Cookie
field is removed from the stored copy, so one user's session cookie is never replayed to another
user. The client whose request caused the fetch still receives its cookie. nginx and Varnish refuse
to cache such responses by default for the same reason.
"""

from __future__ import annotations

import base64
import functools
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from types import MappingProxyType
from urllib.parse import urlsplit

Headers = list[tuple[str, str]]

# RFC 9110 §15.1: status codes that are "heuristically cacheable".
HEURISTICALLY_CACHEABLE = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# Status codes whose semantics this cache implements (RFC 9111 §3). It matters only for the two a
# cache must understand to store them (206: this cache stores partial content and combines it,
# §3.3-3.4; 304 is never stored, it refreshes a stored response) and for responses marked
# must-understand (§5.2.2.3). Any other final status may be stored when the response allows it.
UNDERSTOOD_STATUS = HEURISTICALLY_CACHEABLE | frozenset({302, 303, 307, 400, 403, 500, 502, 503, 504})
MUST_UNDERSTAND_STATUS = frozenset({206, 304})

# RFC 9110 §7.6.1: connection-specific fields that a proxy must not forward or store.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authenticate", "proxy-authorization",
})

# RFC 9111 §3.2 / RFC 9110 §15.4.5: a 304 must not change how the stored body is framed.
NOT_UPDATED_BY_304 = frozenset({"content-length", "content-encoding", "transfer-encoding",
                                "content-range", "content-type"})

HEURISTIC_FRACTION = 0.1          # RFC 9111 §4.2.2: "10% of the time since Last-Modified" is typical
HEURISTIC_MAX_SECONDS = 86_400    # ...but never more than a day, so a stale guess cannot last long

_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # \Z: "$" would also match before a final LF


class BadTarget(ValueError):
    """The request target cannot be used: the server answers 400 with this message."""


# ---------------------------------------------------------------------------------------- headers

class Fields(tuple):
    """An immutable list of (name, value) fields that finds a field without a scan: its values by
    lower-case name are indexed when it is made. A miss asks about twenty questions of one
    response's fields (storable? how fresh? varies on what?), and each would otherwise lower-case
    and compare every name. Accepted wherever a list of (name, value) pairs is.

    The index is built eagerly, not with functools.cached_property: every Fields is asked at once,
    and on Python 3.11 cached_property takes a lock on each access (it costs more than the lookup)."""

    def __init__(self, fields: Iterable[tuple[str, str]] = ()):
        index: dict[str, list[str]] = {}
        for name, value in self:
            index.setdefault(name.lower(), []).append(value)
        self.by_name = index

    @classmethod
    def with_index(cls, fields: Iterable[tuple[str, str]], index: dict[str, list[str]]) -> Fields:
        """Fields whose index the caller already has (a parsed request's), not built again."""
        made = tuple.__new__(cls, fields)
        made.by_name = index
        return made


def header_values(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    """Every value of field `name` (case-insensitive), in order."""
    name = name.lower()
    if type(headers) is Fields:
        return list(headers.by_name.get(name, ()))
    length = len(name)  # most names differ in length: no need to lower-case those (a miss asks ~20 times)
    return [value for key, value in headers if len(key) == length and key.lower() == name]


def get_header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The field's combined value (repeats joined by ', ' as RFC 9110 §5.3 allows), or None."""
    # An indexed Fields' own list is not copied: it is only joined here.
    values = headers.by_name.get(name.lower()) if type(headers) is Fields else header_values(headers, name)
    return ", ".join(values) if values else None


def without(headers: Iterable[tuple[str, str]], names: Iterable[str]) -> Headers:
    """A copy of `headers` minus the fields in `names` (case-insensitive)."""
    drop = {name.lower() for name in names}
    return [(key, value) for key, value in headers if key.lower() not in drop]


OWS = " \t"  # RFC 9110 §5.6.3: optional whitespace is SP and HTAB, nothing else


def strip_ows(text: str) -> str:
    """Remove optional whitespace (SP, HTAB) from both ends — and only that.

    Never `str.strip()`: it also removes \x0b, \x0c, \x1c-\x1f and \x85, so "0\x0b" would read as a
    valid Content-Length of 0 and "\x0bchunked" as chunked, where another parser on the path would
    disagree about the body's length: the disagreement request smuggling is made of.
    """
    return text.strip(OWS)


def split_list(value: str | None) -> list[str]:
    """Split a comma-separated list field, ignoring empty elements (RFC 9110 §5.6.1)."""
    if not value:
        return []
    return [item for item in (strip_ows(part) for part in value.split(",")) if item]


def strip_hop_by_hop(headers: Iterable[tuple[str, str]], also: Iterable[str] = ()) -> Headers:
    """Remove hop-by-hop fields, including those the Connection field names (RFC 9110 §7.6.1), and
    the fields named in `also` (in the same pass: a miss does this three times)."""
    if type(headers) is not Fields:
        headers = list(headers)
    named = split_list(get_header(headers, "connection"))
    drop = HOP_BY_HOP.union(name.lower() for name in (*named, *also))  # HOP_BY_HOP is lower-case
    return [(key, value) for key, value in headers if key.lower() not in drop]


# ----------------------------------------------------------------------------------- Cache-Control

@functools.lru_cache(maxsize=1024)
def parse_cache_control(value: str | None) -> Mapping[str, str | None]:
    """Parse Cache-Control into {lower-case directive: argument or None}, read-only.

    Arguments may be tokens or quoted strings (`no-cache="Set-Cookie"`). Commas inside quotes do not
    split. If a directive repeats, the first occurrence wins, which is the conservative reading.
    Remembered for the last 1024 values (a function of the text alone; an origin sends a few
    distinct values, and one miss asks several rules about the same one): hence read-only.
    """
    directives: dict[str, str | None] = {}
    if not value:
        return _NO_DIRECTIVES
    for part in _split_outside_quotes(value):
        name, sep, argument = part.partition("=")
        name = strip_ows(name).lower()
        if not name or not _TOKEN_RE.match(name):
            continue
        arg: str | None = strip_ows(argument) if sep else None
        if arg is not None and len(arg) >= 2 and arg[0] == arg[-1] == '"':
            arg = arg[1:-1]
        directives.setdefault(name, arg)
    return MappingProxyType(directives)


_NO_DIRECTIVES: Mapping[str, str | None] = MappingProxyType({})


def _split_outside_quotes(value: str) -> list[str]:
    if '"' not in value:  # the usual case: no quoted string, so every comma separates
        return [part for part in value.split(",") if strip_ows(part)]
    parts, current, quoted = [], [], False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if strip_ows(part)]


def delta_seconds(directives: Mapping[str, str | None], name: str) -> int | None:
    """The non-negative integer argument of `name` (e.g. max-age), or None if absent or invalid.

    RFC 9111 §1.2.2: an invalid delta-seconds is not a number we may trust; callers treat None as
    "directive absent" except for max-age, where §4.2.1 says an invalid value means stale (see
    freshness_lifetime).
    """
    arg = directives.get(name)
    if arg is None or not (arg.isascii() and arg.isdigit()):  # "²".isdigit() is True; int("²") fails
        return None
    return min(int(arg), 2**31)  # §1.2.2: values beyond 2^31 mean "as long as you like"


def cache_control(headers: Iterable[tuple[str, str]]) -> Mapping[str, str | None]:
    return parse_cache_control(get_header(headers, "cache-control"))


# ------------------------------------------------------------------------------------------ dates

_DAY = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_LONG = "(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 §5.6.7, exactly: IMF-fixdate, and for reception the obsolete RFC 850 and asctime forms.
_IMF_FIXDATE = re.compile(rf"{_DAY}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(rf"{_DAY_LONG}, ([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT")
_ASCTIME_DATE = re.compile(rf"{_DAY} {_MONTH} ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def parse_http_date(value: str | None, now: float | None = None) -> float | None:
    """An HTTP-date -> POSIX seconds, or None if it is not one (RFC 9110 §5.6.7).

    Strict on purpose: `email.utils` also accepts two-digit years in the IMF form, a missing comma,
    extra spaces, other zones and impossible dates, and caches that disagree about whether a date is
    valid disagree about whether a response is fresh. An invalid Expires means "already expired"
    (RFC 9111 §5.3), so refusing a sloppy date errs on the side of asking the origin again. Two
    field lines of a date field arrive joined by ", ", which is not a date: invalid too.
    """
    if not value:
        return None
    if match := _RFC850_DATE.fullmatch(value):  # the one form whose meaning depends on today's date
        _, day, month, year2, hour, minute, second = match.groups()
        return _timestamp(str(_rfc850_year(int(year2), now)), month, day, hour, minute, second)
    return _parse_fixed_date(value)


@functools.lru_cache(maxsize=1024)
def _parse_fixed_date(value: str) -> float | None:
    """IMF-fixdate or asctime -> POSIX seconds, or None. Remembered for the last 1024 values: a
    function of the text alone, and Date and Last-Modified repeat (one miss reads each several times)."""
    if match := _IMF_FIXDATE.fullmatch(value):
        _, day, month, year, hour, minute, second = match.groups()
    elif match := _ASCTIME_DATE.fullmatch(value):
        _, month, day, hour, minute, second, year = match.groups()
    else:
        return None
    return _timestamp(year, month, day, hour, minute, second)


def _timestamp(year: str, month: str, day: str, hour: str, minute: str, second: str) -> float | None:
    try:
        moment = datetime(int(year), _MONTHS.index(month) + 1, int(day.strip()), int(hour), int(minute),
                          min(int(second), 59), tzinfo=UTC)  # no 31 Feb, no hour 24, no minute 60
    except ValueError:
        return None
    if int(second) > 60:  # 60 is a leap second (RFC 5322 §3.3 allows it), 61 is nothing
        return None
    return moment.timestamp() + (1 if int(second) == 60 else 0)


def _rfc850_year(two_digits: int, now: float | None) -> int:
    """RFC 9110 §5.6.7: a two-digit year more than 50 years in the future is in the past."""
    this_year = datetime.fromtimestamp(time.time() if now is None else now, UTC).year
    year = this_year - this_year % 100 + two_digits
    return year - 100 if year > this_year + 50 else year


def http_date(seconds: float) -> str:
    """POSIX seconds -> IMF-fixdate, e.g. 'Sun, 06 Nov 1994 08:49:37 GMT'."""
    return formatdate(seconds, usegmt=True)


# ------------------------------------------------------------------------------------ storability

def is_storable(method: str, status: int, request_headers: Sequence[tuple[str, str]],
                response_headers: Sequence[tuple[str, str]],
                store_set_cookie: bool = False) -> tuple[bool, str]:
    """May a shared cache store this response? Returns (yes/no, reason) — the reason is for logs.

    RFC 9111 §3: any *final* status may be stored when the response allows it (explicit freshness,
    `public`, or a heuristically cacheable status); the cache must understand the status only for
    206 and 304, or when `must-understand` is present (§5.2.2.3). Plus this cache's Set-Cookie
    policy (see the module docstring), which `store_set_cookie` turns off to follow §3.1 exactly.
    """
    if method not in ("GET", "HEAD"):
        return False, f"method {method} is not cacheable"
    if status < 200:
        return False, f"status {status} is not a final response"
    request_cc = cache_control(request_headers)
    response_cc = cache_control(response_headers)
    if "no-store" in request_cc:
        return False, "request says no-store"
    if "must-understand" in response_cc:
        # §5.2.2.3: only a cache that understands the status may store it, and that cache SHOULD
        # ignore no-store (which the origin sends for caches that do not know must-understand).
        if status not in UNDERSTOOD_STATUS:
            return False, f"must-understand, and status {status} is not understood by this cache"
    elif "no-store" in response_cc:
        return False, "response says no-store"
    elif status in MUST_UNDERSTAND_STATUS and status not in UNDERSTOOD_STATUS:
        return False, f"status {status} may be stored only by a cache that implements it (§3)"
    if status == 206 and (parse_content_range(get_header(response_headers, "content-range")) is None
                          or strong_etag(response_headers) is None):
        return False, "a 206 is kept only with one Content-Range of known length and a strong ETag " \
                      "(the pieces must be combinable, §3.4)"
    if "private" in response_cc:
        # Qualified private="field" is treated as unqualified: the conservative reading §5.2.2.7 allows.
        return False, "response is private"
    if get_header(response_headers, "transfer-encoding") is not None and get_header(
            response_headers, "content-length") is not None:
        # RFC 9112 §6.3: a message with both "ought to be handled as an error" (it is how response
        # splitting works). The edge still relays it, framed by Transfer-Encoding, but never keeps it.
        return False, "both Transfer-Encoding and Content-Length: the framing is ambiguous"
    transfer_codings = [coding.lower() for coding in split_list(get_header(response_headers,
                                                                               "transfer-encoding"))]
    if transfer_codings not in ([], ["chunked"]):
        # The body is still transfer-coded (e.g. gzip) and Transfer-Encoding is not stored (it is
        # hop-by-hop): replayed, it would be undecodable bytes.
        return False, f"transfer codings {transfer_codings} other than chunked"
    if "*" in vary_names(response_headers):
        return False, "Vary: * (the response varies on something outside the request)"
    explicitly_public = "public" in response_cc or "s-maxage" in response_cc
    if get_header(request_headers, "authorization") is not None and not (
            explicitly_public or "must-revalidate" in response_cc):
        return False, "request carried Authorization and the response is not explicitly shareable"
    if not store_set_cookie and get_header(response_headers, "set-cookie") is not None \
            and not explicitly_public:
        return False, "response sets a cookie and is not explicitly public"
    has_explicit_lifetime = ("max-age" in response_cc or "s-maxage" in response_cc
                             or get_header(response_headers, "expires") is not None)
    if status not in HEURISTICALLY_CACHEABLE and not has_explicit_lifetime and "public" not in response_cc:
        return False, f"status {status} is cacheable only with explicit freshness or public"
    if not has_explicit_lifetime and "no-cache" not in response_cc and not _has_validator(
            response_headers) and heuristic_lifetime(status, response_headers) <= 0:
        # Storable in principle, but it would be stale at once with nothing to revalidate it with:
        # storing it would only waste bytes that useful objects could use.
        return False, "no freshness information and no validator"
    return True, "storable"


def _has_validator(headers: Sequence[tuple[str, str]]) -> bool:
    return get_header(headers, "etag") is not None or get_header(headers, "last-modified") is not None


def headers_to_store(response_headers: Sequence[tuple[str, str]], keep_set_cookie: bool = False,
                     consumed: Iterable[str] = ()) -> Headers:
    """The fields kept with a stored response: no hop-by-hop fields, no Set-Cookie (unless
    `keep_set_cookie`, RFC 9111 §3.1 to the letter), no field this cache consumes (its own targeted
    Cache-Control field, RFC 9213 §2.2).

    Age is kept: current_age needs the age the response already had on arrival. The edge replaces it
    with the current age when it replays the response.
    """
    drop = set(consumed) if keep_set_cookie else {"set-cookie", *consumed}
    return strip_hop_by_hop(response_headers, also=drop)


# ------------------------------------------------------------------ targeted Cache-Control (RFC 9213)

DEFAULT_TARGETS = ("SimpleCDN-Cache-Control", "CDN-Cache-Control")
OWN_TARGETED_FIELD = "simplecdn-cache-control"  # only for this edge: consumed, never forwarded


class Token(str):
    """A Structured Fields Token (RFC 8941 §3.3.4), told apart from a String when rendered."""


def policy_headers(headers: Sequence[tuple[str, str]], targets: Sequence[str]) -> Headers:
    """The response's fields as this cache must judge them (RFC 9213 §2.2).

    The first field on the target list with a valid, non-empty value replaces Cache-Control and
    Expires for this cache's decisions; an invalid or empty one is ignored as if absent. Without
    one, the response is judged by its own Cache-Control and Expires. What is stored and forwarded
    is not changed by this: Cache-Control still goes downstream as the origin sent it.
    """
    for name in targets:
        values = header_values(headers, name)
        if not values:
            continue
        directives = parse_sf_dictionary(", ".join(values))
        if directives:
            rendered = ", ".join(_render_directive(key, value) for key, value in directives.items()
                                 if value is not False)
            return without(headers, {"cache-control", "expires"}) + [("Cache-Control", rendered)]
    return list(headers)


_DELTA_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})


def _render_directive(key: str, value: object) -> str:
    if key in _DELTA_DIRECTIVES and (type(value) is not int or value < 0):
        # RFC 9213 §2.1: a value of the wrong type (max-age=1.5, max-age="60") is not consumed;
        # rendered invalid, it counts as an invalid delta, i.e. stale (RFC 9111 §4.2.1).
        return f"{key}=invalid"
    if value is True:
        return key
    if isinstance(value, str) and not isinstance(value, Token):
        return f'{key}="{value}"'
    return f"{key}={value}"


_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_SF_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def parse_sf_dictionary(text: str) -> dict[str, object] | None:
    """A Structured Fields Dictionary (RFC 8941 §4.2.2) -> {key: value}; None if invalid.

    Values: True/False (Boolean, or a key alone), int, float (Decimal), str (String), Token, bytes.
    Parameters are parsed and dropped (RFC 9213 §2.1: "to be ignored"). Strict like the RFC: an
    upper-case key, a trailing comma or a bad item makes the whole field invalid.
    """
    rest = text.strip(" ")
    result: dict[str, object] = {}
    while rest:
        key, rest = _sf_key(rest)
        if key is None:
            return None
        value: object = True
        if rest.startswith("="):
            value, rest = _sf_bare_item(rest[1:])
            if value is None:
                return None
        rest = _sf_skip_parameters(rest)
        if rest is None:
            return None
        result[key] = value
        rest = rest.lstrip(" \t")
        if not rest:
            return result
        if not rest.startswith(","):
            return None
        rest = rest[1:].lstrip(" \t")
        if not rest:
            return None  # a trailing comma
    return result


def _sf_key(text: str) -> tuple[str | None, str]:
    match = _SF_KEY.match(text)
    return (match.group(), text[match.end():]) if match else (None, text)


def _sf_skip_parameters(text: str) -> str | None:
    while text.startswith(";"):
        key, text = _sf_key(text[1:].lstrip(" "))
        if key is None:
            return None
        if text.startswith("="):
            value, text = _sf_bare_item(text[1:])
            if value is None:
                return None
    return text


def _sf_bare_item(text: str) -> tuple[object | None, str]:
    if text[:1] == '"':
        out, index = [], 1
        while index < len(text):
            char = text[index]
            if char == "\\" and index + 1 < len(text) and text[index + 1] in '"\\':
                out.append(text[index + 1])
                index += 2
            elif char == '"':
                return "".join(out), text[index + 1:]
            elif " " <= char <= "~" and char != "\\":
                out.append(char)
                index += 1
            else:
                return None, text
        return None, text
    if text[:1] == "?":
        return ({"?1": True, "?0": False}.get(text[:2]), text[2:])
    if text[:1] == ":":
        end = text.find(":", 1)
        try:
            return (base64.b64decode(text[1:end], validate=True), text[end + 1:]) if end > 0 else (None, text)
        except ValueError:
            return None, text
    if match := _SF_NUMBER.match(text):
        number = match.group()
        whole, _, fraction = number.lstrip("-").partition(".")
        if (not fraction and len(whole) > 15) or (fraction and (len(whole) > 12 or len(fraction) > 3)):
            return None, text
        return (float(number) if fraction else int(number)), text[match.end():]
    if match := _SF_TOKEN.match(text):
        return Token(match.group()), text[match.end():]
    return None, text


# -------------------------------------------------------------------------------------- freshness

def freshness_lifetime(status: int, headers: Sequence[tuple[str, str]],
                       response_time: float | None = None) -> float:
    """Seconds the response stays fresh in a shared cache (RFC 9111 §4.2.1).

    Order: s-maxage, then max-age, then Expires minus Date, then a heuristic. `no-cache` does not
    change the lifetime; it forces revalidation on every use (see must_revalidate_always).
    Without a Date field, §4.2.1 says to use the time the response was received: `response_time`.
    """
    directives = cache_control(headers)
    for name in ("s-maxage", "max-age"):
        if name in directives:
            value = delta_seconds(directives, name)
            return float(value) if value is not None else 0.0  # invalid -> stale (§4.2.1)
    expires_field = get_header(headers, "expires")
    if expires_field is not None:
        expires = parse_http_date(expires_field)
        date = _date_or(headers, response_time)
        if expires is None:
            return 0.0  # §5.3: an invalid Expires (e.g. "0") means "already expired"
        if date is None:
            return 0.0  # no Date and no arrival time: nothing trustworthy to subtract from
        return max(0.0, expires - date)
    return heuristic_lifetime(status, headers, response_time)


def heuristic_lifetime(status: int, headers: Sequence[tuple[str, str]],
                       response_time: float | None = None) -> float:
    """10% of (Date - Last-Modified), capped at a day, for heuristically cacheable statuses or public
    responses (§4.2.2).

    Returns 0 ("none") when there is no Last-Modified to base a guess on.
    """
    if status not in HEURISTICALLY_CACHEABLE and "public" not in cache_control(headers):
        return 0.0  # RFC 9111 §4.2.2: a heuristic only for these statuses, or when marked public
    last_modified = parse_http_date(get_header(headers, "last-modified"))
    date = _date_or(headers, response_time)
    if last_modified is None or date is None or last_modified >= date:
        return 0.0
    return min(HEURISTIC_FRACTION * (date - last_modified), float(HEURISTIC_MAX_SECONDS))


def _date_or(headers: Sequence[tuple[str, str]], response_time: float | None) -> float | None:
    """The Date field, or when it is missing or invalid the time the response arrived (RFC 9110 §6.6.1)."""
    date = parse_http_date(get_header(headers, "date"))
    return response_time if date is None else date


def current_age(headers: Sequence[tuple[str, str]], request_time: float, response_time: float,
                now: float) -> float:
    """RFC 9111 §4.2.3, term for term.

    request_time:  when this cache sent the request that produced the stored response
    response_time: when this cache received the response
    """
    resident_time = now - response_time
    return corrected_initial_age(headers, request_time, response_time) + resident_time


def corrected_initial_age(headers: Sequence[tuple[str, str]], request_time: float,
                          response_time: float) -> float:
    """The part of §4.2.3 fixed at arrival: how old the response already was when we got it."""
    date_value = parse_http_date(get_header(headers, "date"))
    if date_value is None:
        date_value = response_time  # §6.6.1 of RFC 9110: a recipient with a clock adds Date itself
    age_value = _age_value(headers)
    apparent_age = max(0.0, response_time - date_value)
    response_delay = response_time - request_time
    corrected_age_value = age_value + response_delay
    return max(apparent_age, corrected_age_value)


@dataclass(frozen=True)
class Freshness:
    """What the hot path needs about a stored response, computed once when it is stored.

    Parsing Date and Cache-Control on every hit would cost more than the rest of serving it.
    """

    lifetime: float
    initial_age: float
    response_time: float
    no_cache: bool

    @classmethod
    def of(cls, status: int, headers: Sequence[tuple[str, str]], request_time: float,
           response_time: float) -> Freshness:
        return cls(freshness_lifetime(status, headers, response_time),
                   corrected_initial_age(headers, request_time, response_time),
                   response_time, must_revalidate_always(headers))

    def age(self, now: float) -> float:
        """current_age (§4.2.3) at `now`."""
        return self.initial_age + (now - self.response_time)


def _age_value(headers: Sequence[tuple[str, str]]) -> float:
    raw = get_header(headers, "age")
    if raw is None:
        return 0.0
    first = strip_ows(raw.split(",")[0])
    return float(first) if first.isascii() and first.isdigit() else 0.0


def must_revalidate_always(headers: Sequence[tuple[str, str]]) -> bool:
    """Response no-cache: store, but check with the origin before every reuse (§5.2.2.4)."""
    return "no-cache" in cache_control(headers)


def forbids_stale(headers: Sequence[tuple[str, str]]) -> bool:
    """must-revalidate, proxy-revalidate, s-maxage (which implies proxy-revalidate, §5.2.2.10) or
    no-cache (§5.2.2.4: never reused without a *successful* validation): once stale, never served
    without one — not even when the origin is down."""
    directives = cache_control(headers)
    return any(name in directives
               for name in ("must-revalidate", "proxy-revalidate", "s-maxage", "no-cache"))


def request_needs_revalidation(request_headers: Sequence[tuple[str, str]], age: float,
                               lifetime: float) -> bool:
    """Request directives that refuse a stored response which would otherwise be fresh (§5.2.1)."""
    directives = cache_control(request_headers)
    if "no-cache" in directives:
        return True
    pragma = (get_header(request_headers, "pragma") or "").lower()
    if "no-cache" in pragma and get_header(request_headers, "cache-control") is None:
        return True  # HTTP/1.0 Pragma: no-cache, honoured only without Cache-Control (§5.4)
    max_age = delta_seconds(directives, "max-age")
    if max_age is not None and age > max_age:
        return True
    min_fresh = delta_seconds(directives, "min-fresh")
    return min_fresh is not None and lifetime - age < min_fresh


def may_serve_stale_while_revalidate(headers: Sequence[tuple[str, str]], age: float,
                                     lifetime: float) -> bool:
    """RFC 5861 §3: stale, but within stale-while-revalidate seconds of expiry."""
    if forbids_stale(headers):
        return False
    window = delta_seconds(cache_control(headers), "stale-while-revalidate")
    return window is not None and age - lifetime <= window


def may_serve_stale_when_disconnected(headers: Sequence[tuple[str, str]], age: float,
                                     lifetime: float) -> bool:
    """RFC 9111 §4.2.4: the origin cannot be reached at all (refused, reset, closed without an
    answer). A cache MAY then serve stale — unless the response forbids it, and within the
    stale-if-error window when the origin gave one (it said how stale it may get)."""
    if forbids_stale(headers):
        return False
    window = delta_seconds(cache_control(headers), "stale-if-error")
    return window is None or age - lifetime <= window


def may_serve_stale_on_error(headers: Sequence[tuple[str, str]], age: float, lifetime: float) -> bool:
    """RFC 5861 §4: the origin failed (error or 5xx); stale is allowed within stale-if-error."""
    if forbids_stale(headers):
        return False
    window = delta_seconds(cache_control(headers), "stale-if-error")
    return window is not None and age - lifetime <= window


# ------------------------------------------------------------------------------------------- Vary

def vary_names(response_headers: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The request field names the response varies on, lower-case and sorted ('*' kept as is)."""
    names = {name.lower() for name in split_list(get_header(response_headers, "vary"))}
    return tuple(sorted(names))


def variant_key(names: Sequence[str], request_headers: Sequence[tuple[str, str]],
                normalise: bool = False) -> tuple[str, ...]:
    """The secondary cache key: the request's values of the Vary fields, normalised (§4.1).

    Normalising whitespace and list spacing lets "gzip,br" and "gzip, br" share one variant, which
    §4.1 explicitly permits; a missing field and an empty one are kept distinct. With `normalise`,
    Accept-Encoding and Accept-Language are also compared by meaning (see normalise_accept).
    """
    if not names:
        return ()  # most responses vary on nothing: one variant, no fields to read
    key = []
    for name in names:
        value = get_header(request_headers, name)
        if value is None:
            key.append("\0absent")
        elif normalise and name in NORMALISED_VARY_FIELDS:
            key.append(normalise_accept(value))
        else:
            key.append(", ".join(split_list(value)))
    return tuple(key)


NORMALISED_VARY_FIELDS = frozenset({"accept-encoding", "accept-language"})
_QVALUE = re.compile(r"q=(0(\.[0-9]{0,3})?|1(\.0{0,3})?)", re.IGNORECASE)


def normalise_accept(value: str) -> str:
    """'GZIP;q=1.0, br' -> 'br,gzip': two Accept-Encoding / Accept-Language values that mean the
    same. Codings and language tags are case-insensitive (RFC 9110 §8.4.1, §8.5.1), q defaults to 1
    (§12.4.2), and members of equal weight carry no order. A member that does not parse is kept as
    written, so an odd value only ever gets a variant of its own, never another's."""
    members = []
    for member in split_list(value):
        name, _, parameters = member.partition(";")
        weight = 1.0
        if parameters:
            match = _QVALUE.fullmatch(strip_ows(parameters))
            if not match:
                members.append((-1.0, member))  # kept verbatim (rendered as is, sorted last)
                continue
            weight = float(match.group(1))
        members.append((weight, strip_ows(name).lower()))
    return ",".join(name if weight in (1.0, -1.0) else f"{name};q={weight:g}"
                    for weight, name in sorted(members, key=lambda item: (-item[0], item[1])))


# ------------------------------------------------------------------------------- conditional GETs

def etag_matches(if_none_match: str, etag: str | None) -> bool:
    """Weak comparison for If-None-Match (RFC 9110 §13.1.2): W/"x" matches "x"."""
    if strip_ows(if_none_match) == "*":
        return True  # "*" matches any current representation, with or without an ETag (§13.1.2)
    if etag is None:
        return False
    wanted = {_opaque(tag) for tag in split_list(if_none_match)}
    return _opaque(etag) in wanted


def _opaque(tag: str) -> str:
    tag = strip_ows(tag)
    return tag[2:] if tag.startswith("W/") else tag


def conditional_request_matches(request_headers: Sequence[tuple[str, str]],
                                stored_headers: Sequence[tuple[str, str]]) -> bool:
    """Would the origin answer this client's conditional GET with 304 for the stored response?

    RFC 9110 §13.2.2: If-None-Match takes precedence; If-Modified-Since is evaluated only when
    If-None-Match is absent.
    """
    if_none_match = get_header(request_headers, "if-none-match")
    if if_none_match is not None:
        return etag_matches(if_none_match, get_header(stored_headers, "etag"))
    since = parse_http_date(get_header(request_headers, "if-modified-since"))
    if since is None:
        return False
    last_modified = parse_http_date(get_header(stored_headers, "last-modified"))
    if last_modified is None:
        last_modified = parse_http_date(get_header(stored_headers, "date"))
    return last_modified is not None and last_modified <= since


def revalidation_headers(stored_headers: Sequence[tuple[str, str]]) -> Headers:
    """The validators this cache sends when it revalidates its own stored copy (§4.3.1)."""
    conditions: Headers = []
    etag = get_header(stored_headers, "etag")
    if etag is not None:
        conditions.append(("If-None-Match", etag))
    last_modified = get_header(stored_headers, "last-modified")
    if last_modified is not None:
        conditions.append(("If-Modified-Since", last_modified))
    return conditions


CONDITIONAL_REQUEST_FIELDS = ("if-none-match", "if-modified-since", "if-match", "if-unmodified-since",
                              "if-range")


def merge_304_headers(stored: Sequence[tuple[str, str]], fresh: Sequence[tuple[str, str]],
                      keep_set_cookie: bool = False) -> Headers:
    """Update a stored response with the fields of a 304 (RFC 9111 §3.2 / §4.3.4).

    Every field in the 304 replaces the stored field of the same name, except those that describe
    the stored body's framing; everything else stored is kept. The old Date and Age never survive:
    the age of the refreshed response is measured from this 304 (§4.2.3), not from the first fetch.
    """
    updates = [(k, v) for k, v in headers_to_store(fresh, keep_set_cookie)
               if k.lower() not in NOT_UPDATED_BY_304]
    replaced = {key.lower() for key, _ in updates} | {"age", "date"}
    return [(k, v) for k, v in stored if k.lower() not in replaced] + updates


def response_304_headers(stored: Sequence[tuple[str, str]]) -> Headers:
    """The fields a 304 answered from cache carries (RFC 9110 §15.4.5)."""
    keep = {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
    return [(k, v) for k, v in stored if k.lower() in keep]


# ----------------------------------------------------------------------------------- Range (§14)

_RANGE_SPEC = re.compile(r"([0-9]{1,18})-([0-9]{1,18})?|-([0-9]{1,18})")


def parse_byte_ranges(value: str | None) -> list[tuple[int | None, int | None]] | None:
    """A Range field -> [(first, last)] with None for an open end (RFC 9110 §14.1.1); None when it
    is not a valid `bytes=` range set (the field is then ignored, §14.2).

    'bytes=0-99' -> [(0, 99)]; 'bytes=9500-' -> [(9500, None)]; 'bytes=-500' -> [(None, 500)]
    (a suffix: the last 500 bytes).
    """
    if not value:
        return None
    unit, equals, ranges = value.partition("=")
    if not equals or strip_ows(unit).lower() != "bytes":
        return None
    specs: list[tuple[int | None, int | None]] = []
    for part in ranges.split(","):
        match = _RANGE_SPEC.fullmatch(strip_ows(part))
        if not match:
            return None
        first, last, suffix = match.groups()
        if suffix is not None:
            specs.append((None, int(suffix)))
        elif last is not None and int(last) < int(first):
            return None  # §14.1.1: an invalid range makes the whole set invalid
        else:
            specs.append((int(first), None if last is None else int(last)))
    return specs or None


def resolve_byte_range(spec: tuple[int | None, int | None], length: int) -> tuple[int, int] | None:
    """One range against a representation of `length` bytes -> (first, last) inclusive, or None
    when it is unsatisfiable (§14.1.2: it starts at or past the end, or is an empty suffix)."""
    first, last = spec
    if first is None:  # suffix: the last `last` bytes, or all of them if there are fewer
        if last == 0 or length == 0:
            return None
        return max(0, length - last), length - 1
    if first >= length:
        return None
    return first, length - 1 if last is None or last >= length else last


def if_range_matches(if_range: str | None, stored_headers: Sequence[tuple[str, str]]) -> bool:
    """RFC 9110 §13.1.5: without If-Range, or when it names the stored response's strong validator,
    the Range applies; otherwise the client gets the whole, current representation."""
    if if_range is None:
        return True
    if if_range.startswith(('"', "W/")):
        etag = get_header(stored_headers, "etag")
        return not if_range.startswith("W/") and etag is not None and not etag.startswith("W/") \
            and etag == if_range  # strong comparison (§8.8.3.2)
    since = parse_http_date(if_range)
    last_modified = parse_http_date(get_header(stored_headers, "last-modified"))
    date = parse_http_date(get_header(stored_headers, "date"))
    # A Last-Modified is a strong validator only if it is at least a second before Date (§8.8.2.2).
    return (since is not None and since == last_modified and date is not None
            and date - last_modified >= 1)


_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18})")


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """'bytes 0-99/1000' -> (0, 99, 1000): first, last (inclusive) and complete length (RFC 9110
    §14.4). None for anything else — including an unknown complete length ('bytes 0-99/*'), which
    this cache does not store: without the length it could never tell when the pieces are whole."""
    match = _CONTENT_RANGE.fullmatch(strip_ows(value or ""))
    if not match:
        return None
    first, last, length = (int(group) for group in match.groups())
    return (first, last, length) if first <= last < length else None


def strong_etag(headers: Sequence[tuple[str, str]]) -> str | None:
    """The response's ETag if it is a strong validator (not W/), else None (RFC 9110 §8.8.1)."""
    etag = get_header(headers, "etag")
    return etag if etag is not None and etag.startswith('"') and "," not in etag else None


def partial_piece(headers: Sequence[tuple[str, str]], body_length: int) -> tuple[int, int, str] | None:
    """A 206 this cache can keep and combine -> (first byte, complete length, strong ETag); else None.

    RFC 9111 §3.4 allows combining only pieces that share a strong validator; this cache takes the
    strong ETag as that validator (a Last-Modified date is strong only under conditions a cache can
    rarely check, RFC 9110 §8.8.2.2). The body must be exactly the range its Content-Range names.
    """
    span = parse_content_range(get_header(headers, "content-range"))
    etag = strong_etag(headers)
    if span is None or etag is None or span[1] - span[0] + 1 != body_length:
        return None
    return span[0], span[2], etag


@dataclass(frozen=True)
class PartialContent:
    """The pieces of one representation this cache holds, from 206 responses (RFC 9111 §3.3).

    `spans` are (first byte, bytes), sorted, never overlapping or touching: adding a piece merges it
    with its neighbours. Immutable — `with_piece` returns a new value — so the store's byte count of
    an entry can never change behind its back.
    """

    etag: str                                # the strong validator every piece shares (§3.4)
    length: int                              # the representation's complete length
    spans: tuple[tuple[int, bytes], ...] = ()

    def with_piece(self, first: int, data: bytes) -> PartialContent:
        """These pieces plus `data` at offset `first` (same validator: overlapping bytes agree)."""
        merged: list[tuple[int, bytes]] = []
        for start, piece in sorted((*self.spans, (first, data)), key=lambda span: span[0]):
            if merged and start <= merged[-1][0] + len(merged[-1][1]):
                previous_start, previous = merged[-1]
                overhang = start + len(piece) - (previous_start + len(previous))
                if overhang > 0:
                    merged[-1] = (previous_start, previous + piece[len(piece) - overhang:])
            else:
                merged.append((start, piece))
        return PartialContent(self.etag, self.length, tuple(merged))

    def covers(self, first: int, last: int) -> bool:
        return any(start <= first and last < start + len(piece) for start, piece in self.spans)

    def cut(self, first: int, last: int) -> bytes:
        """Bytes first..last (inclusive); only call it when `covers(first, last)`."""
        for start, piece in self.spans:
            if start <= first and last < start + len(piece):
                return piece[first - start:last - start + 1]
        raise ValueError(f"bytes {first}-{last} are not stored")

    @property
    def complete(self) -> bool:
        """All bytes are here: the pieces can be served as one complete 200 (RFC 9110 §15.3.7.3)."""
        return self.covers(0, self.length - 1) if self.length else False

    @property
    def size(self) -> int:
        return sum(len(piece) for _, piece in self.spans)


def combine_partial_headers(stored: Sequence[tuple[str, str]], newest: Sequence[tuple[str, str]],
                            keep_set_cookie: bool = False) -> Headers:
    """The fields of combined partial content (RFC 9111 §3.4, RFC 9110 §15.3.7.3): the stored
    fields, updated with the newest 206's fields as a 304 would update them (§3.2), Content-Range
    aside — it describes one piece, never the combination."""
    return without(merge_304_headers(stored, newest, keep_set_cookie), {"content-range"})


# --------------------------------------------------------------------------------------- targets

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
# Origin-form with only characters that need no normalisation (no %, no #, no controls or spaces).
_ALREADY_NORMAL_RE = re.compile(r"^/[!$&'()*+,\-./0-9:;=?@A-Z_a-z~]*$")
_ABSOLUTE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def normalise_target(target: str) -> str:
    """A request target -> the canonical path[?query] this cache keys on and forwards.

    - absolute-form (http://any-host/x) keeps only its path: the authority a client sends never
      chooses the origin (no cache poisoning through Host or absolute URLs);
    - control characters, spaces and fragments are refused (BadTarget -> 400);
    - percent-encoded unreserved characters are decoded and hex digits upper-cased (RFC 3986 §6.2.2),
      so %2e%2e becomes .. and is then removed with the other dot segments (§5.2.4): no target can
      climb above the origin's root, encoded or not. Other escapes (%2F, %00, %0D) stay encoded.
    """
    if _ALREADY_NORMAL_RE.match(target) and "/." not in target.partition("?")[0]:
        return target  # the common case: nothing to decode, no dot segment (saves µs on every hit)
    if not target:
        raise BadTarget("empty request target")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in target):
        raise BadTarget("control characters or spaces in the request target")
    if "#" in target:
        raise BadTarget("a fragment (#) is never sent in a request target")
    if not target.startswith("/"):
        match = _ABSOLUTE_RE.match(target)
        if not match:
            raise BadTarget("the request target must start with / (origin-form) or be an absolute URL")
        try:
            urlsplit(target)  # refuses a malformed authority such as "http://[bad/"
        except ValueError as exc:
            raise BadTarget(f"malformed absolute URL: {exc}") from None
        target = target[match.end():] or "/"
        if not target.startswith("/"):
            target = "/" + target
    path, sep, query = target.partition("?")
    path = remove_dot_segments(_normalise_percent(path))
    query = _normalise_percent(query)
    return path + (sep + query if sep else "")


def _normalise_percent(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()
    return _PERCENT_RE.sub(replace, text)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path: '/a/b/../../../etc' -> '/etc'. Never climbs above '/'."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


def cache_key(origin: str, normalised_target: str) -> str:
    """The primary cache key: the configured origin (never the client's Host) + path + query."""
    return origin.rstrip("/") + normalised_target
