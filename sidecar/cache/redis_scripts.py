"""Lua sources run by :class:`sidecar.cache.redis_store.RedisStore`.

Every write to the persistent cache is one script, so the version comparison and the write
happen atomically on the server: there is no window between reading a stored version and
writing a new value in which another writer could slip in (the race a client-side
read-then-MULTI has). Each script touches only ``KEYS[1]``, which keeps it valid on Redis
Cluster. Scripts are sent by SHA (EVALSHA); the store falls back to EVAL when a server
answers NOSCRIPT, which also puts the script back into that server's cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's source and the SHA1 that EVALSHA names it by."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        # Redis hashes the exact bytes it receives, which are the UTF-8 of the source.
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


#: Compare-and-write any number of versioned hash fields.
#:
#: KEYS[1]  the (customer, resource) state hash
#: ARGV[1]  TTL in milliseconds; -1 (any value <= 0) means the hash never expires
#: ARGV[2]  invalidation channel; '' means publish nothing
#: ARGV[3]  invalidation payload
#: ARGV[4..] triplets (field, version, value)
#:
#: A triplet is written (value into ``field``, version into ``field:v``) iff the hash holds no
#: version for the field or holds an older one; an equal or newer stored version makes it a
#: no-op counted as stale. Versions travel as canonical decimal integers (what Python's
#: ``str(int)`` produces) and are compared as such, because Lua numbers are doubles and a
#: version above 2^53 (a nanosecond clock, say) would compare wrongly as a number. A stored
#: version that is not a canonical integer is treated as absent, so corruption cannot pin a
#: field forever.
#:
#: Only when something was written does the hash get its TTL refreshed (PEXPIRE) or removed
#: (PERSIST), and the payload published: a stale replay changes nothing, so nobody needs to hear
#: about it. Returns ``{applied_count, stale_count}``.
APPLY = """
local function canonical(s)
  return s == '0' or string.match(s, '^%-?[1-9]%d*$') ~= nil
end

local function greater(a, b)
  local neg_a = string.byte(a, 1) == 45
  local neg_b = string.byte(b, 1) == 45
  if neg_a ~= neg_b then
    return neg_b
  end
  if neg_a then
    a, b = string.sub(b, 2), string.sub(a, 2)
  end
  if #a ~= #b then
    return #a > #b
  end
  if #a <= 15 then
    return tonumber(a) > tonumber(b)
  end
  local head_a, head_b = tonumber(string.sub(a, 1, -16)), tonumber(string.sub(b, 1, -16))
  if head_a ~= head_b then
    return head_a > head_b
  end
  return tonumber(string.sub(a, -15)) > tonumber(string.sub(b, -15))
end

local key = KEYS[1]
local ttl = tonumber(ARGV[1])
local channel = ARGV[2]
local applied, stale = 0, 0
for i = 4, #ARGV, 3 do
  local name, version, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local version_name = name .. ':v'
  local held = redis.call('HGET', key, version_name)
  if held and canonical(held) and not greater(version, held) then
    stale = stale + 1
  else
    redis.call('HSET', key, name, value, version_name, version)
    applied = applied + 1
  end
end
if applied > 0 then
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('PERSIST', key)
  end
  if channel ~= '' then
    redis.call('PUBLISH', channel, ARGV[3])
  end
end
return {applied, stale}
"""

#: Remove a (customer, resource) state hash and announce it.
#:
#: KEYS[1] the state hash; ARGV[1] invalidation channel ('' = publish nothing); ARGV[2] payload.
#: The payload is published even when the hash was already gone (expired, say): sidecars may still
#: hold the deleted customer in memory, and a deletion must reach them. Returns the number of
#: keys removed (0 or 1).
DELETE = """
local removed = redis.call('DEL', KEYS[1])
if ARGV[1] ~= '' then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return removed
"""

#: Release a lock only if ``ARGV[1]`` is still the token stored at ``KEYS[1]``: a holder whose
#: lock expired and was taken by someone else must not release the new holder's lock.
#: Returns 1 when released, 0 otherwise.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

APPLY_SCRIPT = LuaScript("apply", APPLY)
DELETE_SCRIPT = LuaScript("delete", DELETE)
UNLOCK_SCRIPT = LuaScript("unlock", UNLOCK)
