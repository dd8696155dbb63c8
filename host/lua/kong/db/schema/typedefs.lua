-- Kong's reusable field definitions (kong/db/schema/typedefs.lua), the
-- subset plugin schemas use. Each typedef is a table that can also be
-- called with overrides: `typedefs.timeout { default = 1000 }` returns a
-- copy of the timeout definition with `default` set, like Kong's
-- `Schema.define`.

local cjson = require "cjson.safe"


local type = type
local pairs = pairs
local tonumber = tonumber
local setmetatable = setmetatable
local string_format = string.format


local null = cjson.null


local function copy(t)
  if type(t) ~= "table" then
    return t
  end
  local out = {}
  for k, v in pairs(t) do
    out[k] = copy(v)
  end
  return out
end


local define_mt = {
  __call = function(self, overrides)
    local out = copy(self)
    for k, v in pairs(overrides or {}) do
      out[k] = v
    end
    return out
  end,
}


local function define(t)
  return setmetatable(t, define_mt)
end


local function validate_ipv4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then
    return false
  end
  for _, n in pairs({ a, b, c, d }) do
    if tonumber(n) > 255 then
      return false
    end
  end
  return true
end


local function validate_ipv6(s)
  return s:match("^%[?[%x:%.]+%]?$") ~= nil and s:find(":", 1, true) ~= nil
end


local function validate_hostname(s)
  if #s > 253 then
    return false
  end
  for label in s:gmatch("[^%.]+") do
    if #label > 63 or not label:match("^[%w_][%w%-_]*$")
       or label:match("%-$")
    then
      return false
    end
  end
  return s:match("^[%w_%-%.]+$") ~= nil and not s:match("%.%.")
end


local function validate_host(host)
  if validate_ipv4(host) or validate_ipv6(host) or validate_hostname(host) then
    return true
  end
  return nil, "invalid value: " .. host
end


local function validate_url(url)
  local scheme, rest = url:match("^(%a[%w+%-.]*)://(.*)$")
  if not scheme then
    return nil, "missing scheme in url"
  end
  local host = rest:match("^([^/?#:]+)") or rest:match("^(%[[^%]]+%])")
  if not host or host == "" then
    return nil, "missing host in url"
  end
  return true
end


local function validate_header_name(name)
  if name:match("^[%w%-_]+$") then
    return true
  end
  return nil, string_format("bad header name '%s', allowed characters are " ..
                            "A-Z, a-z, 0-9, '_', and '-'", name)
end


local function validate_name(name)
  if name:match("^[%w%.%-_~]+$") then
    return true
  end
  return nil, string_format("invalid value '%s': it must only contain " ..
                            "alphanumeric and '., -, _, ~' characters", name)
end


local HTTP_PROTOCOLS = { "grpc", "grpcs", "http", "https", "ws", "wss" }
local ALL_PROTOCOLS = { "grpc", "grpcs", "http", "https", "ws", "wss",
                        "tcp", "tls", "tls_passthrough", "udp" }


local typedefs = {}


typedefs.host = define {
  type = "string",
  custom_validator = validate_host,
  description = "A hostname or an IP address.",
}


typedefs.port = define {
  type = "integer",
  between = { 0, 65535 },
  description = "A port number.",
}


typedefs.timeout = define {
  type = "integer",
  between = { 0, 2 ^ 31 - 2 },
  description = "A timeout in milliseconds.",
}


typedefs.uuid = define {
  type = "string",
  uuid = true,
  description = "A universally unique identifier.",
}


typedefs.url = define {
  type = "string",
  custom_validator = validate_url,
  description = "A URL.",
}


typedefs.header_name = define {
  type = "string",
  custom_validator = validate_header_name,
  description = "An HTTP header name.",
}


typedefs.name = define {
  type = "string",
  unique = true,
  custom_validator = validate_name,
  description = "A name.",
}


typedefs.tags = define {
  type = "set",
  elements = { type = "string", match = "^[%w%.%-%_~:]+$" },
  description = "A set of strings for grouping and filtering.",
}


typedefs.protocols = define {
  type = "set",
  required = true,
  default = copy(ALL_PROTOCOLS),
  elements = { type = "string", one_of = ALL_PROTOCOLS },
  description = "A set of protocols.",
}


typedefs.protocols_http = define {
  type = "set",
  required = true,
  default = copy(HTTP_PROTOCOLS),
  elements = { type = "string", one_of = HTTP_PROTOCOLS },
  description = "A set of HTTP protocols.",
}


typedefs.no_consumer = define {
  type = "foreign",
  reference = "consumers",
  eq = null,
  description = "Custom type for representing a foreign key with a null value allowed.",
}


typedefs.no_service = define {
  type = "foreign",
  reference = "services",
  eq = null,
  description = "Custom type for representing a foreign key with a null value allowed.",
}


typedefs.no_route = define {
  type = "foreign",
  reference = "routes",
  eq = null,
  description = "Custom type for representing a foreign key with a null value allowed.",
}


typedefs.no_consumer_group = define {
  type = "foreign",
  reference = "consumer_groups",
  eq = null,
  description = "Custom type for representing a foreign key with a null value allowed.",
}


typedefs.lua_code = define {
  type = "map",
  keys = { type = "string", len_min = 1 },
  values = { type = "string", len_min = 1 },
}


typedefs.auto_timestamp_s = define {
  type = "integer",
  timestamp = true,
  auto = true,
}


return typedefs
