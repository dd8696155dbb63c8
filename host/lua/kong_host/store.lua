-- The configuration shared by all workers.
--
-- The whole configuration (routes, plugins, plugin revisions) is kept as
-- one JSON document in `lua_shared_dict kong_host_db`, next to a version
-- number. Workers compare the version (one shdict get per request) and
-- rebuild when it moved. Writers serialise through a shdict lock, so two
-- Admin API requests on different workers cannot lose each other's change.
--
-- Document shape:
--   { routes = { route, ... }, plugins = { plugin, ... },
--     consumers = { ... }, certificates = { ... }, keyauth_credentials = { ... },
--     revisions = { [plugin_id] = n }, counter = n }

local cjson = require "cjson.safe"


local ngx = ngx
local pcall = pcall
local pairs = pairs
local ngx_sleep = ngx.sleep
local ngx_now = ngx.now
local ngx_get_phase = ngx.get_phase


local DICT_NAME = "kong_host_db"
local CONFIG_KEY = "config"
local VERSION_KEY = "version"
local LOCK_KEY = "lock"
local NODE_ID_KEY = "node_id"
local LOCK_TTL = 5
local LOCK_WAIT = 5


local _M = {}


local function dict()
  local d = ngx.shared[DICT_NAME]
  if not d then
    error("lua_shared_dict " .. DICT_NAME .. " is not defined", 2)
  end
  return d
end


function _M.empty_document()
  return { routes = {}, plugins = {}, consumers = {}, certificates = {}, keyauth_credentials = {},
           revisions = {}, counter = 0 }
end


function _M.version()
  return dict():get(VERSION_KEY) or 0
end


-- Returns the current document and its version, or nil, err.
function _M.read()
  local d = dict()
  local version = d:get(VERSION_KEY) or 0
  local raw = d:get(CONFIG_KEY)
  if not raw then
    return _M.empty_document(), version
  end

  local doc, err = cjson.decode(raw)
  if not doc then
    return nil, "stored configuration is not valid JSON: " .. err
  end

  for name, empty in pairs(_M.empty_document()) do
    doc[name] = doc[name] or empty
  end
  return doc, version
end


-- Stores a document and bumps the version. Returns the new version or
-- nil, err.
function _M.write(doc)
  local raw, err = cjson.encode(doc)
  if not raw then
    return nil, "could not encode configuration: " .. err
  end

  local d = dict()
  local ok, serr = d:set(CONFIG_KEY, raw)
  if not ok then
    return nil, "could not store configuration (" .. serr .. "); " ..
                "increase lua_shared_dict " .. DICT_NAME
  end

  local version, ierr = d:incr(VERSION_KEY, 1, 0)
  if not version then
    return nil, "could not bump configuration version: " .. ierr
  end
  return version
end


-- Gives the next plugin revision number and records it for `plugin_id`.
function _M.bump_revision(doc, plugin_id)
  doc.counter = (doc.counter or 0) + 1
  doc.revisions[plugin_id] = doc.counter
  return doc.counter
end


local function lock()
  local d = dict()
  -- init_by_lua has no concurrency and cannot sleep.
  if ngx_get_phase() == "init" then
    return true
  end

  local deadline = ngx_now() + LOCK_WAIT
  while true do
    local ok, err = d:add(LOCK_KEY, true, LOCK_TTL)
    if ok then
      return true
    end
    if err ~= "exists" then
      return nil, "could not take configuration lock: " .. err
    end
    if ngx_now() > deadline then
      return nil, "timed out waiting for the configuration lock"
    end
    ngx_sleep(0.005)
  end
end


local function unlock()
  if ngx_get_phase() ~= "init" then
    dict():delete(LOCK_KEY)
  end
end


-- Runs `fn(doc)` under the lock. `fn` returns the result to hand back,
-- whether the document changed, and optionally an error:
--   fn(doc) -> result, changed   |   nil, nil, err
-- Returns result or nil, err (err may be a table from fn).
function _M.update(fn)
  local ok, err = lock()
  if not ok then
    return nil, err
  end

  local doc, rerr = _M.read()
  if not doc then
    unlock()
    return nil, rerr
  end

  local pok, result, changed, ferr = pcall(fn, doc)
  if not pok then
    unlock()
    return nil, result
  end

  if result == nil and ferr ~= nil then
    unlock()
    return nil, ferr
  end

  if changed then
    local _, werr = _M.write(doc)
    if werr then
      unlock()
      return nil, werr
    end
  end

  unlock()
  return result
end


-- The node id, created once per host start and kept across reloads (the
-- shared dict survives a HUP).
function _M.node_id(generate)
  local d = dict()
  local id = d:get(NODE_ID_KEY)
  if id then
    return id
  end
  if not generate then
    return nil
  end
  d:add(NODE_ID_KEY, generate())
  return d:get(NODE_ID_KEY)
end


_M.DICT_NAME = DICT_NAME


return _M
