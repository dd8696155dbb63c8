-- Admin API: routes and plugins, with Kong's request formats (form fields
-- with Kong's nested syntax, or JSON) and Kong's answers and errors.
--
--   GET /                      node information
--   GET /status                store status
--   GET|POST /routes
--   GET|PATCH|DELETE /routes/{name or id}
--   GET|POST /routes/{name or id}/plugins, /consumers/{id or username}/plugins
--   GET|PATCH|DELETE /routes/{name or id}/plugins/{id}, /consumers/{c}/plugins/{id}
--   GET|POST /plugins
--   GET|PATCH|DELETE /plugins/{id}
--   GET|POST /consumers, /certificates
--   GET|PATCH|PUT|DELETE /consumers/{id or username}, /certificates/{id}
--   GET|POST /consumers/{id or username}/key-auth
--   GET|PATCH|PUT|DELETE /consumers/{id or username}/key-auth/{id or key}
--
-- Changes go to the shared store; every worker picks them up on its next
-- request or within a second.

local cjson = require "cjson.safe"
local json = require "kong_host.json"
local form = require "kong_host.form"
local schema = require "kong_host.schema"
local entities = require "kong_host.entities"
local store = require "kong_host.store"
local runner = require "kong_host.runner"
local pdk = require "kong_host.pdk"
local utils = require "kong_host.utils"
local daos = require "kong_host.daos"


local ngx = ngx
local type = type
local next = next
local pairs = pairs
local ipairs = ipairs
local pcall = pcall
local tostring = tostring
local tonumber = tonumber
local string_format = string.format
local table_concat = table.concat
local ngx_log = ngx.log
local ERR = ngx.ERR


local null = cjson.null
local deep_copy = utils.deep_copy


local _M = {}


---------------------------------------------------------------------------
-- Responses and errors
---------------------------------------------------------------------------


local function respond(status, body)
  ngx.status = status
  ngx.header["Server"] = "kong/3.10.0 (kong-host)"
  if body == nil then
    ngx.header["Content-Length"] = 0
    ngx.send_headers()
    return ngx.exit(ngx.HTTP_OK)
  end

  local encoded, err = json.encode(body)
  if not encoded then
    ngx_log(ERR, "could not encode Admin API answer: ", err)
    ngx.status = 500
    encoded = '{"message":"An unexpected error occurred"}'
  end

  ngx.header["Content-Type"] = "application/json; charset=utf-8"
  ngx.header["Content-Length"] = #encoded + 1
  ngx.say(encoded)
  return ngx.exit(ngx.HTTP_OK)
end


local function not_found()
  return respond(404, { message = "Not found" })
end


local function bad_request(message)
  return respond(400, { message = message })
end


local function method_not_allowed()
  return respond(405, { message = "Method not allowed" })
end


local function schema_violation(errors)
  return respond(400, schema.schema_violation(errors))
end


