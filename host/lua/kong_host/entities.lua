-- Route and plugin entities: definitions, validation and rendering.
--
-- Routes are validated with the same schema engine as plugins, against a
-- definition that follows Kong's `routes` entity (HTTP fields only).
-- Rendering produces what Kong's Admin API shows: unset fields as null and
-- empty arrays as `[]`.

local schema = require "kong_host.schema"
local typedefs = require "kong.db.schema.typedefs"
local json = require "kong_host.json"
local utils = require "kong_host.utils"


local type = type
local ipairs = ipairs
local pairs = pairs


local null = json.null
local each_field = schema.each_field


local _M = {}


local function validate_route_host(host)
  local _, wildcards = host:gsub("%*", "")
  if wildcards > 1 then
    return nil, "invalid wildcard: must have at most one wildcard"
  end

  if wildcards == 1 and not (host:match("^%*%.") or host:match("%.%*$")) then
    return nil, "invalid wildcard: must be placed at leftmost or rightmost label"
  end

  local bare = host:gsub("^%*%.", "x."):gsub("%.%*$", ".x"):gsub(":%d+$", "")
  local ok = typedefs.host.custom_validator(bare)
  if not ok then
    return nil, "invalid value: " .. host
  end

  return true
end


local function validate_route_path(path)
  if path:sub(1, 1) == "~" then
    local re = rawget(_G, "ngx") and ngx.re
    if re then
      local _, err = re.find("", path:sub(2), "jo")
      if err then
        return nil, "invalid regex: '" .. path:sub(2) .. "' (PCRE returned: " .. err .. ")"
      end
    end
    return true
  end

  if path:sub(1, 1) ~= "/" then
    return nil, "should start with: / (fixed path) or ~ (regex path)"
  end

  return true
end


local ROUTE_PROTOCOLS = { "http", "https", "grpc", "grpcs", "ws", "wss" }


_M.ROUTE_DEF = {
  type = "record",
  fields = {
    { id = typedefs.uuid },
    { name = typedefs.name },
    { created_at = { type = "integer" } },
    { updated_at = { type = "integer" } },
    { protocols = { type = "set", required = true, default = { "http", "https" },
                    elements = { type = "string", one_of = ROUTE_PROTOCOLS } } },
    { methods = { type = "set",
                  elements = { type = "string", match = "^%u+$" } } },
    { hosts = { type = "array",
                elements = { type = "string",
                             custom_validator = validate_route_host } } },
    { paths = { type = "array",
                elements = { type = "string",
                             custom_validator = validate_route_path } } },
    { regex_priority = { type = "integer", required = true, default = 0 } },
    { strip_path = { type = "boolean", required = true, default = true } },
    { preserve_host = { type = "boolean", required = true, default = false } },
    { path_handling = { type = "string", required = true, default = "v0",
                        one_of = { "v0", "v1" } } },
    { https_redirect_status_code = { type = "integer", required = true,
                                     default = 426,
                                     one_of = { 426, 301, 302, 307, 308 } } },
    { request_buffering = { type = "boolean", required = true, default = true } },
    { response_buffering = { type = "boolean", required = true, default = true } },
    { tags = typedefs.tags },
    { service = { type = "foreign", reference = "services" } },
  },
  entity_checks = {
    { custom_entity_check = {
        field_sources = { "methods", "hosts", "paths" },
        fn = function(route)
          for _, name in ipairs({ "methods", "hosts", "paths" }) do
            local v = route[name]
            if type(v) == "table" and #v > 0 then
              return true
            end
          end
          return nil, "must set one of 'methods', 'hosts', 'headers', " ..
                      "'paths', 'snis' when 'protocols' is 'https'"
        end,
    } },
  },
}


-- Methods are case-insensitive on input; Kong stores them upper-case.
local function normalize_route(route)
  if type(route.methods) == "table" then
    for i, m in ipairs(route.methods) do
      if type(m) == "string" then
        route.methods[i] = m:upper()
      end
    end
  end
  if type(route.hosts) == "table" then
    for i, h in ipairs(route.hosts) do
      if type(h) == "string" then
        route.hosts[i] = h:lower()
      end
    end
  end
  return route
end


-- Validates a route. Returns the route with defaults, or nil, errors,
-- message.
function _M.validate_route(route, opts)
  if type(route) == "table" then
    route = normalize_route(utils.deep_copy(route))
  end
  return schema.validate_record(_M.ROUTE_DEF, route, opts)
end


---------------------------------------------------------------------------
-- Rendering
---------------------------------------------------------------------------


local render


local function render_value(def, value)
  if value == nil or value == null then
    return null
  end

  local t = def.type
  if (t == "array" or t == "set") and type(value) == "table" then
    if #value == 0 then
      return json.EMPTY_ARRAY
    end
    local out = {}
    for i, v in ipairs(value) do
      out[i] = def.elements and render_value(def.elements, v) or v
    end
    return out

  elseif t == "record" and def.fields and type(value) == "table" then
    return render(def.fields, value)

  elseif t == "map" and type(value) == "table" then
    local out = {}
    for k, v in pairs(value) do
      out[k] = def.values and render_value(def.values, v) or v
    end
    return out
  end

  return value
end


-- A copy of `value` with every field of `fields` present: unset ones as
-- null, empty arrays marked so that they encode as `[]`.
render = function(fields, value)
  local out = {}
  for k, v in pairs(value) do
    out[k] = v
  end
  for name, def in each_field(fields) do
    out[name] = render_value(def, value[name])
  end
  return out
end


function _M.render_route(route)
  return render(_M.ROUTE_DEF.fields, route)
end


function _M.render_plugin(plugin)
  local plugin_schema = schema.load_plugin_schema(plugin.name)
  if not plugin_schema then
    return plugin
  end
  local def = schema.plugin_entity_def(plugin_schema)
  return render(def.fields, plugin)
end


-- Kong's `{ data = [...], next = null }` collection.
function _M.collection(items, render_item)
  if #items == 0 then
    return { data = json.EMPTY_ARRAY, next = null }
  end
  local data = {}
  for i, item in ipairs(items) do
    data[i] = render_item(item)
  end
  return { data = data, next = null }
end


return _M
