-- Node-wide delivery positions, shared by every worker through `lua_shared_dict confluent_consume`.
--
-- Per (consumer group, partition) the dict holds the next offset to hand out and the claims still being
-- written to clients. A claim moves the position under a short lock, so concurrent GETs on one node never
-- receive the same record. After a successful write the group commits up to the oldest claim still in
-- flight; a failed write moves the position back to the claim's start, so its records are served again
-- (at-least-once).
local ngx = ngx
local now = ngx.now
local sleep = ngx.sleep
local worker_pid = ngx.worker.pid
local tonumber = tonumber
local tostring = tostring
local concat = table.concat
local gmatch = string.gmatch
local min = math.min


local DICT_NAME = "confluent_consume"
local LOCK_TTL = 5          -- s; a lock left by a crashed worker expires
local CLAIM_GRACE = 60      -- s added to the request timeout before a claim is considered abandoned


local _M = {}


local function dict()
  local shm = ngx.shared[DICT_NAME]
  if not shm then
    return nil, "lua_shared_dict " .. DICT_NAME .. " is not configured " ..
                "(Kong: nginx_http_lua_shared_dict = " .. DICT_NAME .. " 16m)"
  end
  return shm
end


local function lock(shm, name, timeout)
  local key = "lock:" .. name
  local deadline = now() + timeout
  while true do
    local ok, err = shm:add(key, worker_pid(), LOCK_TTL)
    if ok then
      return key
    end
    if err ~= "exists" then
      return nil, "cannot lock delivery positions: " .. tostring(err)
    end
    if now() >= deadline then
      return nil, "timed out waiting for the delivery position lock"
    end
    sleep(0.001)
  end
end


local function position_key(group, p)
  return "n:" .. group .. "\0" .. p.topic .. "\0" .. p.partition
end


local function claims_key(group, p)
  return "c:" .. group .. "\0" .. p.topic .. "\0" .. p.partition
end


-- Claims are stored as "start:expires start:expires ..."; expired ones are dropped when read.
local function read_claims(shm, key, t)
  local claims = {}
  local value = shm:get(key)
  if value then
    for start, expires in gmatch(value, "(%d+):(%d+)") do
      if tonumber(expires) > t then
        claims[#claims + 1] = { tonumber(start), tonumber(expires) }
      end
    end
  end
  return claims
end


local function write_claims(shm, key, claims)
  if #claims == 0 then
    shm:delete(key)
    return
  end
  local parts = {}
  for i, c in ipairs(claims) do
    parts[i] = c[1] .. ":" .. c[2]
  end
  shm:set(key, concat(parts, " "))
end


local function remove_claim(claims, start)
  for i, c in ipairs(claims) do
    if c[1] == start then
      table.remove(claims, i)
      return
    end
  end
end


-- Runs fn(shm, ...) under the group's lock; the lock is released even if fn raises.
local function locked(group, timeout, fn, ...)
  local shm, err = dict()
  if not shm then
    return nil, err
  end
  local lock_key, lock_err = lock(shm, group, timeout)
  if not lock_key then
    return nil, lock_err
  end
  local ok, result, result_err = pcall(fn, shm, ...)
  shm:delete(lock_key)
  if not ok then
    error(result, 0)
  end
  return result, result_err
end


local function take_claim(shm, entry, partitions, limits, timeout)
  local group = entry.group_id
  local cursors = {}
  for i, p in ipairs(partitions) do
    cursors[i] = shm:get(position_key(group, p)) or p.start
  end
  local body, next_cursors, count = entry.handle:take(cursors, limits.max_records, limits.max_bytes)
  if not body then
    return nil, next_cursors
  end
  local claim = { body = body, count = count, starts = {}, ends = {} }
  if count > 0 then
    local t = now()
    local expires = math.ceil(t + timeout + CLAIM_GRACE)
    for i, p in ipairs(partitions) do
      local from, to = cursors[i], next_cursors[i]
      if to ~= from then
        shm:set(position_key(group, p), to)
        local ckey = claims_key(group, p)
        local claims = read_claims(shm, ckey, t)
        claims[#claims + 1] = { from, expires }
        write_claims(shm, ckey, claims)
        claim.starts[i], claim.ends[i] = from, to
      end
    end
  end
  return claim
end


local function settle_claim(shm, entry, partitions, claim, delivered)
  local group = entry.group_id
  local t = now()
  local commits = {}
  for i, p in ipairs(partitions) do
    local start = claim.starts[i]
    commits[i] = false
    if start then
      local ckey = claims_key(group, p)
      local claims = read_claims(shm, ckey, t)
      remove_claim(claims, start)
      write_claims(shm, ckey, claims)
      local pkey = position_key(group, p)
      if delivered then
        local oldest = shm:get(pkey) or claim.ends[i]
        for _, c in ipairs(claims) do
          oldest = min(oldest, c[1])
        end
        commits[i] = oldest
      else
        local pos = shm:get(pkey)
        if not pos or pos > start then
          shm:set(pkey, start)
        end
      end
    end
  end
  return commits
end


-- Takes the next records for this node from `entry`'s handle.
-- Returns a claim { body, count, starts, ends } or nil, err.
function _M.claim(entry, partitions, limits, timeout)
  return locked(entry.group_id, timeout, take_claim, entry, partitions, limits, timeout)
end


-- Settles a claim after the write: on success returns the offsets to commit (parallel to partitions,
-- false where nothing is due), on failure rolls the positions back to the claim's starts.
function _M.settle(entry, partitions, claim, delivered, timeout)
  return locked(entry.group_id, timeout, settle_claim, entry, partitions, claim, delivered)
end


return _M
