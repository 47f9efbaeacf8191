"""Lua sources run by :class:`entitlements.redis.store.RedisStore`.

Every write to the persistent cache runs inside a script, so the version comparison and the
write happen atomically on the server: there is no window between reading a stored version and
writing a new value in which another writer could slip in (the race a client-side
read-then-MULTI has). A script call touches only the keys it is given, all in one slot on Redis
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

#: Versioned writes to any number of state hashes, in order: one script call carries many
#: writes so that neither the client nor the server pays a command's overhead per write.
#:
#: KEYS     the state hashes, one per write (on Redis Cluster all in one slot)
#: ARGV[1]  TTL in milliseconds; -1 (any value <= 0) means the hashes never expire
#: ARGV[2]  invalidation channel; '' means publish nothing
#: then, per write, in KEYS order:
#:   'a', payload, n, then n triplets (field, version, value)   -- apply records
#:   'd', payload, version                                       -- delete
#:
#: Apply: a triplet is written (value into ``field``, version into ``v:field``) iff the hash
#: holds no version for the field or an older one, and the hash's ``v:deleted`` is older too;
#: otherwise it is a no-op counted as stale. Fields must be distinct within one write.
#:
#: Delete: the hash keeps ``v:deleted``, the newest deletion's version. A deletion not newer
#: than it is stale; a newer one removes each record (state or usage) not newer than itself and
#: keeps the rest. With apply refusing anything not newer than ``v:deleted``, deletions and
#: writes may arrive in any order and end where in-order delivery ends; nothing committed before
#: a deletion comes back. A hash left without a ``state`` reads as a miss.
#:
#: A write that changed something gets the TTL refreshed (PEXPIRE) or removed (PERSIST) and its
#: payload published; a deletion publishes even when there was nothing to remove, since
#: sidecars may still hold the customer in memory. Each write runs under pcall, so one hash of
#: the wrong type fails that write alone. Returns three values per write: applied (for a
#: deletion, 1 when a state was removed), stale, and '' or the error that stopped the write.
WRITE = (
    _VERSIONS
    + """
local ttl = tonumber(ARGV[1])
local channel = ARGV[2]

local function touch(key, payload)
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('PERSIST', key)
  end
  if channel ~= '' then
    redis.call('PUBLISH', channel, payload)
  end
end

local function apply(key, payload, first, count)
  local applied, stale = 0, 0
  local floor = redis.call('HGET', key, 'v:deleted')
  if floor and not canonical(floor) then
    floor = nil
  end
  for i = first, first + (count - 1) * 3, 3 do
    local name, version, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local version_name = 'v:' .. name
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
    touch(key, payload)
  end
  return applied, stale
end

local function delete(key, payload, version)
  local floor = redis.call('HGET', key, 'v:deleted')
  if floor and canonical(floor) and not greater(version, floor) then
    return 0, 1
  end
  local removed = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local name, held = fields[i], fields[i + 1]
    -- A corrupt version counts as absent here too: its record goes.
    if name ~= 'v:deleted' and string.sub(name, 1, 2) == 'v:' then
      if not (canonical(held) and greater(held, version)) then
        local record = string.sub(name, 3)
        if record == 'state' and redis.call('HEXISTS', key, 'state') == 1 then
          removed = 1
        end
        redis.call('HDEL', key, record, name)
      end
    end
  end
  redis.call('HSET', key, 'v:deleted', version)
  touch(key, payload)
  return removed, 0
end

local out = {}
local pos = 3
for k = 1, #KEYS do
  local op, payload = ARGV[pos], ARGV[pos + 1]
  local ok, applied, stale
  if op == 'd' then
    ok, applied, stale = pcall(delete, KEYS[k], payload, ARGV[pos + 2])
    pos = pos + 3
  else
    local count = tonumber(ARGV[pos + 2])
    ok, applied, stale = pcall(apply, KEYS[k], payload, pos + 3, count)
    pos = pos + 3 + count * 3
  end
  if ok then
    out[#out + 1] = applied
    out[#out + 1] = stale
    out[#out + 1] = ''
  else
    local problem = applied
    if type(problem) == 'table' then
      problem = problem.err or 'error'
    end
    out[#out + 1] = -1
    out[#out + 1] = 0
    out[#out + 1] = tostring(problem)
  end
end
return out
"""
)

#: Release a lock only if ``ARGV[1]`` is still the token stored at ``KEYS[1]``: a holder whose
#: lock expired and was taken by someone else must not release the new holder's lock.
#: Returns 1 when released, 0 otherwise.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

WRITE_SCRIPT = LuaScript("write", WRITE)
UNLOCK_SCRIPT = LuaScript("unlock", UNLOCK)
