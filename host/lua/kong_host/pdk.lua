-- The subset of Kong's PDK that kong-host provides, installed as the
-- global `kong` in init_by_lua.
--
-- Semantics follow Kong 3.x: kong.log.* namespaced by the running plugin,
-- kong.request.*, kong.response.exit/error/set_header, kong.ctx.plugin and
-- kong.ctx.shared, kong.client.get_ip / authenticate / get_consumer /
-- get_credential / load_consumer, kong.router.get_route, kong.service.request.set_header /
-- clear_header / set_query (there is no upstream: they change the request
-- the later plugins see, as they do in Kong), kong.db.<entity>:select and
-- select_by_<unique field> for consumers, certificates and
-- keyauth_credentials, kong.node.get_id, kong.configuration, kong.version.

local cjson = require "cjson.safe"
local errlog = require "ngx.errlog"
local store = require "kong_host.store"
local utils = require "kong_host.utils"
local daos = require "kong_host.daos"


local ngx = ngx
local type = type
local pairs = pairs
local ipairs = ipairs
local error = error
local pcall = pcall
local select = select
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local table_concat = table.concat
local debug_getinfo = debug.getinfo
local raw_log = errlog.raw_log
local math_floor = math.floor
local coroutine_yield = coroutine.yield


local VERSION = "3.10.0"
local VERSION_NUM = 3010000


local _M = {}


-- The plugin running outside of a request (init_worker, configure). During
-- requests the runner stores the plugin name in ngx.ctx instead, because a
-- module-level variable would be shared by concurrent requests.
local current_plugin


function _M.set_current_plugin(name)
  current_plugin = name
end


local function get_ngx_ctx()
  local ok, ctx = pcall(function() return ngx.ctx end)
  if ok then
    return ctx
  end
end


local function running_plugin()
  local ctx = get_ngx_ctx()
  return (ctx and ctx.kong_host_plugin) or current_plugin
end
_M.running_plugin = running_plugin


---------------------------------------------------------------------------
-- kong.log
---------------------------------------------------------------------------


local LEVELS = {
  emerg = ngx.EMERG,
  alert = ngx.ALERT,
  crit = ngx.CRIT,
  err = ngx.ERR,
  warn = ngx.WARN,
  notice = ngx.NOTICE,
  info = ngx.INFO,
  debug = ngx.DEBUG,
}


-- Kong's format: "[kong] handler.lua:42 [plugin-name] message".
local function make_log(level)
  return function(...)
    local n = select("#", ...)
    local parts = { ... }
    for i = 1, n do
      parts[i] = tostring(parts[i])
    end

    local info = debug_getinfo(2, "Sl")
    local src = info and info.short_src or "?"
    src = src:match("([^/]+)$") or src
    local line = info and info.currentline or 0

    local plugin = running_plugin()
    local prefix = plugin and ("[" .. plugin .. "] ") or ""

    raw_log(level, "[kong] " .. src .. ":" .. line .. " " .. prefix ..
                   table_concat(parts, "", 1, n))
  end
end


local function new_log()
  local log = {}
  for name, level in pairs(LEVELS) do
    log[name] = make_log(level)
  end

  -- Kong writes inspect output at notice level; kept simple here.
  log.inspect = setmetatable({}, {
    __call = function(_, ...)
      local parts = {}
      for i = 1, select("#", ...) do
        local v = select(i, ...)
        parts[i] = type(v) == "table" and (cjson.encode(v) or tostring(v))
                   or tostring(v)
      end
      raw_log(ngx.NOTICE, "[kong] inspect: " .. table_concat(parts, " "))
    end,
  })

  return log
end


---------------------------------------------------------------------------
-- kong.request
---------------------------------------------------------------------------


local function check_max(max, name, default)
  if max == nil then
    return default
  end
  if type(max) ~= "number" then
    error(name .. " must be a number", 3)
  end
  if max < 1 then
    error(name .. " must be >= 1", 3)
  end
  if max > 1000 then
    error(name .. " must be <= 1000", 3)
  end
  return math_floor(max)
end


