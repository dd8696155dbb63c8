-- Kong's documented example configurations (spec/fixtures/kong_examples.lua), each POSTed as written to
-- its plugin through the Admin API, then served from the real broker as Kong documents: records over
-- http-get, server-sent-events and websocket, a manual group's offsets committed under its id. The Confluent Cloud
-- examples (SASL PLAIN over TLS, implied by cluster_api_key) cannot reach Cloud here, and tansu has neither
-- PLAIN nor TLS: they are accepted and answer the documented 503, the cause in the error log.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local tls = require "spec.helpers.tls"
local ws = require "spec.helpers.ws"
local cjson = require "cjson"
local EXAMPLES = require "spec.fixtures.kong_examples"


local RECORDS = 5
-- the stand-in OAuth client of the OAUTHBEARER examples; the token endpoint gets its secret by environment
local CLIENT_ID, CLIENT_SECRET = "example-client", "example-oauth-secret-5d1c"


-- `config` with the docs' placeholders replaced by `values`, and Kong's port 9092 by the test broker's.
local function substitute(config, values)
  local out = {}
  for k, v in pairs(config) do
    if type(v) == "table" then
      out[k] = substitute(v, values)
    elseif type(v) == "string" then
      out[k] = v:gsub("%${([%w_]+)}", function(name) return assert(values[name], name) end)
    elseif k == "port" and v == 9092 then
      out[k] = helpers.BROKER_PORT
    else
      out[k] = v
    end
  end
  return out
end


