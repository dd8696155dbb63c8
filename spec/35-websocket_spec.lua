-- websocket mode end to end (real nginx, real broker, the `websockets` client library): the upgrade, frames
-- and fields, acknowledgements and their window, resume from the last acknowledgement, bogus and oversized
-- client frames, the closes of a stream that breaks or ends on the server, many clients on one worker.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local faults = require "spec.helpers.faults"
local ws_client = require "spec.helpers.ws"
local cjson = require "cjson"


local function produce(topic, args)
  return helpers.kafka_tool("produce", "--topic " .. topic .. " " .. (args or ""))
end


-- Counts its calls in this worker (the chain lives as long as the configuration) and stamps the count.
local COUNT = "local calls = 0 return function(m) calls = calls + 1 m.calls = calls return m end"


-- One client of the route `name` (see spec/helpers/ws_client.py for `script`).
local function ws(host, name, path, script)
  return ws_client.run(host, name .. ".test", path, script)
end


-- A websocket route, with the `ws` protocol beside `http` as a Kong route for WebSockets has.
local function route(name, topic, overrides)
  local r = helpers.route(name, topic, overrides, nil, { mode = "websocket" })
  r.protocols = { "http", "ws" }
  return r
end


local offsets = helpers.offsets


local function range(from, to)
  local list = {}
  for o = from, to do
    list[#list + 1] = o
  end
  return list
end


-- The group's committed offset of partition 0 of `topic`, once it equals `expected` (commits are
-- asynchronous), else the last one seen.
local function committed(topic, group, expected)
  local seen
  proc.wait_until(function()
    seen = helpers.kafka_tool("committed", "--topic " .. topic .. " --group " .. group)["0"]
    return seen == expected
  end, 10, 0.1)
  return seen
end