-- Kong's `{a=1,b="x"}` rendering used in unique / foreign key messages.
local function lua_repr(value)
  if value == nil or value == null then
    return "null"
  end
  if type(value) == "string" then
    return '"' .. value .. '"'
  end
  if type(value) ~= "table" then
    return tostring(value)
  end
  local parts = {}
  for _, k in ipairs(utils.sorted_keys(value)) do
    parts[#parts + 1] = k .. "=" .. lua_repr(value[k])
  end
  return "{" .. table_concat(parts, ",") .. "}"
end


local function unique_violation(fields)
  return respond(409, {
    code = 5,
    name = "unique constraint violation",
    message = "UNIQUE violation detected on '" .. lua_repr(fields) .. "'",
    fields = fields,
  })
end


local function foreign_key_violation(field, ref, entity_name)
  return respond(400, {
    code = 3,
    name = "foreign key violation",
    message = string_format("the foreign key '%s' does not reference an " ..
                            "existing '%s' entity.", lua_repr(ref), entity_name),
    fields = { [field] = ref },
  })
end


-- Answers a failed store update (what a route or plugin update returned) the way Kong does; returns
-- true when it answered, false when the update succeeded. A store error is raised.
local function answer_failed_update(result, uerr)
  if not result then
    error(uerr)
  end
  if result.status == 404 then
    not_found()
  elseif result.foreign then
    foreign_key_violation(result.foreign_field or "route", result.foreign, result.foreign_entity or "routes")
  elseif result.errors then
    schema_violation(result.errors)
  elseif result.unique then
    unique_violation(result.unique)
  else
    return false
  end
  return true
end


---------------------------------------------------------------------------
-- Request bodies
---------------------------------------------------------------------------


-- Returns the decoded body and whether it came from a form (and so needs
-- type coercion), or nil, nil, message.
local function read_body()
  ngx.req.read_body()
  local content_type = (ngx.var.content_type or ""):lower()

  if content_type:find("application/json", 1, true) then
    local raw = ngx.req.get_body_data()
    if not raw then
      local file = ngx.req.get_body_file()
      if file then
        local f = io.open(file, "rb")
        raw = f and f:read("*a")
        if f then
          f:close()
        end
      end
    end
    if not raw or raw == "" then
      return {}, false
    end
    local body = cjson.decode(raw)
    if type(body) ~= "table" then
      return nil, nil, "Cannot parse JSON body"
    end
    return body, false
  end

  if content_type == "" or
     content_type:find("application/x-www-form-urlencoded", 1, true)
  then
    local args, err = ngx.req.get_post_args(1000)
    if not args then
      return nil, nil, "could not read form body: " .. tostring(err)
    end
    local body, derr = form.decode(args)
    if not body then
      return nil, nil, derr
    end
    return body, true
  end

  return nil, nil, "Unsupported Content-Type: " .. content_type
end


-- Records are merged, everything else (arrays included) replaced; a null
-- removes the field. This is how Kong applies PATCH to plugin configs.
local function merge(base, patch)
  if type(base) ~= "table" or type(patch) ~= "table" or utils.is_array(patch)
     and next(patch) ~= nil
  then
    return deep_copy(patch)
  end
  local out = deep_copy(base)
  for k, v in pairs(patch) do
    if v == null then
      out[k] = nil
    elseif type(v) == "table" and type(out[k]) == "table"
           and not utils.is_array(out[k])
    then
      out[k] = merge(out[k], v)
    else
      out[k] = deep_copy(v)
    end
  end
  return out
end


---------------------------------------------------------------------------
-- Lookups
---------------------------------------------------------------------------


local function find_route(doc, name_or_id)
  for i, r in ipairs(doc.routes) do
    if r.id == name_or_id or r.name == name_or_id then
      return r, i
    end
  end
end


local function find_plugin(doc, id)
  for i, p in ipairs(doc.plugins) do
    if p.id == id then
      return p, i
    end
  end
end


local function route_ref(entity)
  return type(entity.route) == "table" and entity.route.id or nil
end


-- The plugin that would clash with Kong's unique (name, scope) constraint.
local function find_duplicate_plugin(doc, plugin)
  for _, p in ipairs(doc.plugins) do
    if p.id ~= plugin.id and p.name == plugin.name
       and route_ref(p) == route_ref(plugin)
       and (p.service and p.service.id) == (plugin.service and plugin.service.id)
       and (p.consumer and p.consumer.id) == (plugin.consumer and plugin.consumer.id)
    then
      return p
    end
  end
end


local function unique_plugin_fields(plugin)
  return {
    name = plugin.name,
    route = plugin.route and { id = plugin.route.id } or null,
    service = plugin.service and { id = plugin.service.id } or null,
    consumer = plugin.consumer and { id = plugin.consumer.id } or null,
  }
end


local function read_doc()
  local doc, err = store.read()
  if not doc then
    error(err)
  end
  return doc
end


---------------------------------------------------------------------------
-- Routes
---------------------------------------------------------------------------


local function list_routes()
  local doc = read_doc()
  return respond(200, entities.collection(doc.routes, entities.render_route))
end


local function get_route(name_or_id)
  local route = find_route(read_doc(), name_or_id)
  if not route then
    return not_found()
  end
  return respond(200, entities.render_route(route))
end


local function save_route(name_or_id)
  local body, coerce, err = read_body()
  if not body then
    return bad_request(err)
  end

  local now = ngx.time()
  local status = name_or_id and 200 or 201

  local result, uerr = store.update(function(doc)
    local input, index
    if name_or_id then
      local existing
      existing, index = find_route(doc, name_or_id)
      if not existing then
        return { status = 404 }, false
      end
      input = merge(existing, body)
      input.id = existing.id
      input.created_at = existing.created_at
    else
      input = body
      input.id = input.id or utils.uuid()
      input.created_at = now
    end
    input.updated_at = now

    local route, errors = entities.validate_route(input, { coerce = coerce })
    if not route then
      return { errors = errors }, false
    end

    if route.name then
      local clash = find_route(doc, route.name)
      if clash and clash.id ~= route.id then
        return { unique = { name = route.name } }, false
      end
    end

    if index then
      doc.routes[index] = route
    else
      doc.routes[#doc.routes + 1] = route
    end
    return { route = route }, true
  end)

  if answer_failed_update(result, uerr) then
    return
  end
  return respond(status, entities.render_route(result.route))
end


local function delete_route(name_or_id)
  local _, err = store.update(function(doc)
    local route, index = find_route(doc, name_or_id)
    if not route then
      return true, false
    end
    table.remove(doc.routes, index)

    -- Kong cascades: the route's plugins go with it.
    local kept = {}
    for _, p in ipairs(doc.plugins) do
      if route_ref(p) == route.id then
        doc.revisions[p.id] = nil
      else
        kept[#kept + 1] = p
      end
    end
    doc.plugins = kept
    return true, true
  end)

  if err then
    error(err)
  end
  return respond(204)
end


---------------------------------------------------------------------------
-- Plugins
---------------------------------------------------------------------------


-- The route or consumer a nested path names (`/routes/{r}/plugins`, `/consumers/{c}/plugins`): scope is
-- { field = "route" | "consumer", key = <name, username or id> }.
local function find_scope(doc, scope)
  if scope.field == "route" then
    return find_route(doc, scope.key)
  end
  return daos.find(doc, "consumers", scope.key)
end


-- Whether `plugin` is scoped to `entity` (its route or consumer).
local function in_scope(plugin, field, entity)
  return type(plugin[field]) == "table" and plugin[field].id == entity.id
end


local function list_plugins(scope)
  local doc = read_doc()
  local items = doc.plugins

  if scope then
    local entity = find_scope(doc, scope)
    if not entity then
      return not_found()
    end
    items = {}
    for _, p in ipairs(doc.plugins) do
      if in_scope(p, scope.field, entity) then
        items[#items + 1] = p
      end
    end
  end

  return respond(200, entities.collection(items, entities.render_plugin))
end


local function get_plugin(id, scope)
  local doc = read_doc()
  local plugin = find_plugin(doc, id)
  if scope then
    local entity = find_scope(doc, scope)
    if not entity or (plugin and not in_scope(plugin, scope.field, entity)) then
      return not_found()
    end
  end
  if not plugin then
    return not_found()
  end
  return respond(200, entities.render_plugin(plugin))
end


-- Turns `route = { name = "x" }` / `route = "x"` into `{ id = ... }`.
local function resolve_route_ref(doc, input)
  local ref = input.route
  if ref == nil or ref == null then
    return true
  end

  local key
  if type(ref) == "string" then
    key = ref
  elseif type(ref) == "table" then
    key = ref.id or ref.name
  end

  local route = key and find_route(doc, key)
  if not route then
    return nil, type(ref) == "table" and ref or { id = ref }
  end

  input.route = { id = route.id }
  return true
end


-- Creates (plugin_id == nil) or updates a plugin, within `scope` for a nested path.
local function save_plugin(plugin_id, scope)
  local body, coerce, err = read_body()
  if not body then
    return bad_request(err)
  end

  local now = ngx.time()

  local result, uerr = store.update(function(doc)
    local scoped
    if scope then
      scoped = find_scope(doc, scope)
      if not scoped then
        return { status = 404 }, false
      end
    end

    local input, index
    if plugin_id then
      local existing
      existing, index = find_plugin(doc, plugin_id)
      if not existing or (scoped and not in_scope(existing, scope.field, scoped)) then
        return { status = 404 }, false
      end
      input = merge(existing, body)
      input.id = existing.id
      input.name = existing.name
      input.created_at = existing.created_at
    else
      input = body
      input.id = input.id or utils.uuid()
      input.created_at = now
    end
    input.updated_at = now

    if scoped then
      input[scope.field] = { id = scoped.id }
    end
    local ok, ref = resolve_route_ref(doc, input)
    if not ok then
      return { foreign = ref }, false
    end
    -- a plugin scoped to a consumer names it by id (or, as Kong's Admin API allows, by username)
    local consumer_ref = input.consumer
    if type(consumer_ref) == "table" then
      local consumer = daos.find(doc, "consumers", consumer_ref.id or consumer_ref.username)
      if not consumer then
        return { foreign = consumer_ref, foreign_field = "consumer", foreign_entity = "consumers" }, false
      end
      input.consumer = { id = consumer.id }
    end

    local plugin, errors = schema.validate_plugin(input, {
      enabled = runner.enabled_set(),
      coerce = coerce,
    })
    if not plugin then
      return { errors = errors }, false
    end

    if find_duplicate_plugin(doc, plugin) then
      return { unique = unique_plugin_fields(plugin) }, false
    end

    if index then
      doc.plugins[index] = plugin
    else
      doc.plugins[#doc.plugins + 1] = plugin
    end
    store.bump_revision(doc, plugin.id)
    return { plugin = plugin }, true
  end)

  if answer_failed_update(result, uerr) then
    return
  end
  return respond(plugin_id and 200 or 201,
                 entities.render_plugin(result.plugin))
end


local function delete_plugin(id, scope)
  local _, err = store.update(function(doc)
    local plugin, index = find_plugin(doc, id)
    if not plugin then
      return true, false
    end
    if scope then
      local entity = find_scope(doc, scope)
      if not entity or not in_scope(plugin, scope.field, entity) then
        return true, false
      end
    end
    table.remove(doc.plugins, index)
    doc.revisions[id] = nil
    return true, true
  end)

  if err then
    error(err)
  end
  return respond(204)
end


---------------------------------------------------------------------------
-- Consumers, certificates, key-auth credentials
---------------------------------------------------------------------------


-- The parent a nested path names (`/consumers/{c}/key-auth`): { field = "consumer", id = }, or nil when
-- the consumer does not exist.
local function parent_of(doc, consumer_key)
  local consumer = daos.find(doc, "consumers", consumer_key)
  return consumer and { field = "consumer", id = consumer.id }
end


-- The entity `name` that `id_or_key` names under `parent`, and its index.
local function find_entity(doc, name, id_or_key, parent)
  local entity, index = daos.find(doc, name, id_or_key)
  if entity and parent and not (type(entity[parent.field]) == "table" and entity[parent.field].id == parent.id)
  then
    return nil
  end
  return entity, index
end


local function list_entities(name, consumer_key)
  local doc = read_doc()
  local parent_id
  if consumer_key then
    local parent = parent_of(doc, consumer_key)
    if not parent then
      return not_found()
    end
    parent_id = parent.id
  end
  return respond(200, entities.collection(daos.list(doc, name, parent_id), function(entity)
    return daos.render(name, entity)
  end))
end


local function get_entity(name, id_or_key, consumer_key)
  local doc = read_doc()
  local parent = consumer_key and parent_of(doc, consumer_key)
  local entity = (parent or not consumer_key) and find_entity(doc, name, id_or_key, parent)
  if not entity then
    return not_found()
  end
  return respond(200, daos.render(name, entity))
end


-- POST (id_or_key nil), PATCH (merged into the entity) or PUT (the entity replaced, or created with
-- the id or endpoint key of the path) of entity `name`, under the consumer `consumer_key` for nested paths.
local function save_entity(method, name, id_or_key, consumer_key)
  local body, coerce, err = read_body()
  if not body then
    return bad_request(err)
  end
  local result, uerr = store.update(function(doc)
    local parent
    if consumer_key then
      parent = parent_of(doc, consumer_key)
      if not parent then
        return { status = 404 }, false
      end
    end
    local input, index = body, nil
    if id_or_key then
      local existing
      existing, index = find_entity(doc, name, id_or_key, parent)
      if method == "PATCH" then
        if not existing then
          return { status = 404 }, false
        end
        input = merge(existing, body)
      elseif existing then
        input.created_at = existing.created_at
      end
      local endpoint_key = daos.DAOS[name].endpoint_key
      local by_key = endpoint_key and not utils.is_uuid(id_or_key)
      if by_key then
        input[endpoint_key] = id_or_key
      end
      if existing then
        input.id = existing.id
      elseif not by_key then
        input.id = id_or_key
      end
    end
    if parent then
      input[parent.field] = { id = parent.id }
    end
    local entity, failure = daos.save(doc, name, input, index, { coerce = coerce, now = ngx.time() })
    if not entity then
      failure.foreign_field, failure.foreign_entity = "consumer", "consumers"
      return failure, false
    end
    return { entity = entity }, true
  end)
  if answer_failed_update(result, uerr) then
    return
  end
  return respond(method == "POST" and 201 or 200, daos.render(name, result.entity))
end


-- Kong answers 204 whether or not the entity existed (404 when a nested path's consumer does not).
local function delete_entity(name, id_or_key, consumer_key)
  local result, err = store.update(function(doc)
    local parent = consumer_key and parent_of(doc, consumer_key)
    if consumer_key and not parent then
      return { status = 404 }, false
    end
    local entity, index = find_entity(doc, name, id_or_key, parent)
    if not entity then
      return {}, false
    end
    daos.delete(doc, name, index)
    return {}, true
  end)
  if answer_failed_update(result, err) then
    return
  end
  return respond(204)
end


-- /<name>, /<name>/{x}: the collection and one entity, for the methods Kong's Admin API has.
local function entity_endpoint(method, name, id_or_key, consumer_key)
  if not id_or_key then
    if method == "GET" then return list_entities(name, consumer_key) end
    if method == "POST" then return save_entity(method, name, nil, consumer_key) end
    return method_not_allowed()
  end
  if method == "GET" then return get_entity(name, id_or_key, consumer_key) end
  if method == "PATCH" or method == "PUT" then return save_entity(method, name, id_or_key, consumer_key) end
  if method == "DELETE" then return delete_entity(name, id_or_key, consumer_key) end
  return method_not_allowed()
end


---------------------------------------------------------------------------
-- Node information
---------------------------------------------------------------------------


local function root()
  local enabled = {}
  for _, name in ipairs(runner.loaded_names()) do
    enabled[name] = true
  end

  local configuration = {}
  for k, v in pairs(pdk.raw_configuration or {}) do
    configuration[k] = v
  end

  return respond(200, {
    tagline = "Welcome to kong",
    version = kong.version,
    node_id = kong.node.get_id(),
    hostname = kong.node.get_hostname(),
    lua_version = jit and jit.version or _VERSION,
    plugins = {
      available_on_server = runner.available(),
      enabled_in_cluster = enabled,
    },
    configuration = configuration,
  })
end


local function status()
  local dict = ngx.shared[store.DICT_NAME]
  return respond(200, {
    database = { reachable = true },
    configuration_version = store.version(),
    worker_configuration_version = runner.state_version(),
    memory = {
      lua_shared_dicts = {
        [store.DICT_NAME] = {
          capacity = dict:capacity(),
          free_space = dict:free_space(),
        },
      },
    },
    -- Kong's kong.nginx.get_statistics(), as far as nginx's stub_status variables tell it.
    server = {
      worker_pid = ngx.worker.pid(),
      connections_active = tonumber(ngx.var.connections_active),
      connections_reading = tonumber(ngx.var.connections_reading),
      connections_writing = tonumber(ngx.var.connections_writing),
      connections_waiting = tonumber(ngx.var.connections_waiting),
    },
  })
end


---------------------------------------------------------------------------
-- Dispatch
---------------------------------------------------------------------------


local function dispatch(method, segments)
  local n = #segments
  local s1, s2, s3, s4 = segments[1], segments[2], segments[3], segments[4]

  if s1 == "consumers" and n <= 2 or s1 == "certificates" and n <= 2 then
    return entity_endpoint(method, s1, s2)
  end

  if s1 == "consumers" and s3 == "key-auth" and n <= 4 then
    return entity_endpoint(method, "keyauth_credentials", s4, s2)
  end

  if (s1 == "routes" or s1 == "consumers") and s3 == "plugins" and n <= 4 then
    local scope = { field = s1 == "routes" and "route" or "consumer", key = s2 }
    if n == 3 then
      if method == "GET" then return list_plugins(scope) end
      if method == "POST" then return save_plugin(nil, scope) end
      return method_not_allowed()
    end
    if method == "GET" then return get_plugin(s4, scope) end
    if method == "PATCH" then return save_plugin(s4, scope) end
    if method == "DELETE" then return delete_plugin(s4, scope) end
    return method_not_allowed()
  end

  if n == 0 then
    if method == "GET" then return root() end
    return method_not_allowed()
  end

  if s1 == "status" and n == 1 then
    if method == "GET" then return status() end
    return method_not_allowed()
  end

  if s1 == "routes" then
    if n == 1 then
      if method == "GET" then return list_routes() end
      if method == "POST" then return save_route(nil) end
      return method_not_allowed()
    end

    if n == 2 then
      if method == "GET" then return get_route(s2) end
      if method == "PATCH" then return save_route(s2) end
      if method == "DELETE" then return delete_route(s2) end
      return method_not_allowed()
    end

  end

  if s1 == "plugins" then
    if n == 1 then
      if method == "GET" then return list_plugins(nil) end
      if method == "POST" then return save_plugin(nil, nil) end
      return method_not_allowed()
    end

    if n == 2 then
      if method == "GET" then return get_plugin(s2) end
      if method == "PATCH" then return save_plugin(s2) end
      if method == "DELETE" then return delete_plugin(s2) end
      return method_not_allowed()
    end
  end

  return not_found()
end


-- content_by_lua handler of the admin server.
function _M.handle()
  local segments = {}
  for segment in ngx.var.uri:gmatch("[^/]+") do
    segments[#segments + 1] = ngx.unescape_uri(segment)
  end

  local method = ngx.req.get_method()
  local ok, err = pcall(dispatch, method, segments)
  if not ok then
    ngx_log(ERR, "Admin API ", method, " ", ngx.var.uri, " failed: ",
            tostring(err))
    if not ngx.headers_sent then
      return respond(500, { message = "An unexpected error occurred" })
    end
  end
end


return _M