describe("Kong's documented examples", function()
  local host

  local token_url, token_requests_file, token_endpoint
  local registry_port

  lazy_setup(function()
    host = helpers.start_host({ workers = 1 })
    local run = helpers.RUN_DIR .. "/kong-examples"
    helpers.sh_ok("rm -rf " .. run .. " && mkdir -p " .. run)
    local token_port = helpers.next_ports()
    registry_port = helpers.next_ports()
    token_url = string.format("http://127.0.0.1:%d/oauth2/token", token_port)
    token_requests_file = run .. "/token-requests.jsonl"
    token_endpoint = proc.spawn(string.format("TOKEN_ENDPOINT_SECRET=%s exec python3 " ..
      "%s/spec/helpers/token_endpoint.py --port %d --client-id %s --secret-env TOKEN_ENDPOINT_SECRET " ..
      "--requests %s", CLIENT_SECRET, helpers.ROOT, token_port, CLIENT_ID, token_requests_file),
      run .. "/token-endpoint.log")
    tls.wait_port(token_port)
  end)

  lazy_teardown(function()
    if host then host:stop() end
    if token_endpoint then proc.kill(token_endpoint) end
  end)

  -- The token endpoint's requests so far (decoded JSON lines).
  local function token_requests()
    local list = {}
    for line in (helpers.read_file(token_requests_file) or ""):gmatch("[^\n]+") do
      list[#list + 1] = cjson.decode(line)
    end
    return list
  end

  -- Creates the example's route and plugin through the Admin API (asserting 201) after RECORDS records
  -- were produced to its own topic; returns the route's Host header, the topic and the values used.
  local function configure(example)
    local name = "ex-" .. example.plugin .. "-" .. example.example
    local values = {
      host = helpers.BROKER_HOST,
      topic = helpers.create_topic(helpers.unique_name(name), 1),
      group_id = helpers.unique_name("example-group"),
      key = "EXAMPLE-API-KEY", secret = "EXAMPLE-API-SECRET",
      token_endpoint_url = token_url, client_id = CLIENT_ID, client_secret = CLIENT_SECRET,
      -- no registry listens here: the examples' records carry no schema id, so none is asked
      registry_url = string.format("http://127.0.0.1:%d", registry_port),
    }
    helpers.kafka_tool("produce", "--topic " .. values.topic .. " --count " .. RECORDS .. " --format text")
    local status, route = host:admin("POST", "/routes", { name = name, hosts = { name .. ".test" } })
    assert.equal(201, status, cjson.encode(route))
    local plugin
    status, plugin = host:admin("POST", "/routes/" .. name .. "/plugins",
                                { name = example.plugin, config = substitute(example.config, values) })
    assert.equal(201, status, cjson.encode(plugin))
    assert.equal(example.plugin, plugin.name)
    -- a worker applies the Admin API's changes before it routes its next request
    return { Host = name .. ".test" }, values
  end

  it("run on both plugin names, loaded with Kong's priorities: confluent-consume 754, kafka-consume 753", function()
    local status, root = host:admin("GET", "/")
    assert.equal(200, status)
    assert.equal(754, root.plugins.available_on_server["confluent-consume"].priority)
    assert.equal(753, root.plugins.available_on_server["kafka-consume"].priority)
  end)

  it("kafka-consume is refused on a Service, as Kong's since 3.12", function()
    local status, body = host:admin("POST", "/plugins", { name = "kafka-consume",
      service = { id = "5f4034c2-0000-4000-8000-000000000000" },
      config = { bootstrap_servers = { { host = helpers.BROKER_HOST, port = helpers.BROKER_PORT } },
                 topics = { { name = "any" } } } })
    assert.equal(400, status)
    assert.equal("schema violation (service: value must be null)", body.message)
  end)

  -- The records of an SSE stream's first `count` data events.
  local function stream(headers, count)
    local conn = host:connect()
    headers.Accept = "text/event-stream"
    assert.equal(200, (conn:send_request("GET", "/", headers)))
    local events = conn:read_events(count, 10)
    conn:close()
    local records = {}
    for _, e in ipairs(events) do
      if e.data then
        records[#records + 1] = cjson.decode(e.data)
      end
    end
    return records
  end

  for _, example in ipairs(EXAMPLES) do
    local title = example.plugin .. " '" .. example.example .. "'"
    if example.cloud then
      it(title .. " is accepted, and answers 503 with a generic message and the cause in the error log " ..
         "(Confluent Cloud's SASL PLAIN over TLS, against a plaintext broker)", function()
        local headers = configure(example)
        if example.config.mode == "server-sent-events" then
          headers.Accept = "text/event-stream"
        elseif example.config.mode == "websocket" then
          -- the upgrade is refused before it happens: an HTTP answer
          headers.Upgrade, headers.Connection = "websocket", "Upgrade"
          headers["Sec-WebSocket-Key"], headers["Sec-WebSocket-Version"] = "dGhlIHNhbXBsZSBub25jZQ==", "13"
        end
        local status, body = host:get("/", headers)
        assert.equal(503, status, body)
        assert.same({ message = "Kafka is unavailable" }, cjson.decode(body))
        assert.matches("TLS is on because SASL is configured", host:error_log(), 1, true)
        assert.is_nil(host:error_log():find("EXAMPLE-API-SECRET", 1, true))
      end)
    elseif example.needs == "message_by_lua_functions" then
      it(title .. " runs its function on every record of the stream" .. (example.example == "filter-messages"
         and ": a record with an empty value is dropped" or
         ": each record comes decoded and marked processed_by_lua"), function()
        local headers, values = configure(example)
        helpers.kafka_tool("produce-one", "--topic " .. values.topic .. " --value ''")
        helpers.kafka_tool("produce-one", "--topic " .. values.topic .. [[ --value '{"n":1}']])
        local records = stream(headers, example.example == "filter-messages" and RECORDS + 1 or RECORDS + 2)
        local offsets = {}
        for _, r in ipairs(records) do
          offsets[#offsets + 1] = r.offset
          assert.is_nil(r.message_function_error)
        end
        if example.example == "filter-messages" then
          -- offset 5 (the empty value) is left out; the stream goes on to offset 6
          assert.same({ 0, 1, 2, 3, 4, 6 }, offsets)
        else
          assert.same({ 0, 1, 2, 3, 4, 5, 6 }, offsets)
          for _, r in ipairs(records) do
            assert.is_true(r.processed_by_lua)
          end
          assert.same({ n = 1 }, records[7].decoded)
          assert.is_nil(records[1].decoded, "msg-0 is no JSON: decoded stays nil")
        end
      end)
    elseif example.needs == "kong_consumer" then
      it(title .. " reads behind key-auth under the Kong consumer's username as its consumer group", function()
        local headers, values = configure(example)
        local username = helpers.unique_name("example-user")
        local route = headers.Host:gsub("%.test$", "")
        assert.equal(201, (host:admin("POST", "/routes/" .. route .. "/plugins", { name = "key-auth" })))
        assert.equal(201, (host:admin("POST", "/consumers", { username = username })))
        assert.equal(201, (host:admin("POST", "/consumers/" .. username .. "/key-auth", { key = username })))
        assert.equal(401, (host:get("/", headers)), "key-auth runs before the plugin")
        headers.apikey = username
        local records = {}
        local deadline = helpers.now() + 10
        repeat
          local status, body, _, json = host:get("/?wait=1000", headers)
          assert.equal(200, status, body)
          for _, r in ipairs(helpers.records_of(json)) do
            records[#records + 1] = r.record.offset
          end
        until #records >= RECORDS or helpers.now() > deadline
        assert.same({ 0, 1, 2, 3, 4 }, records)
        assert.truthy(proc.wait_until(function()
          local committed = helpers.kafka_tool("committed", "--topic " .. values.topic .. " --group " .. username)
          return committed["0"] == RECORDS
        end, 5), "offsets committed under the consumer's username " .. username)
      end)
    elseif example.needs == "oauthbearer" then
      it(title .. " asks the token endpoint for a token with the client credentials grant, and answers 503 " ..
         "with a generic message against a broker without SASL, the cause in the error log", function()
        local before = #token_requests()
        local headers = configure(example)
        local status, body = host:get("/", headers)
        assert.equal(503, status, body)
        assert.same({ message = "Kafka is unavailable" }, cjson.decode(body))
        assert.matches("Kafka is unavailable: ", host:error_log(), 1, true)
        local requests = token_requests()
        assert.is_true(#requests > before, "the token endpoint was asked")
        local request = requests[before + 1]
        assert.equal("client_credentials", request.form.grant_type)
        assert.equal(CLIENT_ID, request.basic_user)
        assert.is_true(request.basic_password_ok)
        assert.equal(200, request.status)
        assert.is_nil(host:error_log():find(CLIENT_SECRET, 1, true))
      end)
    else
      if example.config.mode == "server-sent-events" or example.config.mode == "websocket" then
        it(title .. " streams the records produced before it (latest, not enforced, behaves like earliest)",
           function()
          local headers, values = configure(example)
          local records
          if example.config.mode == "websocket" then
            records = ws.run(host, headers.Host, "/", { { read = RECORDS }, { close = true } }).records
          else
            records = stream(headers, RECORDS)
          end
          local offsets = {}
          for _, record in ipairs(records) do
            assert.equal(values.topic, record.topic)
            offsets[#offsets + 1] = record.offset
          end
          assert.same({ 0, 1, 2, 3, 4 }, offsets)
        end)
      else
        it(title .. " serves the records produced before it (latest, not enforced, behaves like earliest)" ..
           (example.config.consumer_group and ", committing under its consumer_group_id" or ""), function()
          local headers, values = configure(example)
          local records = host:collect("/?wait=1000", headers.Host, RECORDS)
          assert.equal(RECORDS, #records)
          for i, r in ipairs(records) do
            assert.equal(i - 1, r.offset)
          end
          if example.config.consumer_group then
            -- commits are asynchronous: wait for this one
            assert.truthy(proc.wait_until(function()
              local committed = helpers.kafka_tool("committed", "--topic " .. values.topic .. " --group " ..
                                                   values.group_id)
              return committed["0"] == RECORDS
            end, 5), "offsets committed under " .. values.group_id)
          end
        end)
      end
    end
  end
end)
