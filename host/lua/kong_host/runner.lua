-- Plugin runner: loads plugins, keeps each worker's router and plugin
-- configuration in sync with the shared store, and runs plugin phases the
-- way Kong does.
--
-- Per worker:
--   * init_worker() of every loaded plugin, once;
--   * configure(configs) after init_worker and again whenever the set of
--     enabled configurations of that plugin changes (configs is the array
--     of confs, or nil when there is none);
--   * access / header_filter / log of the plugins attached to the matched
--     route (route, then service, then global scope; one instance per
--     plugin name), by PRIORITY descending. As in Kong, a plugin scoped to a
--     consumer runs instead, when an earlier plugin authenticated that
--     consumer (consumer + route, consumer + service, then consumer alone,
--     all before route).
--
-- Each conf has its defaults filled in, references resolved, and carries
-- `__plugin_id`, `__key__` and `__seq__` as in Kong: `__key__` is the plugin's
-- cache key (name, route, service, consumer), which a configuration change
-- keeps; a changed configuration is a new conf table with a new `__seq__`.

local schema = require "kong_host.schema"
local store = require "kong_host.store"
local router = require "kong_host.router"
local pdk = require "kong_host.pdk"
local daos = require "kong_host.daos"


local ngx = ngx
local kong = nil -- set in init, after the global exists
local type = type
local pairs = pairs
local ipairs = ipairs
local pcall = pcall
local require = require
local tostring = tostring
local tonumber = tonumber
local coroutine_create = coroutine.create
local coroutine_resume = coroutine.resume
local table_sort = table.sort
local table_concat = table.concat
local string_format = string.format
local ngx_log = ngx.log
local ERR = ngx.ERR
local NOTICE = ngx.NOTICE


local NO_ROUTE_MESSAGE = "no Route matched with those values"
local UNEXPECTED_MESSAGE = "An unexpected error occurred"


local _M = {}


-- name -> { name, handler, schema, priority }
local loaded = {}
local loaded_list = {}

-- Worker state, replaced as a whole on every rebuild.
local state = {
  version = -1,
  router = router.new({}),
  route_plugins = {},   -- route id -> { { plugin, conf | broken, by_consumer } } sorted
  keys = {},            -- plugin name -> its plugins' ids and revisions, concatenated
}


---------------------------------------------------------------------------
-- Loading
---------------------------------------------------------------------------


