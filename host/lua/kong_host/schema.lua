-- Kong-compatible schema validation for plugin entities.
--
-- Implements the subset of Kong's `kong.db.schema` that plugin schemas use:
-- field types, field attributes, defaults, entity checks, string coercion
-- for form input and `{vault://env/...}` references. Error tables and
-- messages follow Kong's wording so that Admin API clients and tests see
-- what a real Kong would answer.
--
-- It runs under plain LuaJIT (no ngx) so specs can call it directly.

local cjson = require "cjson.safe"
local utils = require "kong_host.utils"


local type = type
local pairs = pairs
local ipairs = ipairs
local next = next
local pcall = pcall
local require = require
local tostring = tostring
local tonumber = tonumber
local setmetatable = setmetatable
local math_floor = math.floor
local math_huge = math.huge
local string_format = string.format
local table_concat = table.concat
local table_sort = table.sort
local os_getenv = os.getenv


local null = cjson.null
local deep_copy = utils.deep_copy
local is_array = utils.is_array


local _M = {}


-- Kong's wording, from kong/db/schema/init.lua.
local ERR = {
  ARRAY = "expected an array",
  SET = "expected a set",
  MAP = "expected a map",
  RECORD = "expected a record",
  STRING = "expected a string",
  NUMBER = "expected a number",
  BOOLEAN = "expected a boolean",
  INTEGER = "expected an integer",
  FUNCTION = "expected a function",
  EQ = "value must be %s",
  NE = "value must not be %s",
  GT = "value must be greater than %s",
  BETWEEN = "value should be between %d and %d",
  LEN_EQ = "length must be %d",
  LEN_MIN = "length must be at least %d",
  LEN_MAX = "length must be at most %d",
  MATCH = "invalid value: %s",
  NOT_MATCH = "invalid value: %s",
  STARTS_WITH = "should start with: %s",
  ONE_OF = "expected one of: %s",
  NOT_ONE_OF = "must not be one of: %s",
  UUID = "expected a valid UUID",
  VALIDATION = "failed validating: %s",
  UNKNOWN = "unknown field",
  REQUIRED = "required field missing",
  AT_LEAST_ONE_OF = "at least one of these fields must be non-empty: %s",
  CONDITIONAL_AT_LEAST_ONE_OF = "at least one of these fields must be non-empty: %s",
  ONLY_ONE_OF = "only one of these fields must be non-empty: %s",
  MUTUALLY_REQUIRED = "all or none of these fields must be set: %s",
  MUTUALLY_EXCLUSIVE = "only one or none of these fields must be set: %s",
  CONDITIONAL = "failed conditional validation given value of field '%s'",
  PLUGIN_NOT_ENABLED = "plugin '%s' not enabled; add it to the 'plugins' configuration property",
}
_M.ERRORS = ERR


local ENTITY = "@entity"


-- Field iteration. Kong schemas list fields as `{ { name = def }, ... }`.
local function each_field(fields)
  local i = 0
  return function()
    i = i + 1
    local f = fields and fields[i]
    if f then
      local name, def = next(f)
      return name, def
    end
  end
end
_M.each_field = each_field


local function find_field(fields, name)
  for n, def in each_field(fields) do
    if n == name then
      return def
    end
  end
end


