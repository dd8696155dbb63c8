-- Loader for Kong declarative configuration files (YAML or JSON).
--
-- Supported: `_format_version`, `routes` (with nested `plugins`),
-- `services` (which only carry `routes` and `plugins`; kong-host does not
-- proxy upstream), `consumers` (with nested `keyauth_credentials` and
-- `plugins`), `certificates`, `keyauth_credentials` (naming their
-- `consumer`) and top-level `plugins` scoped by `route`, `service`,
-- `consumer` or global. Every entity is validated; the first invalid one stops loading
-- with a message naming the entity and the field.

local lyaml = require "lyaml"
local cjson = require "cjson.safe"
local schema = require "kong_host.schema"
local entities = require "kong_host.entities"
local daos = require "kong_host.daos"
local store = require "kong_host.store"
local utils = require "kong_host.utils"


local type = type
local next = next
local pairs = pairs
local ipairs = ipairs
local pcall = pcall
local tostring = tostring
local setmetatable = setmetatable
local os_time = os.time
local string_format = string.format
local io_open = io.open


local null = cjson.null


local FORMAT_VERSIONS = { ["1.1"] = true, ["2.1"] = true, ["3.0"] = true }

local TOP_LEVEL_KEYS = {
  _format_version = true,
  _transform = true,
  _comment = true,
  _workspace = true,
  _info = true,
  routes = true,
  services = true,
  plugins = true,
  consumers = true,
  certificates = true,
  keyauth_credentials = true,
}


local _M = {}


-- lyaml has its own null sentinel; the rest of the host uses cjson's.
local function convert_nulls(value)
  if value == lyaml.null then
    return null
  end
  if type(value) ~= "table" then
    return value
  end
  local out = {}
  for k, v in pairs(value) do
    out[k] = convert_nulls(v)
  end
  return out
end


local function describe(kind, entity, index)
  if type(entity) == "table" and type(entity.name) == "string" then
    return string_format("%s '%s'", kind, entity.name)
  end
  return string_format("%s #%d", kind, index)
end


local function list_of(value, what)
  if value == nil or value == null then
    return {}
  end
  if not utils.is_array(value) then
    return nil, what .. ": expected an array"
  end
  return value
end


local Loader = {}
Loader.__index = Loader


