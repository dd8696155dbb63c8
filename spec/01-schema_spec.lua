-- The plugin schema, validated the way Kong validates it (through the host's Kong-compatible validator).
package.path = "kong-plugin/?.lua;host/lua/?.lua;" .. package.path

local schema = require "kong_host.schema"
local plugin_schema = require "kong.plugins.confluent-consume.schema"
local kafka_schema = require "kong.plugins.kafka-consume.schema"


local function validate(config)
  return schema.validate_plugin({ name = "confluent-consume", config = config }, { schema = plugin_schema })
end


local function minimal(extra)
  local config = {
    bootstrap_servers = { { host = "127.0.0.1", port = 9092 } },
    topics = { { name = "orders" } },
  }
  for k, v in pairs(extra or {}) do
    config[k] = v
  end
  return config
end


describe("confluent-consume schema", function()
  it("fills every default", function()
    local entity = assert(validate(minimal()))
    local c = entity.config
    assert.equal("http-get", c.mode)
    assert.equal("noop", c.message_deserializer)
    assert.equal("earliest", c.auto_offset_reset)
    assert.is_false(c.enforce_latest_offset_reset)
    assert.equal("auto", c.commit_strategy)
    assert.equal(10000, c.timeout)
    assert.equal(60000, c.keepalive)
    assert.is_false(c.keepalive_enabled)
    assert.is_false(c.error_handling.return_error_message)
    assert.equal("random", c.consumer_group.mode)
    assert.equal(1000, c.max_records)
    assert.equal(1048576, c.max_bytes)
    assert.equal(30000, c.max_wait)
    assert.equal(10, c.fetch_wait_max_ms)
    assert.equal(8 * 1048576, c.buffer_max_bytes)
  end)

  it("gives every field a description", function()
    local function check(fields, path)
      for _, entry in ipairs(fields) do
        local name, def = next(entry)
        if path ~= "" or name == "config" then
          local full = path .. name
          if name ~= "config" then
            assert.is_string(def.description, full .. " has no description")
          end
          if def.fields then check(def.fields, full .. ".") end
          if def.elements and def.elements.fields then check(def.elements.fields, full .. ".") end
        end
      end
    end
    check(plugin_schema.fields, "")
  end)

  it("requires bootstrap_servers and topics", function()
    local _, errors, message = validate({ topics = { { name = "t" } } })
    assert.equal("required field missing", errors.config.bootstrap_servers)
    assert.equal("schema violation (config.bootstrap_servers: required field missing)", message)
    _, errors = validate({ bootstrap_servers = { { host = "h", port = 1 } } })
    assert.equal("required field missing", errors.config.topics)
    _, errors = validate(minimal({ topics = {} }))
    assert.equal("length must be at least 1", errors.config.topics)
  end)

  it("rejects values outside one_of and ranges, naming the field", function()
    local cases = {
      { { mode = "web-socket" }, "mode", "expected one of: http-get, server-sent-events, websocket" },
      { { max_unacked_records = 0 }, "max_unacked_records", "value should be between 1 and 100000" },
      { { ack_timeout = 999 }, "ack_timeout", "value should be between 1000 and 3600000" },
      { { message_deserializer = "avro" }, "message_deserializer", "expected one of: noop, json" },
      { { auto_offset_reset = "beginning" }, "auto_offset_reset", "expected one of: earliest, latest" },
      { { commit_strategy = "manual" }, "commit_strategy", "expected one of: auto, off" },
      { { max_records = 0 }, "max_records", "value should be between 1 and 100000" },
      { { fetch_wait_max_ms = 0 }, "fetch_wait_max_ms", "value should be between 1 and 10000" },
      { { fetch_wait_max_ms = 10001 }, "fetch_wait_max_ms", "value should be between 1 and 10000" },
      { { buffer_max_bytes = 65535 }, "buffer_max_bytes", "value should be between 65536 and 1073741824" },
    }
    for _, case in ipairs(cases) do
      local _, errors = validate(minimal(case[1]))
      assert.equal(case[3], errors.config[case[2]], case[2])
    end
    local _, errors = validate(minimal({ bootstrap_servers = { { host = "h", port = 70000 } } }))
    assert.is_table(errors.config.bootstrap_servers)
    local _, topic_errors = validate(minimal({ topics = { { name = "bad topic!" } } }))
    assert.is_table(topic_errors.config.topics)
    for _, name in ipairs({ ".", ".." }) do
      _, topic_errors = validate(minimal({ topics = { { name = name } } }))
      assert.equal("must not be one of: ., ..", topic_errors.config.topics[1].name, name)
    end
  end)

  it("checks authentication as a whole", function()
    local _, _, message = validate(minimal({ authentication = { strategy = "sasl", mechanism = "PLAIN" } }))
    assert.matches("you have to set user and password", message, 1, true)
    _, _, message = validate(minimal({ authentication = { strategy = "sasl" } }))
    assert.matches("authentication.mechanism is required", message, 1, true)
    _, _, message = validate(minimal({ authentication = { mechanism = "SCRAM-SHA-256", user = "u",
                                                         password = "p" } }))
    assert.matches("authentication.strategy is required", message, 1, true)
    local _, errors = validate(minimal({ authentication = { strategy = "sasl", mechanism = "GSSAPI",
                                                           user = "u", password = "p" } }))
    assert.equal("expected one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER",
                 errors.config.authentication.mechanism)
    assert(validate(minimal({ authentication = { strategy = "sasl", mechanism = "SCRAM-SHA-512",
                                                 user = "u", password = "p" } })))
  end)

  it("checks the oauthbearer records, takes token_endpoint_tls_verify = false and refuses tokenauth = true, " ..
     "naming the reason", function()
    local oauthbearer = { token_endpoint_url = "https://idp.example/token", client_id = "c", client_secret = "s" }
    local c = assert(validate(minimal({ oauthbearer = oauthbearer }))).config
    assert.is_true(c.oauthbearer.token_endpoint_tls_verify)
    assert(validate(minimal({ authentication = { strategy = "sasl", mechanism = "OAUTHBEARER",
                                                 oauthbearer = oauthbearer } })))
    local _, _, message = validate(minimal({ authentication = { strategy = "sasl", mechanism = "OAUTHBEARER" } }))
    assert.equal("schema violation (authentication.oauthbearer is required when authentication.mechanism " ..
                 "is OAUTHBEARER)", message)
    _, _, message = validate(minimal({ oauthbearer = { client_id = "c" } }))
    assert.equal("schema violation (oauthbearer needs token_endpoint_url, client_id and client_secret)", message)
    -- Kong's token_endpoint_tls_verify = false skips the verification, for an https URL too
    c = assert(validate(minimal({ oauthbearer = { token_endpoint_url = "https://idp.example/token",
                                                  client_id = "c", client_secret = "s",
                                                  token_endpoint_tls_verify = false } }))).config
    assert.is_false(c.oauthbearer.token_endpoint_tls_verify)
    _, _, message = validate(minimal({ authentication = { strategy = "sasl", mechanism = "SCRAM-SHA-512",
                                                          user = "u", password = "p", tokenauth = true } }))
    assert.equal("schema violation (authentication.tokenauth = true is not supported: librdkafka cannot " ..
                 "send the SCRAM extension tokenauth=true that delegation tokens need)", message)
    local _, errors = validate(minimal({ oauthbearer = { token_endpoint_url = "ldap://idp" } }))
    assert.equal("invalid value: ldap://idp", errors.config.oauthbearer.token_endpoint_url)
  end)

  it("marks the OAuth client secret as an encrypted, referenceable secret", function()
    local config_def = plugin_schema.fields[2].config
    for _, f in ipairs(config_def.fields) do
      if f.oauthbearer then
        for _, g in ipairs(f.oauthbearer.fields) do
          if g.client_secret then
            assert.is_true(g.client_secret.encrypted)
            assert.is_true(g.client_secret.referenceable)
            return
          end
        end
      end
    end
    error("no oauthbearer.client_secret")
  end)

  it("marks the password as an encrypted, referenceable secret", function()
    local config_def = plugin_schema.fields[2].config
    local auth
    for _, f in ipairs(config_def.fields) do
      if f.authentication then auth = f.authentication end
    end
    local password
    for _, f in ipairs(auth.fields) do
      if f.password then password = f.password end
    end
    assert.is_true(password.encrypted)
    assert.is_true(password.referenceable)
  end)

  it("requires consumer_group_id in manual mode", function()
    local _, errors = validate(minimal({ consumer_group = { mode = "manual" } }))
    assert.equal("required field missing", errors.config.consumer_group.consumer_group_id)
    assert(validate(minimal({ consumer_group = { mode = "manual", consumer_group_id = "billing" } })))
  end)

  it("defaults TLS to automatic with verification, and checks certificates", function()
    local c = assert(validate(minimal())).config
    assert.is_nil(c.security.ssl)
    assert.is_true(c.security.ssl_verify)
    local _, errors = validate(minimal({ security = { ca_certificate = "not a pem" } }))
    assert.is_string(errors.config.security.ca_certificate)
    local _, _, message = validate(minimal({ security = { client_certificate = "-----BEGIN CERTIFICATE-----" } }))
    assert.matches("client_key", message, 1, true)
    assert(validate(minimal({ security = { ssl = true, ssl_verify = false,
                                           ca_certificate = "-----BEGIN CERTIFICATE-----\n" } })))
  end)

  it("accepts Confluent-style cluster_api_key / cluster_api_secret, as a pair, instead of authentication", function()
    assert(validate(minimal({ cluster_api_key = "KEY", cluster_api_secret = "SECRET" })))
    local _, _, message = validate(minimal({ cluster_api_key = "KEY" }))
    assert.matches("cluster_api_key and cluster_api_secret go together", message, 1, true)
    _, _, message = validate(minimal({ cluster_api_key = "K", cluster_api_secret = "S",
                                       authentication = { strategy = "sasl", mechanism = "PLAIN",
                                                          user = "u", password = "p" } }))
    assert.matches("not both", message, 1, true)
  end)
end)


describe("kafka-consume schema", function()
  local function validate_kafka(entity)
    entity.name = "kafka-consume"
    return schema.validate_plugin(entity, { schema = kafka_schema })
  end

  it("fills Kong's kafka-consume defaults: auto_offset_reset latest, not enforced", function()
    local c = assert(validate_kafka({ config = minimal() })).config
    assert.equal("latest", c.auto_offset_reset)
    assert.is_false(c.enforce_latest_offset_reset)
    assert.equal("http-get", c.mode)
    assert.is_false(c.error_handling.return_error_message)
  end)

  it("takes authentication and security.ssl, and refuses confluent-consume's own fields", function()
    assert(validate_kafka({ config = minimal({
      authentication = { strategy = "sasl", mechanism = "SCRAM-SHA-256", user = "u", password = "p" },
      security = { ssl = true },
    }) }))
    local _, errors, message = validate_kafka({ config = minimal({ cluster_api_key = "k" }) })
    assert.equal("unknown field", errors.config.cluster_api_key)
    assert.equal("schema violation (config.cluster_api_key: unknown field)", message)
  end)

  it("cannot be scoped to a Service, as Kong's since 3.12", function()
    local service = { id = "5f4034c2-0000-4000-8000-000000000000" }
    local _, errors = validate_kafka({ config = minimal(), service = service })
    assert.equal("value must be null", errors.service)
    -- confluent-consume can
    assert(schema.validate_plugin({ name = "confluent-consume", config = minimal(), service = service },
                                  { schema = plugin_schema }))
  end)

  it("gives every field a description", function()
    for _, entry in ipairs(kafka_schema.fields) do
      local name, def = next(entry)
      if name == "config" then
        for _, field in ipairs(def.fields) do
          local field_name, field_def = next(field)
          assert.is_string(field_def.description, field_name)
        end
      end
    end
  end)
end)
