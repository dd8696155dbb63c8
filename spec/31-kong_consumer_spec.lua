-- consumer_group.mode = kong_consumer (http-get, websocket acknowledgements): each authenticated Kong
-- consumer reads through a consumer group of its own, named after its username, else custom_id, else id,
-- and commits it independently; a request without a consumer reads the plugin's random group, and the worker says so
-- once; max_consumer_groups bounds the Kafka consumers one plugin keeps open per worker.
--
-- Authentication is Kong's key-auth (bundled with the host), and cc-authenticate (spec/fixtures), a test
-- plugin that authenticates the consumer its request headers describe, for consumers key-auth cannot
-- present (one with neither username nor custom_id).
local helpers = require "spec.helpers.host"
local ws_client = require "spec.helpers.ws"
local wait = require "spec.helpers.wait"
local proc = require "spec.helpers.proc"
local cjson = require "cjson"


local null = cjson.null


describe("consumer_group.mode = kong_consumer", function()
  local host, pid
  local topics = {}
  local alice, bob = helpers.unique_name("alice"), helpers.unique_name("bob")
  local KEYS = { alice = "key-" .. alice, bob = "key-" .. bob }

  local function route(name, topic, plugins, overrides)
    local config = helpers.plugin_config(topic, { auto_offset_reset = "earliest",
                                                  consumer_group = { mode = "kong_consumer" } })
    for k, v in pairs(overrides or {}) do
      config[k] = v
    end
    local list = {}
    for _, plugin in ipairs(plugins) do
      list[#list + 1] = { name = plugin }
    end
    list[#list + 1] = { name = "confluent-consume", config = config }
    return { name = name, hosts = { name .. ".test" }, plugins = list }
  end

  -- GETs until a GET returns no record; returns every record's value.
  local function drain(name, headers)
    local values = {}
    headers = headers or {}
    headers.Host = name .. ".test"
    for _ = 1, 50 do
      local status, body, _, json = host:get("/?wait=1000", headers)
      assert.equal(200, status, body)
      local records = helpers.records_of(json)
      if #records == 0 then
        return values
      end
      for _, r in ipairs(records) do
        values[#values + 1] = r.record.value
      end
    end
    error("a route kept answering records")
  end

  -- The group's committed offset of partition 0 of `topic` once it reaches `expected` (commits are
  -- asynchronous), or what it was after 5 s.
  local function committed(topic, group, expected)
    local offset
    proc.wait_until(function()
      offset = helpers.kafka_tool("committed", "--topic " .. topic .. " --group " .. group)["0"]
      return offset == expected
    end, 5)
    return offset
  end

  local function produce(topic, count)
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count " .. count .. " --format text")
  end

  lazy_setup(function()
    for _, name in ipairs({ "keyed", "fields", "nobody", "bounded", "stream", "ws", "wsbounded" }) do
      topics[name] = helpers.create_topic(helpers.unique_name("kc-" .. name), 1)
    end
    host = helpers.start_host({
      workers = 1,
      fixture_plugins = { "cc-authenticate" },
      consumers = {
        { username = alice, custom_id = "custom-" .. alice, keyauth_credentials = { { key = KEYS.alice } } },
        { custom_id = bob, keyauth_credentials = { { key = KEYS.bob } } },
      },
      routes = {
        route("keyed", topics.keyed, { "key-auth" }),
        route("fields", topics.fields, { "cc-authenticate" }),
        route("nobody", topics.nobody, {}),
        route("bounded", topics.bounded, { "cc-authenticate" }, { max_consumer_groups = 1 }),
        route("stream", topics.stream, { "key-auth" }, { mode = "server-sent-events" }),
        route("ws", topics.ws, { "key-auth" }, { mode = "websocket", max_records = 4 }),
        route("wsbounded", topics.wsbounded, { "key-auth" }, { mode = "websocket", max_consumer_groups = 1 }),
      },
    })
    pid = host:worker_pids()[1]
  end)

  lazy_teardown(function()
    if host then
      host:stop()
    end
  end)

  it("gives two Kong consumers of one route groups of their own: each gets every record once and " ..
     "commits its own offsets", function()
    produce(topics.keyed, 10)
    local alice_values = drain("keyed", { apikey = KEYS.alice })
    assert.equal(10, #alice_values)
    assert.equal(10, committed(topics.keyed, alice, 10))
    assert.equal(null, helpers.kafka_tool("committed", "--topic " .. topics.keyed .. " --group " .. bob)["0"],
                 "bob has read nothing yet")
    assert.same(alice_values, drain("keyed", { apikey = KEYS.bob }))
    assert.equal(10, committed(topics.keyed, bob, 10))

    produce(topics.keyed, 5)
    assert.equal(5, #drain("keyed", { apikey = KEYS.alice }))
    assert.equal(5, #drain("keyed", { apikey = KEYS.bob }))
    assert.equal(15, committed(topics.keyed, alice, 15))
    assert.equal(15, committed(topics.keyed, bob, 15))

    -- key-auth's answers come first: no key, no records
    local status, _, _, json = host:get("/", { Host = "keyed.test" })
    assert.equal(401, status)
    assert.same({ message = "No API key found in request" }, json)
  end)

  it("names the group after the consumer's username, else its custom_id, else its id", function()
    produce(topics.fields, 3)
    local id = "5f4034c2-0000-4000-8000-" .. string.format("%012d", math.random(1e9))
    local cases = {
      { { ["X-Test-Id"] = id, ["X-Test-Username"] = "u-" .. alice, ["X-Test-Custom-Id"] = "c-" .. alice },
        "u-" .. alice },
      { { ["X-Test-Id"] = id, ["X-Test-Custom-Id"] = "c-" .. alice }, "c-" .. alice },
      { { ["X-Test-Id"] = id }, id },
    }
    for _, case in ipairs(cases) do
      assert.equal(3, #drain("fields", case[1]))
      assert.equal(3, committed(topics.fields, case[2], 3), case[2])
    end
  end)

  it("reads the plugin's random group for a request without a consumer, and says so once", function()
    produce(topics.nobody, 4)
    assert.equal(4, #drain("nobody"))
    local plugins = select(2, host:admin("GET", "/plugins"))
    local plugin_id
    for _, p in ipairs(plugins.data) do
      if p.name == "confluent-consume" and p.config.topics[1].name == topics.nobody then
        plugin_id = p.id
      end
    end
    assert.equal(4, committed(topics.nobody, "kong-confluent-consume-" .. plugin_id, 4))
    local _, warnings = host:error_log():gsub("consumer_group.mode is kong_consumer, but a request came " ..
                                              "without an authenticated Kong consumer", "")
    assert.equal(1, warnings, "one warning for every GET of the worker and plugin")
  end)

  it("keeps at most max_consumer_groups consumers open: another consumer gets a 503 while they are all " ..
     "waited on, and the least recently used idle one makes room", function()
    local A = { Host = "bounded.test", ["X-Test-Username"] = "a-" .. alice }
    local B = { Host = "bounded.test", ["X-Test-Username"] = "b-" .. alice }
    assert.equal(200, (host:get("/", A)))
    local consumers = #helpers.doorbells(pid)
    -- A long-polls on its consumer, the only one max_consumer_groups = 1 allows
    local conn = host:connect()
    assert(conn:send("GET", "/?wait=3000", A))
    assert.truthy(proc.wait_until(function()
      return wait.request_read(host, wait.local_port(conn.sock))
    end, 5, 0.05), "the gateway did not read the long-poll")
    local status, body, headers = host:get("/", B)
    assert.equal(503, status)
    assert.equal("1", headers["retry-after"])
    -- not a Kafka failure: precise whatever error_handling says
    assert.same({ message = "too many Kong consumers read through this plugin on this worker at once " ..
                            "(max_consumer_groups); retry" }, cjson.decode(body))
    local poll_status = conn:read_head()
    assert(conn:read_body())
    conn:close()
    assert.equal(200, poll_status)
    assert.equal(consumers, #helpers.doorbells(pid), "the refused request opened no consumer")
    -- A's consumer is idle now: B's replaces it, and then A's replaces B's
    produce(topics.bounded, 2)
    assert.equal(2, #drain("bounded", { ["X-Test-Username"] = "b-" .. alice }))
    assert.equal(2, #drain("bounded", { ["X-Test-Username"] = "a-" .. alice }))
    assert.truthy(proc.wait_until(function() return #helpers.doorbells(pid) == consumers end, 5),
                  "one consumer of the plugin is open: " .. #helpers.doorbells(pid) .. " instead of " .. consumers)
  end)

  it("lets the streams of every Kong consumer share the route's one consumer (server-sent-events never " ..
     "reads or commits a group)", function()
    local before = #helpers.doorbells(pid)
    local _, warnings_before = host:error_log():gsub("without an authenticated Kong consumer", "")
    local streams = {}
    for _, key in ipairs({ KEYS.alice, KEYS.bob }) do
      local conn = host:connect(30)
      local status = conn:send_request("GET", "/?from=latest", { Host = "stream.test", apikey = key,
                                                                Accept = "text/event-stream" })
      assert.equal(200, status)
      assert.equal("retry: 3000\n\n", conn:read_chunk())
      streams[#streams + 1] = conn
    end
    assert.equal(before + 1, #helpers.doorbells(pid))
    produce(topics.stream, 2)
    for _, conn in ipairs(streams) do
      local events = conn:read_events(2, 10)
      conn:close()
      assert.same({ "msg-0", "msg-1" }, helpers.message_values(events))
    end
    local _, warnings_after = host:error_log():gsub("without an authenticated Kong consumer", "")
    assert.equal(warnings_before, warnings_after)
  end)

  -- The offsets of the records a WebSocket client received.
  local offsets = helpers.offsets

  it("commits each Kong consumer's WebSocket acknowledgements to its own group: each acknowledges and " ..
     "resumes independently", function()
    local t = topics.ws
    local function ws(key, script)
      return ws_client.run(host, "ws.test", "/?acks=true&apikey=" .. key, script)
    end
    produce(t, 10)
    -- alice acknowledges the first 6 records of 10
    local first = ws(KEYS.alice, { { read = 10 }, { ack = "cursor", index = 6 }, { close = true } })
    assert.same({ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, offsets(first.records))
    assert.equal(6, committed(t, alice, 6))
    assert.equal(null, helpers.kafka_tool("committed", "--topic " .. t .. " --group " .. bob)["0"],
                 "bob has acknowledged nothing yet")
    -- bob starts at his own group's commits (none: auto_offset_reset) and acknowledges all 10
    local other = ws(KEYS.bob, { { read = 10 }, { ack = "last" }, { close = true } })
    assert.same(offsets(first.records), offsets(other.records))
    assert.equal(10, committed(t, bob, 10))
    assert.equal(6, committed(t, alice, 6), "bob's acknowledgements moved alice's group")
    -- alice resumes at her last acknowledgement, not at bob's
    local again = ws(KEYS.alice, { { read = 4 }, { ack = "last" }, { quiet = 0.5 }, { close = true } })
    assert.same({ 6, 7, 8, 9 }, offsets(again.records))
    assert.equal(10, committed(t, alice, 10))
  end)

  it("keeps a Kong consumer's Kafka consumer open while a WebSocket of it is: with max_consumer_groups " ..
     "= 1 another consumer's upgrade gets a 503, and gets in once that WebSocket closed", function()
    local t = topics.wsbounded
    local upgrade = { Host = "wsbounded.test", Upgrade = "websocket", Connection = "Upgrade",
                      ["Sec-WebSocket-Version"] = "13", ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==" }
    local collect = ws_client.start(host, "wsbounded.test", "/?apikey=" .. KEYS.alice,
                                    { { read = 1, timeout = 30 }, { close = true } })
    local status, body, headers = host:get("/?apikey=" .. KEYS.bob, upgrade)
    assert.equal(503, status)
    assert.equal("1", headers["retry-after"])
    assert.same({ message = "too many Kong consumers read through this plugin on this worker at once " ..
                            "(max_consumer_groups); retry" }, cjson.decode(body))
    produce(t, 1)
    assert.same({ 0 }, offsets(collect().records))
    -- alice's stream ends once the server has sent its close: wait for it to let go of the consumer
    local later
    assert.truthy(proc.wait_until(function()
      later = ws_client.run(host, "wsbounded.test", "/?from=earliest&apikey=" .. KEYS.bob,
                            { { read = 1 }, { close = true } })
      return later.status == 101
    end, 5), "bob's upgrade was refused after alice's WebSocket closed")
    assert.same({ 0 }, offsets(later.records))
  end)
end)
