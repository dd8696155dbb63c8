-- Schema Registry end to end: records written by Confluent's own serializers (tools/schema-registry/
-- produce.py) through the project's registry server (spec/helpers/registry.lua) to the real broker, read by
-- the plugin in the real nginx and decoded on its consumer thread through the registry's REST API.
-- One worker, so that "fetched once" means once per node.
local helpers = require "spec.helpers.host"
local registry = require "spec.helpers.registry"
local proc = require "spec.helpers.proc"
local ws = require "spec.helpers.ws"
local cjson = require "cjson"


local FIXTURES = "spec/fixtures/registry"
local MONEY_REFERENCE = { name = "demo.Money", subject = "demo.Money", schema = FIXTURES .. "/money.avsc" }
local LINE_REFERENCE = { name = "line.schema.json", subject = "line", schema = FIXTURES .. "/line.schema.json" }

local function order(id, customer)
  return { id = id, customer = customer, note = "n" .. id, status = "PAID", tag = { ["$bytes"] = "AAEC" },
           amount = { ["$decimal"] = "12.34" }, placed_at = 1700000000000, price = { currency = "EUR", units = id } }
end


-- Every record of the route at `headers` until `n` came (GETs of up to 1 s each, at most `seconds`).
local function collect(host, headers, n, seconds)
  return host:collect("/?wait=1000", headers.Host, n, seconds)
end


local records_on_broker = helpers.records_on_broker