-- Loads `kong.plugins.<name>.handler` and `.schema` for every name.
-- Returns true or nil, err. Runs in init_by_lua, like Kong.
function _M.load_plugins(names)
  for _, name in ipairs(names) do
    local ok, handler = pcall(require, "kong.plugins." .. name .. ".handler")
    if not ok then
      return nil, string_format("could not load plugin '%s' handler: %s",
                                name, tostring(handler))
    end
    if type(handler) ~= "table" then
      return nil, string_format("plugin '%s' handler must return a table", name)
    end

    local plugin_schema, err = schema.load_plugin_schema(name)
    if not plugin_schema then
      return nil, string_format("could not load plugin '%s' schema: %s",
                                name, tostring(err))
    end

    local plugin = {
      name = name,
      handler = handler,
      schema = plugin_schema,
      priority = tonumber(handler.PRIORITY) or 0,
    }
    loaded[name] = plugin
    loaded_list[#loaded_list + 1] = plugin
  end

  table_sort(loaded_list, function(a, b)
    if a.priority ~= b.priority then
      return a.priority > b.priority
    end
    return a.name < b.name
  end)

  return true
end


-- Set of loaded plugin names, for validation.
function _M.enabled_set()
  local set = {}
  for name in pairs(loaded) do
    set[name] = true
  end
  return set
end


-- The loaded plugins as Kong's Admin API root lists them: name -> { version, priority }.
function _M.available()
  local available = {}
  for _, p in ipairs(loaded_list) do
    available[p.name] = { version = p.handler.VERSION, priority = p.priority }
  end
  return available
end


function _M.loaded_names()
  local names = {}
  for i, p in ipairs(loaded_list) do
    names[i] = p.name
  end
  return names
end


---------------------------------------------------------------------------
-- Calling plugin code
---------------------------------------------------------------------------


-- Calls handler[phase](handler, ...) outside of a request (init_worker,
-- configure), with kong.log namespaced by the plugin.
local function call_plugin(plugin, phase, ...)
  pdk.set_current_plugin(plugin.name)
  local ok, err = pcall(plugin.handler[phase], plugin.handler, ...)
  pdk.set_current_plugin(nil)
  if not ok then
    ngx_log(ERR, "[", plugin.name, "] ", phase, " failed: ", tostring(err))
  end
  return ok
end


function _M.init_worker()
  kong = _G.kong
  for _, plugin in ipairs(loaded_list) do
    if type(plugin.handler.init_worker) == "function" then
      call_plugin(plugin, "init_worker")
    end
  end
end


---------------------------------------------------------------------------
-- Building the worker state from the store
---------------------------------------------------------------------------


local function id_of(ref)
  if type(ref) == "table" and type(ref.id) == "string" then
    return ref.id
  end
  return ""
end


local next_seq = 0


local function build_conf(plugin, entity)
  local conf, err = schema.resolve_references(plugin.schema,
                                              entity.config or {})
  if not conf then
    return nil, err
  end

  conf.__plugin_id = entity.id
  conf.__key__ = table_concat({
    "plugins", entity.name, id_of(entity.route), id_of(entity.service),
    id_of(entity.consumer), "", "",
  }, ":")
  next_seq = next_seq + 1
  conf.__seq__ = next_seq
  return conf
end


-- Rebuilds router, per-route plugin lists and confs from `doc`, then calls
-- configure for plugins whose set of confs changed.
local function rebuild(doc, version)
  local first = state.version == -1

  -- Build every enabled conf once; routes share them.
  local confs = {}        -- plugin id -> conf or { broken = err }
  local by_name = {}      -- plugin name -> { conf, ... }
  for _, entity in ipairs(doc.plugins) do
    if entity.enabled ~= false and loaded[entity.name] then
      local conf, err = build_conf(loaded[entity.name], entity)
      if conf then
        confs[entity.id] = conf
        local list = by_name[entity.name] or {}
        list[#list + 1] = conf
        by_name[entity.name] = list
      else
        ngx_log(ERR, "[", entity.name, "] plugin ", entity.id,
                " cannot run: ", err)
        confs[entity.id] = { broken = err }
      end
    end
  end

  -- Scope precedence as in Kong: consumer + route, consumer + service, consumer, route, service, global;
  -- the consumer-scoped ones apply once a consumer is authenticated, so they are kept by consumer id.
  local route_plugins = {}
  for _, route in ipairs(doc.routes) do
    local chosen, rank = {}, {}
    for _, entity in ipairs(doc.plugins) do
      local conf = confs[entity.id]
      if conf then
        local r
        local route_id, service_id = id_of(entity.route), id_of(entity.service)
        local consumer_id = id_of(entity.consumer)
        if route_id ~= "" then
          r = route_id == route.id and 3
        elseif service_id ~= "" then
          r = service_id == id_of(route.service) and 2
        else
          r = 1
        end
        if r and consumer_id ~= "" then
          r = r == 1 and 4 or r + 3
        end
        local name = entity.name
        local item = chosen[name] or { plugin = loaded[name] }
        chosen[name] = item
        rank[name] = rank[name] or {}
        local slot = consumer_id ~= "" and consumer_id or ""
        if r and (rank[name][slot] or 0) < r then
          rank[name][slot] = r
          if slot == "" then
            item.conf = conf
          else
            item.by_consumer = item.by_consumer or {}
            item.by_consumer[slot] = conf
          end
        end
      end
    end

    local list = {}
    for _, item in pairs(chosen) do
      if item.conf or item.by_consumer then
        list[#list + 1] = item
      end
    end
    table_sort(list, function(a, b)
      if a.plugin.priority ~= b.plugin.priority then
        return a.plugin.priority > b.plugin.priority
      end
      return a.plugin.name < b.plugin.name
    end)
    route_plugins[route.id] = list
  end

  -- configure runs again for a plugin when one of its configurations changed
  local previous_keys = state.keys
  local keys = {}
  for name, list in pairs(by_name) do
    local k = {}
    for i, conf in ipairs(list) do
      k[i] = conf.__plugin_id .. "@" .. tostring(doc.revisions[conf.__plugin_id] or 0)
    end
    table_sort(k)
    keys[name] = table_concat(k, ",")
  end

  state = {
    version = version,
    router = router.new(doc.routes),
    route_plugins = route_plugins,
    keys = keys,
  }
  pdk.set_entities(daos.index(doc))

  for _, plugin in ipairs(loaded_list) do
    if type(plugin.handler.configure) == "function"
       and (first or previous_keys[plugin.name] ~= keys[plugin.name])
    then
      call_plugin(plugin, "configure", by_name[plugin.name])
    end
  end
end


-- Brings this worker up to date with the store. Cheap when nothing
-- changed: one shdict get.
function _M.sync()
  local version = store.version()
  if version == state.version then
    return true
  end

  local doc, err = store.read()
  if not doc then
    ngx_log(ERR, "could not read configuration: ", err)
    return nil, err
  end

  rebuild(doc, version)
  ngx_log(NOTICE, "configuration version ", version, " applied")
  return true
end


---------------------------------------------------------------------------
-- Request phases
---------------------------------------------------------------------------


-- As Kong's runloop (kong/init.lua, execute_collecting_plugins_iterator): each plugin's access runs in
-- a coroutine of its own while ctx.delay_response is set, so kong.response.exit stores the response and
-- yields instead of sending it; the first stored response (or a plugin's error, as a 500) skips the
-- remaining plugins and is sent once the loop is over. ngx.sleep, cosockets and ngx.flush inside the
-- coroutine suspend the request as they would outside it; ngx.exit ends the request from inside it.
local function run_access(ctx, plugins)
  local ran = {}  -- the plugins and confs of this request, for its later phases
  ctx.kong_host_plugins = ran
  ctx.delay_response = true
  for _, item in ipairs(plugins) do
    if ctx.delayed_response then
      break
    end
    local plugin = item.plugin
    local consumer = ctx.authenticated_consumer
    local conf = consumer and item.by_consumer and item.by_consumer[consumer.id] or item.conf
    local access = plugin.handler.access
    if not conf then  -- luacheck: ignore 542
      -- scoped to consumers other than this request's
    elseif conf.broken then
      ngx_log(ERR, "[", plugin.name, "] cannot run: ", tostring(conf.broken))
      ctx.delayed_response = { status_code = 500, content = { message = UNEXPECTED_MESSAGE } }
    else
      ran[#ran + 1] = { plugin = plugin, conf = conf }
      if type(access) == "function" then
        ctx.kong_host_plugin = plugin.name
        -- A local keeps the coroutine alive while it is suspended (ngx.sleep, a cosocket): nginx-lua
        -- holds only a pointer to it, and a collected coroutine crashes the worker when resumed.
        local co = coroutine_create(access)
        local ok, err = coroutine_resume(co, plugin.handler, conf)
        ctx.kong_host_plugin = nil
        if not ok then
          ngx_log(ERR, "[", plugin.name, "] access failed: ", tostring(err))
          ctx.delayed_response = { status_code = 500, content = { message = UNEXPECTED_MESSAGE } }
        end
      end
    end
  end
  ctx.delay_response = nil
end


function _M.access()
  _M.sync()

  local ctx = ngx.ctx
  local route = state.router:match(ngx.req.get_method(),
                                   ngx.var.http_host or ngx.var.host,
                                   ngx.var.uri)
  if not route then
    return kong.response.exit(404, { message = NO_ROUTE_MESSAGE })
  end

  -- Keep this request's plugins even if the configuration changes while
  -- it runs (streaming responses can last long).
  local plugins = state.route_plugins[route.id] or {}
  ctx.kong_host_route = route

  run_access(ctx, plugins)
  local delayed = ctx.delayed_response
  if delayed then
    if ngx.headers_sent then
      -- A plugin failed after its response started (a stream): Kong's flush would raise "headers
      -- have already been sent", which makes nginx close the connection. Close it.
      return ngx.exit(ngx.ERROR)
    end
    return pdk.flush_delayed_response(delayed)
  end
end


-- Reached when no plugin terminated the request: kong-host has no
-- upstream to proxy to.
function _M.content()
  return kong.response.error(502)
end


local function run_phase(phase)
  local ctx = ngx.ctx
  local plugins = ctx.kong_host_plugins
  if not plugins then
    return
  end

  for _, item in ipairs(plugins) do
    local plugin = item.plugin
    local fn = plugin.handler[phase]
    if type(fn) == "function" and not item.conf.broken then
      ctx.kong_host_plugin = plugin.name
      local ok, err = pcall(fn, plugin.handler, item.conf)
      ctx.kong_host_plugin = nil
      if not ok then
        ngx_log(ERR, "[", plugin.name, "] ", phase, " failed: ", tostring(err))
      end
    end
  end
end


function _M.header_filter()
  if not ngx.header["Server"] then
    ngx.header["Server"] = "kong/" .. pdk.VERSION .. " (kong-host)"
  end
  run_phase("header_filter")
end


function _M.log()
  run_phase("log")
end


-- For the Admin API status endpoint.
function _M.state_version()
  return state.version
end



return _M
