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


#: Version comparison shared by the writing scripts. Versions travel as canonical decimal
#: integers (what Python's ``str(int)`` produces) and are compared as such, because Lua numbers
#: are doubles and a version above 2^53 (a nanosecond clock, say) would compare wrongly as a
#: number. A stored version that is not a canonical integer is treated as absent, so corruption
#: cannot pin a field forever.
_VERSIONS = """
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

"""

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
#: no-op counted as stale (see _VERSIONS for how versions compare), and so is every triplet
#: not newer than the hash's ``deleted:v`` (see DELETE).
#:
#: Only when something was written does the hash get its TTL refreshed (PEXPIRE) or removed
#: (PERSIST), and the payload published: a stale replay changes nothing, so nobody needs to hear
#: about it. Returns ``{applied_count, stale_count}``.
APPLY = _VERSIONS + """
local key = KEYS[1]
local ttl = tonumber(ARGV[1])
local channel = ARGV[2]
local applied, stale = 0, 0
-- Nothing committed before the newest deletion (see DELETE) may come back.
local floor = redis.call('HGET', key, 'deleted:v')
if floor and not canonical(floor) then
  floor = nil
end
for i = 4, #ARGV, 3 do
  local name, version, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local version_name = name .. ':v'
  local held = redis.call('HGET', key, version_name)
  if floor and not greater(version, floor) then
    stale = stale + 1
  elseif held and canonical(held) and not greater(version, held) then
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

#: Delete a (customer, resource): drop every record committed before the deletion, remember
#: the deletion's version, and announce it.
#:
#: KEYS[1] the state hash; ARGV[1] TTL in milliseconds (-1: none); ARGV[2] invalidation channel
#: ('' = publish nothing); ARGV[3] payload; ARGV[4] the deletion's version (upstream's one
#: version counter, which orders states, usage records and deletions alike).
#:
#: Versioned like every other write, so deletions and writes may arrive in any order and still
#: end where in-order delivery ends: the hash keeps ``deleted:v``, the newest deletion's version;
#: a deletion not newer than it is stale; a newer one removes each record (state or usage) not
#: newer than itself and keeps the rest; and APPLY treats every record not newer than
#: ``deleted:v`` as stale, so nothing committed before a deletion comes back. A hash left
#: without a ``state`` reads as a miss. The payload is published even when there was nothing to
#: remove (expired, say): sidecars may still hold the customer in memory. Returns
#: ``{removed, stale}``: removed is 1 when a state was removed.
DELETE = _VERSIONS + """
local key = KEYS[1]
local ttl = tonumber(ARGV[1])
local version = ARGV[4]
local floor = redis.call('HGET', key, 'deleted:v')
if floor and canonical(floor) and not greater(version, floor) then
  return {0, 1}
end
local removed = 0
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local name, held = fields[i], fields[i + 1]
  -- Versions are canonical integers and values JSON objects, so a field is a version exactly
  -- when its name ends in ':v' and its content is canonical.
  if name ~= 'deleted:v' and string.sub(name, -2) == ':v' and canonical(held) then
    if not greater(held, version) then
      local record = string.sub(name, 1, -3)
      if record == 'state' and redis.call('HEXISTS', key, 'state') == 1 then
        removed = 1
      end
      redis.call('HDEL', key, record, name)
    end
  end
end
redis.call('HSET', key, 'deleted:v', version)
if ttl > 0 then
  redis.call('PEXPIRE', key, ttl)
else
  redis.call('PERSIST', key)
end
if ARGV[2] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return {removed, 0}
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
