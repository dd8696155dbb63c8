-- server-sent-events mode end to end: framing, start positions, resume, broadcast, slow and gone clients.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local wait = require "spec.helpers.wait"
local cjson = require "cjson"


local function produce(topic, args, port)
  return helpers.kafka_tool("produce", "--topic " .. topic .. " " .. (args or ""), port)
end


-- Opens a stream; returns the connection (positioned after the headers), status and headers.
local function open(host, path, host_header, headers)
  local conn = host:connect(30)
  local h = { Host = host_header, Accept = "text/event-stream" }
  for k, v in pairs(headers or {}) do h[k] = v end
  local status, response_headers = conn:send_request("GET", path, h)
  assert(status, response_headers)
  return conn, status, response_headers
end


local function messages(events)
  local list = {}
  for _, e in ipairs(events) do
    if (e.event or "message") == "message" and e.data then
      local record = assert(cjson.decode(e.data), "data is one line of JSON: " .. e.data)
      record.id = e.id
      list[#list + 1] = record
    end
  end
  return list
end


-- Starts `clients` clients of spec/helpers/sse_clients.py with `args` in the background and returns once
-- every one has its stream's headers (its start position is fixed then); the returned function waits for
-- the clients and gives their summary and raw output.
local function start_clients(name, clients, args)
  local ready = helpers.RUN_DIR .. "/" .. name .. ".ready"
  os.remove(ready)
  local pipe = assert(io.popen(string.format("python3 %s/spec/helpers/sse_clients.py --clients %d %s " ..
                                             "--ready-file %s 2>&1", helpers.ROOT, clients, args, ready)))
  local started
  assert.truthy(proc.wait_until(function()
    local file = io.open(ready)
    started = file and tonumber(file:read("*a"))
    if file then file:close() end
    return started
  end, 30, 0.05), "the clients did not start")
  assert.equal(clients, started, "clients whose stream started")
  return function()
    local output = pipe:read("*a")
    pipe:close()
    return assert(cjson.decode(output:match("([^\n]+)\n*$") or ""), output), output
  end
end


local function route(name, topic, overrides)
  local config = helpers.plugin_config(topic, overrides)
  config.mode = "server-sent-events"
  return { name = name, hosts = { name .. ".test" },
           plugins = { { name = "confluent-consume", config = config } } }
end


describe("server-sent-events", function()
  local host, solo
  local T = {}

  lazy_setup(function()
    T.frames = helpers.create_topic(helpers.unique_name("frames"), 1)
    T.starts = helpers.create_topic(helpers.unique_name("starts"), 1)
    T.resume = helpers.create_topic(helpers.unique_name("resume"), 3)
    T.pair = helpers.create_topic(helpers.unique_name("pair"), 2)
    T.slow = helpers.create_topic(helpers.unique_name("slow"), 1)
    T.crowd = helpers.create_topic(helpers.unique_name("crowd"), 1)
    T.gone = helpers.create_topic(helpers.unique_name("gone"), 1)
    -- a backlog that streams from the earliest record take a while to catch up with
    produce(T.gone, "--count 50000 --size 200")
    host = helpers.start_host({ workers = 2, routes = {
      route("frames", T.frames, { message_deserializer = "json" }),
      route("starts", T.starts, { heartbeat_interval = 1000, auto_offset_reset = "latest",
                                  enforce_latest_offset_reset = true }),
      route("resume", T.resume, {}),
      route("pair", T.pair, {}),
      route("slow", T.slow, { buffer_max_bytes = 1048576, max_bytes = 65536 }),
    } })
    solo = helpers.start_host({ workers = 1, check_client_abort = true, routes = {
      route("crowd", T.crowd, {}),
      route("gone", T.gone, {}),
      { name = "quick", hosts = { "quick.test" }, plugins = { { name = "confluent-consume",
        config = helpers.plugin_config(T.crowd, { auto_offset_reset = "earliest" }) } } },
    } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    if solo then solo:stop() end
  end)

  it("frames one event per record: a cursor id, and one line of JSON even for newlines and binary", function()
    local t = T.frames
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --key 'a\nb' --value '{\n  \"x\": 1\n}'")
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --value-hex 6c696e65310d0a6c696e6532")
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --key-hex ff0a00 --value-hex 0a0aff")
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --value 'data: fake\n\nevent: x' " ..
                       "--header 'h=v' --header-hex bin=0a")
    local conn, status, headers = open(host, "/?from=earliest", "frames.test")
    assert.equal(200, status)
    assert.equal("text/event-stream", headers["content-type"])
    assert.equal("no-cache", headers["cache-control"])
    local events = conn:read_events(4, 10)
    conn:close()
    assert.equal("3000", events[1].retry)
    local records = messages(events)
    assert.equal(4, #records)
    assert.same({ x = 1 }, records[1].value)
    assert.equal("a\nb", records[1].key)
    assert.equal(t, records[1].topic)
    assert.equal(0, records[1].partition)
    assert.equal("line1\r\nline2", records[2].value)
    assert.equal("not valid JSON", records[2].value_error)
    assert.same({ base64 = "/woA" }, records[3].key)
    assert.same({ base64 = "Cgr/" }, records[3].value)
    assert.equal("data: fake\n\nevent: x", records[4].value)
    assert.same({ h = "v", bin = "\n" }, records[4].headers)
    for i, r in ipairs(records) do
      assert.equal(i - 1, r.offset)
      assert.matches("^%x+%-" .. i .. "$", r.id)
    end
  end)

  it("starts at auto_offset_reset, or where from= says, and heartbeats while idle", function()
    local t = T.starts
    produce(t, "--count 5 --format text")
    -- no from: auto_offset_reset, here latest (enforced)
    local conn = open(host, "/", "starts.test")
    local idle = conn:read_events(1, 1.6, "none")
    local heartbeats = 0
    for _, e in ipairs(idle) do
      if e.comment then heartbeats = heartbeats + 1 end
    end
    assert.is_true(heartbeats >= 1, "a heartbeat comment within 1.6 s")
    local earliest = open(host, "/?from=earliest", "starts.test")
    local latest = open(host, "/?from=latest", "starts.test")
    local t_mid = math.floor(helpers.now() * 1000)
    produce(t, "--count 2 --format text")
    local by_time = open(host, "/?from=" .. t_mid, "starts.test")
    local fresh = messages(conn:read_events(2, 10))
    assert.same({ 5, 6 }, { fresh[1].offset, fresh[2].offset })
    local all = messages(earliest:read_events(7, 10))
    assert.equal(7, #all)
    assert.equal(0, all[1].offset)
    local only_new = messages(latest:read_events(2, 10))
    assert.same({ 5, 6 }, { only_new[1].offset, only_new[2].offset })
    local since = messages(by_time:read_events(2, 10))
    assert.same({ 5, 6 }, { since[1].offset, since[2].offset })
    for _, c in ipairs({ conn, earliest, latest, by_time }) do c:close() end
  end)

  it("rejects a malformed start or cursor with 400 before the stream starts", function()
    for _, case in ipairs({
      { "/?from=yesterday" }, { "/?from=-5" }, { "/?from=1&from=2" },
      { "/?last_event_id=garbage" }, { "/", { ["Last-Event-ID"] = "00000000-1" } },
      { "/", { ["Last-Event-ID"] = "x-1.2.3" } }, { "/?last_event_id=" .. string.rep("9", 5000) },
    }) do
      local h = { Host = "resume.test" }
      for k, v in pairs(case[2] or {}) do h[k] = v end
      local status, body, headers = host:get(case[1], h)
      assert.equal(400, status, case[1] .. " " .. body)
      assert.matches("application/json", headers["content-type"], 1, true)
      assert.is_string(cjson.decode(body).message)
    end
  end)

  it("resumes by Last-Event-ID exactly after the last event, on any worker", function()
    local t = T.resume
    produce(t, "--count 30 --partitions 3")
    local seen, order, workers = {}, {}, {}
    local function take(path, headers, n)
      local conn, _, response_headers = open(host, path, "resume.test", headers)
      workers[#workers + 1] = host:worker_pid_of(response_headers)
      local records = messages(conn:read_events(n, 10))
      conn:close()
      assert.equal(n, #records)
      for _, r in ipairs(records) do
        local key = r.partition .. ":" .. r.offset
        assert.is_nil(seen[key], "duplicate " .. key)
        seen[key] = true
        order[#order + 1] = r
      end
      return records[#records].id
    end
    local id = take("/?from=earliest", nil, 10)
    produce(t, "--count 30 --partitions 3")
    -- reconnect until a resume landed on the other worker, then once more by query argument
    local crossed = false
    for _ = 1, 4 do
      local before = workers[#workers]
      id = take("/", { ["Last-Event-ID"] = id }, 5)
      crossed = crossed or workers[#workers] ~= before
    end
    while not crossed and #workers < 30 do
      local before = workers[#workers]
      id = take("/", { ["Last-Event-ID"] = id }, 1)
      crossed = workers[#workers] ~= before
    end
    assert.is_true(crossed, "a resume was served by another worker")
    local remaining = 60
    for _ in pairs(seen) do remaining = remaining - 1 end
    id = take("/?last_event_id=" .. id, nil, remaining)
    local count = 0
    for _ in pairs(seen) do count = count + 1 end
    assert.equal(60, count)
    local next_offset = { [0] = 0, 0, 0 }
    for _, r in ipairs(order) do
      assert.equal(next_offset[r.partition], r.offset, "gap or reorder in partition " .. r.partition)
      next_offset[r.partition] = r.offset + 1
    end
    assert.matches("%-20%.20%.20$", id)
  end)

  it("gives every client the identical sequence of every partition", function()
    produce(T.pair, "--count 200 --partitions 2")
    local result = start_clients("pair", 2, string.format("--port %d --host pair.test --path '/?from=earliest' " ..
                                                          "--events 200 --timeout 20", host.proxy_port))()
    assert.equal(2, result.complete)
    assert.equal(1, result.sequences)
  end)

  it("cuts a slow client with an error event while the others continue", function()
    local finish = start_clients("slow", 4, string.format("--port %d --host slow.test --path '/?from=latest' " ..
                                                          "--events 1200 --timeout 40 --slow 7", host.proxy_port))
    -- 12 MB in about 5 s while the slow client sleeps 7 s: more than the 1 MiB buffer and every socket
    -- buffer on the way (a few MB on loopback) can hold for it
    produce(T.slow, "--count 1200 --size 10000 --interval-ms 4")
    local result = finish()
    assert.is_table(result.slow, cjson.encode(result))
    assert.equal(3, result.complete - (result.slow.events >= 1200 and 1 or 0), cjson.encode(result))
    assert.equal(1, result.sequences)
    assert.matches("fell too far behind", result.slow.errors[1] or "", 1, true)
    assert.is_true(result.slow.events < 1200)
  end)

  it("serves 200 streams on one worker: every client gets every record", function()
    local finish = start_clients("crowd", 200, string.format("--port %d --host crowd.test --path '/?from=latest' " ..
                                                             "--events 100 --timeout 40", solo.proxy_port))
    produce(T.crowd, "--count 100")
    local result, output = finish()
    assert.equal(200, result.complete, output)
    assert.equal(1, result.sequences)
    assert.same({}, result.errors)
  end)

  it("keeps a one-worker event loop responsive while 100 streams idle", function()
    local finish = start_clients("idle", 100, string.format("--port %d --host crowd.test --path '/?from=latest' " ..
                                                            "--events 1 --timeout 8", solo.proxy_port))
    solo:time_requests("/messages?max_records=1", "quick.test", 1) -- creates the consumer
    local times = solo:time_requests("/messages?max_records=1", "quick.test", 50)
    -- the streams were open all along: none had ended when the quick requests were done
    assert.equal(100, #wait.client_ports(solo, "python3"), "streams open after the quick requests")
    finish()
    assert.is_true(times[50] < 0.05, "slowest quick request took " .. times[50] * 1000 .. " ms")
  end)

  it("releases a gone client's resources within a second", function()
    local pid = solo:worker_pids()[1]
    local c = open(solo, "/?from=latest", "gone.test")
    c:read_events(1, 0.5, "none")
    c:close()
    -- the route's shared consumer runs; its threads and descriptors are the baseline once they hold still
    -- (librdkafka starts a thread per broker it learns of, a moment after the consumer starts)
    local baseline = proc.steady(pid, 10, 1)
    -- streams that catch up from the earliest record each hold a replay consumer while connected: it is
    -- ready before the stream's headers are sent
    local conns = {}
    for i = 1, 20 do
      conns[i] = open(solo, "/?from=earliest", "gone.test")
    end
    assert.is_true(proc.stats(pid).threads > baseline.threads, "replay consumers were running")
    local t_close = helpers.now()
    for i = 1, 20 do
      conns[i]:close()
    end
    local after = proc.settle(pid, baseline, 1)
    print(("gone clients: baseline %s; %.2f s after 20 streams closed: %s")
          :format(proc.format(baseline), helpers.now() - t_close, proc.format(after)))
    assert.equal(baseline.threads, after.threads)
    assert.equal(baseline.fds, after.fds)
  end)
end)


describe("server-sent-events when the broker stops mid-stream", function()
  local host, topic, broker_dir
  local port = helpers.MEMORY_BROKER_PORT + 3

  local function broker(action, extra)
    helpers.broker(broker_dir, action, extra)
  end

  lazy_setup(function()
    broker_dir = helpers.RUN_DIR .. "/broker-sse-faults"
    helpers.sh("rm -rf " .. broker_dir)
    broker("start", "--port " .. port .. " --storage sqlite")
    topic = helpers.unique_name("ssedown")
    assert(helpers.sh(string.format("%s/scripts/broker.sh topic --port %d %s 1", helpers.ROOT, port, topic)))
    local r = route("ssedown", topic, { heartbeat_interval = 1000 })
    r.plugins[1].config.bootstrap_servers[1].port = port
    host = helpers.start_host({ workers = 1, routes = { r } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    broker("stop")
  end)

  it("sends an error event, then continues without loss once the broker is back", function()
    local conn = open(host, "/?from=latest", "ssedown.test")
    conn:read_events(1, 0.5, "none")
    produce(topic, "--count 5 --format text", port)
    local first = messages(conn:read_events(5, 10))
    assert.equal(5, #first)
    broker("stop", "--signal KILL")
    local events = conn:read_events(1, 10, "error")
    local last = events[#events]
    assert.equal("error", last.event)
    assert.matches("Kafka is unavailable", cjson.decode(last.data).message, 1, true)
    broker("start", "--port " .. port .. " --storage sqlite")
    produce(topic, "--count 5 --format text", port)
    local rest = messages(conn:read_events(5, 20))
    conn:close()
    assert.equal(5, #rest)
    for i, r in ipairs(rest) do
      assert.equal(4 + i, r.offset)
    end
  end)
end)
