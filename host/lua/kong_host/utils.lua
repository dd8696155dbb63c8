-- Small helpers shared by the host modules.
--
-- Everything here must work under plain LuaJIT as well as inside nginx,
-- because the schema validator and the form decoder are unit tested
-- without nginx.

local cjson = require "cjson.safe"


local type = type
local pairs = pairs
local next = next
local tostring = tostring
local setmetatable = setmetatable
local getmetatable = getmetatable
local string_format = string.format
local string_byte = string.byte
local math_random = math.random
local math_floor = math.floor
local io_open = io.open
local os_time = os.time


local null = cjson.null


local _M = {
  null = null,
}


function _M.is_null(value)
  return value == nil or value == null
end


-- A table is an array when its keys are exactly 1..n. The empty table is
-- an array too: JSON `[]` and `{}` both decode to it.
function _M.is_array(t)
  if type(t) ~= "table" then
    return false
  end

  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k ~= math_floor(k) then
      return false
    end
    n = n + 1
  end

  for i = 1, n do
    if t[i] == nil then
      return false
    end
  end

  return true
end


function _M.deep_copy(value, seen)
  if type(value) ~= "table" then
    return value
  end

  seen = seen or {}
  if seen[value] then
    return seen[value]
  end

  local copy = {}
  seen[value] = copy
  for k, v in pairs(value) do
    copy[_M.deep_copy(k, seen)] = _M.deep_copy(v, seen)
  end

  return setmetatable(copy, getmetatable(value))
end


function _M.deep_equal(a, b)
  if a == b then
    return true
  end

  if type(a) ~= "table" or type(b) ~= "table" then
    return false
  end

  for k, v in pairs(a) do
    if not _M.deep_equal(v, b[k]) then
      return false
    end
  end

  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end

  return true
end


function _M.is_empty(t)
  return next(t) == nil
end


local seeded = false


-- Seeds math.random from /dev/urandom. Called in every worker after the
-- fork, otherwise all workers would produce the same "random" uuids.
function _M.seed_random(extra)
  local seed = os_time() + (extra or 0)

  local f = io_open("/dev/urandom", "rb")
  if f then
    local bytes = f:read(4)
    f:close()
    if bytes and #bytes == 4 then
      local b1, b2, b3, b4 = string_byte(bytes, 1, 4)
      seed = seed + ((b1 * 256 + b2) * 256 + b3) * 256 + b4
    end
  end

  math.randomseed(seed)
  seeded = true
end


-- Random (version 4) uuid.
function _M.uuid()
  if not seeded then
    _M.seed_random()
  end

  local function hex(n)
    local out = {}
    for i = 1, n do
      out[i] = string_format("%x", math_random(0, 15))
    end
    return table.concat(out)
  end

  return string_format("%s-%s-4%s-%x%s-%s",
                       hex(8), hex(4), hex(3),
                       math_random(8, 11), hex(3), hex(12))
end


-- Deterministic uuid-shaped id from a string, so that declarative entities
-- without an explicit id keep the same id across reloads. Uses ngx.md5
-- when available (always inside nginx).
function _M.uuid_from_string(s)
  local ngx = rawget(_G, "ngx")
  if not (ngx and ngx.md5) then
    return _M.uuid()
  end

  local h = ngx.md5(s)
  return string_format("%s-%s-5%s-%x%s-%s",
                       h:sub(1, 8), h:sub(9, 12), h:sub(14, 16),
                       8 + tonumber(h:sub(17, 17), 16) % 4, h:sub(18, 20),
                       h:sub(21, 32))
end


local UUID_PATTERN = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"


function _M.is_uuid(s)
  return type(s) == "string" and s:match(UUID_PATTERN) ~= nil
end


function _M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b)
    return tostring(a) < tostring(b)
  end)
  return keys
end


return _M