local function new_request()
  local request = {}

  function request.get_query(max_args)
    max_args = check_max(max_args, "max_args", 100)
    return ngx.req.get_uri_args(max_args)
  end

  function request.get_query_arg(name)
    if type(name) ~= "string" then
      error("query argument name must be a string", 2)
    end
    local value = request.get_query()[name]
    if type(value) == "table" then
      return value[1]
    end
    return value
  end

  function request.get_raw_query()
    return ngx.var.args or ""
  end

  function request.get_header(name)
    if type(name) ~= "string" then
      error("header name must be a string", 2)
    end
    local value = ngx.var["http_" .. name:lower():gsub("-", "_")]
    return value
  end

  function request.get_headers(max_headers)
    max_headers = check_max(max_headers, "max_headers", 100)
    return ngx.req.get_headers(max_headers)
  end

  function request.get_method()
    return ngx.req.get_method()
  end

  -- The path as the client sent it, without the query string.
  function request.get_path()
    local uri = ngx.var.request_uri or "/"
    local q = uri:find("?", 1, true)
    return q and uri:sub(1, q - 1) or uri
  end

  function request.get_path_with_query()
    return ngx.var.request_uri or "/"
  end

  function request.get_scheme()
    return ngx.var.scheme
  end

  function request.get_host()
    return ngx.var.host
  end

  function request.get_port()
    return tonumber(ngx.var.server_port)
  end

  function request.get_http_version()
    return ngx.req.http_version()
  end

  function request.get_raw_body()
    ngx.req.read_body()
    return ngx.req.get_body_data()
  end

  return request
end


---------------------------------------------------------------------------
-- kong.response
---------------------------------------------------------------------------


-- Kong's default messages for kong.response.error.
local ERROR_MESSAGES = {
  [400] = "Bad request",
  [401] = "Unauthorized",
  [403] = "Forbidden",
  [404] = "Not found",
  [405] = "Method not allowed",
  [408] = "Request timeout",
  [409] = "Conflict",
  [411] = "Length required",
  [412] = "Precondition failed",
  [413] = "Payload too large",
  [414] = "URI too long",
  [415] = "Unsupported media type",
  [429] = "API rate limit exceeded",
  [500] = "An unexpected error occurred",
  [502] = "An invalid response was received from the upstream server",
  [503] = "The upstream server is currently unavailable",
  [504] = "The upstream server is timing out",
}
_M.ERROR_MESSAGES = ERROR_MESSAGES


local EXIT_PHASES = {
  rewrite = true,
  access = true,
  content = true,
}


local function validate_header(name, value, level)
  if type(name) ~= "string" then
    error("header name must be a string", level)
  end
  local t = type(value)
  if t ~= "string" and t ~= "number" and t ~= "boolean" and t ~= "table" then
    error("invalid header value for \"" .. name .. "\": got " .. t ..
          ", expected string, number or boolean", level)
  end
end


local function header_value(value)
  if type(value) == "table" then
    local out = {}
    for i, v in pairs(value) do
      out[i] = tostring(v)
    end
    return out
  end
  return tostring(value)
end


-- The response sender of the `kong` table built last; flush_delayed_response uses it.
local send_delayed


