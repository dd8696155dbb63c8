-- Node-wide delivery positions, shared by every worker through `lua_shared_dict confluent_consume`.
--
-- Per (consumer group, partition) the dict holds
--   n:  the next offset to hand out (the frontier);
--   c:  the claims in flight: ranges handed to a GET and not settled yet, each with its worker's pid;
--   r:  ranges to hand out again: claims whose write failed, or whose worker died (SIGKILL, crash).
-- A claim serves the oldest range to redo first, else moves the frontier, under a short lock, so
-- concurrent GETs on one node never receive the same record. After a successful write the group commits
-- up to the oldest offset still owed (in flight or to redo). A failed write, or a claim whose worker is
-- gone, puts back exactly the claim's range: served again (at-least-once) without re-serving what later
-- claims delivered.
local ffi = require "ffi"


local ngx = ngx
local now = ngx.now
local sleep = ngx.sleep
local worker_pid = ngx.worker.pid
local tonumber = tonumber
local tostring = tostring
local ipairs = ipairs
local concat = table.concat
local insert = table.insert
local remove = table.remove
local gmatch = string.gmatch
local min = math.min
local max = math.max
local ceil = math.ceil


local DICT_NAME = "confluent_consume"
local LOCK_TTL = 5          -- s; a lock left by a crashed worker expires (or is taken over, see lock())
local CLAIM_GRACE = 60      -- s added to the request timeout before a live worker's claim is abandoned
local RECOVER_INTERVAL = 0.5  -- s; how often a worker looks for claims of dead workers, per group
local CLAIM_ID_KEY = "claim-id"
local ESRCH = 3


pcall(ffi.cdef, "int kill(int pid, int sig);")
local C = ffi.C


local _M = {}


local next_recovery = {}  -- group -> time of this worker's next look for abandoned claims


local function dict()
  local shm = ngx.shared[DICT_NAME]
  if not shm then
    return nil, "lua_shared_dict " .. DICT_NAME .. " is not configured " ..
                "(Kong: nginx_http_lua_shared_dict = " .. DICT_NAME .. " 16m)"
  end
  return shm
end


-- Whether process `pid` exists (workers of one node all run as one user, so EPERM means it does).
-- `cache` remembers answers for the length of one locked operation.
local function alive(pid, cache)
  local known = cache and cache[pid]
  if known ~= nil then
    return known
  end
  local yes = C.kill(pid, 0) == 0 or ffi.errno() ~= ESRCH
  if cache then
    cache[pid] = yes
  end
  return yes
end


local function lock(shm, name, timeout)
  local key = "lock:" .. name
  local pid = worker_pid()
  local deadline = now() + timeout
  while true do
    local ok, err = shm:add(key, pid, LOCK_TTL)
    if ok then
      return key
    end
    if err ~= "exists" then
      return nil, "cannot lock delivery positions: " .. tostring(err)
    end
    -- a worker killed while holding the lock would stall the group until LOCK_TTL; take it over at
    -- once, one taker at a time (the ":taker" key), and only if it still belongs to the dead worker
    local holder = shm:get(key)
    if holder and not alive(holder) and shm:add(key .. ":taker", pid, LOCK_TTL) then
      local still = shm:get(key) == holder
      if still then
        shm:set(key, pid, LOCK_TTL)
      end
      shm:delete(key .. ":taker")
      if still then
        return key
      end
    end
    if now() >= deadline then
      return nil, "timed out waiting for the delivery position lock"
    end
    sleep(0.001)
  end
end


local function partition_key(prefix, group, p)
  return prefix .. group .. "\0" .. p.topic .. "\0" .. p.partition
end


-- Claims are stored as "id:start:end:expires:pid ...".
local function read_claims(shm, key)
  local claims = {}
  local value = shm:get(key)
  if value then
    for id, start, stop, expires, pid in gmatch(value, "(%d+):(%d+):(%d+):(%d+):(%d+)") do
      claims[#claims + 1] = { id = tonumber(id), start = tonumber(start), stop = tonumber(stop),
                              expires = tonumber(expires), pid = tonumber(pid) }
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
    parts[i] = c.id .. ":" .. c.start .. ":" .. c.stop .. ":" .. c.expires .. ":" .. c.pid
  end
  shm:set(key, concat(parts, " "))
end


