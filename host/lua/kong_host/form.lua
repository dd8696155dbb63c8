-- Decoding of Kong's nested form syntax, as the Admin API accepts it:
--
--   name=confluent-consume
--   config.bootstrap_servers[1].host=127.0.0.1
--   config.topics[1].name=orders
--   config.topics[]=a&config.topics[]=b      (append)
--   hosts=a&hosts=b                          (repeated key: array)
--
-- Values stay strings; `kong_host.schema.coerce` turns them into the types
-- the schema expects. Works without ngx.

local type = type
local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local table_sort = table.sort


local _M = {}


-- Splits "a.b[1].c[]" into { "a", "b", 1, "c", APPEND }.
local APPEND = {}


local function parse_key(key)
  local segments = {}
  local i, n = 1, #key

  local function read_name()
    local s, e = key:find("^[^%.%[]+", i)
    if not s then
      return nil
    end
    i = e + 1
    return key:sub(s, e)
  end

  local first = read_name()
  if not first then
    return nil, "invalid argument name '" .. key .. "'"
  end
  segments[1] = first

  while i <= n do
    local c = key:sub(i, i)
    if c == "." then
      i = i + 1
      local name = read_name()
      if not name then
        return nil, "invalid argument name '" .. key .. "'"
      end
      segments[#segments + 1] = name

    elseif c == "[" then
      local close = key:find("]", i, true)
      if not close then
        return nil, "invalid argument name '" .. key .. "'"
      end
      local inner = key:sub(i + 1, close - 1)
      i = close + 1
      if inner == "" then
        segments[#segments + 1] = APPEND
      else
        segments[#segments + 1] = tonumber(inner) or inner
      end

    else
      return nil, "invalid argument name '" .. key .. "'"
    end
  end

  return segments
end
_M.parse_key = parse_key


-- Intermediate array nodes remember their explicit indexes and appended
-- values separately; they become real arrays in `finalize`.
local function new_array_node()
  return { __array = true, indexed = {}, appended = {} }
end


local function is_array_node(t)
  return type(t) == "table" and t.__array == true
end


local function finalize(node)
  if type(node) ~= "table" then
    return node
  end

  if is_array_node(node) then
    local indexes = {}
    for idx in pairs(node.indexed) do
      indexes[#indexes + 1] = idx
    end
    table_sort(indexes)

    -- Indexes only give the order: `[0]`/`[1]` and `[1]`/`[2]` both
    -- produce a two element array.
    local out = {}
    for _, idx in ipairs(indexes) do
      out[#out + 1] = finalize(node.indexed[idx])
    end
    for _, v in ipairs(node.appended) do
      out[#out + 1] = finalize(v)
    end
    return out
  end

  for k, v in pairs(node) do
    node[k] = finalize(v)
  end
  return node
end


local function child(parent, seg, wants_array)
  local existing
  if is_array_node(parent) then
    existing = parent.indexed[seg]
  else
    existing = parent[seg]
  end

  if wants_array then
    if not is_array_node(existing) then
      local node = new_array_node()
      if type(existing) == "table" then
        -- `a=x&a=y` followed by `a[]=z`: keep the earlier values.
        for _, v in ipairs(existing) do
          node.appended[#node.appended + 1] = v
        end
      elseif existing ~= nil then
        node.appended[1] = existing
      end
      existing = node
    end
  elseif type(existing) ~= "table" or is_array_node(existing) then
    existing = {}
  end

  if is_array_node(parent) then
    parent.indexed[seg] = existing
  else
    parent[seg] = existing
  end
  return existing
end


local function assign(root, segments, value)
  local node = root
  for i = 1, #segments - 1 do
    local seg = segments[i]
    local next_seg = segments[i + 1]
    local wants_array = next_seg == APPEND or type(next_seg) == "number"

    if seg == APPEND then
      -- `a[].b=x`: a new record appended to the array.
      local t = wants_array and new_array_node() or {}
      node.appended[#node.appended + 1] = t
      node = t
    else
      node = child(node, seg, wants_array)
    end
  end

  local last = segments[#segments]
  if last == APPEND then
    if type(value) == "table" then
      for _, v in ipairs(value) do
        node.appended[#node.appended + 1] = v
      end
    else
      node.appended[#node.appended + 1] = value
    end
  elseif is_array_node(node) then
    node.indexed[last] = value
  else
    node[last] = value
  end
end


-- Decodes flat form arguments (`name -> string | { strings }`, as returned
-- by ngx.req.get_post_args) into a nested table. Returns the table or
-- nil, err.
function _M.decode(args)
  local keys = {}
  for k in pairs(args) do
    keys[#keys + 1] = k
  end
  -- Deterministic order, so that repeated decoding gives the same result.
  table_sort(keys)

  local root = {}
  for _, key in ipairs(keys) do
    local segments, err = parse_key(key)
    if not segments then
      return nil, err
    end
    assign(root, segments, args[key])
  end

  return finalize(root)
end


-- Decodes an application/x-www-form-urlencoded string into flat arguments
-- (repeated keys become arrays). Used outside nginx.
function _M.parse_urlencoded(body)
  local function unescape(s)
    s = s:gsub("+", " ")
    return (s:gsub("%%(%x%x)", function(h)
      return string.char(tonumber(h, 16))
    end))
  end

  local args = {}
  for pair in body:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k then
      k, v = pair, true
    else
      v = unescape(v)
    end
    k = unescape(k)

    local existing = args[k]
    if existing == nil then
      args[k] = v
    elseif type(existing) == "table" then
      existing[#existing + 1] = v
    else
      args[k] = { existing, v }
    end
  end

  return args
end


return _M
