-- Several nodes (host instances, each its own nginx with 2 workers and its own shared dict) reading one
-- broker: http-get cursor reads (stateless: any node continues any cursor from its position), and
-- server-sent-events and websocket streams resumed by their cursor on another node, also after their node
-- was SIGKILLed.
local helpers = require "spec.helpers.host"
local ws = require "spec.helpers.ws"
local cjson = require "cjson"


local CURSOR = "confluent-consume-cursor"
local RECORDS = 300


-- A GET of `path` on `node`: status, decoded body, the cursor header, raw body.
local function get(node, path, host_header)
  local status, body, headers, json = node:get(path, { Host = host_header })
  return status, json, headers[CURSOR], body
end


-- The records of a Kong-shaped body as "partition:offset:value" strings, in partition and offset order.
local function keys_of(json)
  local list = {}
  for _, r in ipairs(helpers.records_of(json)) do
    list[#list + 1] = r.partition .. ":" .. r.offset .. ":" .. tostring(r.record.value)
  end
  return list
end


-- Reads from `cursor` (or `?from=earliest` without one) until an answer is empty, each GET on the next
-- node of `nodes` in turn; returns every record read (keys_of) and the last cursor.
local function read_round_robin(nodes, host_header, cursor)
  local all = {}
  for i = 1, 1000 do
    local node = nodes[(i - 1) % #nodes + 1]
    local start = cursor and ("cursor=" .. cursor) or "from=earliest"
    local status, json, next_cursor, body = get(node, "/?wait=1000&max_records=40&" .. start, host_header)
    assert.equal(200, status, body)
    assert.is_string(next_cursor, "every answer carries the next cursor")
    cursor = next_cursor
    local keys = keys_of(json)
    if #keys == 0 then
      break
    end
    for _, k in ipairs(keys) do
      all[#all + 1] = k
    end
  end
  return all, cursor
end


-- The offsets of a cursor (`<layout>-<o1>.<o2>...`, README "server-sent-events"), one per partition.
local function offsets_of_cursor(cursor)
  local list = {}
  for offset in assert(cursor:match("^%x+%-([%d.]+)$"), "a cursor: " .. cursor):gmatch("%d+") do
    list[#list + 1] = tonumber(offset)
  end
  return list
end


-- Appends "partition:offset" of every record event of an SSE stream's `events` to `seen`; returns the
-- id of the last one (the stream's position, for Last-Event-ID).
local function add_events(events, seen)
  local last_id
  for _, e in ipairs(events) do
    if e.event == "message" then
      local record = cjson.decode(e.data)
      seen[#seen + 1] = record.partition .. ":" .. record.offset
      last_id = e.id
    end
  end
  return last_id
end


local function count_distinct(list)
  local seen, distinct = {}, 0
  for _, k in ipairs(list) do
    if not seen[k] then
      seen[k] = true
      distinct = distinct + 1
    end
  end
  return distinct
end


describe("several nodes", function()
  local nodes = {}
  local routes
  local topic, other_topic, sse_topic, group

  local function http_get_route(name, t, overrides)
    local config = helpers.plugin_config(t, overrides)
    config.mode = "http-get"
    return { name = name, hosts = { name .. ".test" }, plugins = { { name = "confluent-consume", config = config } } }
  end

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("cluster"), 3)
    other_topic = helpers.create_topic(helpers.unique_name("cluster-other"), 2)
    sse_topic = helpers.create_topic(helpers.unique_name("cluster-sse"), 3)
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count " .. RECORDS .. " --partitions 3 --format text")
    helpers.kafka_tool("produce", "--topic " .. other_topic .. " --count 10 --partitions 2 --format text")
    helpers.kafka_tool("produce", "--topic " .. sse_topic .. " --count " .. RECORDS .. " --partitions 3 --format text")
    group = helpers.unique_name("cluster-group")
    local sse = helpers.plugin_config(sse_topic)
    sse.mode = "server-sent-events"
    local websocket = helpers.plugin_config(sse_topic)
    websocket.mode = "websocket"
    routes = {
      http_get_route("get", topic, { auto_offset_reset = "earliest", max_records = 40,
                                     consumer_group = { mode = "manual", consumer_group_id = group } }),
      http_get_route("other", other_topic, { auto_offset_reset = "earliest" }),
      -- message functions: odd offsets only, each marked
      http_get_route("fx", other_topic, { auto_offset_reset = "earliest", message_by_lua_functions = {
        "return function(m) if m.offset % 2 == 0 then return nil end m.odd = true return m end" } }),
      { name = "sse", hosts = { "sse.test" }, plugins = { { name = "confluent-consume", config = sse } } },
      { name = "ws", hosts = { "ws.test" }, plugins = { { name = "confluent-consume", config = websocket } } },
    }
    for i = 1, 2 do
      nodes[i] = helpers.start_host({ workers = 2, routes = routes })
    end
  end)

  lazy_teardown(function()
    for _, node in ipairs(nodes) do
      node:stop()
    end
  end)

  describe("http-get cursor reads", function()
    it("read every record exactly once with each GET on the other node, continuing from the last cursor", function()
      local all, last = read_round_robin(nodes, "get.test")
      assert.equal(RECORDS, #all)
      assert.equal(RECORDS, count_distinct(all))
      -- records that arrive later continue from the last cursor, on either node
      helpers.kafka_tool("produce", "--topic " .. topic .. " --count 30 --partitions 3 --format text")
      local more = read_round_robin({ nodes[2], nodes[1] }, "get.test", last)
      assert.equal(30, #more)
      assert.equal(30, count_distinct(more))
      for _, k in ipairs(more) do
        assert.is_true(tonumber(k:match("^%d+:(%d+):")) >= 100, "a record after the cursor: " .. k)
      end
    end)

    it("continue the same cursor exactly on either node: each partition from the cursor's offset, no gap, " ..
       "the next cursor after the records; read to the end, the same records", function()
      local _, first, cursor = get(nodes[1], "/?from=earliest&max_records=25", "get.test")
      assert.equal(25, #keys_of(first))
      -- an answer holds what the node's consumer has fetched so far, which may be another share of the
      -- partitions on each node; what it holds continues the cursor exactly on every partition
      local from = offsets_of_cursor(cursor)
      for _, node in ipairs(nodes) do
        local status, json, next_cursor = get(node, "/?wait=1000&max_records=40&cursor=" .. cursor, "get.test")
        assert.equal(200, status)
        local records = helpers.records_of(json)
        assert.is_true(#records >= 1 and #records <= 40, "records: " .. #records)
        local expected = {}
        for i, offset in ipairs(from) do
          expected[i] = offset
        end
        for _, r in ipairs(records) do
          assert.equal(expected[r.partition + 1], r.offset, "partition " .. r.partition .. " continues the cursor")
          expected[r.partition + 1] = r.offset + 1
        end
        assert.same(expected, offsets_of_cursor(next_cursor))
      end
      local rest_a = read_round_robin({ nodes[1] }, "get.test", cursor)
      local rest_b = read_round_robin({ nodes[2] }, "get.test", cursor)
      table.sort(rest_a)
      table.sort(rest_b)
      assert.same(rest_a, rest_b)
      local produced = 0
      for _, marks in pairs(helpers.kafka_tool("watermarks", "--topic " .. topic)) do
        produced = produced + marks.high
      end
      assert.equal(produced - 25, #rest_a)
      -- the live handle now holds records that arrive, and serves a cursor within it the same way
      local _, _, live_cursor = get(nodes[1], "/?from=latest", "get.test")
      helpers.kafka_tool("produce", "--topic " .. topic .. " --count 9 --partitions 3 --format text")
      local live_path = "/?wait=2000&cursor=" .. live_cursor
      local a, b = {}, {}
      for _ = 1, 5 do
        for _, k in ipairs(keys_of(select(2, get(nodes[1], live_path, "get.test")))) do a[#a + 1] = k end
        if #a >= 9 then break end
      end
      for _ = 1, 5 do
        for _, k in ipairs(keys_of(select(2, get(nodes[2], live_path, "get.test")))) do b[#b + 1] = k end
        if #b >= 9 then break end
      end
      assert.equal(9, #a)
      table.sort(a)
      table.sort(b)
      assert.same(a, b)
    end)

    it("commit nothing: the group has no committed offset, and its first GET starts at offset 0", function()
      read_round_robin(nodes, "get.test")
      local committed = helpers.kafka_tool("committed", "--topic " .. topic .. " --group " .. group)
      assert.same({ ["0"] = cjson.null, ["1"] = cjson.null, ["2"] = cjson.null }, committed)
      local status, json = get(nodes[1], "/?wait=2000&max_records=3", "get.test")
      assert.equal(200, status)
      local records = helpers.records_of(json)
      assert.is_true(#records > 0)
      for _, r in ipairs(records) do
        assert.is_true(r.offset < 3, "a group GET starts at the beginning: " .. r.offset)
      end
    end)

    it("run message functions: the records they keep, and a cursor past the ones they dropped", function()
      local odd = 0
      for _, marks in pairs(helpers.kafka_tool("watermarks", "--topic " .. other_topic)) do
        odd = odd + math.floor(marks.high / 2)
      end
      local records, cursor = {}, nil
      for i = 1, 10 do
        local start = cursor and ("cursor=" .. cursor) or "from=earliest"
        local status, json, next_cursor = get(nodes[i % 2 + 1], "/?wait=500&" .. start, "fx.test")
        assert.equal(200, status)
        local got = helpers.records_of(json)
        if #got == 0 then
          -- the cursor is past every record read, kept or dropped
          assert.equal(cursor, next_cursor)
          break
        end
        for _, r in ipairs(got) do
          records[#records + 1] = r
        end
        cursor = next_cursor
      end
      assert.equal(odd, #records)
      for _, r in ipairs(records) do
        assert.equal(1, r.offset % 2)
        assert.is_true(r.record.odd)
      end
    end)

    it("answer 400 naming the fault for a malformed cursor, an empty one, one of another route, a bad from",
       function()
      local function message(path, host_header)
        local status, json = get(nodes[1], path, host_header or "get.test")
        return status, json and json.message
      end
      assert.same({ 400, "invalid cursor: cursor is malformed" }, { message("/?cursor=nonsense") })
      assert.same({ 400, "cursor must not be empty: give the cursor of the previous answer, or from" },
                  { message("/?cursor=") })
      local _, _, other_cursor = get(nodes[1], "/?from=earliest&max_records=1", "other.test")
      assert.same({ 400, "invalid cursor: cursor belongs to another route or partition layout" },
                  { message("/?cursor=" .. other_cursor) })
      local layout = select(3, get(nodes[1], "/?from=latest", "get.test")):match("^(%x+)%-")
      assert.same({ 400, "invalid cursor: cursor has 2 offsets, the route has 3 partitions" },
                  { message("/?cursor=" .. layout .. "-1.2") })
      assert.same({ 400, "invalid cursor: cursor offsets must be non-negative integers" },
                  { message("/?cursor=" .. layout .. "-1.-2.3") })
      assert.same({ 400, "from must be earliest, latest or a timestamp in milliseconds since the epoch" },
                  { message("/?from=yesterday") })
    end)
  end)

  describe("server-sent-events", function()
    it("resume by Last-Event-ID on another node with no gap and no duplicate", function()
      local conn = nodes[1]:connect(30)
      local status = conn:send_request("GET", "/?from=earliest", { Host = "sse.test", Accept = "text/event-stream" })
      assert.equal(200, status)
      local events = conn:read_events(120, 10)
      conn:close()
      local seen = {}
      local last_id = add_events(events, seen)
      assert.equal(120, #seen)
      conn = nodes[2]:connect(30)
      status = conn:send_request("GET", "/", { Host = "sse.test", Accept = "text/event-stream",
                                               ["Last-Event-ID"] = last_id })
      assert.equal(200, status)
      events = conn:read_events(RECORDS - 120, 10)
      conn:close()
      add_events(events, seen)
      assert.equal(RECORDS, #seen)
      assert.equal(RECORDS, count_distinct(seen))
    end)
  end)

  describe("websocket", function()
    it("resume by last_event_id on another node with no gap and no duplicate", function()
      local first = ws.run(nodes[1], "ws.test", "/?from=earliest", { { read = 120, timeout = 10 }, { close = true } })
      assert.equal(101, first.status)
      assert.is_true(#first.records >= 120)
      local seen, last = {}, nil
      for i = 1, 120 do
        local r = first.records[i]
        seen[#seen + 1] = r.partition .. ":" .. r.offset
        last = r.cursor
      end
      local second = ws.run(nodes[2], "ws.test", "/?last_event_id=" .. last,
                            { { read = RECORDS - 120, timeout = 10 }, { close = true } })
      assert.equal(101, second.status)
      for _, r in ipairs(second.records) do
        seen[#seen + 1] = r.partition .. ":" .. r.offset
      end
      assert.equal(RECORDS, #seen)
      assert.equal(RECORDS, count_distinct(seen))
    end)
  end)

  describe("a node that dies", function()
    local victim

    after_each(function()
      -- a no-op once the test killed it; stops a node a failed test left running
      if victim then
        victim:stop()
      end
    end)

    it("leaves its clients nothing to lose: an SSE stream resumes by Last-Event-ID and a cursor read by its " ..
       "cursor on another node after a SIGKILL of the whole node, no gap, no duplicate", function()
      victim = helpers.start_host({ workers = 2, routes = routes })
      local conn = victim:connect(30)
      local status = conn:send_request("GET", "/?from=earliest", { Host = "sse.test", Accept = "text/event-stream" })
      assert.equal(200, status)
      local seen = {}
      local last_id = add_events(conn:read_events(120, 10), seen)
      assert.equal(120, #seen)
      local cursor_status, first, cursor = get(victim, "/?from=earliest&max_records=40", "get.test")
      assert.equal(200, cursor_status)
      local read = keys_of(first)
      assert.equal(40, #read)
      -- the stream is still open, and the node's workers hold its cursor reads' consumers
      victim:kill()
      conn:close()
      assert.is_false(pcall(victim.connect, victim, 1), "the killed node still accepts connections")

      conn = nodes[2]:connect(30)
      status = conn:send_request("GET", "/", { Host = "sse.test", Accept = "text/event-stream",
                                               ["Last-Event-ID"] = last_id })
      assert.equal(200, status)
      add_events(conn:read_events(RECORDS - 120, 10), seen)
      conn:close()
      assert.equal(RECORDS, #seen)
      assert.equal(RECORDS, count_distinct(seen))

      local rest = read_round_robin({ nodes[2] }, "get.test", cursor)
      for _, k in ipairs(rest) do
        read[#read + 1] = k
      end
      local produced = 0
      for _, marks in pairs(helpers.kafka_tool("watermarks", "--topic " .. topic)) do
        produced = produced + marks.high
      end
      assert.equal(produced, #read)
      assert.equal(produced, count_distinct(read))
    end)
  end)
end)
