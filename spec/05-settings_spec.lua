-- schema.lua is the one source of the bounds users see; the native module checks the conf it is handed
-- again (src/schema.rs). These must agree field by field: the same fields, types, required flags and
-- constraints, and the same verdict on values at and beyond every bound. Runs under plain LuaJIT with the
-- built module (make build).
package.path = "kong-plugin/?.lua;host/lua/?.lua;" .. package.path
package.cpath = (os.getenv("CC_ROOT") or ".") .. "/target/lua/?.so;" .. package.cpath

local cjson = require "cjson"
local native = require "confluent_consume_native"
local kong_schema = require "kong_host.schema"
local typedefs = require "kong.db.schema.typedefs"
local SCHEMAS = {
  ["confluent-consume"] = require "kong.plugins.confluent-consume.schema",
  ["kafka-consume"] = require "kong.plugins.kafka-consume.schema",
}
local plugin_schema = SCHEMAS["confluent-consume"]


local null = cjson.null
-- The keys of a field definition that constrain its values, and those that do not.
local CONSTRAINTS = { "between", "one_of", "not_one_of", "len_min", "len_max", "match", "custom_validator",
                      "uuid" }
local NOT_CONSTRAINTS = { type = true, required = true, description = true, default = true, encrypted = true,
                          referenceable = true, fields = true, elements = true, keys = true, values = true }
-- message_functions.validate compiles Lua, which only schema.lua does: natively any string passes, so the
-- probes of a `lua_function` are sources that compile
local CUSTOM_VALIDATORS = {
  [typedefs.host.custom_validator] = "host",
  [require("kong.plugins.confluent-consume.message_functions").validate] = "lua_function",
}


local function config_def(schema)
  for _, entry in ipairs(schema.fields) do
    if entry.config then
      return entry.config
    end
  end
end