local function hex(text)
  return (text:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end


-- The first `count` records of an SSE stream of the route at `host_header` from the earliest offsets.
local function stream(host, host_header, count)
  local conn = host:connect(30)
  assert.equal(200, (conn:send_request("GET", "/?from=earliest", { Host = host_header,
                                                                   Accept = "text/event-stream" })))
  local events = conn:read_events(count, 15)
  conn:close()
  local records = {}
  for _, e in ipairs(events) do
    if e.event == "message" or (e.event == nil and e.data) then
      records[#records + 1] = cjson.decode(e.data)
    end
  end
  return records
end


describe("schema_registry", function()
  local host, sr, sr_down, sr_basic, sr_oauth
  local routes, topics, H, produced = {}, {}, {}, {}
  local dlq_group = helpers.unique_name("sr-dlq-group")

  local function route(name, topic_list, overrides)
    routes[#routes + 1] = helpers.route(name, topic_list, { auto_offset_reset = "earliest" }, nil, overrides)
    return { Host = name .. ".test" }
  end

  local function registry_config(server, authentication, extra)
    local confluent = { url = server.url, authentication = authentication }
    for k, v in pairs(extra or {}) do
      confluent[k] = v
    end
    return { confluent = confluent }
  end

  lazy_setup(function()
    sr = registry.start()
    sr_down = registry.start()
    sr_basic = registry.start({ auth = "basic" })
    sr_oauth = registry.start({ auth = "oauth2" })
    for _, name in ipairs({ "avro", "protobuf", "json", "protobuf_keyed", "json_keyed", "evolution", "unknown", "down", "basic", "oauth",
                            "plain", "dlq", "dead", "dlq_down", "slow", "fast" }) do
      topics[name] = helpers.create_topic(helpers.unique_name("sr-" .. name), 1)
    end

    produced.avro = sr:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topics.avro,
                                references = { MONEY_REFERENCE }, key_format = "avro",
                                key_schema = FIXTURES .. "/order-key.avsc",
                                records = { { value = order(1, "ann"), key = { id = 1 } },
                                            { value = order(2, "bob"), key = { id = 2 } },
                                            { value = order(3, "cy"), key = { id = 3 } } } }
    produced.protobuf = sr:produce{ format = "protobuf", schema = FIXTURES .. "/order.proto", topic = topics.protobuf,
                                    key_format = "string",
                                    records = { { key = "order-1", value = {
                                      id = "1", customer = "ann", status = "PAID", placedAt = "2024-01-01T00:00:00Z",
                                      price = { currency = "EUR", units = "5" }, labels = { a = "b" },
                                      lines = { { sku = "s-1", quantity = 2 } } } } } }
    produced.json = sr:produce{ format = "json", schema = FIXTURES .. "/order.schema.json", topic = topics.json,
                                references = { LINE_REFERENCE },
                                records = { { value = { id = 1, customer = "ann",
                                                        lines = { { sku = "s", quantity = 2 } } } } } }
    -- keys in Protobuf and JSON Schema, each with its own subject (<topic>-key) beside the value's
    produced.protobuf_keyed = sr:produce{ format = "protobuf", schema = FIXTURES .. "/order.proto",
                                          topic = topics.protobuf_keyed, key_format = "protobuf",
                                          key_schema = FIXTURES .. "/order-key.proto",
                                          records = { { key = { id = "41" }, value = { id = "41", customer = "kim" } },
                                                      { key = { id = "42" }, value = { id = "42", customer = "lu" } } } }
    produced.json_keyed = sr:produce{ format = "json", schema = FIXTURES .. "/order.schema.json",
                                      topic = topics.json_keyed, references = { LINE_REFERENCE }, key_format = "json",
                                      key_schema = FIXTURES .. "/order-key.schema.json",
                                      records = { { key = { id = 51 }, value = { id = 51, customer = "max" } },
                                                  { key = { id = 52 }, value = { id = 52, customer = "ned" } } } }
    -- two versions of one subject in one topic: each record is read with its writer's schema
    produced.v1 = sr:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topics.evolution,
                              references = { MONEY_REFERENCE }, records = { { value = order(1, "v1") } } }
    local v2 = order(2, "v2")
    v2.channel = "app"
    produced.v2 = sr:produce{ format = "avro", schema = FIXTURES .. "/order-v2.avsc", topic = topics.evolution,
                              references = { MONEY_REFERENCE }, records = { { value = v2 } } }
    -- an id no registry knows, between two good records
    sr:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topics.unknown,
                references = { MONEY_REFERENCE }, records = { { value = order(1, "before") } } }
    helpers.kafka_tool("produce-one", "--topic " .. topics.unknown .. " --value-hex 000000270f7b7d")
    sr:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topics.unknown,
                references = { MONEY_REFERENCE }, records = { { value = order(3, "after") } } }
    produced.down = sr_down:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topics.down,
                                     references = { MONEY_REFERENCE }, records = { { value = order(1, "while-down") } } }
    sr_basic:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topics.basic,
                      references = { MONEY_REFERENCE }, records = { { value = order(1, "basic") } } }
    local many = {}
    for i = 1, 20 do
      many[i] = { value = order(i, "oauth") }
    end
    sr_oauth:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topics.oauth,
                      references = { MONEY_REFERENCE }, records = many }
    helpers.kafka_tool("produce", "--topic " .. topics.plain .. " --count 2 --format text")
    -- a schema no route fetched yet by id (demo.Money was only ever a reference), beside plain records
    sr:produce{ format = "avro", schema = FIXTURES .. "/money.avsc", topic = topics.slow,
                records = { { value = { currency = "CHF", units = 7 } } } }
    helpers.kafka_tool("produce", "--topic " .. topics.fast .. " --count 3 --format text")
    -- a good record, one of an unknown id with a header, a good one: for the dead-letter topic
    for _, name in ipairs({ "dlq", "dlq_down" }) do
      sr:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topics[name],
                  references = { MONEY_REFERENCE }, records = { { value = order(1, "first") } } }
      helpers.kafka_tool("produce-one", "--topic " .. topics[name] ..
                         " --key dead-key --value-hex 000000270f7b7d --header trace=t-1")
      sr:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topics[name],
                  references = { MONEY_REFERENCE }, records = { { value = order(3, "third") } } }
    end

    local global = { schema_registry = registry_config(sr) }
    H.avro = route("sr-avro", topics.avro, global)
    H.avro_again = route("sr-avro-again", topics.avro, global)
    H.protobuf = route("sr-protobuf", topics.protobuf, global)
    H.json = route("sr-json", topics.json, global)
    H.protobuf_keyed = route("sr-protobuf-keyed", topics.protobuf_keyed, global)
    H.json_keyed = route("sr-json-keyed", topics.json_keyed, global)
    H.keyed_sse = route("sr-keyed-sse", { topics.protobuf_keyed, topics.json_keyed },
                        { mode = "server-sent-events", schema_registry = registry_config(sr) })
    H.evolution = route("sr-evolution", topics.evolution, global)
    H.unknown = route("sr-unknown", topics.unknown, global)
    H.plain = route("sr-plain", topics.plain, global)
    -- a topic's own registry wins over the global one (whose URL answers nothing)
    H.per_topic = route("sr-per-topic", topics.avro, {
      topics = { { name = topics.avro, schema_registry = registry_config(sr) } },
      schema_registry = { confluent = { url = "http://127.0.0.1:1" } },
    })
    H.sse = route("sr-sse", { topics.avro, topics.protobuf, topics.json },
                  { mode = "server-sent-events", schema_registry = registry_config(sr) })
    H.websocket = route("sr-websocket", { topics.avro, topics.protobuf, topics.json },
                        { mode = "websocket", schema_registry = registry_config(sr) })
    H.down = route("sr-down", topics.down, { schema_registry = registry_config(sr_down) })
    local basic = sr_basic.credentials.basic
    H.basic = route("sr-basic", topics.basic, { schema_registry = registry_config(sr_basic, {
      mode = "basic", basic = { username = basic.username, password = basic.password } }) })
    H.basic_wrong = route("sr-basic-wrong", topics.basic, { schema_registry = registry_config(sr_basic, {
      mode = "basic", basic = { username = basic.username, password = "wrong-sr-password-77" } }) })
    H.basic_wrong_told = route("sr-basic-wrong-told", topics.basic, {
      error_handling = { return_error_message = true },
      schema_registry = registry_config(sr_basic, {
        mode = "basic", basic = { username = basic.username, password = "wrong-sr-password-77" } }) })
    H.bad_url = route("sr-bad-url", topics.basic, { schema_registry = {
      confluent = { url = "http://no-such-registry.invalid:8081" } } })
    H.dlq = route("sr-dlq", topics.dlq, { schema_registry = registry_config(sr), enable_dlq = true,
                                          dlq_topic = topics.dead, consumer_group = { mode = "manual",
                                          consumer_group_id = dlq_group } })
    H.dlq_off = route("sr-dlq-off", topics.dlq, { schema_registry = registry_config(sr), enable_dlq = false,
                                                  dlq_topic = topics.dead })
    -- a dead-letter topic that does not exist (the broker creates none): no write is acknowledged
    H.dlq_down = route("sr-dlq-down", topics.dlq_down, { schema_registry = registry_config(sr), enable_dlq = true,
                                                         dlq_topic = helpers.unique_name("sr-no-such-dlq") })
    H.slow = route("sr-slow", { topics.slow, topics.fast }, { schema_registry = registry_config(sr) })
    local oauth = sr_oauth.credentials.oauth2
    H.oauth = route("sr-oauth", topics.oauth, { schema_registry = registry_config(sr_oauth, {
      mode = "oauth2",
      oauth2 = { token_endpoint = sr_oauth.token_url, client_id = oauth.client_id,
                 client_secret = oauth.client_secret, scopes = { "schema_registry" } },
      oauth2_client = { auth_method = "client_secret_post" } }) })
    H.oauth_password = route("sr-oauth-password", topics.oauth, { schema_registry = registry_config(sr_oauth, {
      mode = "oauth2",
      oauth2 = { token_endpoint = sr_oauth.token_url, grant_type = "password", client_id = oauth.client_id,
                 client_secret = oauth.client_secret, username = oauth.username, password = oauth.password },
      oauth2_client = { auth_method = "client_secret_basic" } }) })

    host = helpers.start_host({ workers = 1, routes = routes })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    for _, server in ipairs({ sr, sr_down, sr_basic, sr_oauth }) do
      if server then server:stop() end
    end
  end)

  it("decodes Avro values and keys (with a referenced named type) into JSON in http-get", function()
    local records = collect(host, H.avro, 3)
    assert.equal(3, #records)
    for i, r in ipairs(records) do
      local record = r.record
      assert.is_nil(record.value_error)
      assert.is_nil(record.key_error)
      assert.same({ id = i }, record.key)
      assert.equal(i, record.value.id)
      assert.equal(({ "ann", "bob", "cy" })[i], record.value.customer)
      assert.equal("PAID", record.value.status)
      assert.same({ currency = "EUR", units = i }, record.value.price)
    end
  end)

  it("decodes Protobuf values (imports, a well-known type, a map, a nested message) in http-get", function()
    local records = collect(host, H.protobuf, 1)
    assert.equal(1, #records)
    local record = records[1].record
    assert.is_nil(record.value_error)
    assert.equal("order-1", record.key)
    assert.equal("ann", record.value.customer)
    assert.equal("1", tostring(record.value.id))
    assert.same({ a = "b" }, record.value.labels)
    assert.equal("s-1", record.value.lines[1].sku)
  end)

  it("decodes JSON Schema values (with a referenced schema) in http-get", function()
    local records = collect(host, H.json, 1)
    assert.equal(1, #records)
    assert.is_nil(records[1].record.value_error)
    assert.same({ id = 1, customer = "ann", lines = { { sku = "s", quantity = 2 } } }, records[1].record.value)
  end)

  -- Protobuf keys: int64 renders as a string (proto3 JSON); JSON Schema keys: as written
  local KEYED = {
    protobuf_keyed = { keys = { { id = "41" }, { id = "42" } }, customers = { "kim", "lu" } },
    json_keyed = { keys = { { id = 51 }, { id = 52 } }, customers = { "max", "ned" } },
  }

  local function assert_keyed(name, records)
    assert.equal(2, #records)
    for i, record in ipairs(records) do
      assert.is_nil(record.key_error)
      assert.is_nil(record.value_error)
      assert.same(KEYED[name].keys[i], record.key)
      assert.equal(KEYED[name].customers[i], record.value.customer)
    end
  end

  for _, format in ipairs({ { name = "protobuf_keyed", title = "Protobuf" },
                            { name = "json_keyed", title = "JSON Schema" } }) do
    it("decodes " .. format.title .. " keys and values, each of its own schema id, in http-get", function()
      local records = collect(host, H[format.name], 2)
      local first = produced[format.name].records[1]
      assert.are_not.equal(first.key_schema_id, first.value_schema_id)
      local plain = {}
      for i, r in ipairs(records) do
        plain[i] = r.record
      end
      assert_keyed(format.name, plain)
    end)
  end

  it("decodes Protobuf and JSON Schema keys and values over server-sent-events", function()
    local by_topic = { protobuf_keyed = {}, json_keyed = {} }
    for _, record in ipairs(stream(host, H.keyed_sse.Host, 4)) do
      for name, t in pairs(topics) do
        if t == record.topic and by_topic[name] then
          table.insert(by_topic[name], record)
        end
      end
    end
    assert_keyed("protobuf_keyed", by_topic.protobuf_keyed)
    assert_keyed("json_keyed", by_topic.json_keyed)
  end)

  it("renders a record without the magic byte as without a registry", function()
    local records = collect(host, H.plain, 2)
    assert.equal(2, #records)
    assert.equal("msg-0", records[1].record.value)
    assert.is_nil(records[1].record.value_error)
  end)

  it("serves the same decoded records over server-sent-events and websocket, for all three formats", function()
    local by_topic = {}
    for _, record in ipairs(stream(host, H.sse.Host, 5)) do
      by_topic[record.topic] = by_topic[record.topic] or {}
      table.insert(by_topic[record.topic], record)
    end
    assert.equal(3, #by_topic[topics.avro])
    assert.same({ id = 2 }, by_topic[topics.avro][2].key)
    assert.equal("bob", by_topic[topics.avro][2].value.customer)
    assert.equal("ann", by_topic[topics.protobuf][1].value.customer)
    assert.same({ { sku = "s", quantity = 2 } }, by_topic[topics.json][1].value.lines)

    local seen = ws.run(host, H.websocket.Host, "/?from=earliest", { { read = 5 }, { close = true } }).records
    assert.equal(5, #seen)
    for _, record in ipairs(seen) do
      assert.is_nil(record.value_error)
      assert.is_table(record.value)
    end
  end)

  it("reads each record with its writer's schema when two versions of a subject share a topic", function()
    local records = collect(host, H.evolution, 2)
    assert.equal(2, #records)
    assert.are_not.equal(produced.v1.records[1].value_schema_id, produced.v2.records[1].value_schema_id)
    assert.equal("v1", records[1].record.value.customer)
    assert.is_nil(records[1].record.value.channel)
    assert.equal("v2", records[2].record.value.customer)
    assert.equal("app", records[2].record.value.channel)
  end)

  it("fetches a schema id once per node: a second route on the same records makes no request", function()
    local id = tostring(produced.avro.records[1].value_schema_id)
    collect(host, H.avro, 3)
    local before = sr:counters().schema_id_requests_by_id[id]
    assert.equal(1, before)
    local again = collect(host, H.avro_again, 3)
    assert.equal(3, #again)
    assert.equal("cy", again[3].record.value.customer)
    assert.equal(1, sr:counters().schema_id_requests_by_id[id])
  end)

  it("uses a topic's own registry over the global one", function()
    local records = collect(host, H.per_topic, 3)
    assert.equal(3, #records)
    assert.equal("ann", records[1].record.value.customer)
  end)

  it("delivers a record of an unknown schema id with its raw bytes and a value_error naming the cause, " ..
     "and the records around it decoded", function()
    local records = collect(host, H.unknown, 3)
    assert.equal(3, #records)
    assert.equal("before", records[1].record.value.customer)
    local failed = records[2].record
    assert.equal(string.char(0, 0, 0, 0x27, 0x0f) .. "{}", failed.value)
    assert.matches("schema 9999: the schema registry at " .. sr.url .. " answered 404: ", failed.value_error, 1, true)
    assert.matches("(error code 40403)", failed.value_error, 1, true)
    assert.equal("after", records[3].record.value.customer)
  end)

  it("delivers records with a value_error while the registry is down, and decodes again once it is back",
     function()
    sr_down:stop()
    local records = collect(host, H.down, 1)
    assert.equal(1, #records)
    local failed = records[1].record
    assert.matches("the schema registry at " .. sr_down.url, failed.value_error, 1, true)
    assert.is_string(failed.value.base64)  -- the raw bytes (not UTF-8)
    sr_down:restart()
    -- a schema that could not be had fails its records for 2 s before it is asked for again: records
    -- produced meanwhile still fail
    local decoded
    assert.truthy(proc.wait_until(function()
      sr_down:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topics.down,
                       references = { MONEY_REFERENCE }, records = { { value = order(2, "back") } } }
      for _, r in ipairs(collect(host, H.down, 1, 2)) do
        if r.record.value_error == nil then
          decoded = r.record.value
        end
      end
      return decoded ~= nil
    end, 15), "a record decoded once the registry is back")
    assert.equal("back", decoded.customer)
  end)

  it("authenticates to the registry with HTTP Basic", function()
    local records = collect(host, H.basic, 1)
    assert.equal(1, #records)
    assert.equal("basic", records[1].record.value.customer)
  end)

  it("answers 503 naming the schema registry when it refuses the credentials, the reason in the log and " ..
     "(only with return_error_message) in the body, never the password", function()
    local status, body = host:get("/?wait=3000", H.basic_wrong)
    assert.equal(503, status, body)
    assert.same({ message = "Schema registry is unavailable" }, cjson.decode(body))
    status, body = host:get("/?wait=3000", H.basic_wrong_told)
    assert.equal(503, status, body)
    local message = cjson.decode(body).message
    assert.matches("Schema registry is unavailable: schema %d+: the schema registry at " ..
                   sr_basic.url:gsub("%p", "%%%0") .. " answered 401", message)
    assert.is_nil(message:find("wrong-sr-password-77", 1, true))
    local log = host:error_log()
    assert.matches("the schema registry at " .. sr_basic.url .. " answered 401", log, 1, true)
    assert.is_nil(log:find("wrong-sr-password-77", 1, true))
    assert.is_nil(log:find(sr_basic.credentials.basic.password, 1, true))
  end)

  it("answers 503 naming the schema registry when its URL's host does not resolve", function()
    local status, body = host:get("/?wait=3000", H.bad_url)
    assert.equal(503, status, body)
    assert.same({ message = "Schema registry is unavailable" }, cjson.decode(body))
    assert.matches("the schema registry at http://no-such-registry.invalid:8081", host:error_log(), 1, true)
  end)

  it("authenticates with an OAuth 2.0 token (client credentials, client_secret_post), requested once and " ..
     "cached for its lifetime", function()
    local records = collect(host, H.oauth, 20)
    assert.equal(20, #records)
    for _, r in ipairs(records) do
      assert.equal("oauth", r.record.value.customer)
    end
    local requests = sr_oauth:token_requests()
    local mine = {}
    for _, request in ipairs(requests) do
      if request.grant_type == "client_credentials" and request.client_auth_method == "client_secret_post" then
        mine[#mine + 1] = request
      end
    end
    assert.equal(1, #mine)
    assert.is_true(mine[1].client_authenticated)
    assert.equal("schema_registry", mine[1].fields.scope)
    assert.is_nil(host:error_log():find(sr_oauth.credentials.oauth2.client_secret, 1, true))
  end)

  it("authenticates with the password grant and client_secret_basic", function()
    local records = collect(host, H.oauth_password, 20)
    assert.equal(20, #records)
    assert.equal("oauth", records[20].record.value.customer)
    local found = false
    for _, request in ipairs(sr_oauth:token_requests()) do
      if request.grant_type == "password" then
        found = true
        assert.equal("client_secret_basic", request.client_auth_method)
        assert.is_true(request.client_authenticated)
        assert.equal(sr_oauth.credentials.oauth2.username, request.username)
      end
    end
    assert.is_true(found)
    assert.is_nil(host:error_log():find(sr_oauth.credentials.oauth2.password, 1, true))
  end)

  it("with enable_dlq, writes a record that fails to decode to dlq_topic unchanged, with headers naming its " ..
     "source and the error, leaves it out of the response and commits past it once written", function()
    local records = collect(host, H.dlq, 2)
    assert.equal(2, #records)
    assert.same({ 0, 2 }, { records[1].offset, records[2].offset })
    assert.equal("first", records[1].record.value.customer)
    assert.equal("third", records[2].record.value.customer)
    local dead = records_on_broker(topics.dead, 1)
    assert.equal(1, #dead)
    assert.equal(hex("dead-key"), dead[1].key_hex)
    assert.equal("000000270f7b7d", dead[1].value_hex)
    local headers = {}
    for _, h in ipairs(dead[1].headers) do
      headers[h[1]] = h[2] and h[2]:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end)
    end
    assert.equal("t-1", headers.trace)
    assert.equal(topics.dlq, headers["kong-dlq-source-topic"])
    assert.equal("0", headers["kong-dlq-source-partition"])
    assert.equal("1", headers["kong-dlq-source-offset"])
    assert.matches("value: schema 9999: the schema registry at " .. sr.url .. " answered 404", headers["kong-dlq-error"],
                   1, true)
    -- the partition's commit passes the dead letter once it is written
    assert.truthy(proc.wait_until(function()
      local committed = helpers.kafka_tool("committed", "--topic " .. topics.dlq .. " --group " .. dlq_group)
      return committed["0"] == 3
    end, 10), "offsets committed past the dead letter")
  end)

  it("without enable_dlq, serves the failing record with its value_error", function()
    local records = collect(host, H.dlq_off, 3)
    assert.equal(3, #records)
    assert.matches("schema 9999", records[2].record.value_error, 1, true)
  end)

  it("answers 503 'Dead-letter topic is unavailable' when the dead-letter topic cannot be written, serving " ..
     "the record before the failing one and none after it", function()
    local records = collect(host, H.dlq_down, 1)
    assert.equal(1, #records)
    assert.equal("first", records[1].record.value.customer)
    local status, body
    assert.truthy(proc.wait_until(function()
      status, body = host:get("/?wait=1000", H.dlq_down)
      return status == 503
    end, 30), "a 503 once the write failed")
    assert.same({ message = "Dead-letter topic is unavailable" }, cjson.decode(body))
    assert.matches("the dead-letter topic cannot be written", host:error_log(), 1, true)
  end)

  it("serves the records that need no new schema while a slow registry is asked for one", function()
    sr:set_delay(3)
    finally(function() sr:set_delay(0) end)
    -- the registry answers after 3 s: the plain records come before that
    local first = collect(host, H.slow, 3, 2.5)
    assert.equal(3, #first)
    for _, r in ipairs(first) do
      assert.equal(topics.fast, r.topic)
    end
    local later = collect(host, H.slow, 1, 10)
    assert.equal(1, #later)
    assert.same({ currency = "CHF", units = 7 }, later[1].record.value)
  end)
end)