function Loader:add_route(input, index, service)
  local where = describe("route", input, index)
  if service then
    where = where .. " of " .. describe("service", service, 0)
  end

  if type(input) ~= "table" then
    return nil, where .. ": expected a record"
  end

  local route = utils.deep_copy(input)
  local nested_plugins = route.plugins
  route.plugins = nil

  route.id = route.id or
             utils.uuid_from_string("route:" .. (route.name or tostring(index)))
  route.created_at = route.created_at or self.now
  route.updated_at = route.updated_at or self.now
  if service then
    route.service = { id = service.id }
  end

  local valid, _, msg = entities.validate_route(route)
  if not valid then
    return nil, where .. ": " .. msg
  end

  if valid.name then
    if self.route_names[valid.name] then
      return nil, where .. ": UNIQUE violation detected on '{name=\"" ..
                  valid.name .. "\"}'"
    end
    self.route_names[valid.name] = valid
  end
  self.routes_by_id[valid.id] = valid
  self.doc.routes[#self.doc.routes + 1] = valid

  local plugins, err = list_of(nested_plugins, where .. ": plugins")
  if not plugins then
    return nil, err
  end
  for i, p in ipairs(plugins) do
    local ok, perr = self:add_plugin(p, i, { route = valid })
    if not ok then
      return nil, perr
    end
  end

  return true
end


function Loader:add_plugin(input, index, scope)
  if type(input) ~= "table" then
    return nil, describe("plugin", input, index) .. ": expected a record"
  end

  local plugin = utils.deep_copy(input)
  local where = describe("plugin", plugin, index)
  local scope_key = "global"

  if scope.route then
    plugin.route = { id = scope.route.id }
    where = where .. " on " .. describe("route", scope.route, 0)
    scope_key = "route:" .. scope.route.id
  elseif scope.service then
    plugin.service = { id = scope.service.id }
    where = where .. " on " .. describe("service", scope.service, 0)
    scope_key = "service:" .. scope.service.id
  end
  if scope.consumer then
    plugin.consumer = { id = scope.consumer.id }
    where = where .. " for consumer " .. scope.consumer.id
    scope_key = scope_key .. ":consumer:" .. scope.consumer.id
  end

  plugin.id = plugin.id or
              utils.uuid_from_string("plugin:" .. tostring(plugin.name) ..
                                     ":" .. scope_key)
  plugin.created_at = plugin.created_at or self.now
  plugin.updated_at = plugin.updated_at or self.now

  local valid, _, msg = schema.validate_plugin(plugin, {
    enabled = self.enabled,
    getenv = self.getenv,
  })
  if not valid then
    return nil, where .. ": " .. msg
  end

  local unique = scope_key .. ":" .. valid.name
  if self.plugin_scopes[unique] then
    return nil, where .. ": the plugin is configured twice on the same scope"
  end
  self.plugin_scopes[unique] = true

  self.doc.plugins[#self.doc.plugins + 1] = valid
  return true
end


-- Resolves `route: NAME`, `route: {name=...}` or `route: {id=...}` of a
-- top-level plugin.
function Loader:resolve_scope(plugin, index)
  local where = describe("plugin", plugin, index)

  local function find(kind, ref, by_name, by_id)
    if type(ref) == "string" then
      return by_name[ref] or by_id[ref]
    end
    if type(ref) == "table" then
      return (ref.name and by_name[ref.name]) or (ref.id and by_id[ref.id])
    end
    return nil, kind
  end

  local scope = {}
  if plugin.route ~= nil and plugin.route ~= null then
    scope.route = find("route", plugin.route, self.route_names, self.routes_by_id)
    if not scope.route then
      return nil, where .. ": route " .. cjson.encode(plugin.route) .. " not found"
    end
  end

  if plugin.service ~= nil and plugin.service ~= null then
    scope.service = find("service", plugin.service, self.service_names,
                         self.services_by_id)
    if not scope.service then
      return nil, where .. ": service " .. cjson.encode(plugin.service) ..
                  " not found"
    end
  end

  if plugin.consumer ~= nil and plugin.consumer ~= null then
    local ref = plugin.consumer
    local key = type(ref) == "table" and (ref.id or ref.username) or ref
    scope.consumer = daos.find(self.doc, "consumers", key)
    if not scope.consumer then
      return nil, where .. ": consumer " .. cjson.encode(plugin.consumer) .. " not found"
    end
  end

  plugin.route = nil
  plugin.service = nil
  plugin.consumer = nil
  return scope
end


-- Stores entity `name` (a consumer, certificate or credential) with an id derived from `seed` unless it
-- has one, so that it keeps its id across reloads.
function Loader:add_entity(name, input, seed, where)
  input.id = input.id or utils.uuid_from_string(name .. ":" .. seed)
  local entity, failure = daos.save(self.doc, name, input, nil, { now = self.now, getenv = self.getenv })
  if entity then
    return entity
  end
  if failure.errors then
    return nil, where .. ": " .. schema.errors_message(failure.errors)
  elseif failure.unique then
    local field, value = next(failure.unique)
    return nil, string_format("%s: UNIQUE violation detected on '{%s=\"%s\"}'", where, field, tostring(value))
  end
  return nil, where .. ": consumer " .. cjson.encode(failure.foreign) .. " not found"
end


-- A consumer with its nested keyauth_credentials and plugins.
function Loader:add_consumer(input, index)
  local where = string_format("consumer '%s'", tostring(type(input) == "table" and
                                                        (input.username or input.custom_id) or index))
  if type(input) ~= "table" then
    return nil, where .. ": expected a record"
  end
  local consumer = utils.deep_copy(input)
  local credentials, err = list_of(consumer.keyauth_credentials, where .. ": keyauth_credentials")
  if not credentials then
    return nil, err
  end
  local plugins
  plugins, err = list_of(consumer.plugins, where .. ": plugins")
  if not plugins then
    return nil, err
  end
  consumer.keyauth_credentials, consumer.plugins = nil, nil
  local stored
  stored, err = self:add_entity("consumers", consumer, tostring(consumer.username or consumer.custom_id), where)
  if not stored then
    return nil, err
  end
  for i, c in ipairs(credentials) do
    if type(c) ~= "table" then
      return nil, where .. ": keyauth_credentials #" .. i .. ": expected a record"
    end
    c = utils.deep_copy(c)
    c.consumer = { id = stored.id }
    local ok, cerr = self:add_entity("keyauth_credentials", c, tostring(c.key or i) .. ":" .. stored.id,
                                     where .. ": keyauth_credentials #" .. i)
    if not ok then
      return nil, cerr
    end
  end
  for i, p in ipairs(plugins) do
    local ok, perr = self:add_plugin(p, i, { consumer = stored })
    if not ok then
      return nil, perr
    end
  end
  return true
end


-- Loads and validates a declarative document (already parsed).
--
-- opts.enabled: set of plugin names that may be configured
-- opts.previous: the document currently stored, to keep plugin revisions
--                of unchanged plugins (so a plugin's `configure` runs again
--                only when one of its configurations changed)
-- opts.getenv: function(name) resolving `{vault://env/...}` references
-- opts.now: timestamp for created_at / updated_at
function _M.load(input, opts)
  opts = opts or {}
  input = convert_nulls(input)

  if type(input) ~= "table" then
    return nil, "expected a table at the top level"
  end

  local version = input._format_version
  if version == nil then
    return nil, "_format_version: required field missing"
  end
  if not FORMAT_VERSIONS[tostring(version)] then
    return nil, "_format_version: expected one of: 1.1, 2.1, 3.0"
  end

  for k in pairs(input) do
    if not TOP_LEVEL_KEYS[k] then
      return nil, string_format("%s: not supported by kong-host " ..
                                "(supported: routes, services, plugins, consumers, certificates, " ..
                                "keyauth_credentials)",
                                tostring(k))
    end
  end

  local self = setmetatable({
    doc = store.empty_document(),
    enabled = opts.enabled,
    getenv = opts.getenv,
    now = opts.now or os_time(),
    route_names = {},
    routes_by_id = {},
    service_names = {},
    services_by_id = {},
    plugin_scopes = {},
  }, Loader)
  self.doc.services = {}

  local services, err = list_of(input.services, "services")
  if not services then
    return nil, err
  end

  local service_plugins = {}
  for i, s in ipairs(services) do
    if type(s) ~= "table" then
      return nil, describe("service", s, i) .. ": expected a record"
    end
    local service = {
      id = s.id or utils.uuid_from_string("service:" .. tostring(s.name or i)),
      name = s.name,
      url = s.url,
    }
    if service.name then
      self.service_names[service.name] = service
    end
    self.services_by_id[service.id] = service
    self.doc.services[#self.doc.services + 1] = service

    local routes
    routes, err = list_of(s.routes, describe("service", s, i) .. ": routes")
    if not routes then
      return nil, err
    end
    for j, r in ipairs(routes) do
      local ok, rerr = self:add_route(r, j, service)
      if not ok then
        return nil, rerr
      end
    end

    local plugins
    plugins, err = list_of(s.plugins, describe("service", s, i) .. ": plugins")
    if not plugins then
      return nil, err
    end
    service_plugins[#service_plugins + 1] = { service = service, list = plugins }
  end

  local certificates
  certificates, err = list_of(input.certificates, "certificates")
  if not certificates then
    return nil, err
  end
  for i, c in ipairs(certificates) do
    if type(c) ~= "table" then
      return nil, "certificate #" .. i .. ": expected a record"
    end
    local ok, cerr = self:add_entity("certificates", utils.deep_copy(c), tostring(c.cert), "certificate #" .. i)
    if not ok then
      return nil, cerr
    end
  end

  local consumers
  consumers, err = list_of(input.consumers, "consumers")
  if not consumers then
    return nil, err
  end
  for i, c in ipairs(consumers) do
    local ok, cerr = self:add_consumer(c, i)
    if not ok then
      return nil, cerr
    end
  end

  local credentials
  credentials, err = list_of(input.keyauth_credentials, "keyauth_credentials")
  if not credentials then
    return nil, err
  end
  for i, c in ipairs(credentials) do
    local where = "keyauth_credentials #" .. i
    if type(c) ~= "table" then
      return nil, where .. ": expected a record"
    end
    c = utils.deep_copy(c)
    local ref = c.consumer
    local consumer = daos.find(self.doc, "consumers", type(ref) == "table" and (ref.id or ref.username) or ref)
    if not consumer then
      return nil, where .. ": consumer " .. cjson.encode(ref) .. " not found"
    end
    c.consumer = { id = consumer.id }
    local ok, cerr = self:add_entity("keyauth_credentials", c, tostring(c.key or i) .. ":" .. consumer.id, where)
    if not ok then
      return nil, cerr
    end
  end

  local routes
  routes, err = list_of(input.routes, "routes")
  if not routes then
    return nil, err
  end
  for i, r in ipairs(routes) do
    local ok, rerr = self:add_route(r, i)
    if not ok then
      return nil, rerr
    end
  end

  for _, sp in ipairs(service_plugins) do
    for i, p in ipairs(sp.list) do
      local ok, perr = self:add_plugin(p, i, { service = sp.service })
      if not ok then
        return nil, perr
      end
    end
  end

  local plugins
  plugins, err = list_of(input.plugins, "plugins")
  if not plugins then
    return nil, err
  end
  for i, p in ipairs(plugins) do
    if type(p) ~= "table" then
      return nil, describe("plugin", p, i) .. ": expected a record"
    end
    p = utils.deep_copy(p)
    local scope, serr = self:resolve_scope(p, i)
    if not scope then
      return nil, serr
    end
    local ok, perr = self:add_plugin(p, i, scope)
    if not ok then
      return nil, perr
    end
  end

  -- Keep the revision of plugins whose configuration did not change.
  local previous = opts.previous or store.empty_document()
  local prev_by_id = {}
  for _, p in ipairs(previous.plugins or {}) do
    prev_by_id[p.id] = p
  end
  self.doc.counter = previous.counter or 0
  for _, p in ipairs(self.doc.plugins) do
    local prev = prev_by_id[p.id]
    local rev = previous.revisions and previous.revisions[p.id]
    if prev and rev and utils.deep_equal(prev.config, p.config)
       and prev.enabled == p.enabled
    then
      self.doc.revisions[p.id] = rev
    else
      store.bump_revision(self.doc, p.id)
    end
  end

  return self.doc
end


-- Reads and loads a YAML or JSON file (JSON is YAML).
function _M.load_file(path, opts)
  local f, err = io_open(path, "rb")
  if not f then
    return nil, "could not open declarative config: " .. err
  end
  local text = f:read("*a")
  f:close()

  local ok, parsed = pcall(lyaml.load, text)
  if not ok then
    return nil, "could not parse declarative config " .. path .. ": " ..
                tostring(parsed)
  end

  local doc, lerr = _M.load(parsed, opts)
  if not doc then
    return nil, "invalid declarative config " .. path .. ": " .. lerr
  end
  return doc
end


return _M