local function new_response(server_header)
  local response = {}

  local function check_not_sent(level)
    if ngx.headers_sent then
      error("headers have already been sent", level)
    end
  end

  function response.get_status()
    return ngx.status
  end

  function response.set_status(status)
    check_not_sent(3)
    if type(status) ~= "number" or status < 100 or status > 599 then
      error("code must be a number between 100 and 599", 2)
    end
    ngx.status = status
  end

  function response.get_header(name)
    local value = ngx.header[name]
    if type(value) == "table" then
      return value[1]
    end
    return value
  end

  function response.get_headers()
    return ngx.resp.get_headers()
  end

  function response.set_header(name, value)
    check_not_sent(3)
    validate_header(name, value, 3)
    ngx.header[name] = header_value(value)
  end

  function response.add_header(name, value)
    check_not_sent(3)
    validate_header(name, value, 3)
    local existing = ngx.header[name]
    if existing == nil then
      ngx.header[name] = header_value(value)
    else
      if type(existing) ~= "table" then
        existing = { existing }
      end
      existing[#existing + 1] = tostring(value)
      ngx.header[name] = existing
    end
  end

  function response.clear_header(name)
    check_not_sent(3)
    ngx.header[name] = nil
  end

  function response.set_headers(headers)
    check_not_sent(3)
    if type(headers) ~= "table" then
      error("headers must be a table", 2)
    end
    for name, value in pairs(headers) do
      validate_header(name, value, 3)
      ngx.header[name] = header_value(value)
    end
  end

  local function send(status, body, headers)
    check_not_sent(4)

    ngx.status = status
    ngx.header["Server"] = server_header

    if headers then
      for name, value in pairs(headers) do
        ngx.header[name] = header_value(value)
      end
    end

    if type(body) == "table" then
      local json, err = cjson.encode(body)
      if not json then
        error("could not JSON encode the body: " .. tostring(err), 3)
      end
      body = json
      if ngx.header["Content-Type"] == nil then
        ngx.header["Content-Type"] = "application/json; charset=utf-8"
      end
    end

    ngx.header["Content-Length"] = body and #body or 0

    if body and ngx.req.get_method() ~= "HEAD" then
      ngx.print(body)
    else
      ngx.send_headers()
    end

    -- The status is already on the wire; HTTP_OK only finalizes.
    return ngx.exit(ngx.HTTP_OK)
  end
  send_delayed = send

  -- Ends the request: table bodies are JSON encoded, string bodies sent as given. Like Kong it never
  -- returns in the request phases. While the runner has ctx.delay_response set (a plugin's access, see
  -- runner.lua) it stores the response and yields the plugin's coroutine, as Kong's does; the runner
  -- sends it after the access loop.
  function response.exit(status, body, headers)
    local phase = ngx.get_phase()
    if not EXIT_PHASES[phase] then
      error("kong.response.exit is not allowed in the " .. phase .. " phase", 2)
    end

    if type(status) ~= "number" or status ~= math_floor(status) then
      error("code must be a number", 2)
    end
    if status < 100 or status > 599 then
      error("code must be a number between 100 and 599", 2)
    end
    if body ~= nil and type(body) ~= "string" and type(body) ~= "table" then
      error("body must be a nil, string or table", 2)
    end
    if headers ~= nil and type(headers) ~= "table" then
      error("headers must be a nil or table", 2)
    end
    if headers then
      for name, value in pairs(headers) do
        validate_header(name, value, 3)
      end
    end

    check_not_sent(3)

    local ctx = ngx.ctx
    ctx.KONG_EXITED = true

    if ctx.delay_response and not ctx.delayed_response then
      ctx.delayed_response = { status_code = status, content = body, headers = headers }
      return coroutine_yield()
    end
    return send(status, body, headers)
  end

  function response.error(status, message, headers)
    if type(status) ~= "number" or status < 400 or status > 599 then
      error("code must be an integer and between 400 and 599", 2)
    end
    if message ~= nil and type(message) ~= "string" then
      error("message must be a nil or a string", 2)
    end
    message = message or ERROR_MESSAGES[status] or
              ("The upstream server responded with " .. status)
    return response.exit(status, { message = message }, headers)
  end

  return response
end


---------------------------------------------------------------------------
-- kong.ctx, kong.client, kong.node
---------------------------------------------------------------------------


local function new_ctx()
  return setmetatable({}, {
    __index = function(_, key)
      local ctx = ngx.ctx
      if key == "shared" then
        local shared = ctx.kong_host_shared
        if not shared then
          shared = {}
          ctx.kong_host_shared = shared
        end
        return shared

      elseif key == "plugin" then
        local name = running_plugin() or "?"
        local all = ctx.kong_host_plugin_ctx
        if not all then
          all = {}
          ctx.kong_host_plugin_ctx = all
        end
        local t = all[name]
        if not t then
          t = {}
          all[name] = t
        end
        return t
      end
    end,
  })
end


-- The worker's indexes of the stored entities (daos.index), replaced by the runner on every rebuild.
local entity_indexes = {}


function _M.set_entities(indexes)
  entity_indexes = indexes
end


-- kong.db: the entities a plugin may read, from the worker's indexes (Kong's DAO reads the database or
-- LMDB; `nil` without an error when there is no such entity).
local function new_db()
  local db = {}
  for _, name in ipairs(daos.NAMES) do
    local function lookup(field, value)
      local index = entity_indexes[name]
      return index and index[field][tostring(value)]
    end
    local dao = {
      select = function(_, primary_key)
        if type(primary_key) ~= "table" then
          error("primary_key must be a table", 2)
        end
        return lookup("id", primary_key.id)
      end,
    }
    for _, field in ipairs(daos.DAOS[name].unique) do
      dao["select_by_" .. field] = function(_, value)
        return lookup(field, value)
      end
    end
    db[name] = dao
  end
  return db