describe("websocket", function()
  local host, routes
  local T = {}

  lazy_setup(function()
    for _, name in ipairs({ "frames", "plain", "acks", "window", "resume", "bogus", "pause", "crash", "fx", "keepalive",
                            "crowd", "behind", "change", "reload", "count", "stamp", "nocommit" }) do
      T[name] = helpers.create_topic(helpers.unique_name(name), 1)
    end
    routes = {
      route("frames", T.frames, { message_deserializer = "json", auto_offset_reset = "earliest" }),
      route("plain", T.plain, { auto_offset_reset = "earliest" }),
      route("acks", T.acks, { auto_offset_reset = "earliest", max_records = 3,
                              consumer_group = { mode = "manual", consumer_group_id = T.acks .. "-g" } }),
      route("window", T.window, { auto_offset_reset = "earliest", max_unacked_records = 5, max_records = 2,
                                  ack_timeout = 2000,
                                  consumer_group = { mode = "manual", consumer_group_id = T.window .. "-g" } }),
      route("resume", T.resume, { auto_offset_reset = "earliest",
                                  consumer_group = { mode = "manual", consumer_group_id = T.resume .. "-g" } }),
      route("crash", T.crash, { auto_offset_reset = "earliest", max_records = 100, max_unacked_records = 300,
                                consumer_group = { mode = "manual", consumer_group_id = T.crash .. "-g" } }),
      route("fx", T.fx, { auto_offset_reset = "earliest",
                          consumer_group = { mode = "manual", consumer_group_id = T.fx .. "-g" },
                          message_by_lua_functions = { [[
return function(message)
  if message.offset % 2 == 0 then
    return nil
  end
  message.seen_by = "fn"
  return message
end]] } }),
      route("keepalive", T.keepalive, { heartbeat_interval = 1000 }),
      route("bogus", T.bogus, { auto_offset_reset = "earliest" }),
      route("pause", T.pause, { auto_offset_reset = "latest", enforce_latest_offset_reset = true }),
      route("crowd", T.crowd, { auto_offset_reset = "latest", enforce_latest_offset_reset = true }),
      -- the smallest buffer: 64 KiB of records, which 2,000 of 200 bytes overrun
      route("behind", T.behind, { auto_offset_reset = "latest", enforce_latest_offset_reset = true,
                                  buffer_max_bytes = 65536 }),
      route("change", T.change, { auto_offset_reset = "latest", enforce_latest_offset_reset = true }),
      route("reload", T.reload, { auto_offset_reset = "latest", enforce_latest_offset_reset = true }),
      route("count", T.count, { auto_offset_reset = "latest", enforce_latest_offset_reset = true,
                                message_by_lua_functions = { COUNT } }),
      route("stamp", T.stamp, { auto_offset_reset = "earliest" }),
      route("nocommit", T.nocommit, { auto_offset_reset = "earliest", commit_strategy = "off",
                                      consumer_group = { mode = "manual", consumer_group_id = T.nocommit .. "-g" } }),
    }
    host = helpers.start_host({ workers = 1, check_client_abort = true, routes = routes })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("answers a request without a WebSocket upgrade 426 naming the mode, and a broken upgrade 400", function()
    local status, _, headers, body = host:get("/", { Host = "frames.test" })
    assert.equal(426, status)
    assert.same({ message = "this route streams records over a WebSocket (mode websocket): send a WebSocket " ..
                            "upgrade request" }, body)
    assert.equal("websocket", headers["upgrade"])
    -- an upgrade lua-resty-websocket refuses (no Connection: Upgrade, no key) is a 400 saying why
    status, _, _, body = host:get("/", { Host = "frames.test", Upgrade = "websocket" })
    assert.equal(400, status)
    assert.matches("^invalid WebSocket handshake: ", body.message)
  end)

  it("answers a bad argument or cursor before the upgrade 400 with Kong's JSON message", function()
    local upgrade = { Host = "plain.test", Upgrade = "websocket" }
    local status, _, _, body = host:get("/?acks=yes", upgrade)
    assert.equal(400, status)
    assert.same({ message = "acks must be true or false" }, body)
    status, _, _, body = host:get("/?last_event_id=nonsense", upgrade)
    assert.equal(400, status)
    assert.same({ message = "invalid last_event_id: cursor is malformed" }, body)
    status, _, _, body = host:get("/?from=yesterday", upgrade)
    assert.equal(400, status)
    assert.same({ message = "from must be earliest, latest or a timestamp in milliseconds since the epoch" }, body)
  end)

  it("sends JSON text frames of records, each with topic, partition, offset, timestamp, key, value, " ..
     "headers and its cursor, and the batch's cursor", function()
    local t = T.frames
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --key k1 --value '{\"x\": 1}' --header h=v")
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --value-hex 0aff")
    local result = ws(host, "frames", "/", { { read = 2 }, { close = true } })
    assert.equal(101, result.status)
    assert.equal(2, #result.records)
    local r = result.records[1]
    assert.same({ t, 0, 0, "k1", { x = 1 }, { h = "v" } }, { r.topic, r.partition, r.offset, r.key, r.value, r.headers })
    assert.is_number(r.timestamp)
    assert.matches("^%x+%-1$", r.cursor)
    assert.same({ base64 = "Cv8=" }, result.records[2].value)
    assert.matches("^%x+%-2$", result.records[2].cursor)
    assert.same({ code = 1000, reason = "" }, result.close)
  end)

  it("without acks streams like server-sent-events and resumes after a cursor given as last_event_id", function()
    local t = T.plain
    produce(t, "--count 10 --format text")
    local first = ws(host, "plain", "/", { { read = 10 }, { close = true } })
    assert.same(range(0, 9), offsets(first.records))
    produce(t, "--count 5 --format text")
    local cursor = first.records[4].cursor
    local again = ws(host, "plain", "/?last_event_id=" .. cursor, { { read = 11 }, { close = true } })
    assert.same(range(4, 14), offsets(again.records))
    local live = ws(host, "plain", "/?from=latest", { { quiet = 1 }, { close = true } })
    assert.same({}, live.records)
  end)

  it("starts at the first record at or after ?from=<epoch ms>", function()
    for i = 1, 3 do
      helpers.kafka_tool("produce-one", "--topic " .. T.stamp .. " --value v" .. i)
    end
    local all = ws(host, "stamp", "/?from=earliest", { { read = 3 }, { close = true } })
    assert.same({ 0, 1, 2 }, offsets(all.records))
    assert.is_true(all.records[1].timestamp < all.records[2].timestamp, "records produced a process apart")
    local from = ws(host, "stamp", "/?from=" .. string.format("%d", all.records[2].timestamp),
                    { { read = 2 }, { close = true } })
    assert.same({ 1, 2 }, offsets(from.records))
  end)

  it("runs a message function once per record per worker however many connections read", function()
    local clients = {}
    for i = 1, 4 do
      clients[i] = ws_client.start(host, "count.test", "/", { { read = 20 }, { close = true } })
    end
    produce(T.count, "--count 20 --format text")
    local seen = {}
    for i, collect in ipairs(clients) do
      local records = collect().records
      assert.same(range(0, 19), offsets(records))
      for _, r in ipairs(records) do
        seen[r.offset] = seen[r.offset] or r.calls
        assert.equal(seen[r.offset], r.calls, "connection " .. i .. ", offset " .. r.offset)
      end
    end
    local calls = {}
    for offset = 0, 19 do
      calls[#calls + 1] = seen[offset]
    end
    table.sort(calls)
    assert.same(range(1, 20), calls)
  end)

  it("with commit_strategy = off commits no acknowledgement: a new connection starts at auto_offset_reset",
     function()
    local t = T.nocommit
    produce(t, "--count 3 --format text")
    local first = ws(host, "nocommit", "/?acks=true", { { read = 3 }, { ack = "last" }, { quiet = 0.5 },
                                                        { close = true } })
    assert.same({ 0, 1, 2 }, offsets(first.records))
    local again = ws(host, "nocommit", "/?acks=true", { { read = 3 }, { close = true } })
    assert.same({ 0, 1, 2 }, offsets(again.records))
    assert.equal(cjson.null, helpers.kafka_tool("committed", "--topic " .. t .. " --group " .. t .. "-g")["0"])
  end)

  it("commits only what was acknowledged: cumulative acks, single acks out of order", function()
    local t, group = T.acks, T.acks .. "-g"
    produce(t, "--count 9 --format text")
    -- records 0..8 arrive in frames of 3; the client acks 0..2 by the first frame's cursor, then 5, 4, 3
    -- one by one (out of order), and leaves 6..8 unacknowledged
    local result = ws(host, "acks", "/?acks=true", {
      { read = 9 }, { ack = "cursor", index = 3 }, { ack = "records", order = "reverse", from = 4, to = 6 },
      { quiet = 1 }, { close = true } })
    assert.same(range(0, 8), offsets(result.records))
    for _, size in ipairs(result.sizes) do
      assert.is_true(size >= 1 and size <= 3, "a frame carries at most max_records: " .. size)
    end
    assert.equal(6, committed(t, group, 6))
    -- a single ack of 8 with 6 and 7 owed commits nothing more
    result = ws(host, "acks", "/?acks=true", { { read = 3 }, { ack = "records", from = 3, to = 3 }, { quiet = 1 },
                                                { close = true } })
    assert.same({ 6, 7, 8 }, offsets(result.records), "the connection resumes at the group's commit")
    assert.equal(6, committed(t, group, 6))
  end)

  it("pauses sending while the window of unacknowledged records is full, loses nothing, and closes a " ..
     "connection that never acknowledges with 4008", function()
    local t = T.window
    produce(t, "--count 20 --format text")
    -- window 5: the client gets 5 records (frames of 2, the third frame brings it to 6 at most) and
    -- nothing more until it acks
    local result = ws(host, "window", "/?acks=true", {
      { read = 5 }, { quiet = 1 }, { ack = "last" }, { read = 10 }, { ack = "last" }, { read = 15 },
      { ack = "last" }, { read = 20 }, { ack = "last" }, { close = true } })
    assert.same(range(0, 19), offsets(result.records))
    assert.same({ 0 }, result.quiet, "nothing beyond the window before the first ack")
    assert.equal(20, committed(t, T.window .. "-g", 20))
    produce(t, "--count 10 --format text")
    local stuck = ws(host, "window", "/?acks=true", { { read = 5 }, { quiet = 1 }, { wait_close = 5 } })
    assert.same(range(20, 25), offsets(stuck.records), "a full window holds further records")
    assert.equal(4008, stuck.close.code)
    assert.matches("ack_timeout", stuck.close.reason, 1, true)
    assert.same({ type = "error", final = true,
                  message = "no acknowledgement within ack_timeout while the window was full" }, stuck.errors[1])
  end)

  it("runs message functions on every record: dropped records are not sent, and an ack of the frame's " ..
     "cursor commits past them", function()
    local t = T.fx
    produce(t, "--count 10 --format text")
    local result = ws(host, "fx", "/?acks=true", { { read = 5 }, { ack = "last" }, { quiet = 0.5 },
                                                   { close = true } })
    assert.same({ 1, 3, 5, 7, 9 }, offsets(result.records))
    for _, r in ipairs(result.records) do
      assert.equal("fn", r.seen_by)
      assert.equal(t, r.topic)
      assert.matches("^%x+%-" .. (r.offset + 1) .. "$", r.cursor)
    end
    assert.equal(10, committed(t, T.fx .. "-g", 10))
  end)

  it("resumes after a disconnect from the last acknowledgement with no gap", function()
    local t = T.resume
    produce(t, "--count 30 --format text")
    local first = ws(host, "resume", "/?acks=true", { { read = 30 }, { ack = "cursor", index = 12 }, { quiet = 0.5 },
                                                      { drop = true } })
    assert.same(range(0, 29), offsets(first.records))
    assert.equal(12, committed(t, T.resume .. "-g", 12))
    produce(t, "--count 5 --format text")
    local second = ws(host, "resume", "/?acks=true", { { read = 23 }, { ack = "last" }, { quiet = 0.5 },
                                                       { close = true } })
    assert.same(range(12, 34), offsets(second.records))
    assert.equal(35, committed(t, T.resume .. "-g", 35))
  end)

  it("loses nothing when the worker is SIGKILLed mid-stream: the next connection resumes at the last " ..
     "acknowledgement", function()
    local t, group = T.crash, T.crash .. "-g"
    produce(t, "--count 3000 --format text")
    local collect = ws_client.start(host, "crash.test", "/?acks=true", {
      { read = 1500, ack_each = true, timeout = 30 }, { wait_close = 30 } })
    assert.truthy(proc.wait_until(function()
      local c = helpers.kafka_tool("committed", "--topic " .. t .. " --group " .. group)["0"]
      return c ~= cjson.null and c >= 1500
    end, 30, 0.1), "the acknowledgements were committed")
    faults.kill_worker(host, host:worker_pids()[1])
    local first = collect()
    assert.equal(1006, first.close and first.close.code, "the connection broke without a close frame")
    local acked = helpers.kafka_tool("committed", "--topic " .. t .. " --group " .. group)["0"]
    assert.truthy(acked >= 1500 and acked <= #first.records, acked)
    assert.same(range(0, #first.records - 1), offsets(first.records))
    local second = ws(host, "crash", "/?acks=true", { { read = 3000 - acked, ack_each = true, timeout = 30 },
                                                       { close = true } })
    assert.same(range(acked, 2999), offsets(second.records))
    assert.equal(3000, committed(t, group, 3000))
  end)

  describe("closes with a reason, and the worker keeps serving, on", function()
    local cases = {
      { "an ack without acks", { { send = '{"type":"ack","cursor":"x-1"}' } }, 1008, "connect with ?acks=true" },
      { "malformed JSON", { { send = "{not json" } }, 1008, "not a valid client frame" },
      { "an unknown type", { { send = '{"type":"nack"}' } }, 1008, "type must be ack, pause or resume" },
      { "a binary frame", { { send_binary = "00ff" } }, 1003, "binary frames are not accepted" },
      { "a fragmented message", { { send_fragmented = { '{"type":', '"pause"}' } } }, 1003, "fragmented" },
      { "an oversized frame", { { send = string.rep("x", 70000) } }, 1009, "at most" },
      { "an unmasked frame", { { send_raw_unmasked = '{"type":"pause"}' } }, 1002, "frame unmasked" },
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        local script = { { read = 1 } }
        for _, s in ipairs(case[2]) do script[#script + 1] = s end
        script[#script + 1] = { wait_close = 5 }
        produce(T.bogus, "--count 1 --format text")
        local result = ws(host, "bogus", "/", script)
        assert.equal(case[3], result.close and result.close.code, cjson.encode(result))
        assert.matches(case[4], result.close.reason, 1, true)
        local after = ws(host, "bogus", "/?from=earliest", { { read = 1 }, { close = true } })
        assert.equal(101, after.status)
      end)
    end

    it("an unknown member", function()
      produce(T.bogus, "--count 1 --format text")
      local result = ws(host, "bogus", "/", { { read = 1 }, { send = '{"type":"pause","until":5}' },
                                              { wait_close = 5 } })
      assert.equal(1008, result.close.code)
      assert.matches("^not a valid client frame: unknown field `until`", result.close.reason)
      assert.same({ { type = "error", final = true, message = result.close.reason } }, result.errors)
    end)

    it("an ack of a partition the stream does not have", function()
      produce(T.acks, "--count 1 --format text")
      local result = ws(host, "acks", "/?acks=true&from=earliest", {
        { read = 1 }, { send = cjson.encode({ type = "ack", topic = T.acks, partition = 7, offset = 0 }) },
        { wait_close = 5 } })
      assert.same({ code = 1008, reason = "ack: this stream has no partition 7 of that topic" }, result.close)
    end)

    it("a bogus ack: an offset that was never sent, a cursor beyond what was sent", function()
      produce(T.acks, "--count 1 --format text")
      local result = ws(host, "acks", "/?acks=true&from=earliest", {
        { read = 1 }, { send = cjson.encode({ type = "ack", topic = T.acks, partition = 0, offset = 100000 }) },
        { wait_close = 5 } })
      assert.equal(1008, result.close.code)
      assert.matches("was not sent", result.close.reason, 1, true)
      local cursor = result.records[1].cursor:gsub("%-%d+$", "-100000")
      result = ws(host, "acks", "/?acks=true&from=earliest", {
        { read = 1 }, { send = cjson.encode({ type = "ack", cursor = cursor }) }, { wait_close = 5 } })
      assert.equal(1008, result.close.code)
      assert.matches("beyond the records sent", result.close.reason, 1, true)
    end)
  end)

  it("takes an acknowledgement of a record acknowledged before as harmless, and a cursor given with acks " ..
     "as the acknowledgement of every record before it", function()
    local t, group = T.resume, T.resume .. "-g"
    local before = helpers.kafka_tool("committed", "--topic " .. t .. " --group " .. group)["0"]
    before = before ~= cjson.null and before or 0
    produce(t, "--count 6 --format text")
    -- record `before` acknowledged twice, then the connection goes on: it gets a record produced after
    local result = ws(host, "resume", "/?acks=true", {
      { read = 6 }, { ack = "records", from = 1, to = 1 }, { ack = "records", from = 1, to = 1 },
      { ack = "cursor", index = 2 }, { quiet = 0.5 }, { close = true } })
    assert.same(range(before, before + 5), offsets(result.records))
    assert.same({ code = 1000, reason = "" }, result.close)
    assert.same({}, result.errors)
    assert.equal(before + 2, committed(t, group, before + 2))
    -- a connection resuming after the 4th record's cursor commits everything before it at once
    local cursor = result.records[4].cursor
    local resumed = ws(host, "resume", "/?acks=true&last_event_id=" .. cursor, { { read = 2 }, { close = true } })
    assert.same(range(before + 4, before + 5), offsets(resumed.records))
    assert.equal(before + 4, committed(t, group, before + 4))
  end)

  it("sends an error frame and closes with 1013 a connection the shared buffer left behind (here paused), " ..
     "which resumes by its cursor", function()
    local t = T.behind
    local paused, go = helpers.RUN_DIR .. "/ws-behind.paused", helpers.RUN_DIR .. "/ws-behind.go"
    os.remove(paused)
    os.remove(go)
    local slow = ws_client.start(host, "behind.test", "/", {
      { read = 1 }, { send = '{"type":"pause"}' }, { signal = paused }, { wait_file = go, timeout = 60 },
      { send = '{"type":"resume"}' }, { wait_close = 10 } })
    local probe_client = ws_client.start(host, "behind.test", "/", { { read = 2001, timeout = 60 },
                                                                     { close = true } })
    produce(t, "--count 1 --format text")
    assert.truthy(proc.wait_until(function()
      local file = io.open(paused)
      if file then file:close() end
      return file ~= nil
    end, 15, 0.05), "the slow client did not pause")
    -- 2,000 records of 200 bytes: 400 kB, past the 64 KiB the worker keeps
    produce(t, "--count 2000 --size 200")
    -- the other client reads until it has every record or is left behind itself (a burst of 400 kB
    -- overruns 64 KiB faster than a reader takes it): either way the buffer has moved past the paused one
    local probe = probe_client()
    assert.truthy(#probe.records == 2001 or (probe.close and probe.close.code == 1013), cjson.encode(probe.close))
    assert(io.open(go, "w")):close()
    local result = slow()
    assert.same({ 0 }, offsets(result.records))
    local why = "this stream fell too far behind the live records; reconnect with its cursor to resume"
    assert.same({ { type = "error", final = true, message = why } }, result.errors)
    assert.same({ code = 1013, reason = why }, result.close)
    local resumed = ws(host, "behind", "/?last_event_id=" .. result.records[1].cursor,
                       { { read = 2000, timeout = 30 }, { close = true } })
    assert.same(range(1, 2000), offsets(resumed.records))
  end)

  it("closes with 1001 and no error frame when the route's consumer settings change, and when the worker " ..
     "exits on a reload", function()
    local changed = ws_client.start(host, "change.test", "/", { { wait_close = 20 } })
    local _, list = host:admin("GET", "/plugins")
    local plugin_id
    for _, p in ipairs(list.data) do
      if p.config.topics[1].name == T.change then plugin_id = p.id end
    end
    assert.equal(200, (host:admin("PATCH", "/plugins/" .. plugin_id, { config = { fetch_wait_max_ms = 20 } })))
    local result = changed()
    assert.same({ code = 1001, reason = "the stream ended on this worker; reconnect to resume" }, result.close)
    assert.same({}, result.errors)

    local reloaded = ws_client.start(host, "reload.test", "/", { { wait_close = 20 } })
    host:reload()
    result = reloaded()
    assert.same({ code = 1001, reason = "the stream ended on this worker; reconnect to resume" }, result.close)
    assert.same({}, result.errors)
    -- the new worker serves the route
    local after = ws_client.start(host, "reload.test", "/", { { read = 1 }, { close = true } })
    produce(T.reload, "--count 1 --format text")
    assert.same({ 0 }, offsets(after().records))
  end)

  it("pings an idle connection, answers the client's pings, and closes a client that answers no ping " ..
     "with 4009", function()
    local alive = ws(host, "keepalive", "/", { { ping = "p1" }, { quiet = 3 }, { ping = "p2" }, { close = true } })
    assert.equal(2, alive.pongs, "the server answered both pings")
    assert.same({ code = 1000, reason = "" }, alive.close, "pings answered by the library keep it open")
    local dead = ws(host, "keepalive", "/", { { stall = 3.5 }, { wait_close = 5 } })
    assert.equal(4009, dead.close and dead.close.code, require("cjson").encode(dead))
    assert.equal("no pong within heartbeat_interval", dead.close.reason)
  end)

  it("holds records from pause until resume", function()
    local collect = ws_client.start(host, "pause.test", "/", { { send = '{"type":"pause"}' }, { quiet = 2 },
                                                   { send = '{"type":"resume"}' }, { read = 3 }, { close = true } })
    produce(T.pause, "--count 3 --format text")
    local result = collect()
    assert.same({ 0 }, result.quiet, "nothing arrives while paused")
    assert.equal(3, #result.records)
  end)

  it("streams every record to 500 concurrent clients on one worker", function()
    local t = T.crowd
    local collect = ws_client.start(host, "crowd.test", "/", { { read = 200, timeout = 60 }, { close = true } }, 500)
    produce(t, "--count 200 --format text")
    local summary = collect()
    assert.same({}, summary.failures)
    assert.equal(500, summary.completed)
    assert.equal(1, summary.distinct)
    assert.same(range(0, 199), offsets(summary.records))
  end)
end)


describe("websocket when the broker stops mid-stream", function()
  local host, topic, broker_dir
  local port = helpers.next_ports()

  local function broker(action, extra)
    helpers.broker(broker_dir, action, extra)
  end

  -- Waits for the file `path` a client creates with a `signal` step.
  local function signalled(path)
    return proc.wait_until(function()
      local file = io.open(path)
      if file then file:close() end
      return file ~= nil
    end, 30, 0.05)
  end

  lazy_setup(function()
    broker_dir = helpers.RUN_DIR .. "/broker-ws-faults"
    helpers.sh("rm -rf " .. broker_dir)
    broker("start", "--port " .. port .. " --storage sqlite")
    topic = helpers.create_topic(helpers.unique_name("wsdown"), 1, port)
    local r = route("wsdown", topic, { auto_offset_reset = "latest", enforce_latest_offset_reset = true })
    r.plugins[1].config.bootstrap_servers[1].port = port
    host = helpers.start_host({ workers = 1, routes = { r } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    broker("stop")
  end)

  it("sends an error frame that is not final, keeps the connection open, and goes on without loss once " ..
     "the broker is back; meanwhile a new connection gets 503 before its upgrade", function()
    local got_records, got_error = helpers.RUN_DIR .. "/wsdown.records", helpers.RUN_DIR .. "/wsdown.error"
    os.remove(got_records)
    os.remove(got_error)
    local collect = ws_client.start(host, "wsdown.test", "/", {
      { read = 5 }, { signal = got_records }, { read_errors = 1, timeout = 30 }, { signal = got_error },
      { read = 10, timeout = 60 }, { close = true } })
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 5 --format text", port)
    assert.truthy(signalled(got_records), "the first records did not arrive")
    broker("stop", "--signal KILL")
    assert.truthy(signalled(got_error), "no error frame")
    -- meanwhile a new connection is refused before its upgrade
    local status, _, _, body = host:get("/", { Host = "wsdown.test", Upgrade = "websocket" })
    assert.equal(503, status)
    assert.same({ message = "Kafka is unavailable" }, body)
    broker("start", "--port " .. port .. " --storage sqlite")
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 5 --format text", port)
    local result = collect()
    assert.same(range(0, 9), offsets(result.records))
    assert.same({ type = "error", final = false, message = "Kafka is unavailable" }, result.errors[1])
    assert.same({ code = 1000, reason = "" }, result.close)
  end)
end)
