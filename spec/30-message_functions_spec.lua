-- message_by_lua_functions: Kong's documented examples work as written in both modes, functions chain in
-- order, dropped records are consumed, the sandbox keeps os/io/load/require out, a failing function
-- leaves its record as read with the error, a function that never ends is cut off without stalling the
-- worker, and a server-sent-events route runs its functions once per record per worker.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local cjson = require "cjson.safe"
local socket = require "socket"


local null = cjson.null

-- Kong's documented examples, verbatim.
local FILTER = [[
return function(message)
  local m = type(message) == "table" and message or { value = message }
  if m.value == nil or (type(m.value)=="string" and #m.value==0) then return nil end
  return m
end
]]
local TRANSFORM = [[
return function(message)
  local json = require("cjson.safe")
  local m = type(message) == "table" and message or { value = message }
  if type(m.value) == "string" then m.decoded = json.decode(m.value) or nil end
  m.processed_by_lua = true
  return m
end
]]
local LOOP = "return function(m) while true do end end"
-- Counts its calls in this worker (the chain lives as long as the configuration) and stamps the count.
local COUNT = "local calls = 0 return function(m) calls = calls + 1 m.calls = calls return m end"


local function group_of(name)
  return { mode = "manual", consumer_group_id = name .. "-group" }
end


local function route(name, topic, functions, overrides)
  local config = { auto_offset_reset = "earliest", message_by_lua_functions = functions,
                   consumer_group = group_of(name) }
  for k, v in pairs(overrides or {}) do
    config[k] = v
  end
  return helpers.route(name, topic, config)
end


-- The records one GET of `name` returns (after at most `wait` ms), in offset order.
local function get(host, name, wait)
  local status, body, _, json = host:get("/?wait=" .. (wait or 3000), { Host = name .. ".test" })
  assert.equal(200, status, body)
  assert.is_table(json, body)
  local list = {}
  for _, r in ipairs(helpers.records_of(json)) do
    list[#list + 1] = r.record
  end
  return list
end


local function produce_values(topic, values)
  for _, v in ipairs(values) do
    helpers.kafka_tool("produce-one", "--topic " .. topic .. " --value '" .. v .. "'")
  end
end


-- A stream of `name` from `from`, once the gateway answered 200.
local function open_stream(host, name, from)
  local conn = host:connect(30)
  assert.equal(200, (conn:send_request("GET", "/?from=" .. from, { Host = name .. ".test",
                                                                   Accept = "text/event-stream" })))
  return conn
end


local function message_events(conn, n)
  local events, why = conn:read_events(n, 30)
  assert.equal("count", why)
  local list = {}
  for _, e in ipairs(events) do
    if e.data and (e.event or "message") == "message" then
      list[#list + 1] = assert(cjson.decode(e.data))
    end
  end
  return list
end


describe("message_by_lua_functions", function()
  local host
  local topics = {}

  lazy_setup(function()
    for _, name in ipairs({ "kong", "chain", "sandbox", "loop", "quick", "stream", "count", "patch" }) do
      topics[name] = helpers.create_topic(helpers.unique_name("fn-" .. name), 1)
    end
    produce_values(topics.kong, { "", "plain", '{"a":1}', "" })
    produce_values(topics.stream, { "", "plain", '{"a":1}', "" })
    produce_values(topics.chain, { "x" })
    produce_values(topics.sandbox, { "s" })
    helpers.kafka_tool("produce", "--topic " .. topics.loop .. " --count 300")
    host = helpers.start_host({ workers = 1, routes = {
      route("filter", topics.kong, { FILTER }),
      route("transform", topics.kong, { TRANSFORM }),
      route("chain", topics.chain, {
        "return function(m) m.trail = 'first' return m end",
        "return function(m) m.trail = m.trail .. ',second' return m end",
      }),
      route("os", topics.sandbox, { "return function(m) m.t = os.time() return m end" }),
      route("io", topics.sandbox, { "return function(m) io.open('/etc/passwd') return m end" }),
      route("load", topics.sandbox, { "return function(m) return load('return 1')() end" }),
      route("require", topics.sandbox, { "return function(m) return require('os').exit() end" }),
      route("raise", topics.sandbox, { "return function(m)\n  error('boom')\nend" }),
      route("scalar", topics.sandbox, { "return function(m) return 'not a table' end" }),
      route("strings", topics.sandbox, { "return function(m) getmetatable('').__index.upper = nil end" }),
      route("caught", topics.sandbox, {
        "return function(m) while true do pcall(function() while true do end end) end end",
      }),
      route("loop", topics.loop, { LOOP }),
      route("quick", topics.quick, nil),
      route("stream", topics.stream, { FILTER, TRANSFORM }, { mode = "server-sent-events" }),
      route("count", topics.count, { COUNT }, { mode = "server-sent-events" }),
      route("patch", topics.patch, { "return function(m) m.version = 'one' return m end" }),
    } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("Admin API: 400 naming the function's index and the compile error", function()
    local status, body = host:admin("POST", "/plugins", {
      name = "confluent-consume",
      config = helpers.plugin_config(topics.kong, {
        message_by_lua_functions = { FILTER, "return function(m) return m" },
      }),
    })
    assert.equal(400, status)
    assert.matches("config.message_by_lua_functions.2: does not compile: line 1: 'end' expected near '<eof>'",
                   body.message, 1, true)
    assert.equal("does not compile: line 1: 'end' expected near '<eof>'",
                 body.fields.config.message_by_lua_functions[2])
  end)

  it("Admin API: 400 for source that compiles but returns no function, or never returns", function()
    local status, body = host:admin("POST", "/plugins", {
      name = "confluent-consume",
      config = helpers.plugin_config(topics.kong, { message_by_lua_functions = { "return 42" } }),
    })
    assert.equal(400, status)
    assert.matches("config.message_by_lua_functions.1: must return a function(message), returns a number",
                   body.message, 1, true)
    status, body = host:admin("POST", "/plugins", {
      name = "confluent-consume",
      config = helpers.plugin_config(topics.kong, {
        message_by_lua_functions = { "while true do end return function(m) return m end" },
      }),
    })
    assert.equal(400, status)
    assert.matches("config.message_by_lua_functions.1: fails when loaded: cut off after 1000000 Lua instructions",
                   body.message, 1, true)
  end)

  it("http-get: Kong's filter example drops the empty values, whose offsets are committed too", function()
    local records = get(host, "filter")
    assert.same({ 1, 2 }, { records[1].offset, records[2].offset })
    assert.equal(2, #records)
    assert.same({ "plain", '{"a":1}' }, { records[1].value, records[2].value })
    assert.is_nil(records[1].topic, "topic and partition stay the keys the records are under")
    local committed
    assert.truthy(proc.wait_until(function()
      committed = helpers.kafka_tool("committed", "--topic " .. topics.kong .. " --group filter-group")
      return committed["0"] == 4
    end, 5), "committed " .. tostring(committed and committed["0"]))
    assert.same({}, get(host, "filter", 200), "a second GET returns none of them")
  end)

  it("http-get: Kong's transform example decodes JSON values and marks every record", function()
    local records = get(host, "transform")
    assert.equal(4, #records)
    for _, r in ipairs(records) do
      assert.is_true(r.processed_by_lua)
      assert.is_nil(r.message_function_error)
    end
    assert.is_nil(records[2].decoded)
    assert.same({ a = 1 }, records[3].decoded)
    assert.equal('{"a":1}', records[3].value)
    assert.same({}, records[3].headers)
  end)

  it("http-get: functions run in the configured order", function()
    local records = get(host, "chain")
    assert.equal(1, #records)
    assert.equal("first,second", records[1].trail)
    assert.equal("x", records[1].value)
  end)

  it("a function reaching for os, io, load or require('os') fails its record, served as read", function()
    local expected = {
      os = "function 1: line 1: attempt to index global 'os' (a nil value)",
      io = "function 1: line 1: attempt to index global 'io' (a nil value)",
      load = "function 1: line 1: attempt to call global 'load' (a nil value)",
      ["require"] = "function 1: line 1: module 'os' is not available to message functions",
      -- a string's metatable is the worker's string library
      strings = "function 1: line 1: attempt to index a nil value",
    }
    for name, message in pairs(expected) do
      local records = get(host, name)
      assert.equal(1, #records, name)
      assert.equal(message, records[1].message_function_error)
      assert.equal("s", records[1].value)
      assert.same({}, records[1].headers)
      assert.is_nil(records[1].t)
    end
  end)

  it("a function that raises, loops under pcall, or returns other than a table or nil: the record with the error",
     function()
    local raised = get(host, "raise")
    assert.equal("function 1: line 2: boom", raised[1].message_function_error)
    assert.equal("s", raised[1].value)
    local caught = get(host, "caught")
    assert.equal("function 1: cut off after 1000000 Lua instructions", caught[1].message_function_error,
                 "catching the cut-off with pcall does not get around it")
    local scalar = get(host, "scalar")
    assert.equal("function 1: returned a string, not a message table or nil", scalar[1].message_function_error)
    assert.equal("s", scalar[1].value)
  end)

  it("a function that never ends is cut off per record; meanwhile the worker answers others in a fifth of the time",
     function()
    assert.equal(200, (host:get("/?wait=0", { Host = "quick.test" })))  -- its consumer is up
    local loop = host:connect(60)
    local started = helpers.now()
    assert(loop:send("GET", "/?wait=5000", { Host = "loop.test" }))
    local latencies = {}
    local deadline = helpers.now() + 10
    while helpers.now() < deadline and #socket.select({ loop.sock }, nil, 0) == 0 do
      local t0 = helpers.now()
      local status = host:get("/?wait=0", { Host = "quick.test" })
      latencies[#latencies + 1] = helpers.now() - t0
      assert.equal(200, status)
    end
    assert.equal(200, (loop:read_head()))
    local cut_off_in = helpers.now() - started
    local body = assert(loop:read_body())
    local json = assert(cjson.decode(body))
    loop:close()
    local records = {}
    for _, r in ipairs(helpers.records_of(json)) do
      records[#records + 1] = r.record
    end
    assert.is_true(#records >= 100, #records .. " records in the first answer")
    for _, r in ipairs(records) do
      assert.equal("function 1: cut off after 1000000 Lua instructions", r.message_function_error)
      assert.is_string(r.value)
    end
    table.sort(latencies)
    assert.is_true(#latencies >= 5, #latencies .. " requests answered while the records were cut off")
    -- one worker that ran the records through without yielding would hold every other request for all
    -- of it; the machine's load stretches both alike
    assert.is_true(latencies[#latencies] < cut_off_in / 5, string.format(
      "slowest other request %.3f s, the records were cut off in %.3f s", latencies[#latencies], cut_off_in))
  end)

  it("a configuration change through the Admin API brings in its functions", function()
    produce_values(topics.patch, { "before" })
    assert.equal("one", get(host, "patch")[1].version)
    local _, routes = host:admin("GET", "/routes")
    local route_id
    for _, r in ipairs(routes.data) do
      if r.name == "patch" then route_id = r.id end
    end
    local _, plugins = host:admin("GET", "/plugins")
    local plugin_id
    for _, p in ipairs(plugins.data) do
      if p.route.id == route_id then plugin_id = p.id end
    end
    assert.equal(200, (host:admin("PATCH", "/plugins/" .. plugin_id, { config = {
      message_by_lua_functions = { "return function(m) m.version = 'two' return m end" } } })))
    local versions = {}
    assert.truthy(proc.wait_until(function()
      produce_values(topics.patch, { "after" })
      for _, r in ipairs(get(host, "patch", 1000)) do
        versions[#versions + 1] = r.version
      end
      return versions[#versions] == "two"
    end, 10), table.concat(versions, ","))
  end)

  it("server-sent-events: Kong's examples filter and transform the stream", function()
    local conn = open_stream(host, "stream", "earliest")
    local records = message_events(conn, 2)
    conn:close()
    assert.same({ 1, 2 }, { records[1].offset, records[2].offset })
    assert.same({ topics.stream, 0 }, { records[1].topic, records[1].partition })
    assert.is_true(records[1].processed_by_lua)
    assert.same({ a = 1 }, records[2].decoded)
    assert.equal(null, records[1].decoded or null)
  end)

  it("server-sent-events: an event's id resumes after it, through catch-up and into the live records", function()
    local conn = open_stream(host, "stream", "earliest")
    local events = conn:read_events(1, 30)
    conn:close()
    local first
    for _, e in ipairs(events) do
      if e.data then first = e end
    end
    assert.equal(1, cjson.decode(first.data).offset)
    conn = host:connect(30)
    assert.equal(200, (conn:send_request("GET", "/", { Host = "stream.test", Accept = "text/event-stream",
                                                       ["Last-Event-ID"] = first.id })))
    local records = message_events(conn, 1)
    assert.equal(2, records[1].offset)
    produce_values(topics.stream, { "", "live" })
    records = message_events(conn, 1)
    conn:close()
    assert.same({ 5, "live", true }, { records[1].offset, records[1].value, records[1].processed_by_lua })
  end)

  it("server-sent-events: a function runs once per record per worker however many streams read", function()
    local streams = {}
    for i = 1, 4 do
      streams[i] = open_stream(host, "count", "latest")
    end
    helpers.kafka_tool("produce", "--topic " .. topics.count .. " --count 20")
    local seen = {}
    for i, conn in ipairs(streams) do
      local records = message_events(conn, 20)
      conn:close()
      assert.equal(20, #records)
      for _, r in ipairs(records) do
        seen[r.offset] = seen[r.offset] or r.calls
        assert.equal(seen[r.offset], r.calls, "stream " .. i .. ", offset " .. r.offset)
      end
    end
    local calls = {}
    for offset = 0, 19 do
      calls[#calls + 1] = seen[offset]
    end
    table.sort(calls)
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20 }, calls)
  end)
end)