local function split_path(path)
  local parts = {}
  for part in path:gmatch("[^%.]+") do
    parts[#parts + 1] = part
  end
  return parts
end


local function get_path(value, path)
  for _, part in ipairs(split_path(path)) do
    if type(value) ~= "table" then
      return nil
    end
    value = value[part]
  end
  return value
end


-- Schema definition of the field at a dotted path inside a record.
local function get_path_def(record_def, path)
  local def = record_def
  for _, part in ipairs(split_path(path)) do
    def = def and def.fields and find_field(def.fields, part)
    if not def then
      return nil
    end
  end
  return def
end


local function is_nonempty(value)
  if value == nil or value == null then
    return false
  end
  if type(value) == "table" and next(value) == nil then
    return false
  end
  if value == "" then
    return false
  end
  return true
end


local function quoted_list(names)
  local out = {}
  for i, name in ipairs(names) do
    out[i] = "'" .. name .. "'"
  end
  return table_concat(out, ", ")
end


-- Puts an error at a dotted path in a nested error table.
local function set_error(errors, path, err)
  local parts = split_path(path)
  local t = errors
  for i = 1, #parts - 1 do
    local sub = t[parts[i]]
    if type(sub) ~= "table" then
      sub = {}
      t[parts[i]] = sub
    end
    t = sub
  end
  t[parts[#parts]] = err
end


local function add_entity_error(errors, msg)
  local list = errors[ENTITY]
  if not list then
    list = {}
    errors[ENTITY] = list
  end
  list[#list + 1] = msg
end


local function has_error_at(errors, path)
  return get_path(errors, path) ~= nil
end


---------------------------------------------------------------------------
-- References (`{vault://env/name}`)
---------------------------------------------------------------------------


local function is_reference(value)
  return type(value) == "string" and value:match("^{vault://.+}$") ~= nil
end
_M.is_reference = is_reference


-- Resolves a reference the way Kong's env vault does: the resource name is
-- upper-cased with `-` turned into `_`; a trailing `/key` selects a key of
-- the variable's value parsed as JSON.
function _M.resolve_reference(ref, getenv)
  getenv = getenv or os_getenv

  local vault, rest = ref:match("^{vault://([^/]+)/(.+)}$")
  if not vault then
    return nil, "invalid reference " .. ref
  end

  if vault ~= "env" then
    return nil, string_format("could not resolve reference %s: vault '%s' " ..
                              "is not supported (only 'env')", ref, vault)
  end

  rest = rest:gsub("%?.*$", "")
  local resource, key = rest:match("^([^/]+)/(.+)$")
  resource = resource or rest

  local var = resource:upper():gsub("-", "_")
  local value = getenv(var)
  if value == nil then
    return nil, string_format("could not resolve reference %s: environment " ..
                              "variable %s is not set", ref, var)
  end

  if key then
    local decoded = cjson.decode(value)
    if type(decoded) ~= "table" or type(decoded[key]) ~= "string" then
      return nil, string_format("could not resolve reference %s: key '%s' " ..
                                "not found in environment variable %s",
                                ref, key, var)
    end
    value = decoded[key]
  end

  return value
end


---------------------------------------------------------------------------
-- Coercion of form input
---------------------------------------------------------------------------


local coerce


local function coerce_scalar(def, value)
  if type(value) ~= "string" then
    return value
  end

  local t = def.type
  if t == "integer" or t == "number" then
    if value == "" then
      return null
    end
    return tonumber(value) or value

  elseif t == "boolean" then
    if value == "true" then
      return true
    elseif value == "false" then
      return false
    elseif value == "" then
      return null
    end
  end

  return value
end


-- Turns form-decoded strings into the types the schema expects, like
-- Kong's `kong.api.arguments.infer`: numbers, booleans, a scalar given
-- where an array is expected becomes a one element array, and index maps
-- from `a[2]=x&a[1]=y` become arrays.
coerce = function(def, value)
  if value == nil or value == null or not def then
    return value
  end

  local t = def.type
  if t == "array" or t == "set" then
    if type(value) ~= "table" then
      if value == "" then
        return {}
      end
      value = { value }
    end
    local out = {}
    for i, v in ipairs(value) do
      out[i] = coerce(def.elements, v)
    end
    return out

  elseif t == "record" or t == "foreign" then
    if type(value) ~= "table" then
      return value
    end
    local fields = def.fields
    if t == "foreign" and not fields then
      return value
    end
    for name, sub in each_field(fields) do
      if value[name] ~= nil then
        value[name] = coerce(sub, value[name])
      end
    end
    return value

  elseif t == "map" then
    if type(value) ~= "table" then
      return value
    end
    for k, v in pairs(value) do
      value[k] = coerce(def.values, v)
    end
    return value
  end

  return coerce_scalar(def, value)
end
_M.coerce = coerce


---------------------------------------------------------------------------
-- Defaults
---------------------------------------------------------------------------


local fill_defaults


local function fill_record_defaults(fields, value)
  for name, sub in each_field(fields) do
    value[name] = fill_defaults(sub, value[name])
  end
  return value
end


-- Absent values get the field default. A record without a default gets a
-- table of its own defaults only when it is required; a present record
-- always gets its nested defaults. Explicit nulls are kept (Kong does not
-- replace an explicit null with the default on insert).
fill_defaults = function(def, value)
  if value == nil then
    if def.default ~= nil then
      value = deep_copy(def.default)
    elseif def.type == "record" and def.required then
      value = {}
    else
      return nil
    end
  end

  if value == null or type(value) ~= "table" then
    return value
  end

  local t = def.type
  if t == "record" and def.fields then
    return fill_record_defaults(def.fields, value)

  elseif (t == "array" or t == "set") and def.elements
         and def.elements.type == "record" and is_array(value)
  then
    for i, v in ipairs(value) do
      value[i] = fill_defaults(def.elements, v)
    end

  elseif t == "map" and def.values and def.values.type == "record" then
    for k, v in pairs(value) do
      value[k] = fill_defaults(def.values, v)
    end
  end

  return value
end
_M.fill_defaults = fill_defaults


---------------------------------------------------------------------------
-- Field validation
---------------------------------------------------------------------------


local validate_value
local validate_record


local TYPE_CHECKS = {
  string = function(v) return type(v) == "string" end,
  number = function(v) return type(v) == "number" and v == v end,
  integer = function(v)
    return type(v) == "number" and v == math_floor(v)
           and v > -math_huge and v < math_huge
  end,
  boolean = function(v) return type(v) == "boolean" end,
  array = is_array,
  set = is_array,
  map = function(v) return type(v) == "table" end,
  record = function(v) return type(v) == "table" end,
  foreign = function(v) return type(v) == "table" end,
  ["function"] = function(v) return type(v) == "function" end,
}


local TYPE_ERRORS = {
  string = ERR.STRING,
  number = ERR.NUMBER,
  integer = ERR.INTEGER,
  boolean = ERR.BOOLEAN,
  array = ERR.ARRAY,
  set = ERR.SET,
  map = ERR.MAP,
  record = ERR.RECORD,
  foreign = ERR.RECORD,
  ["function"] = ERR.FUNCTION,
}


local function length_of(value)
  if type(value) == "string" then
    return #value
  end
  if type(value) == "table" then
    local n = 0
    for _ in pairs(value) do
      n = n + 1
    end
    return n
  end
end


local function tostring_value(v)
  if v == null then
    return "null"
  end
  return tostring(v)
end


-- Validators in Kong's order (Schema.validators_order).
local VALIDATORS = {
  { "eq", function(def, v)
      if v ~= def.eq then
        return nil, ERR.EQ:format(tostring_value(def.eq))
      end
    end },
  { "ne", function(def, v)
      if v == def.ne then
        return nil, ERR.NE:format(tostring_value(def.ne))
      end
    end },
  { "not_one_of", function(def, v)
      for _, x in ipairs(def.not_one_of) do
        if v == x then
          return nil, ERR.NOT_ONE_OF:format(table_concat(def.not_one_of, ", "))
        end
      end
    end },
  { "one_of", function(def, v)
      for _, x in ipairs(def.one_of) do
        if v == x then
          return
        end
      end
      return nil, ERR.ONE_OF:format(table_concat(def.one_of, ", "))
    end },
  { "gt", function(def, v)
      if type(v) == "number" and not (v > def.gt) then
        return nil, ERR.GT:format(tostring(def.gt))
      end
    end },
  { "uuid", function(_, v)
      if not utils.is_uuid(v) then
        return nil, ERR.UUID
      end
    end },
  { "between", function(def, v)
      local lo, hi = def.between[1], def.between[2]
      if type(v) == "number" and (v < lo or v > hi) then
        return nil, ERR.BETWEEN:format(lo, hi)
      end
    end },
  { "len_eq", function(def, v)
      if length_of(v) ~= def.len_eq then
        return nil, ERR.LEN_EQ:format(def.len_eq)
      end
    end },
  { "len_min", function(def, v)
      local n = length_of(v)
      if n and n < def.len_min then
        return nil, ERR.LEN_MIN:format(def.len_min)
      end
    end },
  { "len_max", function(def, v)
      local n = length_of(v)
      if n and n > def.len_max then
        return nil, ERR.LEN_MAX:format(def.len_max)
      end
    end },
  { "starts_with", function(def, v)
      if type(v) == "string" and v:sub(1, #def.starts_with) ~= def.starts_with then
        return nil, ERR.STARTS_WITH:format(def.starts_with)
      end
    end },
  { "not_match", function(def, v)
      if type(v) == "string" and v:match(def.not_match) then
        return nil, ERR.NOT_MATCH:format(v)
      end
    end },
  { "match_none", function(def, v)
      for _, m in ipairs(def.match_none) do
        if v:match(m.pattern) then
          return nil, m.err
        end
      end
    end },
  { "match", function(def, v)
      if type(v) == "string" and not v:match(def.match) then
        return nil, ERR.MATCH:format(v)
      end
    end },
  { "match_all", function(def, v)
      for _, m in ipairs(def.match_all) do
        if not v:match(m.pattern) then
          return nil, m.err
        end
      end
    end },
  { "match_any", function(def, v)
      for _, p in ipairs(def.match_any.patterns) do
        if v:match(p) then
          return
        end
      end
      return nil, def.match_any.err
    end },
  { "custom_validator", function(def, v)
      local ok, res, err = pcall(def.custom_validator, v)
      if not ok then
        return nil, ERR.VALIDATION:format(tostring(res))
      end
      if not res then
        return nil, err or ERR.VALIDATION:format("custom validator")
      end
    end },
}


local function run_validators(def, value)
  -- Kong rejects empty strings unless the field says otherwise.
  if def.type == "string" and def.len_min == nil and value == "" then
    return nil, ERR.LEN_MIN:format(1)
  end

  for _, pair in ipairs(VALIDATORS) do
    local key, check = pair[1], pair[2]
    if def[key] ~= nil then
      local ok, err = check(def, value)
      if ok == nil and err then
        return nil, err
      end
    end
  end

  return true
end


local function validate_elements(def, value, ctx)
  local errors
  for i, v in ipairs(value) do
    local ok, err = validate_value(def.elements, v, ctx)
    if not ok then
      errors = errors or {}
      errors[i] = err
    end
  end
  if errors then
    return nil, errors
  end

  if def.type == "set" then
    -- Sets are deduplicated, as Kong stores them.
    local seen, n = {}, 0
    for i = 1, #value do
      local v = value[i]
      local key = type(v) == "table" and cjson.encode(v) or v
      if not seen[key] then
        seen[key] = true
        n = n + 1
        value[n] = v
      end
    end
    for i = #value, n + 1, -1 do
      value[i] = nil
    end
  end

  return true
end


local function validate_map(def, value, ctx)
  local errors
  for k, v in pairs(value) do
    local ok, err = true, nil
    if def.keys then
      ok, err = validate_value(def.keys, k, ctx)
    end
    if ok and def.values then
      ok, err = validate_value(def.values, v, ctx)
    end
    if not ok then
      errors = errors or {}
      errors[k] = err
    end
  end
  if errors then
    return nil, errors
  end
  return true
end


-- Returns true, or nil and an error (a string, or a table for nested
-- types). `ctx.getenv` resolves references.
validate_value = function(def, value, ctx)
  if value == nil or value == null then
    if def.required then
      return nil, ERR.REQUIRED
    end
    if def.eq ~= nil and def.eq ~= null then
      return nil, ERR.EQ:format(tostring_value(def.eq))
    end
    return true
  end

  if def.referenceable and is_reference(value) then
    local _, err = _M.resolve_reference(value, ctx.getenv)
    if err then
      return nil, err
    end
    return true
  end

  local t = def.type
  local check = TYPE_CHECKS[t]
  if not check then
    return nil, "unsupported field type '" .. tostring(t) .. "'"
  end

  if not check(value) then
    return nil, TYPE_ERRORS[t]
  end

  local ok, err = run_validators(def, value)
  if not ok then
    return nil, err
  end

  if (t == "array" or t == "set") and def.elements then
    return validate_elements(def, value, ctx)

  elseif t == "map" then
    return validate_map(def, value, ctx)

  elseif t == "record" and def.fields then
    return validate_record(def, value, ctx)

  elseif t == "foreign" then
    if value.id ~= nil and not utils.is_uuid(value.id) then
      return nil, { id = ERR.UUID }
    end
  end

  return true
end


---------------------------------------------------------------------------
-- Entity checks
---------------------------------------------------------------------------


local function field_sources_of(check_name, arg)
  if check_name == "custom_entity_check" then
    return arg.field_sources or {}
  elseif check_name == "conditional" then
    return { arg.if_field }
  elseif check_name == "conditional_at_least_one_of" then
    return { arg.if_field }
  end
  return arg
end


local ENTITY_CHECKS = {}


ENTITY_CHECKS.at_least_one_of = function(record, fields)
  for _, name in ipairs(fields) do
    if is_nonempty(get_path(record, name)) then
      return true
    end
  end
  return nil, ERR.AT_LEAST_ONE_OF:format(quoted_list(fields))
end


-- How many of `fields` are set in `record`.
local function count_set(record, fields)
  local set = 0
  for _, name in ipairs(fields) do
    if is_nonempty(get_path(record, name)) then
      set = set + 1
    end
  end
  return set
end


ENTITY_CHECKS.only_one_of = function(record, fields)
  if count_set(record, fields) == 1 then
    return true
  end
  return nil, ERR.ONLY_ONE_OF:format(quoted_list(fields))
end


ENTITY_CHECKS.mutually_required = function(record, fields)
  local set = count_set(record, fields)
  if set == 0 or set == #fields then
    return true
  end
  return nil, ERR.MUTUALLY_REQUIRED:format(quoted_list(fields))
end


ENTITY_CHECKS.mutually_exclusive = function(record, fields)
  if count_set(record, fields) <= 1 then
    return true
  end
  return nil, ERR.MUTUALLY_EXCLUSIVE:format(quoted_list(fields))
end


-- Validates `value` against the field at `path` with some attributes
-- replaced, as Kong does for `if_match` / `then_match`.
local function match_field(record_def, path, match, value, ctx)
  local base = get_path_def(record_def, path) or {}
  local def = setmetatable(deep_copy(match), { __index = base })
  -- `required` from the base field must not leak into if_match.
  if match.required == nil then
    def.required = false
  end
  return validate_value(def, value, ctx)
end


ENTITY_CHECKS.conditional = function(record, arg, record_def, ctx)
  local if_value = get_path(record, arg.if_field)
  if not match_field(record_def, arg.if_field, arg.if_match, if_value, ctx) then
    return true
  end

  local then_value = get_path(record, arg.then_field)
  local ok, err = match_field(record_def, arg.then_field, arg.then_match,
                              then_value, ctx)
  if ok then
    return true
  end

  if arg.then_err then
    err = arg.then_err:format(type(err) == "string" and err or "")
  end

  return nil, ERR.CONDITIONAL:format(arg.if_field),
         { [arg.then_field] = err }
end


ENTITY_CHECKS.conditional_at_least_one_of = function(record, arg, record_def, ctx)
  local if_value = get_path(record, arg.if_field)
  local matched = match_field(record_def, arg.if_field, arg.if_match,
                              if_value, ctx)

  local fields, custom_err
  if matched then
    fields, custom_err = arg.then_at_least_one_of, arg.then_err
  elseif arg.else_match == nil or
         match_field(record_def, arg.if_field, arg.else_match, if_value, ctx)
  then
    fields, custom_err = arg.else_then_at_least_one_of, arg.else_then_err
  end

  if not fields then
    return true
  end

  for _, name in ipairs(fields) do
    if is_nonempty(get_path(record, name)) then
      return true
    end
  end

  return nil, custom_err or
              ERR.CONDITIONAL_AT_LEAST_ONE_OF:format(quoted_list(fields))
end


ENTITY_CHECKS.custom_entity_check = function(record, arg)
  local ok, res, err = pcall(arg.fn, record)
  if not ok then
    return nil, ERR.VALIDATION:format(tostring(res))
  end
  if not res then
    return nil, err or ERR.VALIDATION:format("custom entity check")
  end
  return true
end


local function run_entity_checks(record_def, record, errors, ctx)
  for _, check in ipairs(record_def.entity_checks or {}) do
    local name, arg = next(check)
    local fn = ENTITY_CHECKS[name]
    if not fn then
      add_entity_error(errors, "unsupported entity check '" .. tostring(name) .. "'")

    else
      -- A check over fields that already failed would only add noise.
      local skip = false
      for _, path in ipairs(field_sources_of(name, arg)) do
        if has_error_at(errors, path) then
          skip = true
          break
        end
      end

      if not skip then
        local ok, err, field_errors = fn(record, arg, record_def, ctx)
        if not ok then
          if field_errors then
            for path, field_err in pairs(field_errors) do
              set_error(errors, path, field_err)
            end
          end
          add_entity_error(errors, err)
        end
      end
    end
  end
end


validate_record = function(def, value, ctx)
  local errors = {}

  for name, sub in each_field(def.fields) do
    local ok, err = validate_value(sub, value[name], ctx)
    if not ok then
      errors[name] = err
    end
  end

  for k in pairs(value) do
    if type(k) ~= "string" or not find_field(def.fields, k) then
      errors[k] = ERR.UNKNOWN
    end
  end

  run_entity_checks(def, value, errors, ctx)

  if next(errors) then
    return nil, errors
  end
  return true
end


-- Removes explicit nulls so that plugins see absent values as nil, like
-- Kong's DAO with `nulls = false`.
local function strip_nulls(value)
  if type(value) ~= "table" then
    return value
  end
  for k, v in pairs(value) do
    if v == null then
      value[k] = nil
    else
      strip_nulls(v)
    end
  end
  return value
end
_M.strip_nulls = strip_nulls


---------------------------------------------------------------------------
-- Error messages
---------------------------------------------------------------------------


local function flatten_errors(errors, prefix, out)
  for k, v in pairs(errors) do
    if k == ENTITY then
      for _, msg in ipairs(v) do
        out[#out + 1] = msg
      end
    else
      local path = prefix and (prefix .. "." .. tostring(k)) or tostring(k)
      if type(v) == "table" then
        flatten_errors(v, path, out)
      else
        out[#out + 1] = path .. ": " .. tostring(v)
      end
    end
  end
  return out
end


-- "schema violation (a: x)" or "2 schema violations (a: x; b: y)".
function _M.errors_message(errors)
  local list = flatten_errors(errors, nil, {})
  table_sort(list)
  if #list == 1 then
    return "schema violation (" .. list[1] .. ")"
  end
  return string_format("%d schema violations (%s)", #list,
                       table_concat(list, "; "))
end


-- Kong's error object for HTTP 400 answers.
function _M.schema_violation(errors)
  return {
    code = 2,
    name = "schema violation",
    message = _M.errors_message(errors),
    fields = errors,
  }
end


---------------------------------------------------------------------------
-- Records and plugin entities
---------------------------------------------------------------------------


-- Validates a record value against a record definition
-- (`{ type = "record", fields = ..., entity_checks = ... }`).
-- Returns a copy with defaults filled in and nulls removed, or
-- nil, errors, message.
function _M.validate_record(def, value, opts)
  opts = opts or {}
  if type(value) ~= "table" then
    local errors = { [ENTITY] = { ERR.RECORD } }
    return nil, errors, _M.errors_message(errors)
  end

  value = deep_copy(value)
  if opts.coerce then
    value = coerce(def, value)
  end
  value = fill_record_defaults(def.fields, value)

  local ok, errors = validate_record(def, value, { getenv = opts.getenv })
  if not ok then
    return nil, errors, _M.errors_message(errors)
  end

  return strip_nulls(value)
end


local DEFAULT_PROTOCOLS = { "grpc", "grpcs", "http", "https", "ws", "wss",
                            "tcp", "tls", "tls_passthrough", "udp" }


-- Kong's `plugins` entity; a plugin's own schema overrides these fields.
local function base_plugin_fields()
  return {
    { id = { type = "string", uuid = true } },
    { name = { type = "string", required = true } },
    { instance_name = { type = "string" } },
    { created_at = { type = "integer" } },
    { updated_at = { type = "integer" } },
    { route = { type = "foreign", reference = "routes" } },
    { service = { type = "foreign", reference = "services" } },
    { consumer = { type = "foreign", reference = "consumers" } },
    { protocols = { type = "set", required = true, default = DEFAULT_PROTOCOLS,
                    elements = { type = "string", one_of = DEFAULT_PROTOCOLS } } },
    { enabled = { type = "boolean", required = true, default = true } },
    { tags = { type = "set", elements = { type = "string" } } },
    { config = { type = "record", required = true, fields = {} } },
  }
end


local entity_defs = setmetatable({}, { __mode = "k" })


-- The full entity definition for a plugin schema (memoized).
function _M.plugin_entity_def(plugin_schema)
  local cached = entity_defs[plugin_schema]
  if cached then
    return cached
  end

  local fields = base_plugin_fields()
  for name, def in each_field(plugin_schema.fields) do
    local replaced = false
    for i, f in ipairs(fields) do
      if next(f) == name then
        fields[i] = { [name] = def }
        replaced = true
        break
      end
    end
    if not replaced then
      fields[#fields + 1] = { [name] = def }
    end
  end

  local config = find_field(fields, "config")
  if config.required == nil then
    -- Kong always gives a plugin a config table, filled with defaults.
    for i, f in ipairs(fields) do
      if next(f) == "config" then
        fields[i] = { config = setmetatable({ required = true },
                                            { __index = config }) }
      end
    end
  end

  local def = {
    type = "record",
    fields = fields,
    entity_checks = plugin_schema.entity_checks,
  }
  entity_defs[plugin_schema] = def
  return def
end


local registered = {}


-- Makes a plugin schema known without a `kong.plugins.<name>.schema`
-- module on the package path (used by specs).
function _M.register_plugin_schema(name, plugin_schema)
  registered[name] = plugin_schema
end


-- Loads `kong.plugins.<name>.schema`. Returns the schema or nil, err.
function _M.load_plugin_schema(name)
  if registered[name] then
    return registered[name]
  end

  local ok, res = pcall(require, "kong.plugins." .. name .. ".schema")
  if not ok then
    return nil, res
  end

  if type(res) ~= "table" or type(res.fields) ~= "table" then
    return nil, "schema of plugin '" .. name .. "' has no fields"
  end

  if not find_field(res.fields, "config") then
    return nil, "schema of plugin '" .. name .. "' has no 'config' field"
  end

  registered[name] = res
  return res
end


-- Validates a plugin entity `{ name, config, route, protocols, enabled, ... }`.
--
-- opts (all optional):
--   schema          the plugin schema table (else loaded by name)
--   enabled         set of enabled plugin names: name -> true
--   coerce          coerce strings from form input to the schema types
--   getenv          function(name) used to resolve `{vault://env/...}`
--
-- Returns the entity with defaults filled in and nulls removed
-- (references are kept as given), or nil, errors, message.
function _M.validate_plugin(entity, opts)
  opts = opts or {}

  if type(entity) ~= "table" then
    local errors = { [ENTITY] = { ERR.RECORD } }
    return nil, errors, _M.errors_message(errors)
  end

  local name = entity.name
  if name == nil or name == null then
    local errors = { name = ERR.REQUIRED }
    return nil, errors, _M.errors_message(errors)
  end

  if type(name) ~= "string" then
    local errors = { name = ERR.STRING }
    return nil, errors, _M.errors_message(errors)
  end

  local plugin_schema = opts.schema
  if not plugin_schema then
    if opts.enabled and not opts.enabled[name] then
      local errors = { name = ERR.PLUGIN_NOT_ENABLED:format(name) }
      return nil, errors, _M.errors_message(errors)
    end

    local err
    plugin_schema, err = _M.load_plugin_schema(name)
    if not plugin_schema then
      local errors = { name = ERR.PLUGIN_NOT_ENABLED:format(name) }
      return nil, errors, _M.errors_message(errors), err
    end
  end

  return _M.validate_record(_M.plugin_entity_def(plugin_schema), entity, opts)
end


-- Returns a copy of `config` where every referenceable field holding a
-- `{vault://...}` reference is replaced by its value, or nil, err.
function _M.resolve_references(plugin_schema, config, getenv)
  local config_def = find_field(plugin_schema.fields, "config")

  local function walk(def, value, path)
    if value == nil or value == null or not def then
      return value
    end

    if def.referenceable and is_reference(value) then
      local resolved, err = _M.resolve_reference(value, getenv)
      if not resolved then
        return nil, path .. ": " .. err
      end
      return resolved
    end

    if type(value) ~= "table" then
      return value
    end

    if def.type == "record" and def.fields then
      for name, sub in each_field(def.fields) do
        local v, err = walk(sub, value[name], path .. "." .. name)
        if err then
          return nil, err
        end
        value[name] = v
      end

    elseif (def.type == "array" or def.type == "set") and def.elements then
      for i, item in ipairs(value) do
        local v, err = walk(def.elements, item, path .. "." .. i)
        if err then
          return nil, err
        end
        value[i] = v
      end

    elseif def.type == "map" and def.values then
      for k, item in pairs(value) do
        local v, err = walk(def.values, item, path .. "." .. tostring(k))
        if err then
          return nil, err
        end
        value[k] = v
      end
    end

    return value
  end

  return walk(config_def, deep_copy(config), "config")
end


-- The definition of field `name` in a Kong `fields` list.
function _M.find_field(fields, name)
  return find_field(fields, name)
end


return _M
