"""The edge's storage: an in-memory LRU of stored responses, bounded in *bytes*, with Vary variants.

Why bytes and not a count: a CDN edge's scarce resource is memory, and objects differ in size by
orders of magnitude; a count bound would let 100 large files blow the budget that 100,000 icons fit.

Layout (RFC 9111 §4.1):
- primary key   origin + normalised path + query (see cache_policy.cache_key)
- secondary key the request's values of the fields the response's Vary names
Each primary key remembers the Vary field names of its latest stored response; a lookup first finds
those names, builds the secondary key from the request, and then looks up the exact variant.

The store keeps everything in process memory, so a hostile URL can never name a file: there is no
file. It is not thread-safe; the asyncio edge uses it from one thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .cache_policy import Headers, PartialContent, variant_key

ENTRY_OVERHEAD_BYTES = 200  # a rough charge for the Python objects around each entry
# A complete response whose body is at most this long is answered with one send() of one bytes
# object, and keeps its last answer whole (StoredResponse.answer): charged twice its body.
WHOLE_ANSWER_MAX = 64 * 1024


@dataclass
class StoredResponse:
    """A response as received (minus hop-by-hop fields), plus when we asked and got it: complete,
    or (status 206) the pieces of one representation stored so far."""

    status: int
    reason: str
    headers: Headers
    body: bytes
    request_time: float   # cache's clock when it sent the request (RFC 9111 §4.2.3)
    response_time: float  # cache's clock when the response arrived
    vary: tuple[str, ...] = ()
    variant: tuple[str, ...] = field(default=())
    # Derived once by the edge and cached here: the policy facts (cache_policy.Freshness) and the
    # serialised status line + headers, so a hit does not re-parse or re-serialise them.
    freshness: Any = field(default=None, compare=False, repr=False)
    head_prefix: bytes | None = field(default=None, compare=False, repr=False)
    # The last plain GET answer, whole: (Age in seconds, X-Cache label, bytes). Every hit in the
    # same second of Age sends these same bytes, instead of building and copying them again.
    answer: tuple[int, str, bytes] | None = field(default=None, compare=False, repr=False)
    # The fields the cache's decisions read, when a targeted field (CDN-Cache-Control, RFC 9213)
    # replaced Cache-Control and Expires for this cache; None: the stored headers themselves.
    policy_view: Headers | None = field(default=None, compare=False, repr=False)
    # Status 206: the pieces of the representation held so far (RFC 9111 §3.3); `body` is then empty.
    partial: PartialContent | None = field(default=None, compare=False, repr=False)

    @property
    def rules(self) -> Headers:
        """The fields freshness and staleness are judged by (see policy_view)."""
        return self.headers if self.policy_view is None else self.policy_view

    @property
    def size(self) -> int:
        """The bytes charged against the cache budget: body, header text and a fixed overhead."""
        header_bytes = sum(len(k) + len(v) + 4 for k, v in self.headers)
        pieces = self.partial.size if self.partial is not None else 0
        whole = self.partial is None and len(self.body) <= WHOLE_ANSWER_MAX
        answer = len(self.body) + header_bytes if whole else 0  # the kept answer (see `answer`)
        return len(self.body) + pieces + header_bytes + answer + ENTRY_OVERHEAD_BYTES


class LRUStore:
    """Byte-bounded LRU of StoredResponse, keyed by (primary key, variant key)."""

    def __init__(self, max_bytes: int, normalise_vary: bool = False):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive, e.g. 64 * 2**20 for 64 MB")
        self.max_bytes = max_bytes
        self.normalise_vary = normalise_vary  # Accept-Encoding/-Language compared by meaning
        self.bytes_used = 0
        self.evictions = 0
        self._entries: OrderedDict[tuple[str, tuple[str, ...]], StoredResponse] = OrderedDict()
        self._vary_by_primary: dict[str, tuple[str, ...]] = {}
        self._variants: dict[str, set[tuple[str, ...]]] = {}  # primary -> its stored variant keys

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, primary: str, request_headers: Sequence[tuple[str, str]]) -> StoredResponse | None:
        """The stored variant this request selects, marked most recently used; None on a miss."""
        names = self._vary_by_primary.get(primary)
        if names is None:
            return None
        key = (primary, variant_key(names, request_headers, self.normalise_vary))
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, primary: str, entry: StoredResponse, request_headers: Sequence[tuple[str, str]]) -> bool:
        """Store `entry` for the request that fetched it; evict least recently used entries to fit.

        Returns False (and stores nothing) when the entry alone is larger than the whole budget; an
        older copy of the same variant is then dropped, since this newer response supersedes it.
        A response whose Vary differs from the stored variants' Vary replaces all of them: the old
        secondary keys were computed from other field names and can no longer be selected.
        """
        names = entry.vary
        # Set even if not stored: callers compare it.
        entry.variant = variant_key(names, request_headers, self.normalise_vary)
        if entry.size > self.max_bytes:
            if (primary, entry.variant) in self._entries:
                # The origin sent a newer response we cannot keep: the older copy must not outlive it.
                self._remove((primary, entry.variant))
            return False
        if self._vary_by_primary.get(primary, names) != names:
            self.invalidate(primary)
        key = (primary, entry.variant)
        if key in self._entries:
            self._remove(key)
        self._entries[key] = entry
        self._vary_by_primary[primary] = names
        self._variants.setdefault(primary, set()).add(entry.variant)
        self.bytes_used += entry.size
        while self.bytes_used > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1
        return True

    def replace(self, primary: str, old: StoredResponse, new: StoredResponse) -> None:
        """Swap a stored variant for its refreshed version (after a 304), keeping the byte count right."""
        key = (primary, old.variant)
        if self._entries.get(key) is not old:
            return  # evicted or replaced meanwhile; the refreshed copy is simply not kept
        new.variant = old.variant
        self.bytes_used += new.size - old.size
        self._entries[key] = new
        self._entries.move_to_end(key)
        while self.bytes_used > self.max_bytes:
            self._remove(next(iter(self._entries)))
            self.evictions += 1

    def invalidate(self, primary: str) -> int:
        """Drop every variant stored under `primary`; returns how many were dropped."""
        keys = [(primary, variant) for variant in self._variants.get(primary, ())]
        for key in keys:
            self._remove(key)
        return len(keys)

    def _remove(self, key: tuple[str, tuple[str, ...]]) -> None:
        entry = self._entries.pop(key)
        self.bytes_used -= entry.size
        primary = key[0]
        variants = self._variants[primary]
        variants.discard(key[1])
        if not variants:
            del self._variants[primary]
            del self._vary_by_primary[primary]
