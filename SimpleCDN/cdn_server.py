"""The CDN edge: a caching reverse proxy in front of one configured origin.

    python -m SimpleCDN.cdn_server --port 8000 --origin http://127.0.0.1:9000 --cache-size 64MB

Every response carries `X-Cache`:
  HIT          served from the cache, fresh; the origin was not contacted
  MISS         fetched from the origin and stored
  REVALIDATED  the stored copy was stale (or no-cache); the origin confirmed it (304) or replaced it
  STALE        served stale: inside stale-while-revalidate (a refresh runs in the background) or
               stale-if-error (the origin failed)
  BYPASS       not cacheable (unsafe method, private, no-store, Set-Cookie, Vary: *, too large,
               several ranges)

Why asyncio and not threads: a cache hit is a few microseconds of CPU, so under the GIL threads add
no parallelism, only switching costs and a stack per connection; a miss is almost all waiting on the
origin, which an event loop does for thousands of connections at the price of a small object each.
One thread also makes the cache and the in-flight table race-free without locks: nothing else runs
between two awaits. Request coalescing is then a dict of futures: the first miss for a key creates
one and fetches; later misses for the key await it (nginx calls this proxy_cache_lock).

The caching rules themselves are in cache_policy.py (pure, unit-tested); the bytes-bounded LRU in
lru_store.py; HTTP framing and the origin connection pool in http11.py. This file only wires them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from common import cli, free_port

from . import cache_policy as policy
from .http11 import (
    MAX_HEAD_BYTES,
    HttpError,
    InterimHandler,
    OriginError,
    OriginPool,
    OriginResponse,
    Request,
    field_index,
    parse_simple_head,
    read_request,
    reason_phrase,
    response_head,
    simple_response,
    unread_bytes,
)
from .lru_store import WHOLE_ANSWER_MAX, LRUStore, StoredResponse

ADMIN_STATS = "/__stats"
ADMIN_PURGE = "/__purge"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # the ones this edge knows to be safe
# Not proxied: CONNECT asks for a tunnel, TRACE echoes the request back (cookies included) to
# whatever script sent it, and the edge answers PURGE itself.
REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})
ALLOWED = "GET, HEAD, OPTIONS, POST, PUT, DELETE, PATCH, PURGE (and other methods the origin knows)"
SERVER_NAME = "simplecdn"
# Requests with these fields take the general path: a body to read, a Range to cut, a 100-continue.
NOT_ON_THE_FAST_PATH = frozenset({"content-length", "transfer-encoding", "expect", "range"})
UNKEYED_HOST_FIELDS = ("x-forwarded-host", "x-forwarded-proto", "x-forwarded-server", "forwarded",
                       "x-original-url", "x-rewrite-url", "x-host")
# Stored fields a replayed response gets anew (Content-Length, Age) or never (this edge's own field).
NOT_REPLAYED = frozenset({"content-length", "age", policy.OWN_TARGETED_FIELD})
NOT_FORWARDED = ("host", "content-length", "expect", *UNKEYED_HOST_FIELDS)  # see _origin_request_headers


@dataclass
class EdgeConfig:
    origin: str = "http://127.0.0.1:9000"
    cache_size: int = 64 * 2**20
    max_object_size: int = 8 * 2**20
    origin_timeout: float = 10.0
    idle_timeout: float = 60.0
    client_latency_ms: float = 0.0   # simulated distance client <-> edge (added before each response)
    origin_latency_ms: float = 0.0   # simulated distance edge <-> origin (added before each fetch)
    name: str = "edge"
    origin_cafile: str | None = None  # PEM CA bundle for an https origin with a private CA
    store_set_cookie: bool = False   # RFC 9111 §3.1 to the letter: store responses with Set-Cookie
    targets: tuple[str, ...] = policy.DEFAULT_TARGETS  # targeted Cache-Control fields (RFC 9213)
    normalise_vary: bool = False     # Accept-Encoding / Accept-Language variants compared by meaning


@dataclass
class Outcome:
    """What one origin round trip produced, shared with every coalesced waiter.

    `entry` is a stored (shareable) response; `passthrough` an unread origin response that only the
    leader may stream to its own client (private, too large ...), so waiters must fetch for themselves.
    """

    label: str
    entry: StoredResponse | None = None
    leader_headers: policy.Headers | None = None
    passthrough: OriginResponse | None = None
    prefix: list[bytes] = field(default_factory=list)
    # A complete 200 fetched with store_later=True: `entry` is not in the store yet, and this puts
    # it there. The leader calls it once its client's answer is written (see Edge._get).
    store: Callable[[], object] | None = None


@dataclass
class EdgeStats:
    requests: int = 0
    hits: int = 0
    misses: int = 0
    revalidated: int = 0
    stale: int = 0
    bypass: int = 0
    coalesced: int = 0
    origin_fetches: int = 0
    origin_errors: int = 0
    origin_bytes: int = 0
    bytes_served: int = 0
    purges: int = 0
    bad_requests: int = 0
    fast_hits: int = 0  # hits answered by EdgeConnection without a coroutine (counted in hits too)
    heads_passed_on: int = 0  # requests the fast path read, checked and handed over (not parsed twice)

    def count(self, label: str) -> None:
        attribute = COUNTER_OF_LABEL[label]
        setattr(self, attribute, getattr(self, attribute) + 1)


COUNTER_OF_LABEL = {"HIT": "hits", "MISS": "misses", "REVALIDATED": "revalidated", "STALE": "stale",
                    "BYPASS": "bypass"}


class Edge:
    """One edge server: its cache, its origin pool and the HTTP handling around them."""

    def __init__(self, config: EdgeConfig):
        parts = urlsplit(config.origin)
        self.config = config
        self.origin_base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.pool = OriginPool(config.origin, timeout=config.origin_timeout, cafile=config.origin_cafile)
        self.store = LRUStore(config.cache_size, normalise_vary=config.normalise_vary)
        self.stats = EdgeStats()
        self.inflight: dict[str, asyncio.Future[Outcome]] = {}
        self.peers: list[int] = []  # control ports of the other workers (--workers N)
        self._background: set[asyncio.Task] = set()

    # ------------------------------------------------------------------------------- connections

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               take_back: Callable[[], bool] | None = None,
                               first: Request | None = None,
                               watchdog: IdleWatchdog | None = None) -> None:
        """Serve requests on one keep-alive connection until the client closes or errs — or until
        `take_back()` (asked between requests) says the fast hit path takes the connection again.
        `first`: a request the fast path has already read and checked (a miss), answered before
        anything is read from `reader`, so its head is not parsed twice. `watchdog`: the fast
        path's idle timer, which goes on with the connection (one timer per connection, not per
        hand-over)."""
        if watchdog is None:
            watchdog = IdleWatchdog(writer, self.config.idle_timeout)
        handed_back = False
        try:
            while True:
                try:
                    request = first if first is not None else await read_request(reader, writer)
                    first = None
                except HttpError as exc:
                    self.stats.bad_requests += 1
                    writer.write(simple_response(exc.status, f"{exc.status} {reason_phrase(exc.status)}: "
                                                 f"{exc}", close=True))
                    await writer.drain()
                    return
                if request is None:
                    return
                watchdog.start_request()
                keep_alive = await self.handle(request, writer)
                watchdog.end_request()
                if not (keep_alive and request.keep_alive):
                    return
                if take_back is not None and take_back():
                    handed_back = True
                    return
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        except Exception as exc:  # a bug must cost one connection, never the server
            log(self.config.name, f"internal error: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                writer.write(simple_response(500, "500 Internal Server Error", close=True))
        finally:
            if not handed_back:
                watchdog.cancel()
                writer.close()

    async def handle(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request. Returns False when the connection must close afterwards."""
        self.stats.requests += 1
        request.index_headers()
        if self.config.client_latency_ms:
            await asyncio.sleep(self.config.client_latency_ms / 1000)
        try:
            target = policy.normalise_target(request.target)
        except policy.BadTarget as exc:
            self.stats.bad_requests += 1
            writer.write(simple_response(400, f"400 Bad Request: {exc}", close=True))
            return False
        path = target.partition("?")[0]
        if request.method == "PURGE":
            return await self._purge(target, writer, from_peer="x-simplecdn-peer" in request.fields)
        if path == ADMIN_STATS and request.method == "GET":
            return self._write_json(writer, self.stats_snapshot())
        if path == ADMIN_PURGE and request.method == "POST":  # never GET: a crawler must not purge
            query = dict(part.partition("=")[::2] for part in target.partition("?")[2].split("&") if part)
            return await self._purge(query.get("url", ""), writer)
        if request.method in REFUSED_METHODS:
            writer.write(simple_response(405, f"405 Method Not Allowed: {request.method} is not proxied",
                                         extra=[("Allow", ALLOWED)]))
            return True
        key = policy.cache_key(self.origin_base, target)
        if request.method not in SAFE_METHODS:
            # POST, PUT, DELETE, PATCH — and any method whose safety this edge does not know
            # (M-SEARCH, LOCK ...): RFC 9111 §4.4 treats both alike.
            return await self._forward_unsafe(request, target, key, writer)
        ranges = policy.parse_byte_ranges(request.get("range"))
        if request.method != "GET" or (ranges is not None and len(ranges) > 1):
            # HEAD misses, OPTIONS and requests for several ranges (a multipart/byteranges answer)
            # are forwarded untouched; HEAD hits are served. One range is served from the store.
            if request.method == "HEAD":
                entry = self.store.lookup(key, request.headers)
                if entry is not None and entry.partial is None and self._is_usable(entry, request):
                    return await self._serve_entry(request, entry, "HIT", writer)
            return await self._bypass(request, target, writer)
        return await self._get(request, target, key, writer)

    def answer_hit(self, head: bytes) -> tuple[list[bytes], bool] | Request | None:
        """The hit path without a coroutine: if the request head `head` is a plain GET or HEAD (no
        body, no Range, no client latency to simulate) for a fresh stored response the request
        accepts, the bytes to send and whether the connection stays open. Otherwise the request
        goes the general way (serve_connection -> handle): as the parsed Request when it passed
        every check read_request makes (a miss, a stale entry: no need to parse it again), or None
        (that path parses it again and says what is wrong with a bad one). Every check here is one
        that path makes too, in the same order."""
        if len(head) > MAX_HEAD_BYTES:
            return None  # the general path refuses it with its 431
        parsed = parse_simple_head(head)  # no bare CR or LF, every field well-formed
        if parsed is None:
            return None  # a bad head, or a rare shape: the general path parses it line by line
        method, target, version, headers = parsed
        fields = field_index(headers)
        hosts = len(fields.get("host", ()))
        if (method not in ("GET", "HEAD") or hosts > 1 or (version == "HTTP/1.1" and hosts == 0)
                or not fields.keys().isdisjoint(NOT_ON_THE_FAST_PATH) or self.config.client_latency_ms):
            return None
        try:
            normalised = policy.normalise_target(target)
        except policy.BadTarget:
            return None
        if normalised.partition("?")[0] == ADMIN_STATS:
            return None
        request = Request(method, target, version, headers, b"", fields)
        entry = self.store.lookup(policy.cache_key(self.origin_base, normalised), headers)
        now = time.time()
        if entry is None or entry.partial is not None or not self._is_usable(entry, request, now):
            return request  # valid as read_request would return it: no body, one Host, no Expect
        self.stats.requests += 1
        self.stats.fast_hits += 1
        return self._entry_response(request, entry, "HIT", now), request.keep_alive

    # ------------------------------------------------------------------------------------ GET path

    async def _get(self, request: Request, target: str, key: str, writer: asyncio.StreamWriter) -> bool:
        entry = self.store.lookup(key, request.headers)
        if entry is None or entry.partial is not None:
            if self._single_range(request) is not None:
                return await self._get_range(request, target, key, entry, writer)
            entry = None  # pieces cannot answer a whole GET; the complete response will replace them
        if entry is not None:
            now = time.time()
            facts = freshness(entry)
            age, lifetime = facts.age(now), facts.lifetime
            if self._is_usable(entry, request, now):
                return await self._serve_entry(request, entry, "HIT", writer, now=now)
            forced = (facts.no_cache
                      or self._request_needs_revalidation(request, age, lifetime))
            if not forced and policy.may_serve_stale_while_revalidate(entry.rules, age, lifetime):
                self._revalidate_in_background(key, request, target, entry)
                return await self._serve_entry(request, entry, "STALE", writer, now=now)
        try:
            outcome, leader = await self._coalesced_fetch(key, request, target, entry,
                                                          self._interim_relay(request, writer),
                                                          store_later=True)
        except OriginError as exc:
            return self._origin_failed(exc, writer)
        if not leader and (outcome.entry is None or outcome.entry.variant != policy.variant_key(
                outcome.entry.vary, request.headers, self.config.normalise_vary)):
            # The leader's response was not shareable, or it is another variant: fetch our own.
            try:
                outcome = await self._fetch(key, request, target, entry,
                                            self._interim_relay(request, writer))
            except OriginError as exc:
                return self._origin_failed(exc, writer)
            leader = True
        elif not leader:
            self.stats.coalesced += 1
        if outcome.passthrough is not None:
            return await self._stream(request, outcome.passthrough, outcome.prefix, "BYPASS", writer)
        assert outcome.entry is not None
        if leader:
            # The store is filled after this answer is written (outcome.store), not before: the
            # client waits for its bytes, not for the bookkeeping. Nothing can look the key up in
            # between — no await separates the fetch's end from the write — and the coalesced
            # waiters, woken by the fetch's future, run only after this step, store filled.
            return await self._serve_entry(request, outcome.entry, outcome.label, writer,
                                           headers=outcome.leader_headers, then=outcome.store)
        # A coalesced waiter is served from the cache the leader just filled: the origin did no
        # work for it, so it is a HIT (as nginx reports requests released by proxy_cache_lock).
        label = "STALE" if outcome.label == "STALE" else "HIT"
        return await self._serve_entry(request, outcome.entry, label, writer)

    @staticmethod
    def _single_range(request: Request) -> tuple[int | None, int | None] | None:
        """The one byte range a GET asks for, or None (no Range, several, invalid, or an If-Range:
        that condition is judged against a complete stored response, never against pieces)."""
        if "range" not in request.fields or "if-range" in request.fields:
            return None
        specs = policy.parse_byte_ranges(policy.get_header(request.headers, "range"))
        return specs[0] if specs is not None and len(specs) == 1 else None

    async def _get_range(self, request: Request, target: str, key: str, pieces: StoredResponse | None,
                         writer: asyncio.StreamWriter) -> bool:
        """One range, and no complete response stored: serve it from stored pieces when they hold it
        (and are fresh); otherwise ask the origin for just that range (RFC 9111 §3.3) and keep the 206
        it sends with the pieces already stored — combined into a complete 200 once they cover the
        whole representation (§3.4). Not coalesced: two clients rarely want the same bytes."""
        spec = self._single_range(request)
        assert spec is not None
        if pieces is not None and pieces.partial is not None and self._is_usable(pieces, request):
            span = policy.resolve_byte_range(spec, pieces.partial.length)
            if span is None or pieces.partial.covers(*span):
                return await self._serve_entry(request, pieces, "HIT", writer)
        try:
            outcome = await self._fetch(key, request, target, None, self._interim_relay(request, writer),
                                        pieces=pieces)
        except OriginError as exc:
            return self._origin_failed(exc, writer)
        if outcome.passthrough is not None:
            return await self._stream(request, outcome.passthrough, outcome.prefix, "BYPASS", writer)
        entry = outcome.entry
        assert entry is not None
        if entry.partial is not None:
            span = policy.resolve_byte_range(spec, entry.partial.length)
            if span is not None and not entry.partial.covers(*span):
                writer.write(simple_response(502, "502 Bad Gateway: the origin answered with another "
                                                  "range than the one asked for"))
                return True
        return await self._serve_entry(request, entry, outcome.label, writer,
                                       headers=outcome.leader_headers)

    def _is_usable(self, entry: StoredResponse, request: Request, now: float | None = None) -> bool:
        """Fresh, not no-cache, and the request accepts it: servable without asking the origin."""
        facts = freshness(entry)
        age = facts.age(time.time() if now is None else now)
        return (age < facts.lifetime and not facts.no_cache
                and not self._request_needs_revalidation(request, age, facts.lifetime))

    @staticmethod
    def _request_needs_revalidation(request: Request, age: float, lifetime: float) -> bool:
        # Most requests carry neither field: skip the policy call (it parses Cache-Control) then.
        if "cache-control" not in request.fields and "pragma" not in request.fields:
            return False
        return policy.request_needs_revalidation(request.headers, age, lifetime)

    async def _coalesced_fetch(self, key: str, request: Request, target: str,
                               stale: StoredResponse | None,
                               on_interim: InterimHandler | None = None,
                               store_later: bool = False) -> tuple[Outcome, bool]:
        """Join the in-flight fetch for `key` or become its leader. Returns (outcome, am_leader).
        Only the leader's client sees the origin's interim (1xx) responses. `store_later`: see
        _fetch; it applies to the leader's own fetch only."""
        pending = self.inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), False
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.inflight[key] = future
        try:
            outcome = await self._fetch(key, request, target, stale, on_interim, store_later=store_later)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, OriginError) else OriginError(
                f"the fetch failed: {type(exc).__name__}"))
            future.exception()  # mark retrieved: nobody may be waiting, that is fine
            raise
        else:
            future.set_result(outcome)
        finally:
            del self.inflight[key]
        return outcome, True

    async def _fetch(self, key: str, request: Request, target: str,
                     stale: StoredResponse | None, on_interim: InterimHandler | None = None,
                     pieces: StoredResponse | bool = False, store_later: bool = False) -> Outcome:
        """One origin round trip for GET `target`; stores the result when policy allows.

        With `stale` this is a revalidation: the stored validators are sent, and a 304 refreshes
        the stored headers (RFC 9111 §4.3.4). Origin failure or 5xx falls back to `stale` where
        stale-if-error allows it; otherwise OriginError propagates (-> 502/504).

        `pieces` (the stored partial entry, or None when there is none yet) forwards the client's
        one Range: a 206 answer is stored with those pieces. Without it, the whole representation is
        fetched, also for a Range request whose object is stored complete but stale.

        `store_later`: a complete 200 is not put in the store here but by the returned
        Outcome.store, which the caller must call (it does so once its client is answered).
        """
        ranged = pieces is not False
        drop = policy.CONDITIONAL_REQUEST_FIELDS if ranged else (*policy.CONDITIONAL_REQUEST_FIELDS, "range")
        headers = self._origin_request_headers(request, drop=drop)
        if stale is not None:
            headers += policy.revalidation_headers(stale.headers)
        if self.config.origin_latency_ms:
            await asyncio.sleep(self.config.origin_latency_ms / 1000)
        request_time = time.time()
        self.stats.origin_fetches += 1
        try:
            response = await self.pool.request("GET", target, headers, on_interim=on_interim)
        except OriginError as exc:
            self.stats.origin_errors += 1
            log(self.config.name, f"origin error for {target}: {exc}")
            if stale is not None and self._stale_allowed_on_error(stale, disconnected=exc.unanswered):
                return Outcome("STALE", entry=stale)
            raise
        response_time = time.time()
        if response.status == 304 and stale is not None:
            await self._drain(response)
            merged = policy.Fields(policy.merge_304_headers(stale.headers, response.headers,
                                                            keep_set_cookie=self.config.store_set_cookie))
            refreshed = StoredResponse(stale.status, stale.reason, merged, stale.body, request_time,
                                       response_time, stale.vary, policy_view=self._policy_view(merged))
            self.store.replace(key, stale, refreshed)
            return Outcome("REVALIDATED", entry=refreshed)
        if response.status >= 500 and stale is not None and self._stale_allowed_on_error(stale):
            self.stats.origin_errors += 1
            await self._drain(response)
            return Outcome("STALE", entry=stale)
        if response.status == 206 and not ranged:
            return Outcome("BYPASS", passthrough=response)  # a part this edge did not ask for
        view = self._policy_view(response.headers)
        storable, _reason = policy.is_storable("GET", response.status, request.headers,
                                               response.headers if view is None else view,
                                               store_set_cookie=self.config.store_set_cookie)
        length = response.content_length
        too_big = length is not None and length > self.config.max_object_size
        if not storable or too_big:
            if stale is not None and response.status < 500:
                self.store.invalidate(key)  # the origin changed its mind: stop serving the old copy
            return Outcome("BYPASS", passthrough=response)
        try:
            body, complete = await self._read_up_to(response, self.config.max_object_size)
        except OriginError:
            self.stats.origin_errors += 1  # the origin died mid-body: same rules as dying before it
            if stale is not None and self._stale_allowed_on_error(stale):
                return Outcome("STALE", entry=stale)
            raise
        if not complete:
            self.store.invalidate(key)
            return Outcome("BYPASS", passthrough=response, prefix=body)
        body_bytes = b"".join(body)
        if response.status == 206:
            return self._store_piece(key, request, response, body_bytes, pieces or None,
                                     request_time, response_time)
        # Fields (indexed): freshness and Age read the kept fields several times.
        kept = policy.Fields(policy.headers_to_store(response.headers,
                                                     keep_set_cookie=self.config.store_set_cookie))
        stored = StoredResponse(response.status, response.reason, kept, body_bytes, request_time,
                                response_time, policy.vary_names(response.headers),
                                policy_view=None if view is None else self._policy_view(kept))
        store = functools.partial(self._keep, key, stored, request.headers)
        if store_later:
            # The coalesced waiters compare the variant before the store sets it: set it now.
            stored.variant = policy.variant_key(stored.vary, request.headers, self.config.normalise_vary)
        else:
            store()
            store = None
        leader_headers = None  # the stored fields are what the origin sent, less what no client gets
        if not self.config.store_set_cookie and policy.get_header(response.headers, "set-cookie") is not None:
            # ...except a Set-Cookie, which is not stored but is the fetching client's own.
            leader_headers = policy.strip_hop_by_hop(response.headers,
                                                     also=("age", policy.OWN_TARGETED_FIELD))
        # A full 200 is a MISS even when it replaced a stale copy: REVALIDATED means "the origin
        # confirmed our copy with 304", which is the saving a learner should be able to count.
        return Outcome("MISS", entry=stored, leader_headers=leader_headers, store=store)

    def _keep(self, key: str, entry: StoredResponse, request_headers: policy.Headers) -> None:
        """Put a fetched response in the store, with the freshness facts its reuses will read."""
        freshness(entry)
        self.store.put(key, entry, request_headers)

    def _store_piece(self, key: str, request: Request, response: OriginResponse, body: bytes,
                     stored: StoredResponse | None, request_time: float, response_time: float) -> Outcome:
        """Keep a 206 from the origin (RFC 9111 §3.3). Pieces with the same strong ETag and length
        are combined, the fields updated from the newest piece (§3.4); a piece of another version
        replaces the old pieces instead of mixing with them. Complete, they become a stored 200."""
        piece = policy.partial_piece(response.headers, len(body))
        if piece is None:  # the body is not the range its Content-Range names: relay it, keep nothing
            return Outcome("BYPASS", passthrough=response, prefix=[body])
        first, length, etag = piece
        kept = policy.without(policy.headers_to_store(response.headers,
                                                      keep_set_cookie=self.config.store_set_cookie),
                              {"content-range", "content-length"})
        old = stored.partial if stored is not None else None
        if old is not None and (old.etag, old.length) == (etag, length):
            assert stored is not None
            kept = policy.combine_partial_headers(stored.headers, kept, self.config.store_set_cookie)
            parts = old.with_piece(first, body)
        else:
            parts = policy.PartialContent(etag, length).with_piece(first, body)
        if parts.size > self.config.max_object_size:
            # Pieces add up: without this bound, ranges of a large file would store it whole.
            return Outcome("BYPASS", passthrough=response, prefix=[body])
        view = self._policy_view(kept)
        if parts.complete:  # RFC 9110 §15.3.7.3: now processed as a complete 200 with its full length
            entry = StoredResponse(200, "OK", kept, parts.cut(0, length - 1), request_time, response_time,
                                   policy.vary_names(kept), policy_view=view)
        else:
            entry = StoredResponse(206, "Partial Content", kept, b"", request_time, response_time,
                                   policy.vary_names(kept), policy_view=view, partial=parts)
        self.store.put(key, entry, request.headers)
        # The client is answered with the newest fields (its own Set-Cookie too, when one was sent).
        leader_headers = policy.strip_hop_by_hop(response.headers,
                                                 also=("age", "content-range", policy.OWN_TARGETED_FIELD))
        return Outcome("MISS", entry=entry, leader_headers=leader_headers)

    def _stale_allowed_on_error(self, stale: StoredResponse, disconnected: bool = False) -> bool:
        """stale-if-error (RFC 5861 §4) after an error; when the origin could not be reached at all,
        the wider RFC 9111 §4.2.4 rule (stale unless forbidden, within stale-if-error if given)."""
        facts = freshness(stale)
        age = facts.age(time.time())
        if disconnected:
            return policy.may_serve_stale_when_disconnected(stale.rules, age, facts.lifetime)
        return policy.may_serve_stale_on_error(stale.rules, age, facts.lifetime)

    def _policy_view(self, headers: policy.Headers) -> policy.Headers | None:
        """The fields this cache's decisions read, if a targeted field changes them; else None."""
        if not any(policy.get_header(headers, name) is not None for name in self.config.targets):
            return None  # the common case, without a copy of the headers
        return policy.policy_headers(headers, self.config.targets)

    async def _read_up_to(self, response: OriginResponse, limit: int) -> tuple[list[bytes], bool]:
        """Read the body while it fits in `limit`. (pieces, True) when complete; else the pieces so
        far and False, leaving the rest of the body for the caller to stream."""
        arrived = await response.read_arrived_body(limit)
        if arrived is not None:
            self.stats.origin_bytes += len(arrived)
            return [arrived], True
        pieces: list[bytes] = []
        size = 0
        async for piece in response.pieces():
            pieces.append(piece)
            size += len(piece)
            self.stats.origin_bytes += len(piece)
            if size > limit:
                return pieces, False
        return pieces, True

    def _revalidate_in_background(self, key: str, request: Request, target: str,
                                  stale: StoredResponse) -> None:
        """stale-while-revalidate: one background refresh per key (it counts as the key's in-flight
        fetch, so concurrent misses coalesce onto it too)."""
        if key in self.inflight:
            return

        async def refresh() -> None:
            try:
                outcome, _ = await self._coalesced_fetch(key, request, target, stale)
                if outcome.passthrough is not None:
                    outcome.passthrough.connection.close()
                    outcome.passthrough.release()
            except OriginError:
                pass  # already logged; the stale copy stays until its windows run out

        self.run_in_background(refresh())

    def run_in_background(self, coroutine) -> None:
        """Run `coroutine` as a task this edge holds on to (the loop keeps only weak references)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---------------------------------------------------------------------- other request kinds

    async def _forward_unsafe(self, request: Request, target: str, key: str,
                              writer: asyncio.StreamWriter) -> bool:
        """Unsafe methods (and unknown ones) go to the origin; a non-error answer (2xx, 3xx)
        invalidates the target URI and the Location / Content-Location URIs on the same origin
        (RFC 9111 §4.4; never another origin's, or one client could purge another site's pages)."""
        headers = self._origin_request_headers(request)
        try:
            self.stats.origin_fetches += 1
            response = await self.pool.request(request.method, target, headers, request.body,
                                               self._interim_relay(request, writer))
        except OriginError as exc:
            return self._origin_failed(exc, writer)
        if response.status < 400:
            self.store.invalidate(key)
            for field_name in ("location", "content-location"):
                value = policy.get_header(response.headers, field_name) or ""
                if value.startswith(self.origin_base + "/"):  # absolute, and on this origin
                    value = value[len(self.origin_base):]
                if value.startswith("/") and not value.startswith("//"):  # "//host/x" is another host
                    with contextlib.suppress(policy.BadTarget):
                        self.store.invalidate(policy.cache_key(self.origin_base,
                                                               policy.normalise_target(value)))
        return await self._stream(request, response, [], "BYPASS", writer)

    async def _bypass(self, request: Request, target: str, writer: asyncio.StreamWriter) -> bool:
        try:
            self.stats.origin_fetches += 1
            response = await self.pool.request(request.method, target,
                                               self._origin_request_headers(request), request.body,
                                               self._interim_relay(request, writer))
        except OriginError as exc:
            return self._origin_failed(exc, writer)
        return await self._stream(request, response, [], "BYPASS", writer)

    async def _purge(self, url: str, writer: asyncio.StreamWriter, from_peer: bool = False) -> bool:
        """PURGE /path (or POST /__purge?url=/path): drop every stored variant of that URL — in
        every worker: with --workers N each worker has its own store, so the one the kernel handed
        this connection to passes the PURGE on to the others (marked, so they do not pass it on)."""
        try:
            target = policy.normalise_target(url) if url else ""
        except policy.BadTarget as exc:
            writer.write(simple_response(400, f"400 Bad Request: cannot purge {url!r}: {exc}"))
            return True
        if not target:
            writer.write(simple_response(400, "400 Bad Request: say what to purge: PURGE /path"))
            return True
        removed = self.store.invalidate(policy.cache_key(self.origin_base, target))
        self.stats.purges += 1
        log(self.config.name, f"purged {target} ({removed} variant(s))")
        if not from_peer:
            removed += sum(await asyncio.gather(*(purge_peer(port, target) for port in self.peers)))
        return self._write_json(writer, {"purged": target, "variants": removed,
                                         "workers": 1 + len(self.peers)},
                                status=200 if removed else 404)

    # ---------------------------------------------------------------------------------- writing

    async def _serve_entry(self, request: Request, entry: StoredResponse, label: str,
                           writer: asyncio.StreamWriter, now: float | None = None,
                           headers: policy.Headers | None = None,
                           then: Callable[[], object] | None = None) -> bool:
        """Replay a stored response (status, headers, body) with Age and X-Cache, or a 304 if the
        client's own conditional request matches it. `then`: called once the answer is written."""
        for piece in self._entry_response(request, entry, label, now, headers):
            writer.write(piece)
        if then is not None:
            then()
        if writer.transport.get_write_buffer_size() > 256 * 1024:
            await self._drain_client(writer)
        return True

    def _entry_response(self, request: Request, entry: StoredResponse, label: str,
                        now: float | None = None, headers: policy.Headers | None = None) -> list[bytes]:
        """The bytes that answer `request` from `entry` (see _serve_entry), counted in the stats."""
        self.stats.count(label)
        age = int(current_age(entry, now or time.time()))
        source = headers if headers is not None else entry.headers
        if entry.status == 200 and has_conditional(request) \
                and policy.conditional_request_matches(request.headers, entry.headers):
            head = response_head(304, "Not Modified", policy.response_304_headers(source))
            return [head[:-2] + answer_tail(age, label)]
        if (entry.status == 200 or entry.partial is not None) and request.method == "GET" \
                and "range" in request.fields:
            partial = self._partial_response(request, entry, source, answer_tail(age, label))
            if partial is not None:
                return [partial]
        body = entry.body if request.method != "HEAD" else b""
        self.stats.bytes_served += len(body)
        if headers is not None:
            prefix = self._head_prefix(entry, headers)
        else:
            if entry.head_prefix is None:
                entry.head_prefix = self._head_prefix(entry, entry.headers)
            prefix = entry.head_prefix
        if len(body) > WHOLE_ANSWER_MAX:
            return [prefix + answer_tail(age, label), body]  # two sends beat copying a large body
        if headers is not None or request.method == "HEAD":
            return [prefix + answer_tail(age, label) + body]  # one send()
        # A GET answered with the stored fields: the same bytes for every such answer in the same
        # second of Age (one send() each), built once rather than built and copied for every hit.
        kept = entry.answer
        if kept is None or kept[0] != age or kept[1] != label:
            kept = entry.answer = (age, label, prefix + answer_tail(age, label) + body)
        return [kept[2]]

    def _partial_response(self, request: Request, entry: StoredResponse, headers: policy.Headers,
                          tail: bytes) -> bytes | None:
        """206 with one range of the stored 200, or 416 when the range is past its end (RFC 9110
        §14.2, §15.3.7, §15.5.17) — or of the stored 206 pieces that hold it; None to send the whole
        response (no valid single range, or an If-Range that names another version, §13.1.5). The
        fields are the stored response's own (RFC 9111 §3.4), with Content-Range and the part's
        Content-Length."""
        specs = policy.parse_byte_ranges(policy.get_header(request.headers, "range"))
        if specs is None or len(specs) != 1 or not policy.if_range_matches(
                policy.get_header(request.headers, "if-range"), entry.headers):
            return None
        pieces = entry.partial  # stored 206 pieces: the caller checked they hold the range
        length = len(entry.body) if pieces is None else pieces.length
        span = policy.resolve_byte_range(specs[0], length)
        fields = policy.without(headers, ("content-length", "age", "content-range",
                                          policy.OWN_TARGETED_FIELD))
        if span is None:
            head = response_head(416, "Range Not Satisfiable", [
                ("Date", policy.http_date(time.time())), ("Content-Range", f"bytes */{length}"),
                ("Content-Length", "0")])
            return head[:-2] + tail
        first, last = span
        fields += [("Content-Range", f"bytes {first}-{last}/{length}"),
                   ("Content-Length", str(last - first + 1))]
        self.stats.bytes_served += last - first + 1
        part = entry.body[first:last + 1] if pieces is None else pieces.cut(first, last)
        return response_head(206, "Partial Content", fields)[:-2] + tail + part

    @staticmethod
    def _head_prefix(entry: StoredResponse, headers: policy.Headers) -> bytes:
        """Status line and stored fields with the real Content-Length, without the final blank line
        (response_head's work in one pass: a miss's answer waits for this)."""
        lines = [f"HTTP/1.1 {entry.status} {entry.reason or reason_phrase(entry.status)}"]
        lines += [f"{name}: {value}" for name, value in headers if name.lower() not in NOT_REPLAYED]
        if entry.status != 204:  # a server MUST NOT send Content-Length in a 204 (RFC 9110 §8.6)
            lines.append(f"Content-Length: {len(entry.body)}")
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def _stream(self, request: Request, response: OriginResponse, prefix: list[bytes], label: str,
                      writer: asyncio.StreamWriter) -> bool:
        """Relay an origin response to the client as it arrives, storing nothing."""
        self.stats.count(label)
        fields = policy.strip_hop_by_hop(response.headers, also=("content-length", policy.OWN_TARGETED_FIELD))
        chunked = False
        if response.transfer_codings and request.version != "HTTP/1.1":
            # RFC 9112 §6.1: no Transfer-Encoding to an HTTP/1.0 client, and without it the
            # transfer-coded bytes would be taken for the content.
            response.release()
            writer.write(simple_response(502, "502 Bad Gateway: the origin's response is transfer-coded "
                                              f"({response.transfer_codings}); HTTP/1.0 cannot carry that"))
            return True
        if response.content_length is not None and response.status != 204:  # RFC 9110 §8.6
            fields.append(("Content-Length", str(response.content_length)))
        elif response.has_body:
            if request.version == "HTTP/1.1":
                chunked = True
                codings = f"{response.transfer_codings}, " if response.transfer_codings else ""
                fields.append(("Transfer-Encoding", codings + "chunked"))
            else:
                fields.append(("Connection", "close"))
        fields += [("X-Cache", label), ("Via", f"1.1 {SERVER_NAME}")]
        writer.write(response_head(response.status, response.reason, fields))
        if not response.has_body or request.method == "HEAD":
            response.release()
            return True
        body = response.pieces()  # continues where _read_up_to stopped, if it started
        try:
            for piece in prefix:
                self._write_piece(writer, piece, chunked)
            await self._drain_client(writer)
            async for piece in body:
                self.stats.origin_bytes += len(piece)
                self._write_piece(writer, piece, chunked)
                await self._drain_client(writer)  # backpressure: never buffer a large body in memory
        except OriginError as exc:
            log(self.config.name, f"origin failed mid-body: {exc}")
            return False  # the status line is already sent; closing is the only honest signal
        finally:
            response.release()
        if chunked:
            writer.write(b"0\r\n\r\n")
        return response.content_length is not None or chunked

    async def _drain_client(self, writer: asyncio.StreamWriter) -> None:
        """Wait for the client to take what was written, but not forever: a client that stops
        reading would otherwise hold this handler, its buffers and an origin connection for good
        (nginx's send_timeout). The idle timeout is the bound."""
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()
            raise ConnectionError(f"the client read nothing for {self.config.idle_timeout:g}s") from None

    def _write_piece(self, writer: asyncio.StreamWriter, piece: bytes, chunked: bool) -> None:
        self.stats.bytes_served += len(piece)
        if chunked:
            writer.write(f"{len(piece):X}\r\n".encode() + piece + b"\r\n")
        else:
            writer.write(piece)

    @staticmethod
    def _interim_relay(request: Request, writer: asyncio.StreamWriter) -> InterimHandler | None:
        """Forward the origin's 1xx responses (e.g. 103 Early Hints) to this client: RFC 9110 §15.2
        says a proxy MUST, except to an HTTP/1.0 client, which must never get one. They are written,
        never stored: a 1xx is not the response to the request."""
        if request.version != "HTTP/1.1":
            return None

        def relay(status: int, reason: str, headers: policy.Headers) -> None:
            # A 1xx has no content, and a server MUST NOT send Content-Length in one (RFC 9110 §8.6):
            # a client that believed it would take the final response's first bytes for its body.
            fields = policy.strip_hop_by_hop(headers, also=("content-length",))
            writer.write(response_head(status, reason, fields))
        return relay

    def _write_json(self, writer: asyncio.StreamWriter, payload: dict, status: int = 200) -> bool:
        body = json.dumps(payload, indent=1).encode()
        writer.write(response_head(status, reason_phrase(status), [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store")]) + body)
        return True

    def _origin_failed(self, exc: OriginError, writer: asyncio.StreamWriter) -> bool:
        status = 504 if exc.timeout else 502
        writer.write(simple_response(status, (
            f"{status} {reason_phrase(status)}: the origin {self.config.origin} failed ({exc}) and no "
            f"stored copy may be served in its place (no stale-if-error window applies)."),
            extra=[("X-Cache", "MISS"), ("Cache-Control", "no-store")]))
        return True

    async def _drain(self, response: OriginResponse) -> None:
        with contextlib.suppress(OriginError):
            async for piece in response.pieces():
                self.stats.origin_bytes += len(piece)

    def _origin_request_headers(self, request: Request, drop: Sequence[str] = ()) -> policy.Headers:
        """The client's fields minus hop-by-hop ones, Host (the origin's own is used) and `drop`.

        Headers that let a client claim another host or scheme are dropped too: an origin that builds
        links from them would put the attacker's host into a response every user then gets from cache
        (the classic "unkeyed header" cache poisoning).
        """
        if "connection" in request.fields:  # it may name more hop-by-hop fields (RFC 9110 §7.6.1)
            headers = policy.strip_hop_by_hop(request.headers, also=(*NOT_FORWARDED, *drop))
        else:  # the usual request: one pass over its fields with a set made once
            unwanted = _never_forwarded(tuple(drop))
            headers = [(name, value) for name, value in request.headers if name.lower() not in unwanted]
        headers.append(("Via", f"1.1 {SERVER_NAME}"))
        return headers

    def stats_snapshot(self) -> dict:
        stats = self.stats
        served = stats.hits + stats.misses + stats.revalidated + stats.stale + stats.bypass
        return {
            "edge": self.config.name, "origin": self.config.origin, **stats.__dict__,
            "hit_ratio": round((stats.hits + stats.stale) / served, 4) if served else 0.0,
            "byte_offload": (round(1 - stats.origin_bytes / stats.bytes_served, 4)
                             if stats.bytes_served else 0.0),
            "entries": len(self.store), "bytes_cached": self.store.bytes_used,
            "cache_size": self.store.max_bytes, "evictions": self.store.evictions,
        }


class EdgeConnection(asyncio.StreamReaderProtocol):
    """One client connection. While its requests are fresh hits they are answered right here, as
    their bytes arrive (Edge.answer_hit): no coroutine is woken, no StreamReader buffers them, which
    is most of what a hit cost. The first request that is anything else — a miss, a body, a bad
    head, a client not reading its responses — hands the connection to Edge.serve_connection, the
    general path: the bytes not yet answered go to its reader in order, so pipelined requests are
    answered in order too. Between two requests, with nothing of the client's left unread, the
    general path gives the connection back (take_back)."""

    def __init__(self, edge: Edge):
        self.edge = edge
        self.reader = asyncio.StreamReader(limit=MAX_HEAD_BYTES)
        super().__init__(self.reader)
        self.pending = b""  # received, not yet answered: the start of a request head (the fast path's buffer)
        self.handed_over = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = transport  # type: ignore[assignment] - uvloop's is not an asyncio.Transport
        self.writer = asyncio.StreamWriter(transport, self, self.reader, asyncio.get_running_loop())
        self.watchdog = IdleWatchdog(self.writer, self.edge.config.idle_timeout)

    def data_received(self, data: bytes) -> None:
        if self.handed_over:
            super().data_received(data)
            return
        if self.transport.is_closing():
            return  # closed after a Connection: close answer: what the client sends next is ignored
        # Usually `data` is exactly one request head and nothing waits in `pending`: the head is
        # then `data` itself, not a copy (slicing a bytes object whole returns it).
        buffer = self.pending + data if self.pending else data
        start = 0  # where the first request not yet answered begins
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                break
            try:
                answer = self.edge.answer_hit(buffer[start:end + 4])
            except Exception:  # noqa: BLE001 - a bug here must not cost the request: retry it there
                answer = None
            if answer is None:
                self._hand_over(buffer[start:])
                return
            start = end + 4
            if isinstance(answer, Request):
                self.edge.stats.heads_passed_on += 1
                self._hand_over(buffer[start:], first=answer)  # read and checked: not parsed again
                return
            pieces, keep_alive = answer
            for piece in pieces:
                self.transport.write(piece)
            self.watchdog.end_request()
            if not keep_alive:
                self.transport.close()  # after the buffered response is sent; the rest is ignored
                return
            if self.transport.get_write_buffer_size() > 256 * 1024:
                self._hand_over(buffer[start:])  # the client is not reading: the general path bounds the wait
                return
        self.pending = buffer[start:]
        if self.pending and (len(self.pending) > MAX_HEAD_BYTES
                             or b"\n" in self.pending.replace(b"\r\n", b"")):
            self._hand_over(self.pending)  # too long, or a bare LF: the general path says so now

    def _hand_over(self, unanswered: bytes, first: Request | None = None) -> None:
        """Give the connection to the general path, with the bytes received but not yet answered."""
        self.handed_over = True
        self.pending = b""
        if unanswered:
            super().data_received(unanswered)
        self.edge.run_in_background(self.edge.serve_connection(self.reader, self.writer, self.take_back,
                                                               first, self.watchdog))

    def take_back(self) -> bool:
        """Resume the fast path, if the general path has read everything the client sent (so the
        order of answers cannot change) and the client is taking its answers."""
        if (unread_bytes(self.reader) or self.reader.at_eof() or self.transport.is_closing()
                or self.transport.get_write_buffer_size() > 256 * 1024):
            return False
        self.handed_over = False
        return True

    def eof_received(self) -> bool:
        if not self.handed_over and self.pending.strip(b"\r\n"):
            self._hand_over(self.pending)  # half a request, then EOF: the general path answers it (400)
        if self.handed_over:
            return super().eof_received()
        return False  # the client has nothing more to ask: close once the answers are sent

    def connection_lost(self, exc: Exception | None) -> None:
        self.watchdog.cancel()
        super().connection_lost(exc)


class IdleWatchdog:
    """Closes a keep-alive connection on which no request completes for `timeout` seconds (idle, or
    a request head trickling in byte by byte). One timer per connection, re-armed lazily: cheaper
    than a timeout context around every read, which costs about as much as parsing the request."""

    def __init__(self, writer: asyncio.StreamWriter, timeout: float):
        self.writer = writer
        self.timeout = timeout
        self.busy = False
        self.last_done = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(timeout, self._check)

    def start_request(self) -> None:
        self.busy = True

    def end_request(self) -> None:
        self.busy = False
        self.last_done = time.monotonic()

    def _check(self) -> None:
        idle_for = time.monotonic() - self.last_done
        if not self.busy and idle_for >= self.timeout:
            self.writer.close()  # the pending read fails and serve_connection returns
            return
        delay = self.timeout if self.busy else self.timeout - idle_for
        self._handle = self._loop.call_later(delay, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


@functools.lru_cache(maxsize=8)
def _never_forwarded(drop: tuple[str, ...]) -> frozenset[str]:
    """Hop-by-hop fields, NOT_FORWARDED and `drop`: the fields no request to the origin carries."""
    return policy.HOP_BY_HOP.union(NOT_FORWARDED, (name.lower() for name in drop))


def current_age(entry: StoredResponse, now: float) -> float:
    """The entry's current age (RFC 9111 §4.2.3). A response just fetched is answered before its
    freshness facts are worked out (they matter from its first reuse on): only its age is needed."""
    if entry.freshness is None:
        return policy.corrected_initial_age(entry.rules, entry.request_time, entry.response_time) \
            + (now - entry.response_time)
    return entry.freshness.age(now)


def freshness(entry: StoredResponse) -> policy.Freshness:
    """The entry's policy facts, computed on first use and kept with it."""
    if entry.freshness is None:
        entry.freshness = policy.Freshness.of(entry.status, entry.rules, entry.request_time,
                                              entry.response_time)
    return entry.freshness


def answer_tail(age: int, label: str) -> bytes:
    """The fields every replayed response gets for this request, and the blank line after them."""
    return f"Age: {age}\r\nX-Cache: {label}\r\nVia: 1.1 {SERVER_NAME}\r\n\r\n".encode()


def has_conditional(request: Request) -> bool:
    return "if-none-match" in request.fields or "if-modified-since" in request.fields


# ----------------------------------------------------------------------------------- entry point

def log(name: str, message: str) -> None:
    print(f"[{name}] {message}", flush=True)


def origin_url(text: str) -> str:
    """An argparse type: the origin's http:// or https:// URL."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {text!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a URL with a port from 1 to 65535, got {text!r}") from None
    return text


async def run_edge(config: EdgeConfig, host: str, port: int, ready: asyncio.Event | None = None,
                   worker: WorkerPlace | None = None) -> None:
    """Serve until SIGTERM/SIGINT. As one of several workers (`worker`), the port is shared with
    SO_REUSEPORT (the kernel spreads new connections over the workers) and a private control port
    on 127.0.0.1 lets the others reach this worker's store (PURGE)."""
    edge = Edge(config)
    try:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: EdgeConnection(edge), host, port, backlog=1024,
                                          reuse_port=worker is not None)
        servers = [server]
        if worker is not None:
            edge.peers = worker.peers
            servers.append(await loop.create_server(lambda: EdgeConnection(edge), "127.0.0.1",
                                                    worker.control_port))
    except OSError as exc:
        raise cli.bind_error(exc, host, port) from None
    log(config.name, f"listening on http://{host}:{port} for origin {config.origin} "
                     f"(cache {config.cache_size} B, max object {config.max_object_size} B)")
    if ready is not None:
        ready.set()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for each in servers:
            await stack.enter_async_context(each)
        await stop.wait()
    log(config.name, "stopped")


@dataclass
class WorkerPlace:
    """Where one of N workers listens privately, and where its siblings do."""

    control_port: int
    peers: list[int]


async def purge_peer(port: int, target: str) -> int:
    """PURGE `target` in the worker whose control port is `port`; the variants it removed."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0  # that worker is gone; its store went with it
    try:
        writer.write(f"PURGE {target} HTTP/1.1\r\nHost: peer\r\nX-SimpleCDN-Peer: 1\r\n"
                     f"Connection: close\r\n\r\n".encode("latin-1"))
        reply = await reader.read()
        return int(json.loads(reply.partition(b"\r\n\r\n")[2] or b"{}").get("variants", 0))
    except (OSError, ValueError):
        return 0
    finally:
        writer.close()


def run_workers(config: EdgeConfig, host: str, port: int, workers: int, runner) -> int:
    """--workers N: N processes on one port (SO_REUSEPORT), each with its own event loop and cache,
    the way nginx runs a worker per core. The parent only starts and stops them."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:  # a port someone else listens on (without SO_REUSEPORT) fails here, in one clear line
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, port))
    except OSError as exc:
        raise cli.bind_error(exc, host, port) from None
    finally:
        probe.close()
    control_ports = [free_port() for _ in range(workers)]
    sys.stdout.flush()  # or each child would print the parent's unflushed output again
    children = []
    for index, control_port in enumerate(control_ports):
        pid = os.fork()
        if pid == 0:  # the worker: serve, then leave without running the parent's clean-up
            place = WorkerPlace(control_port, [p for p in control_ports if p != control_port])
            named = replace(config, name=f"{config.name}/{index + 1}")
            code = 0
            try:
                runner(run_edge(named, host, port, worker=place))
            except BaseException as exc:  # noqa: BLE001 - report and exit; the parent notices
                print(f"error: worker {index + 1}: {exc}", file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        children.append(pid)
    try:
        _, status = os.wait()  # the first worker to end (a stop signal, or a failure) ends them all
        return 0 if os.waitstatus_to_exitcode(status) == 0 else 1
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m SimpleCDN.cdn_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=cli.port, default=8000)
    parser.add_argument("--origin", type=origin_url, default="http://127.0.0.1:9000",
                        help="http:// or https:// origin URL")
    parser.add_argument("--cache-size", type=cli.bytes_size, default=64 * 2**20,
                        help="bytes the store may hold, e.g. 64MiB (default)")
    parser.add_argument("--max-object-size", type=cli.bytes_size, default=8 * 2**20,
                        help="larger responses are streamed through and not stored (default 8MiB)")
    parser.add_argument("--origin-cafile", help="PEM CA certificates to verify an https origin with")
    parser.add_argument("--origin-timeout", type=cli.positive_float, default=10.0,
                        help="seconds (-> 504 on expiry)")
    parser.add_argument("--idle-timeout", type=cli.positive_float, default=60.0,
                        help="seconds a connection may take to send its next complete request head, or to "
                             "take a chunk of its response, before it is closed")
    parser.add_argument("--client-latency-ms", type=cli.non_negative_float, default=0.0,
                        help="simulated client<->edge distance, added to every response")
    parser.add_argument("--origin-latency-ms", type=cli.non_negative_float, default=0.0,
                        help="simulated edge<->origin distance, added to every origin fetch")
    parser.add_argument("--name", default="edge", help="label used in logs and /__stats")
    parser.add_argument("--workers", type=cli.positive_int, default=1,
                        help="processes sharing the port (SO_REUSEPORT), each with its own cache (default 1)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="event loop: the standard library's (default) or uvloop (libuv, "
                             "pip install uvloop), which makes each hit cheaper")
    parser.add_argument("--store-set-cookie", action="store_true",
                        help="store responses that carry Set-Cookie, cookie included, as RFC 9111 §3.1 "
                             "allows (default: not stored unless public, as nginx does)")
    parser.add_argument("--normalise-vary", action="store_true",
                        help="compare Accept-Encoding and Accept-Language by meaning (case, order, q=1) "
                             "when selecting a Vary variant, so 'GZIP, br' and 'br;q=1, gzip' share one")
    parser.add_argument("--targeted-cc", action="append", metavar="FIELD",
                        help="a targeted Cache-Control field this edge obeys (RFC 9213), most specific "
                             "first; repeat for several (default: " + ", ".join(policy.DEFAULT_TARGETS) + ")")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        OriginPool(args.origin, cafile=args.origin_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise cli.UsageError(f"--origin-cafile: cannot load {args.origin_cafile}: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    config = EdgeConfig(origin=args.origin, cache_size=args.cache_size, max_object_size=args.max_object_size,
                        origin_timeout=args.origin_timeout, idle_timeout=args.idle_timeout,
                        client_latency_ms=args.client_latency_ms,
                        origin_latency_ms=args.origin_latency_ms, name=args.name,
                        origin_cafile=args.origin_cafile, store_set_cookie=args.store_set_cookie,
                        targets=tuple(args.targeted_cc or policy.DEFAULT_TARGETS),
                        normalise_vary=args.normalise_vary)
    runner = asyncio.run
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise cli.UsageError("--loop uvloop: uvloop is not installed (pip install uvloop)") from None
        runner = uvloop.run
    if args.workers > 1:
        return run_workers(config, args.host, args.port, args.workers, runner)
    runner(run_edge(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
