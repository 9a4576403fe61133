"""The pieces of the fleet policies' server-side scripts (Lua, run atomically by Valkey or Redis on the store's own
clock, so that replicas' clocks never need to agree). Each policy's script is the shared pieces plus its own body.
"""

from __future__ import annotations

NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

MEMBERS = """
-- the replicas that took part within ``ttl`` seconds (a sorted set by when they last did); returns how many
local function members(key, member, ttl, joining)
  if joining then
    redis.call('ZADD', key, now, member)
    redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - ttl)
  return math.max(redis.call('ZCARD', key), 1)
end
"""

TALLY = """
-- counts over the last ``slices`` slices of ``span`` seconds, in one hash (fields "<slice>:<name>"): adds
-- ``deltas`` (name -> count) to the current slice, drops the slices that fell out, returns the totals
local function tally(key, span, slices, deltas)
  local slice = math.floor(now / span)
  for name, delta in pairs(deltas) do
    if delta ~= 0 then redis.call('HINCRBY', key, slice .. ':' .. name, delta) end
  end
  local totals = {}
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local at, name = string.match(fields[i], '^(%-?%d+):(.+)$')
    if at == nil or tonumber(at) <= slice - slices then
      redis.call('HDEL', key, fields[i])
    else
      totals[name] = (totals[name] or 0) + tonumber(fields[i + 1])
    end
  end
  redis.call('PEXPIRE', key, math.ceil(span * (slices + 1) * 1000))
  return totals
end
"""


def script(*pieces: str) -> str:
    """A whole script: the store's time, the shared pieces, then the body."""
    return "".join((NOW, *pieces))