-- A plugin schema's config fields in the shape of native.config_fields(): path -> { type, required, constraints... }
-- (`a[]` for the elements of an array of scalars, `a{}` for the values of a map). Unknown constraint keys
-- are collected in `unknown`, and so is anything but a string type on a map's keys (JSON's keys are
-- strings, so the native side has nothing to check there).
local function schema_fields(schema)
  local out, unknown = {}, {}
  local walk
  local function describe(path, def)
    local described = { type = def.type, required = def.required == true }
    for key in pairs(def) do
      if not NOT_CONSTRAINTS[key] then
        local known = false
        for _, c in ipairs(CONSTRAINTS) do
          known = known or c == key
        end
        if not known then
          unknown[#unknown + 1] = path .. "." .. key
        end
      end
    end
    for _, key in ipairs(CONSTRAINTS) do
      local value = def[key]
      if key == "custom_validator" and value then
        value = CUSTOM_VALIDATORS[value] or "unknown custom validator"
      end
      described[key] = value
    end
    out[path] = described
    if def.fields then
      walk(def.fields, path .. ".")
    end
    if def.elements and def.elements.fields then
      walk(def.elements.fields, path .. "[].")
    elseif def.elements then
      describe(path .. "[]", def.elements)
    end
    if def.values then
      describe(path .. "{}", def.values)
    end
    for key, value in pairs(def.keys or {}) do
      if key ~= "type" or value ~= "string" then
        unknown[#unknown + 1] = path .. ".keys." .. key
      end
    end
  end
  walk = function(fields, prefix)
    for _, entry in ipairs(fields) do
      local name, def = next(entry)
      describe(prefix .. name, def)
    end
  end
  walk(config_def(schema).fields, "")
  return out, unknown
end


local copy = require("kong_host.utils").deep_copy


-- Sets `value` at `path` (`a[].b` meaning the first element's b, a final `a[]` the first element, a final
-- `a{}` the value of key `k`) in `t`, creating records on the way.
local function set(t, path, value)
  local parts = {}
  for part in path:gmatch("[^%.]+") do
    parts[#parts + 1] = part
  end
  for i = 1, #parts - 1 do
    local name = parts[i]:gsub("%[%]$", "")
    if t[name] == nil or t[name] == null then
      t[name] = {}
    end
    t = t[name]
    if name ~= parts[i] then
      t = t[1]
    end
  end
  local last = parts[#parts]
  if last:find("%[%]$") then
    t[last:sub(1, -3)] = { value }
  elseif last:find("{}$") then
    t[last:sub(1, -3)] = { k = value }
  else
    t[last] = value
  end
end


-- A valid plugin config whose fields near `path` are set, so a value at `path` is judged on its own
-- (credentials and client certificates come in pairs; a group id needs the manual mode).
local function base_for(path)
  local config = {
    bootstrap_servers = { { host = "127.0.0.1", port = 9092 } },
    topics = { { name = "orders" } },
  }
  local oauthbearer = { token_endpoint_url = "https://idp.example/token", client_id = "c", client_secret = "s" }
  if path:find("^authentication%.oauthbearer%.") then
    config.authentication = { strategy = "sasl", mechanism = "OAUTHBEARER", oauthbearer = oauthbearer }
  elseif path:find("^oauthbearer%.") then
    config.oauthbearer = oauthbearer
  elseif path:find("^authentication%.") then
    config.authentication = { strategy = "sasl", mechanism = "PLAIN", user = "u", password = "p" }
  elseif path:find("^cluster_api_") then
    config.cluster_api_key, config.cluster_api_secret = "k", "s"
  elseif path:find("^security%.client_") then
    config.security = { client_certificate = "-----BEGIN CERTIFICATE-----\n",
                         client_key = "-----BEGIN PRIVATE KEY-----\n" }
  elseif path:find("^consumer_group%.") then
    config.consumer_group = { mode = "manual", consumer_group_id = "g" }
  elseif path:find("schema_registry%.") then
    -- every record of a registry present, so that a value at one of its fields is judged alone
    local registry = { confluent = {
      url = "http://127.0.0.1:8081",
      authentication = {
        basic = { username = "u", password = "p" },
        oauth2 = { token_endpoint = "https://idp.example/token" },
        oauth2_client = {},
      },
    } }
    config.schema_registry = copy(registry)
    config.topics[1].schema_registry = copy(registry)
  end
  return config
end


local function kong_accepts(plugin, config)
  return kong_schema.validate_plugin({ name = plugin, config = config },
                                     { schema = SCHEMAS[plugin] }) ~= nil
end


-- The native verdict on `config` of `plugin` with `value` at `path`, the rest as Kong hands it over
-- (defaults filled).
local function native_accepts(plugin, config, path, value)
  local entity = assert(kong_schema.validate_plugin({ name = plugin, config = config },
                                                    { schema = SCHEMAS[plugin] }))
  local conf = copy(entity.config)
  conf.__plugin_id, conf.__key__ = "5f4034c2-0000-4000-8000-000000000000", "k"
  set(conf, path, value)
  -- the plugin hands the certificate entity certificate_id names over with the conf (consumers.lua)
  local handover = conf.security.certificate_id and {
    certificate = { cert = "-----BEGIN CERTIFICATE-----\n", key = "-----BEGIN PRIVATE KEY-----\n" },
  }
  local settings, err = native.settings(conf, plugin, handover)
  if not settings then
    return false, err
  end
  return true
end


-- Values at and just beyond each constraint of `def`, plus samples for patterns and host names.
local function probes(def)
  if def.custom_validator == "lua_function" then
    return { "", "return function(m) return m end", 1 }
  end
  local values = {}
  local function add(v) values[#values + 1] = v end
  if def.between then
    add(def.between[1] - 1); add(def.between[1]); add(def.between[2]); add(def.between[2] + 1)
  end
  for _, v in ipairs(def.one_of or {}) do add(v) end
  if def.one_of then add("bogus") end
  for _, v in ipairs(def.not_one_of or {}) do add(v) end
  if def.len_min then add(("a"):rep(def.len_min - 1)); add(("a"):rep(def.len_min)) end
  if def.len_max then add(("a"):rep(def.len_max)); add(("a"):rep(def.len_max + 1)) end
  if def.match then
    for _, v in ipairs({ "orders", "a.b_c-D9", "bad topic", "t!", "-----BEGIN CERTIFICATE-----\nx",
                         "x -----BEGIN KEY", "-----BEGIN", "no pem", "", "https://idp.example/t?a=1",
                         "HTTP://127.0.0.1:8080/token", "https://", "https://a b", "ftp://x", "read:orders",
                         "caf\195\169" }) do
      add(v)
    end
  end
  if def.custom_validator then
    for _, v in ipairs({ "127.0.0.1", "::1", "[::1]", "broker-1.example.com", "kafka_1", "a,b", "a b",
                         "a..b", "-a", "a-", "a/b", ("a"):rep(64), ("a."):rep(127) .. "a", "" }) do
      add(v)
    end
  end
  if def.uuid then
    for _, v in ipairs({ "5f4034c2-0000-4000-8000-000000000000", "5F4034C2-AAAA-bbbb-CCCC-0123456789ab",
                         "5f4034c2000040008000000000000000", "5f4034c2-0000-4000-8000-00000000000",
                         "g0000000-0000-4000-8000-000000000000", "" }) do
      add(v)
    end
  end
  if def.type == "integer" then add(1.5); add("1") end
  if def.type == "string" then add(1) end
  return values
end


for _, plugin in ipairs({ "confluent-consume", "kafka-consume" }) do
  describe("the native module's copy of " .. plugin .. "'s schema.lua rules", function()
    it("has every field of schema.lua's config, with the same type, required flag and constraints", function()
      local expected, unknown = schema_fields(SCHEMAS[plugin])
      assert.same({}, unknown, "constraints the native side cannot mirror yet: teach src/schema.rs and this spec")
      local actual = native.config_fields(plugin)
      for path, def in pairs(expected) do
        assert.is_table(actual[path], path .. " is in schema.lua, not in src/schema.rs")
        assert.same(def, actual[path], path)
      end
      for path in pairs(actual) do
        assert.is_table(expected[path], path .. " is in src/schema.rs, not in schema.lua")
      end
      -- not vacuous: the fields that drifted before are compared
      assert.same({ 1, 10000 }, actual.fetch_wait_max_ms.between)
      assert.same({ 65536, 1024 * 1024 * 1024 }, actual.buffer_max_bytes.between)
    end)

    it("judges values at and beyond every bound as Kong does", function()
      local compared = 0
      for path, def in pairs(schema_fields(SCHEMAS[plugin])) do
        if def.type ~= "record" and def.type ~= "array" then
          for _, value in ipairs(probes(def)) do
            local config = base_for(path)
            local expected = kong_accepts(plugin, (function()
              local c = copy(config)
              set(c, path, value)
              return c
            end)())
            local accepted, err = native_accepts(plugin, config, path, value)
            assert.equal(expected, accepted, string.format("%s = %q: Kong %s it, the native module %s it (%s)",
              path, tostring(value), expected and "accepts" or "refuses", accepted and "accepts" or "refuses",
              tostring(err)))
            if not accepted then
              -- an element is named by its index, a map's value by the map
              assert.matches(path:gsub("%[%]", "[1]"):gsub("{}", ""):gsub("[%.%[%]%-]", "%%%0") .. ": ", err)
            end
            compared = compared + 1
          end
        end
      end
      assert.is_true(compared > 100, compared .. " values compared")
    end)

    it("accepts every config Kong accepts with its defaults, and refuses arrays Kong refuses", function()
      local entity = assert(kong_schema.validate_plugin({ name = plugin, config = base_for("") },
                                                        { schema = SCHEMAS[plugin] }))
      local conf = copy(entity.config)
      conf.__plugin_id = "p"
      assert(native.settings(conf, plugin))
      conf.topics = {}
      local settings, err = native.settings(conf, plugin)
      assert.is_nil(settings)
      assert.equal("invalid configuration: topics: length must be at least 1", err)
    end)
  end)
end


describe("kafka-consume's schema", function()
  local variants = require "kong.plugins.confluent-consume.variants"

  it("is confluent-consume's without the fields Kong's kafka-consume lacks, which both sides refuse", function()
    local confluent, kafka = schema_fields(SCHEMAS["confluent-consume"]), schema_fields(SCHEMAS["kafka-consume"])
    local omitted = {}
    for path in pairs(confluent) do
      -- a record kafka-consume lacks goes with its fields
      if not kafka[path] and not path:find("[%.%[{]") then
        omitted[path] = true
      end
    end
    assert.same(variants.CONFLUENT_ONLY, omitted)
    for path in pairs(omitted) do
      local config = base_for("")
      config[path] = path:find("keepalive_enabled", 1, true) and true or
                     (path == "keepalive" and 1000) or
                     (path == "oauthbearer" and { client_id = "c", token_endpoint_tls_verify = true }) or "value"
      local _, err = kong_schema.validate_plugin({ name = "kafka-consume", config = config },
                                                 { schema = SCHEMAS["kafka-consume"] })
      assert.same({ config = { [path] = "unknown field" } }, err, path)
      local conf = copy(assert(kong_schema.validate_plugin({ name = "kafka-consume", config = base_for("") },
                                                           { schema = SCHEMAS["kafka-consume"] })).config)
      conf.__plugin_id, conf[path] = "p", config[path]
      local settings, native_err = native.settings(conf, "kafka-consume")
      assert.is_nil(settings)
      assert.equal("invalid configuration: " .. path .. ": unknown field", native_err)
    end
  end)

  it("defaults auto_offset_reset as Kong does: latest for kafka-consume, earliest for confluent-consume", function()
    local function defaults(plugin)
      return assert(kong_schema.validate_plugin({ name = plugin, config = base_for("") },
                                                { schema = SCHEMAS[plugin] })).config
    end
    assert.equal("latest", defaults("kafka-consume").auto_offset_reset)
    assert.equal("earliest", defaults("confluent-consume").auto_offset_reset)
    assert.is_false(defaults("kafka-consume").enforce_latest_offset_reset)
    assert.is_false(defaults("confluent-consume").error_handling.return_error_message)
    assert.equal(60000, defaults("confluent-consume").keepalive)
    assert.is_nil(defaults("kafka-consume").keepalive)
  end)

  it("agrees with schema.lua's entity checks on SASL/OAUTHBEARER and tokenauth", function()
    local function oauthbearer(changes)
      local record = { token_endpoint_url = "https://idp.example/token", client_id = "c", client_secret = "s",
                       token_endpoint_tls_verify = true }
      for k, v in pairs(changes or {}) do
        record[k] = v
      end
      return record
    end
    local scram = { strategy = "sasl", mechanism = "SCRAM-SHA-256", user = "u", password = "p" }
    local cases = {
      { true, { oauthbearer = oauthbearer() } },
      { true, { oauthbearer = oauthbearer({ token_endpoint_tls_verify = false }) } },
      { true, { authentication = { strategy = "sasl", mechanism = "OAUTHBEARER",
                                   oauthbearer = oauthbearer({ token_endpoint_tls_verify = false }) } } },
      { true, { oauthbearer = oauthbearer({ token_endpoint_url = "http://127.0.0.1:1/t",
                                            token_endpoint_tls_verify = false }) } },
      { false, { oauthbearer = { client_id = "c", token_endpoint_tls_verify = true } } },
      { true, { oauthbearer = { token_endpoint_tls_verify = true } } },
      { true, { oauthbearer = oauthbearer(), cluster_api_key = "k", cluster_api_secret = "s" } },
      { false, { oauthbearer = oauthbearer(), authentication = scram } },
      { true, { authentication = { strategy = "sasl", mechanism = "OAUTHBEARER", oauthbearer = oauthbearer() } } },
      { false, { authentication = { strategy = "sasl", mechanism = "OAUTHBEARER" } } },
      { false, { authentication = { strategy = "sasl", mechanism = "SCRAM-SHA-256", user = "u", password = "p",
                                    tokenauth = true } } },
      { true, { authentication = { strategy = "sasl", mechanism = "SCRAM-SHA-256", user = "u", password = "p",
                                   tokenauth = false } } },
      { true, { oauthbearer = oauthbearer({ scopes = { "kafka", "read:orders" },
                                            extensions = { logicalCluster = "lkc-1", identityPoolId = "pool-X" } }) } },
      { false, { oauthbearer = oauthbearer({ extensions = { auth = "x" } }) } },
      { false, { oauthbearer = oauthbearer({ extensions = { k1 = "x" } }) } },
      { true, { oauthbearer = oauthbearer({ extensions = { k = "a,b" } }) } },
      { false, { oauthbearer = oauthbearer({ extensions = { k = "caf\195\169" } }) } },
    }
    local entity = assert(kong_schema.validate_plugin({ name = "confluent-consume", config = base_for("") },
                                                      { schema = plugin_schema }))
    for i, case in ipairs(cases) do
      local expected, overrides = case[1], case[2]
      local config = base_for("")
      local conf = copy(entity.config)
      conf.__plugin_id = "p"
      for k, v in pairs(overrides) do
        config[k], conf[k] = copy(v), copy(v)
      end
      assert.equal(expected, kong_accepts("confluent-consume", config), "case " .. i .. " in Kong")
      local settings, err = native.settings(conf)
      assert.equal(expected, settings ~= nil, "case " .. i .. " natively: " .. tostring(err))
    end
  end)
end)


describe("the consumer identity", function()
  local function identity(overrides)
    local config = base_for("")
    for k, v in pairs(overrides) do
      config[k] = v
    end
    local conf = copy(assert(kong_schema.validate_plugin({ name = "confluent-consume", config = config },
                                                         { schema = plugin_schema })).config)
    conf.__plugin_id = "p"
    local settings, identity = native.settings(conf)
    assert(settings, identity)
    return identity
  end

  it("is shared by configs that differ only in request-side options", function()
    assert.equal(identity({}), identity({ max_records = 5, max_bytes = 100, max_wait = 0, timeout = 1 }))
    assert.equal(identity({ mode = "server-sent-events" }),
                 identity({ mode = "server-sent-events", heartbeat_interval = 1000, retry_interval = 0,
                            max_catchup_streams = 1 }))
    assert.equal(identity({}), identity({ max_consumer_groups = 1 }))
  end)

  it("differs when the consumer differs", function()
    local base = identity({})
    assert.not_equal(base, identity({ fetch_wait_max_ms = 20 }))
    assert.not_equal(base, identity({ topics = { { name = "other" } } }))
    assert.not_equal(base, identity({ mode = "server-sent-events" }))
    assert.not_equal(base, identity({ consumer_group = { mode = "manual", consumer_group_id = "g" } }))
    -- the registry decides how records render, the DLQ where failing ones go
    local registry = { confluent = { url = "http://127.0.0.1:8081" } }
    local with_registry = identity({ schema_registry = registry })
    assert.not_equal(base, with_registry)
    assert.equal(with_registry, identity({ topics = { { name = "orders", schema_registry = registry } } }))
    assert.not_equal(with_registry, identity({ schema_registry = { confluent = { url = "http://127.0.0.1:8082" } } }))
    assert.not_equal(with_registry, identity({ schema_registry = { confluent = {
      url = "http://127.0.0.1:8081", authentication = { mode = "basic", basic = { username = "u", password = "p" } } } } }))
    assert.not_equal(base, identity({ enable_dlq = true, dlq_topic = "dead" }))
    assert.equal(base, identity({ enable_dlq = false, dlq_topic = "dead" }))
  end)

  it("agrees with schema.lua's entity checks on the registries' credentials and the DLQ", function()
    local function registry(authentication)
      return { confluent = { url = "http://127.0.0.1:8081", authentication = authentication } }
    end
    local oauth2 = { token_endpoint = "https://idp.example/token" }
    local cases = {
      { true, { schema_registry = registry({ mode = "basic", basic = { username = "u", password = "p" } }) } },
      { false, { schema_registry = registry({ mode = "basic" }) },
        "basic authentication details required when mode is 'basic'" },
      { false, { topics = { { name = "orders", schema_registry = registry({ mode = "basic" }) } } },
        "basic authentication details required when mode is 'basic'" },
      { true, { schema_registry = registry({ mode = "oauth2", oauth2 = oauth2 }) } },
      { false, { schema_registry = registry({ mode = "oauth2" }) },
        "oauth2 authentication details required when mode is 'oauth2'" },
      { false, { schema_registry = registry({ mode = "oauth2", oauth2 = { token_endpoint = oauth2.token_endpoint,
                                                                          grant_type = "password" } }) } },
      { true, { schema_registry = registry({ mode = "oauth2", oauth2 = { token_endpoint = oauth2.token_endpoint,
                grant_type = "password", username = "u", password = "p" } }) } },
      { true, { schema_registry = registry({ mode = "none", basic = { username = "u", password = "p" } }) } },
      { true, { enable_dlq = true, dlq_topic = "dead" } },
      { false, { enable_dlq = true }, "dlq_topic is required when enable_dlq is true" },
      { true, { enable_dlq = false } },
    }
    for i, case in ipairs(cases) do
      local expected, overrides, message = case[1], case[2], case[3]
      local config = base_for("")
      for k, v in pairs(overrides) do
        config[k] = copy(v)
      end
      local entity, err = kong_schema.validate_plugin({ name = "confluent-consume", config = config },
                                                      { schema = plugin_schema })
      assert.equal(expected, entity ~= nil, "case " .. i .. " in Kong: " .. cjson.encode(err))
      if message then
        assert.matches(message, cjson.encode(err), 1, true)
      end
      -- natively, on the conf as Kong would hand it over without the entity check
      local conf = kong_schema.fill_defaults(config_def(plugin_schema), copy(config))
      conf.__plugin_id = "p"
      local settings, native_err = native.settings(conf)
      assert.equal(expected, settings ~= nil, "case " .. i .. " natively: " .. tostring(native_err))
      if message then
        assert.matches(message, native_err, 1, true)
      end
    end
  end)

  it("sees cluster_api_key / cluster_api_secret as SASL PLAIN credentials", function()
    assert.equal(identity({ cluster_api_key = "K", cluster_api_secret = "S" }),
                 identity({ cluster_api_key = "K", cluster_api_secret = "S", max_records = 1 }))
    assert.not_equal(identity({ cluster_api_key = "K", cluster_api_secret = "S" }),
                     identity({ cluster_api_key = "K", cluster_api_secret = "T" }))
  end)
end)
