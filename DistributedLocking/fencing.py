"""The resource side of fencing: accept a write only with a token >= the highest one seen.

A lock cannot stop a paused holder from waking up and writing after its lease expired — it does not
even know the holder is still alive. The resource can: every lock holder passes its fencing token
(from ``RedisLock.acquire``), the resource remembers the highest token it has accepted, and it rejects
anything lower. The check and the write happen in one Lua script, so nothing can slip in between.

    resource = FencedResource(client, "seat:concert:A1")
    resource.read(token)            # registers the token ("touch the fence") and returns the value
    resource.write(token, "alice")  # FenceResult(accepted=True, highest=token)

Why ``read`` also raises the fence: a write is rejected only if a *later* holder has already shown
its token to the resource. If the new holder B merely held the lock and had not yet written when the
stale holder A woke up, A's write (token 1 >= highest 0) would pass, and B — who read the old value
before A wrote — would then overwrite it. Making every holder register its token before it reads
closes that window: once B has read, anything A does is refused. (This rule is ours. Chubby's
sequencers — Burrows 2006, §2.4 — are passed by the holder with the requests it wants protected,
and the server rejects a stale one; which requests carry one is left to the application.)

Keys: the value lives at ``<name>``; the highest accepted token at ``fence:<name>``. The fence key has
no expiry — it must outlive every holder that could still wake up.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

# KEYS[1] fence key, KEYS[2] value key; ARGV[1] token, ARGV[2] op ('read'|'set'|'del'), ARGV[3] value,
# ARGV[4] expiry of the value in ms (0: none).
# Returns {accepted (0/1), highest token after the call, current value or false}.
_FENCED_LUA = """
local highest = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if token < highest then
    return {0, highest, redis.call('GET', KEYS[2])}
end
if token > highest then
    redis.call('SET', KEYS[1], token)
end
local op = ARGV[2]
if op == 'set' and ARGV[4] ~= '0' then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
elseif op == 'set' then
    redis.call('SET', KEYS[2], ARGV[3])
elseif op == 'del' then
    redis.call('DEL', KEYS[2])
end
return {1, token, redis.call('GET', KEYS[2])}
"""


@dataclass(frozen=True)
class FenceResult:
    accepted: bool
    highest: int          # the highest token the resource has seen after this call
    value: str | None     # the resource's value after this call


class FencedResource:
    """A Redis key that only accepts operations carrying a token >= the highest seen so far."""

    def __init__(self, client: redis.Redis, name: str):
        if not isinstance(name, str) or not name:
            raise ValueError("resource name must be a non-empty string")
        self.client = client
        self.name = name
        self.fence_key = f"fence:{name}"
        self._script = client.register_script(_FENCED_LUA)

    def read(self, token: int) -> FenceResult:
        """Register `token` with the resource and return its value (rejected if the token is stale)."""
        return self._run(token, "read", "")

    def write(self, token: int, value: str, *, ttl_ms: int = 0) -> FenceResult:
        """Set the value (expiring after `ttl_ms` if > 0) if `token` >= the highest token seen."""
        if not isinstance(value, str):
            raise TypeError("value must be a str")
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 0:
            raise ValueError(f"ttl_ms must be an int >= 0 (0: no expiry), got {ttl_ms!r}")
        return self._run(token, "set", value, ttl_ms)

    def delete(self, token: int) -> FenceResult:
        """Delete the value if `token` >= the highest token seen (the fence itself stays)."""
        return self._run(token, "del", "")

    def highest(self) -> int:
        return int(self.client.get(self.fence_key) or 0)

    def _run(self, token: int, op: str, value: str, ttl_ms: int = 0) -> FenceResult:
        if isinstance(token, bool) or not isinstance(token, int) or token <= 0:
            raise ValueError(f"a fencing token is a positive int from RedisLock.acquire, got {token!r}")
        accepted, highest, current = self._script(keys=[self.fence_key, self.name],
                                                  args=[token, op, value, ttl_ms])
        if isinstance(current, bytes):
            current = current.decode()
        return FenceResult(bool(accepted), int(highest), current)
