-- Clients that go away, configurations that change under open streams, and a broker that is not there
-- yet: nothing is committed for records a client did not get, nothing is lost, no thread or descriptor is
-- left behind, and service starts by itself once Kafka is reachable.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local wait = require "spec.helpers.wait"
local cjson = require "cjson.safe"
local socket = require "socket"


local function committed(topic, group, port)
  return helpers.kafka_tool("committed", "--topic " .. topic .. " --group " .. group, port)
end


-- Sends a GET on a fresh raw connection and returns it unread.
local function send_get(host, path, host_header)
  local conn = host:connect()
  assert(conn.sock:send("GET " .. path .. " HTTP/1.1\r\nHost: " .. host_header .. "\r\n\r\n"))
  return conn
end


-- The body of a chunked response as received, or nil when it was cut short.
local function dechunk(raw)
  local parts, pos = {}, 1
  while true do
    local size_hex, data_start = raw:match("^(%x+)\r\n()", pos)
    if not size_hex then
      return nil
    end
    local size = tonumber(size_hex, 16)
    if size == 0 then
      return table.concat(parts)
    end
    if #raw < data_start + size + 1 then
      return nil
    end
    parts[#parts + 1] = raw:sub(data_start, data_start + size - 1)
    pos = data_start + size + 2
  end
end


local offsets_of = helpers.offsets


local function range(from, to)
  local list = {}
  for i = from, to do
    list[#list + 1] = i
  end
  return list
end


describe("http-get when the client goes away", function()
  local host, topic, group
  local H = "gone.test"

  before_each(function()
    topic = helpers.create_topic(helpers.unique_name("gone"), 1)
    group = helpers.unique_name("gone-group")
    host = helpers.start_host({ workers = 1, check_client_abort = true, routes = {
      { name = "gone", hosts = { H }, plugins = { { name = "confluent-consume",
        config = helpers.plugin_config(topic, {
          auto_offset_reset = "earliest", max_bytes = 32 * 1024 * 1024, max_records = 100000,
          buffer_max_bytes = 64 * 1024 * 1024,
          consumer_group = { mode = "manual", consumer_group_id = group } }) } } },
    } })
    -- the consumer is ready before the clients below come and go
    assert.equal(200, (host:get("/", { Host = H })))
  end)

  after_each(function()
    if host then host:stop() end
  end)

  it("commits nothing for a long-poll left before its records arrived; the next GET gets them", function()
    local before = committed(topic, group)
    local conn = send_get(host, "/?wait=10000", H)
    -- the worker has read the request, so it waits for records; then its client leaves
    assert.truthy(proc.wait_until(function()
      return wait.request_read(host, wait.local_port(conn.sock))
    end, 5), "the long-poll reached the worker")
    conn:close()
    -- the long-poll ended then, answered with nothing (499), long before its 10 s
    assert.same({ 499 }, assert(wait.answered_to(host, "/?wait=10000", 1, 5)))
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 5")
    -- no request is left that could take them: nothing is committed until a GET delivers them
    assert.same(before, committed(topic, group), "nothing was committed for the records nobody received")
    local records = host:collect("/?wait=2000", H, 5)
    assert.same(range(0, 4), offsets_of(records))
    assert.truthy(proc.wait_until(function() return committed(topic, group)["0"] == 5 end, 10),
                  "the GET that delivered them committed them")
  end)

  it("commits nothing for a long-poll whose client closed right after sending it", function()
    -- nginx sees no abort event for these (the end of stream came with the request), so only the
    -- plugin's look at the socket keeps their records from being answered into the closed connection
    local before = committed(topic, group)
    for _ = 1, 5 do
      send_get(host, "/?wait=5000", H):close()
    end
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 5")
    -- each ended (when it looked at its socket: at once, or when the records woke it), with nothing
    -- delivered (499): a delivery into the closed connection would have been a 200 and a commit
    assert.same({ 499, 499, 499, 499, 499 }, assert(wait.answered_to(host, "/?wait=5000", 5, 4)))
    assert.same(before, committed(topic, group))
    assert.same(range(0, 4), offsets_of(host:collect("/?wait=2000", H, 5)))
  end)

  it("serves again the records of a response its client left while it was being written", function()
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 100 --size 200000")
    -- a client with a small receive buffer: any answer (one record is 200 KB) outgrows what the socket
    -- buffers hold for it, so the write waits while the client does not read
    local sock = socket.tcp4()
    assert(sock:setoption("recv-buffer-size", 4096))
    sock:settimeout(10)
    assert(sock:connect("127.0.0.1", host.proxy_port))
    assert(sock:send("GET / HTTP/1.1\r\nHost: " .. H .. "\r\n\r\n"))
    local conn = { sock = sock, close = function(self) self.sock:close() end }
    -- unread, the answer fills the socket buffers and the write waits; then the client's end of stream
    -- (with lua_check_client_abort on, nginx takes it as the client leaving) comes in the middle of it
    assert.truthy(proc.wait_until(function()
      local side = wait.server_side(host, wait.local_port(sock))
      return side and side.send_q > 0
    end, 10), "the answer filled the socket")
    conn.sock:shutdown("send")
    conn.sock:settimeout(20)
    local received = conn.sock:receive("*a") or ""
    conn:close()
    local first = cjson.decode(dechunk(received:match("\r\n\r\n(.*)$") or "") or "")
    local got = first and helpers.records_of(first) or {}
    print(string.format("left while written: the client read %d bytes, %s", #received,
                        first and ("a whole answer of " .. #got .. " records") or "an incomplete answer"))
    local seen, again = {}, {}
    for _, r in ipairs(got) do seen[r.offset] = true end
    for _, r in ipairs(host:collect("/?wait=1000", H, 100 - #got, 20)) do
      -- served again: each record once (a record the client did get may come once more: at-least-once)
      assert.is_nil(again[r.offset], "offset " .. r.offset .. " served twice after the client left")
      again[r.offset], seen[r.offset] = true, true
    end
    local missing = {}
    for offset = 0, 99 do
      if not seen[offset] then missing[#missing + 1] = offset end
    end
    assert.same({}, missing, "every record reached a client")
  end)
end)


describe("http-get without lua_check_client_abort (Kong's default)", function()
  local host, topic, group
  local H = "noabort.test"

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("noabort"), 1)
    group = helpers.unique_name("noabort-group")
    host = helpers.start_host({ workers = 1, routes = {
      { name = "noabort", hosts = { H }, plugins = { { name = "confluent-consume",
        config = helpers.plugin_config(topic, { auto_offset_reset = "earliest",
          consumer_group = { mode = "manual", consumer_group_id = group } }) } } },
    } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("loses nothing when a long-poll's client leaves, and says once per worker what the directive is for", function()
    assert.equal(200, (host:get("/", { Host = H })))
    for _ = 1, 2 do
      send_get(host, "/?wait=100", H):close()
    end
    -- nginx does not notice this client leave; the plugin looks at the socket before it claims records
    local before = committed(topic, group)
    send_get(host, "/?wait=10000", H):close()
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 3")
    -- it ends when the records wake it and it looks at its socket, with nothing delivered (499): a
    -- delivery into the closed connection would have been a 200 and a commit
    assert.same({ 499 }, assert(wait.answered_to(host, "/?wait=10000", 1, 5)))
    assert.same(before, committed(topic, group))
    assert.same({ 0, 1, 2 }, offsets_of(host:collect("/?wait=2000", H, 3, 10)))
    assert.truthy(proc.wait_until(function() return committed(topic, group)["0"] == 3 end, 10))
    local _, warnings = host:error_log():gsub("set lua_check_client_abort on", "")
    assert.equal(1, warnings)
  end)
end)


describe("server-sent events when the plugin's configuration changes", function()
  local host, topic, pid
  local H = "change.test"
  local SSE = { Host = H, Accept = "text/event-stream" }

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("change"), 2)
    host = helpers.start_host({ workers = 1, routes = {
      { name = "change", hosts = { H }, plugins = { { name = "confluent-consume",
        config = helpers.plugin_config(topic, { mode = "server-sent-events", auto_offset_reset = "latest",
                                                enforce_latest_offset_reset = true }) } } },
    } })
    pid = host:worker_pids()[1]
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  -- Opens a stream and waits for its `retry:` (sent once its start position is fixed).
  local function open(path, last_id)
    local conn = host:connect(20)
    local headers = { Host = H, Accept = "text/event-stream", ["Last-Event-ID"] = last_id }
    local status = conn:send_request("GET", path, headers)
    assert.equal(200, status)
    assert.matches("^retry:", conn:read_chunk())
    return { conn = conn, seen = {} }
  end

  -- Reads `n` records from a stream; returns why it stopped ("count", "eof", ...).
  local function read(stream, n, seconds)
    local events, why = stream.conn:read_events(n, seconds)
    for _, e in ipairs(events) do
      if e.data and (e.event or "message") == "message" then
        local r = cjson.decode(e.data)
        local key = r.partition .. ":" .. r.offset
        assert.is_nil(stream.seen[key], "a duplicate: " .. key)
        stream.seen[key] = true
        stream.last_id = e.id
      end
    end
    return why, events
  end

  local function count(stream)
    local n = 0
    for _ in pairs(stream.seen) do n = n + 1 end
    return n
  end

  it("end cleanly on a PATCH and resume on the new consumer; on a DELETE leave no thread or fd", function()
    local baseline = proc.steady(pid, 10)
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 20 --partitions 2")
    local streams = {}
    for i = 1, 5 do
      -- three at the live edge, two catching up from the oldest record on consumers of their own
      streams[i] = open(i <= 3 and "/" or "/?from=earliest")
    end
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 10 --partitions 2")
    for i, s in ipairs(streams) do
      assert.equal("count", (read(s, i <= 3 and 10 or 30, 20)))
    end
    local streaming = proc.stats(pid)
    print("SSE before any consumer: " .. proc.format(baseline) .. "; 5 streams: " .. proc.format(streaming))
    assert.is_true(streaming.threads > baseline.threads)

    local _, plugins = host:admin("GET", "/plugins")
    local id = plugins.data[1].id
    assert.equal(200, (host:admin("PATCH", "/plugins/" .. id, { config = { fetch_wait_max_ms = 20 } })))
    for _, s in ipairs(streams) do
      local why, events = read(s, 1, 10)
      assert.equal("eof", why, "the stream ended with the consumer it read")
      assert.equal(0, #events)
      s.conn:close()
    end
    local after_patch = proc.settle(pid, baseline, 15)
    assert.same({ baseline.threads, baseline.fds }, { after_patch.threads, after_patch.fds },
                "the old consumers' threads and descriptors are gone")

    -- each stream resumes where it stopped, on the consumer of the new configuration
    for i, s in ipairs(streams) do
      local resumed = open("/", s.last_id)
      resumed.seen, resumed.last_id = s.seen, s.last_id
      streams[i] = resumed
    end
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 10 --partitions 2")
    for i, s in ipairs(streams) do
      assert.equal("count", (read(s, 10, 20)))
      assert.equal(i <= 3 and 20 or 40, count(s), "no gap and no duplicate across the change")
    end

    assert.equal(204, (host:admin("DELETE", "/plugins/" .. id)))
    for _, s in ipairs(streams) do
      assert.equal("eof", (read(s, 1, 10)))
      s.conn:close()
    end
    local after_delete = proc.settle(pid, baseline, 15)
    print("after PATCH: " .. proc.format(after_patch) .. "; after DELETE: " .. proc.format(after_delete))
    assert.same({ baseline.threads, baseline.fds }, { after_delete.threads, after_delete.fds })
  end)
end)


describe("a broker that is not there when the gateway starts", function()
  local host, topic, broker_dir
  local port = helpers.MEMORY_BROKER_PORT + 20

  lazy_setup(function()
    broker_dir = helpers.RUN_DIR .. "/broker-late"
    helpers.sh("rm -rf " .. broker_dir)
    topic = helpers.unique_name("late")
    local routes = {}
    for _, mode in ipairs({ "http-get", "server-sent-events" }) do
      local config = helpers.plugin_config(topic, { mode = mode, auto_offset_reset = "earliest", timeout = 2000,
                                                    error_handling = { return_error_message = true } })
      config.bootstrap_servers[1].port = port  -- nothing listens there yet
      routes[#routes + 1] = { name = mode, hosts = { mode .. ".test" },
                              plugins = { { name = "confluent-consume", config = config } } }
    end
    host = helpers.start_host({ workers = 1, routes = routes })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    helpers.broker(broker_dir, "stop")
  end)

  -- while the broker starts, a request may also find it slow to answer (504)
  local function assert_unavailable(status, body, json)
    assert.is_true(status == 503 or status == 504, status .. " " .. body)
    assert.is_table(json, body)
    assert.matches("Kafka", json.message, 1, true)
  end

  it("fails clearly meanwhile, then serves both modes without a restart", function()
    for _, h in ipairs({ "http-get.test", "server-sent-events.test" }) do
      local t0 = helpers.now()
      local status, body, headers, json = host:get("/?wait=500", { Host = h })
      -- README: brokers that cannot be reached are a 503 with the reason
      assert.equal(503, status, body)
      assert_unavailable(status, body, json)
      assert.matches("application/json", headers["content-type"], 1, true)
      assert.matches("Connection refused", json.message, 1, true)
      assert.is_true(helpers.now() - t0 < 3, "answered within timeout")
    end

    helpers.broker(broker_dir, "start", "--port " .. port .. " --storage sqlite")
    -- the broker answers but the topic does not exist yet: still a clear 5xx
    assert.truthy(proc.wait_until(function()
      local status, body, _, json = host:get("/", { Host = "http-get.test" })
      assert_unavailable(status, body, json)
      return json.message:find("Connection refused", 1, true) == nil and json.message
    end, 30, 0.3), "the reason changed once the broker answered")

    helpers.create_topic(topic, 2, port)
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 10 --partitions 2", port)
    local records = {}
    assert.truthy(proc.wait_until(function()
      local status, body, _, json = host:get("/?wait=500", { Host = "http-get.test" })
      if status ~= 200 then
        assert_unavailable(status, body, json)
        return false
      end
      for _, r in ipairs(helpers.records_of(json)) do records[#records + 1] = r end
      return #records >= 10
    end, 40, 0.3), "http-get serves once Kafka is reachable")
    assert.equal(10, #records)

    local conn
    assert.truthy(proc.wait_until(function()
      conn = host:connect(20)
      local status = conn:send_request("GET", "/?from=earliest",
                                       { Host = "server-sent-events.test", Accept = "text/event-stream" })
      if status == 200 then return true end
      conn:close()
      return false
    end, 40, 0.3), "server-sent events stream once Kafka is reachable")
    local events, why = conn:read_events(10, 20)
    conn:close()
    assert.equal("count", why)
    local messages = 0
    for _, e in ipairs(events) do
      if e.data and (e.event or "message") == "message" then messages = messages + 1 end
    end
    assert.equal(10, messages)
  end)
end)


-- Requests the gateway is working on: nginx's connections writing a response (Kong's Admin API /status,
-- server.connections_writing), less the /status request itself.
local function requests_in_progress(host)
  local _, status = host:admin("GET", "/status")
  return status.server.connections_writing - 1
end


-- Both settings of lua_check_client_abort, as the README describes them: on, a request ends as soon as its
-- client leaves; off (Kong's default), a long-poll stays until records arrive or its wait ends, a stream
-- until a write fails, nothing is lost, and the worker says once per case what the directive is for.
for _, check in ipairs({ true, false }) do
  describe("a client that leaves, lua_check_client_abort " .. (check and "on" or "off (Kong's default)"), function()
    local host, get_topic, workers
    local GET, SSE = "leave-get.test", "leave-sse.test"
    local WAIT, HEARTBEAT = 6, 5

    lazy_setup(function()
      get_topic = helpers.create_topic(helpers.unique_name("leave-get"), 1)
      local sse_topic = helpers.create_topic(helpers.unique_name("leave-sse"), 1)
      host = helpers.start_host({ workers = 1, check_client_abort = check, routes = {
        helpers.route("leave-get", get_topic),
        helpers.route("leave-sse", sse_topic, { mode = "server-sent-events", heartbeat_interval = HEARTBEAT * 1000 }),
      } })
      assert.equal(200, (host:get("/", { Host = GET })))
      workers = host:worker_pids()
    end)

    lazy_teardown(function()
      if host then host:stop() end
    end)

    -- Sends `path` on a fresh connection, waits until the gateway works on it, closes the connection; returns
    -- when it was sent and when it was closed.
    local function leave(path, host_header, headers)
      local base = requests_in_progress(host)
      local sent = helpers.now()
      local conn = host:connect()
      assert(conn.sock:send("GET " .. path .. " HTTP/1.1\r\nHost: " .. host_header .. "\r\n" ..
                            (headers or "") .. "\r\n"))
      assert.truthy(proc.wait_until(function() return requests_in_progress(host) == base + 1 end, 5, 0.05),
                    "the gateway works on the request")
      local closed = helpers.now()
      conn:close()
      return base, sent, closed
    end

    -- Waits (at most `seconds`) until the gateway is back to `base` requests; returns when that was seen.
    local function ended(base, seconds)
      assert.truthy(proc.wait_until(function() return requests_in_progress(host) == base end, seconds, 0.05),
                    "the request ended")
      return helpers.now()
    end

    it(check and "ends a long-poll as soon as its client leaves" or "keeps a long-poll whose client left until "
       .. "its wait ends", function()
      local base, sent, closed = leave("/?wait=" .. WAIT * 1000, GET)
      local at = ended(base, WAIT + 10)
      if check then
        assert.is_true(at - closed < WAIT / 2, "ended " .. (at - closed) .. " s after the client left")
      else
        -- the wait is timed from nginx's cached clock, taken when the worker's event loop woke for the
        -- request (millisecond resolution, and up to that loop turn's length before the request was read):
        -- a wait may end that much before WAIT by this process's clock (once 5.99995 s)
        assert.is_true(at - sent >= WAIT - 0.01, "ended " .. (at - sent) .. " s after it was sent")
      end
    end)

    it("serves the records that arrive after a long-poll's client left to the next GET", function()
      local base, _, closed = leave("/?wait=30000", GET)
      if not check then
        helpers.sleep(1)  -- an observation window: the long-poll must still be waiting after it
        assert.equal(base + 1, requests_in_progress(host), "the long-poll waits on")
      end
      helpers.kafka_tool("produce", "--topic " .. get_topic .. " --count 3")
      local at = ended(base, 20)
      assert.is_true(at - closed < 20, "ended when the records arrived, before its wait")
      assert.same({ 0, 1, 2 }, offsets_of(host:collect("/?wait=2000", GET, 3, 10)))
    end)

    it(check and "ends a stream as soon as its client leaves" or "ends a stream whose client left at a later "
       .. "write", function()
      local base, sent, closed = leave("/?from=latest", SSE, "Accept: text/event-stream\r\n")
      local at = ended(base, 3 * HEARTBEAT + 10)
      if check then
        assert.is_true(at - closed < HEARTBEAT / 2, "ended " .. (at - closed) .. " s after the client left")
      else
        -- no record comes, so the first write after `retry:` is the heartbeat HEARTBEAT after the start
        assert.is_true(at - sent >= HEARTBEAT, "ended " .. (at - sent) .. " s after it was sent")
      end
    end)

    it(check and "logs no warning about the directive" or "logs once per worker what the directive is for",
       function()
      local log = host:error_log()
      local _, get_warnings = log:gsub("a long%-poll whose client left[^\n]*set lua_check_client_abort on", "")
      local _, sse_warnings = log:gsub("a stream whose client left[^\n]*set lua_check_client_abort on", "")
      assert.same(check and { 0, 0 } or { 1, 1 }, { get_warnings, sse_warnings })
    end)

    it("keeps its worker through all of it", function()
      -- a request nginx ends while the plugin's coroutine waits leaves that wait behind (see
      -- host/README.md); the worker crashes when it completes, a few seconds later
      helpers.sleep(WAIT)  -- an observation window: no worker may crash within it
      assert.is_nil(host:error_log():match("[^\n]*exited on signal[^\n]*"))
      assert.same(workers, host:worker_pids())
    end)
  end)
end
