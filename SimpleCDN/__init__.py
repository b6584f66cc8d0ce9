"""SimpleCDN: an HTTP caching edge (RFC 9111) in front of an origin, plus a bundled origin and a router.

Public names: the pure policy (cache_policy), the byte-bounded LRU store, and the edge server. The
server names are loaded lazily so `python -m SimpleCDN.cdn_server` does not import itself twice.
"""

from .cache_policy import BadTarget, freshness_lifetime, is_storable, normalise_target, parse_cache_control
from .lru_store import LRUStore, StoredResponse

__all__ = [
    "BadTarget", "Edge", "EdgeConfig", "LRUStore", "StoredResponse", "freshness_lifetime", "is_storable",
    "normalise_target", "parse_cache_control", "run_edge",
]


def __getattr__(name: str):
    if name in ("Edge", "EdgeConfig", "run_edge"):
        from . import cdn_server
        return getattr(cdn_server, name)
    raise AttributeError(f"module 'SimpleCDN' has no attribute {name!r}")