-- Ranges to redo are stored as "start:end ...", ascending and disjoint.
local function read_ranges(shm, key)
  local ranges = {}
  local value = shm:get(key)
  if value then
    for start, stop in gmatch(value, "(%d+):(%d+)") do
      ranges[#ranges + 1] = { tonumber(start), tonumber(stop) }
    end
  end
  return ranges
end


local function write_ranges(shm, key, ranges)
  if #ranges == 0 then
    shm:delete(key)
    return
  end
  local parts = {}
  for i, r in ipairs(ranges) do
    parts[i] = r[1] .. ":" .. r[2]
  end
  shm:set(key, concat(parts, " "))
end


-- Adds [start, stop) to `ranges`, merging it with the ranges it overlaps or touches.
local function add_range(ranges, start, stop)
  local i = 1
  while ranges[i] and ranges[i][2] < start do
    i = i + 1
  end
  while ranges[i] and ranges[i][1] <= stop do
    start, stop = min(start, ranges[i][1]), max(stop, ranges[i][2])
    remove(ranges, i)
  end
  insert(ranges, i, { start, stop })
end


-- Removes [start, stop) from `ranges`.
local function subtract_range(ranges, start, stop)
  local out = {}
  for _, r in ipairs(ranges) do
    if r[2] <= start or r[1] >= stop then
      out[#out + 1] = r
    else
      if r[1] < start then
        out[#out + 1] = { r[1], start }
      end
      if r[2] > stop then
        out[#out + 1] = { stop, r[2] }
      end
    end
  end
  return out
end


local function redo_flag_key(group)
  return "redo:" .. group
end


-- Moves the claims of workers that are gone (or that outlived timeout + CLAIM_GRACE) to the ranges to
-- redo: a worker killed mid-write never settles its claim, and its records must not wait for it.
-- Returns true when it moved any.
local function recover(shm, group, partitions, t)
  local cache = {}
  local found = false
  for _, p in ipairs(partitions) do
    local ckey = partition_key("c:", group, p)
    local claims = read_claims(shm, ckey)
    local kept, ranges = {}, nil
    for _, c in ipairs(claims) do
      if c.expires <= t or not alive(c.pid, cache) then
        ranges = ranges or read_ranges(shm, partition_key("r:", group, p))
        add_range(ranges, c.start, c.stop)
      else
        kept[#kept + 1] = c
      end
    end
    if ranges then
      write_claims(shm, ckey, kept)
      write_ranges(shm, partition_key("r:", group, p), ranges)
      shm:set(redo_flag_key(group), true)
      found = true
    end
  end
  return found
end


-- Removes ranges (or their parts) below `offset`: a read served them.
local function served_up_to(ranges, offset)
  while ranges[1] and ranges[1][2] <= offset do
    remove(ranges, 1)
  end
  if ranges[1] and ranges[1][1] < offset then
    ranges[1][1] = offset
  end
end


local function take_claim(shm, unlock, entry, partitions, limits, timeout, one_by_one)
  local group = entry.group_id
  local t = now()
  if t >= (next_recovery[group] or 0) then
    next_recovery[group] = t + RECOVER_INTERVAL
    recover(shm, group, partitions, t)
  end

  -- each partition reads from its oldest range to redo if it has one, else from the frontier; a read
  -- must not run past a range's end into records that were delivered, hence the smaller max_records
  local pending = shm:get(redo_flag_key(group))
  local cursors, positions, redo = {}, {}, {}
  local max_records = limits.max_records
  local any = false
  for i, p in ipairs(partitions) do
    positions[i] = shm:get(partition_key("n:", group, p)) or p.start
    local ranges = pending and read_ranges(shm, partition_key("r:", group, p))
    if ranges and ranges[1] then
      any = true
      redo[i] = ranges
      cursors[i] = ranges[1][1]
      max_records = min(max_records, ranges[1][2] - ranges[1][1])
    else
      cursors[i] = positions[i]
    end
  end
  if pending and not any then
    shm:delete(redo_flag_key(group))
  end

  -- the handle picks the records, calls `record` (the claim's bookkeeping, then `unlock`), and only
  -- then renders them: other workers wait for the bookkeeping, never for a rendering of max_bytes.
  -- `record` runs inside the native call, so it must not yield (shared dict calls never do)
  local claim = { count = 0, starts = {}, ends = {} }
  local function record(next_cursors, count)
    claim.count = count
    if count > 0 then
      claim.id = shm:incr(CLAIM_ID_KEY, 1, 0)
      local expires = ceil(t + timeout + CLAIM_GRACE)
      local pid = worker_pid()
      for i, p in ipairs(partitions) do
        local from, to = cursors[i], next_cursors[i]
        if to ~= from then
          if redo[i] then
            served_up_to(redo[i], to)
            write_ranges(shm, partition_key("r:", group, p), redo[i])
          end
          -- offset gaps (compaction, transaction markers) can carry a redo read past the frontier
          if to > positions[i] then
            shm:set(partition_key("n:", group, p), to)
          end
          local ckey = partition_key("c:", group, p)
          local claims = read_claims(shm, ckey)
          claims[#claims + 1] = { id = claim.id, start = from, stop = to, expires = expires, pid = pid }
          write_claims(shm, ckey, claims)
          claim.starts[i], claim.ends[i] = from, to
        end
      end
    end
    unlock()
  end
  local handle = entry.handle
  local read = one_by_one and handle.records or handle.take
  local body, err = read(handle, cursors, max_records, limits.max_bytes, record)
  if not body then
    if claim.count > 0 then
      -- recorded, then the rendering failed: its records go to the next claim
      _M.settle(entry, partitions, claim, false, timeout)
    end
    return nil, err
  end
  claim.body = body
  return claim
end


local function settle_claim(shm, _, entry, partitions, claim, delivered)
  local group = entry.group_id
  local commits = {}
  for i, p in ipairs(partitions) do
    local start, stop = claim.starts[i], claim.ends[i]
    commits[i] = false
    if start then
      local ckey = partition_key("c:", group, p)
      local claims = read_claims(shm, ckey)
      local found = false
      for k, c in ipairs(claims) do
        if c.id == claim.id then
          remove(claims, k)
          found = true
          break
        end
      end
      write_claims(shm, ckey, claims)
      local rkey = partition_key("r:", group, p)
      local ranges = read_ranges(shm, rkey)
      if not delivered and found then
        add_range(ranges, start, stop)
        write_ranges(shm, rkey, ranges)
        shm:set(redo_flag_key(group), true)
      elseif delivered and not found then
        -- taken for abandoned while the write went on (it outlived CLAIM_GRACE): what is still to
        -- redo of it need not be served again
        ranges = subtract_range(ranges, start, stop)
        write_ranges(shm, rkey, ranges)
      end
      if delivered then
        local oldest = shm:get(partition_key("n:", group, p)) or stop
        for _, c in ipairs(claims) do
          oldest = min(oldest, c.start)
        end
        if ranges[1] then
          oldest = min(oldest, ranges[1][1])
        end
        commits[i] = oldest
      end
    end
  end
  return commits
end


-- Runs fn(shm, unlock, ...) under the group's lock; fn may release it early with unlock(), else it is
-- released when fn returns or raises.
local function locked(group, timeout, fn, ...)
  local shm, err = dict()
  if not shm then
    return nil, err
  end
  local lock_key, lock_err = lock(shm, group, timeout)
  if not lock_key then
    return nil, lock_err
  end
  local held = true
  local function unlock()
    if held then
      held = false
      shm:delete(lock_key)
    end
  end
  local ok, result, result_err = pcall(fn, shm, unlock, ...)
  unlock()
  if not ok then
    error(result, 0)
  end
  return result, result_err
end


-- Takes the next records for this node from `entry`'s handle: picked and recorded as a claim under the
-- group's lock, rendered after its release.
-- Returns a claim { body, count, starts, ends, id } or nil, err. `body` is the answer's JSON, or with
-- `one_by_one` the records one by one (the handle's `records`), for message functions to go through.
function _M.claim(entry, partitions, limits, timeout, one_by_one)
  return locked(entry.group_id, timeout, take_claim, entry, partitions, limits, timeout, one_by_one)
end


-- Looks for claims of dead workers now rather than at the next GET's claim: a timer calls this once a
-- RECOVER_INTERVAL, so that records a dead worker held are found even while every GET waits for new
-- records. Returns true when it put records back to be served again (then wake the waiting GETs), or
-- nil, err.
function _M.recover(entry, partitions, timeout)
  local group = entry.group_id
  return locked(group, timeout, function(shm)
    local t = now()
    next_recovery[group] = t + RECOVER_INTERVAL
    return recover(shm, group, partitions, t)
  end)
end


_M.RECOVER_INTERVAL = RECOVER_INTERVAL


-- Settles a claim after the write: on success returns the offsets to commit (parallel to partitions,
-- false where nothing is due), on failure puts the claim's records back to be served again.
function _M.settle(entry, partitions, claim, delivered, timeout)
  return locked(entry.group_id, timeout, settle_claim, entry, partitions, claim, delivered)
end


return _M
