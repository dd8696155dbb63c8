-- Kong's `consumers` and `certificates` entities and key-auth's `keyauth_credentials`: their schemas,
-- and the changes the Admin API and the declarative config make to them in the stored document, with
-- Kong's checks (schema, unique fields, the foreign consumer) and cascades.
--
-- Each change works on the document `store.update` hands over and answers what Kong's DAO would:
--   entity | nil, { errors = } | nil, { unique = } | nil, { foreign = } | nil, { status = 404 }
--
-- Certificates are checked for a PEM header only (Kong parses them with OpenSSL: "invalid certificate").

local schema = require "kong_host.schema"
local typedefs = require "kong.db.schema.typedefs"
local utils = require "kong_host.utils"
local json = require "kong_host.json"


local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring


local null = json.null
local deep_copy = utils.deep_copy


local _M = {}


local PEM = "%-%-%-%-%-BEGIN "


-- name -> { def = <record>, unique = { field, ... }, endpoint_key = <field a path segment may name>,
--           parent = <foreign field> }
local DAOS = {
  consumers = {
    def = {
      type = "record",
      fields = {
        { id = typedefs.uuid },
        { created_at = { type = "integer" } },
        { updated_at = { type = "integer" } },
        { username = { type = "string" } },
        { custom_id = { type = "string" } },
        { tags = typedefs.tags },
      },
      entity_checks = { { at_least_one_of = { "custom_id", "username" } } },
    },
    unique = { "username", "custom_id" },
    endpoint_key = "username",
  },
  certificates = {
    def = {
      type = "record",
      fields = {
        { id = typedefs.uuid },
        { created_at = { type = "integer" } },
        { updated_at = { type = "integer" } },
        { cert = { type = "string", required = true, match = PEM, referenceable = true } },
        { key = { type = "string", required = true, match = PEM, referenceable = true, encrypted = true } },
        { cert_alt = { type = "string", match = PEM, referenceable = true } },
        { key_alt = { type = "string", match = PEM, referenceable = true, encrypted = true } },
        { tags = typedefs.tags },
      },
      entity_checks = { { mutually_required = { "cert_alt", "key_alt" } } },
    },
    unique = {},
  },
  keyauth_credentials = {
    def = {
      type = "record",
      fields = {
        { id = typedefs.uuid },
        { created_at = { type = "integer" } },
        { consumer = { type = "foreign", reference = "consumers", required = true } },
        { key = { type = "string", required = true } },
        { ttl = { type = "integer", between = { 0, 100000000 } } },
        { tags = typedefs.tags },
      },
    },
    unique = { "key" },
    endpoint_key = "key",
    parent = "consumer",
  },
}
_M.DAOS = DAOS


-- The entity names, in the order a document lists them.
_M.NAMES = { "consumers", "certificates", "keyauth_credentials" }


-- The entity `name` of `doc` whose id or endpoint key is `id_or_key`, and its index.
function _M.find(doc, name, id_or_key)
  local key_field = DAOS[name].endpoint_key
  for i, entity in ipairs(doc[name]) do
    if entity.id == id_or_key or (key_field and entity[key_field] == id_or_key) then
      return entity, i
    end
  end
end


local function foreign_id(ref)
  return type(ref) == "table" and ref.id or nil
end


-- The entities `name` of `doc` whose `parent` foreign key is `parent_id` (every one without a parent).
function _M.list(doc, name, parent_id)
  if not parent_id then
    return doc[name]
  end
  local out = {}
  for _, entity in ipairs(doc[name]) do
    if foreign_id(entity[DAOS[name].parent]) == parent_id then
      out[#out + 1] = entity
    end
  end
  return out
end


-- A key as Kong's key-auth generates one: 32 hex digits, from the kernel's random source (a key is a
-- secret, math.random is not).
local function random_key()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(16)
  f:close()
  return (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end


-- Validates `input` as entity `name` and stores it in `doc`, replacing the entity at `index` when given.
-- opts: coerce (form input), now (timestamp), getenv (references).
function _M.save(doc, name, input, index, opts)
  local dao = DAOS[name]
  input = deep_copy(input)
  input.id = input.id or utils.uuid()
  input.created_at = input.created_at or opts.now
  if schema.find_field(dao.def.fields, "updated_at") then
    input.updated_at = opts.now
  end
  if name == "keyauth_credentials" and (input.key == nil or input.key == null) then
    input.key = random_key()
  end
  local entity, errors = schema.validate_record(dao.def, input, { coerce = opts.coerce, getenv = opts.getenv })
  if not entity then
    return nil, { errors = errors }
  end
  for _, field in ipairs(dao.unique) do
    local value = entity[field]
    if value ~= nil then
      for i, other in ipairs(doc[name]) do
        if i ~= index and other[field] == value then
          return nil, { unique = { [field] = value } }
        end
      end
    end
  end
  if dao.parent then
    local parent_id = foreign_id(entity[dao.parent])
    if not (parent_id and _M.find(doc, "consumers", parent_id)) then
      return nil, { foreign = entity[dao.parent] }
    end
    entity[dao.parent] = { id = parent_id }
  end
  if index then
    doc[name][index] = entity
  else
    for _, other in ipairs(doc[name]) do
      if other.id == entity.id then
        return nil, { unique = { id = entity.id } }
      end
    end
    doc[name][#doc[name] + 1] = entity
  end
  return entity
end


-- Removes entity `name` at `index` of `doc`, and what Kong deletes with it: a consumer's credentials and
-- the plugins scoped to it.
function _M.delete(doc, name, index)
  local entity = table.remove(doc[name], index)
  if name ~= "consumers" then
    return
  end
  local kept = {}
  for _, credential in ipairs(doc.keyauth_credentials) do
    if foreign_id(credential.consumer) ~= entity.id then
      kept[#kept + 1] = credential
    end
  end
  doc.keyauth_credentials = kept
  local plugins = {}
  for _, plugin in ipairs(doc.plugins) do
    if foreign_id(plugin.consumer) == entity.id then
      doc.revisions[plugin.id] = nil
    else
      plugins[#plugins + 1] = plugin
    end
  end
  doc.plugins = plugins
end


-- What the Admin API shows of an entity: every field, unset ones as null.
function _M.render(name, entity)
  local out = {}
  for k, v in pairs(entity) do
    out[k] = v
  end
  for _, field in ipairs(DAOS[name].def.fields) do
    local field_name, def = next(field)
    if out[field_name] == nil then
      out[field_name] = null
    elseif (def.type == "set" or def.type == "array") and #out[field_name] == 0 then
      out[field_name] = json.EMPTY_ARRAY
    end
  end
  return out
end


-- Per-worker indexes of the document's entities for the PDK (`kong.db`): name -> field -> value ->
-- entity, for the id and the unique fields.
function _M.index(doc)
  local indexes = {}
  for _, name in ipairs(_M.NAMES) do
    local by = { id = {} }
    for _, field in ipairs(DAOS[name].unique) do
      by[field] = {}
    end
    for _, entity in ipairs(doc[name] or {}) do
      for field, map in pairs(by) do
        local value = entity[field]
        if value ~= nil then
          map[tostring(value)] = entity
        end
      end
    end
    indexes[name] = by
  end
  return indexes
end


return _M