end


local AUTHENTICATE_PHASES = { rewrite = true, access = true }


local function new_client(db)
  return {
    -- Kong's kong.client.authenticate: later plugins see the consumer and credential.
    authenticate = function(consumer, credential)
      if not AUTHENTICATE_PHASES[ngx.get_phase()] then
        error("kong.client.authenticate is not allowed in the " .. ngx.get_phase() .. " phase", 2)
      end
      if consumer ~= nil and type(consumer) ~= "table" then
        error("consumer must be a table or nil", 2)
      end
      if credential ~= nil and type(credential) ~= "table" then
        error("credential must be a table or nil", 2)
      end
      if consumer == nil and credential == nil then
        error("either credential or consumer must be provided", 2)
      end
      local ctx = ngx.ctx
      ctx.authenticated_consumer = consumer
      ctx.authenticated_credential = credential
    end,
    get_consumer = function()
      return ngx.ctx.authenticated_consumer
    end,
    get_credential = function()
      return ngx.ctx.authenticated_credential
    end,
    -- A consumer by id, or by username when `search_by_username` is set and no id matches.
    load_consumer = function(consumer_id, search_by_username)
      if type(consumer_id) ~= "string" then
        error("consumer_id must be a string", 2)
      end
      local consumer = utils.is_uuid(consumer_id) and db.consumers:select({ id = consumer_id })
      if not consumer and search_by_username then
        consumer = db.consumers:select_by_username(consumer_id)
      end
      return consumer or nil
    end,
    get_ip = function()
      return ngx.var.realip_remote_addr or ngx.var.remote_addr
    end,
    get_forwarded_ip = function()
      return ngx.var.remote_addr
    end,
    get_port = function()
      return tonumber(ngx.var.remote_port)
    end,
  }
end


local hostname


local function new_node()
  return {
    get_id = function()
      return store.node_id(utils.uuid)
    end,
    get_hostname = function()
      if not hostname then
        local f = io.open("/proc/sys/kernel/hostname", "r")
        hostname = f and f:read("*l") or "localhost"
        if f then
          f:close()
        end
      end
      return hostname
    end,
  }
end


-- kong.service.request: with no upstream, what it changes is the request the later plugins read.
local function new_service()
  return {
    request = {
      set_header = function(name, value)
        ngx.req.set_header(name, tostring(value))
      end,
      clear_header = function(name)
        ngx.req.clear_header(name)
      end,
      set_query = function(args)
        ngx.req.set_uri_args(args)
      end,
    },
  }
end


-- kong.router: the route the request matched (its entity: id, name, ...), nil outside the proxy.
local function new_router()
  return {
    get_route = function()
      return ngx.ctx.kong_host_route
    end,
  }
end


local function readonly(t)
  return setmetatable({}, {
    __index = t,
    __newindex = function()
      error("kong.configuration is read-only", 2)
    end,
    __pairs = function() return pairs(t) end,
  })
end


-- Builds the `kong` table. `configuration` is the host configuration
-- (prefix, listeners, plugins...).
function _M.new(configuration)
  -- Kept for the Admin API: __pairs on the read-only proxy is not
  -- honoured by LuaJIT without 5.2 compatibility.
  _M.raw_configuration = configuration or {}

  local db = new_db()
  local kong = {
    version = VERSION .. " (kong-host)",
    version_num = VERSION_NUM,
    configuration = readonly(configuration or {}),
    log = new_log(),
    request = new_request(),
    response = new_response("kong/" .. VERSION .. " (kong-host)"),
    ctx = new_ctx(),
    client = new_client(db),
    service = new_service(),
    router = new_router(),
    db = db,
    node = new_node(),
  }
  return kong
end


-- Sends the response a plugin's kong.response.exit stored during the access loop (Kong's
-- flush_delayed_response).
function _M.flush_delayed_response(delayed)
  return send_delayed(delayed.status_code, delayed.content, delayed.headers)
end


_M.VERSION = VERSION


return _M
