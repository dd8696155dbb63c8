-- Metrics, as an operator sees them: a real Prometheus (Debian's `prometheus`) scrapes the host's Status
-- API (/confluent-consume/metrics on --status-listen, as Kong's status_listen) once a second, and the
-- first block asserts through its HTTP query API. Clients consume part of what was produced; the lag of
-- each partition must be produced − consumed, the served counters what the clients received, and a broker
-- that goes down must show in the error counter. The other blocks read what Kong's prometheus plugin was
-- given (a stand-in for its exporter), and the Status API of a node of two workers, which must add up both
-- workers' numbers.
local helpers = require "spec.helpers.host"
local http = require "spec.helpers.http"
local proc = require "spec.helpers.proc"
local ws = require "spec.helpers.ws"
local cjson = require "cjson"


local PROMETHEUS_PORT = helpers.next_ports()  -- a port of the run's range (CC_TEST_PORT_BASE)
local SCRAPE_WAIT = 20  -- s: sync (1 s) + scrape interval (1 s) + Prometheus' evaluation, with margin


local function url_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end


-- The instant vector of `query`: a list of { metric = labels, value = number }.
local function query(q)
  local status, body = http.once("127.0.0.1", PROMETHEUS_PORT, "GET", "/api/v1/query?query=" .. url_escape(q))
  assert.equal(200, status, body)
  local answer = cjson.decode(body)
  local list = {}
  for i, r in ipairs(answer.data.result) do
    list[i] = { metric = r.metric, value = tonumber(r.value[2]) }
  end
  return list
end


-- The single value of `q`, or nil while Prometheus has none.
local function value(q)
  local list = query(q)
  return list[1] and list[1].value
end


-- Waits until `q` answers `expected` (one series); fails with the last answer and what the host serves.
local function eventually_equal(host, expected, q)
  local last
  proc.wait_until(function()
    last = value(q)
    return last == expected
  end, SCRAPE_WAIT, 0.2)
  if last ~= expected then
    local _, page = http.once("127.0.0.1", host.status_port, "GET", "/confluent-consume/metrics")
    assert.equal(expected, last, q .. "\n" .. tostring(page))
  end
end


describe("metrics scraped by Prometheus", function()
  local host, prometheus_pid, outage_dir, topic, sse_topic, ws_topic, idle_topic, fx_topic
  local outage_port = helpers.next_ports()
  local outage_group = helpers.unique_name("outage-group")

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("metrics"), 2)
    sse_topic = helpers.create_topic(helpers.unique_name("metrics-sse"), 2)
    ws_topic = helpers.create_topic(helpers.unique_name("metrics-ws"), 2)
    idle_topic = helpers.create_topic(helpers.unique_name("metrics-idle"), 1)
    fx_topic = helpers.create_topic(helpers.unique_name("metrics-fx"), 1)
    outage_dir = helpers.RUN_DIR .. "/metrics-outage-broker"
    helpers.sh("rm -rf " .. outage_dir)
    helpers.broker(outage_dir, "start", "--port " .. outage_port .. " --storage memory")
    local outage_topic = helpers.create_topic(helpers.unique_name("outage"), 1, outage_port)
    local outage = helpers.route("metrics-outage", outage_topic, {
      auto_offset_reset = "earliest", timeout = 2000,
      consumer_group = { mode = "manual", consumer_group_id = outage_group },
    })
    outage.plugins[1].config.bootstrap_servers[1].port = outage_port
    local ws_route = helpers.route("metrics-ws", ws_topic, { mode = "websocket", auto_offset_reset = "earliest" })
    ws_route.protocols = { "http", "ws" }
    -- a message function that drops the records of even offsets
    local drop_even = { "return function(m) if m.offset % 2 == 0 then return nil end return m end" }
    host = helpers.start_host({ status = true, check_client_abort = true, routes = {
      helpers.route("metrics-get", topic, { auto_offset_reset = "earliest", max_records = 7 }),
      helpers.route("metrics-sse", sse_topic, { mode = "server-sent-events", auto_offset_reset = "earliest",
                                                  heartbeat_interval = 1000 }),
      helpers.route("metrics-idle", idle_topic),
      ws_route,
      helpers.route("metrics-sse-fx", fx_topic, { mode = "server-sent-events", auto_offset_reset = "earliest",
                                                  message_by_lua_functions = drop_even }),
      helpers.route("metrics-ws-fx", fx_topic, { mode = "websocket", auto_offset_reset = "earliest",
                                                 message_by_lua_functions = drop_even }),
      outage,
    } })

    local dir = helpers.RUN_DIR .. "/prometheus"
    helpers.sh_ok("rm -rf " .. dir .. " && mkdir -p " .. dir .. "/data")
    local config = assert(io.open(dir .. "/prometheus.yml", "w"))
    config:write(string.format([[
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: confluent-consume
    metrics_path: /confluent-consume/metrics
    static_configs:
      - targets: ["127.0.0.1:%d"]
]], host.status_port))
    config:close()
    prometheus_pid = proc.spawn(string.format(
      "exec prometheus --config.file=%s/prometheus.yml --storage.tsdb.path=%s/data " ..
      "--web.listen-address=127.0.0.1:%d", dir, dir, PROMETHEUS_PORT), dir .. "/prometheus.log")
    assert(proc.wait_until(function()
      local status = http.once("127.0.0.1", PROMETHEUS_PORT, "GET", "/-/ready")
      return status == 200
    end, 30, 0.2), "Prometheus did not become ready: " .. (helpers.read_file(dir .. "/prometheus.log") or ""))
  end)

  lazy_teardown(function()
    if prometheus_pid then
      proc.kill(prometheus_pid)
    end
    if host then
      host:stop()
    end
    helpers.broker(outage_dir, "stop")
  end)

  it("serves the exposition on the Status API with its content type, and 404 on an unknown path", function()
    local status, body, headers = http.once("127.0.0.1", host.status_port, "GET", "/confluent-consume/metrics")
    assert.equal(200, status, body)
    assert.equal("text/plain; version=0.0.4; charset=utf-8", headers["content-type"])
    assert.equal(404, (http.once("127.0.0.1", host.status_port, "GET", "/no-such-metrics")))
  end)

  it("reports each partition's lag as produced minus consumed, and the served counters as received", function()
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 40 --partitions 2")
    local produced = {}
    for partition, marks in pairs(helpers.kafka_tool("watermarks", "--topic " .. topic)) do
      produced[tonumber(partition)] = marks.high
    end
    assert.equal(40, produced[0] + produced[1])

    -- three GETs of at most 7 records each (a GET may come back with fewer, as soon as a partition's
    -- records are there): some consumed, the rest left, the lag computed from what the GETs returned
    local consumed, received, bytes = { [0] = 0, [1] = 0 }, 0, 0
    local conn = host:connect()
    for _ = 1, 3 do
      local status, body = conn:request("GET", "/?wait=2000", { Host = "metrics-get.test" })
      assert.equal(200, status, body)
      for _, r in ipairs(helpers.records_of(cjson.decode(body))) do
        consumed[r.partition] = consumed[r.partition] + 1
        received = received + 1
      end
      bytes = bytes + #body
    end
    conn:close()
    assert.is_true(received > 0 and received <= 21, received .. " records received")

    for partition = 0, 1 do
      local labels = string.format('{topic="%s",partition="%d"}', topic, partition)
      eventually_equal(host, produced[partition] - consumed[partition], "confluent_consume_consumer_lag" .. labels)
      eventually_equal(host, produced[partition] - consumed[partition], "confluent_consume_delivery_lag" .. labels)
      eventually_equal(host, produced[partition], "confluent_consume_high_watermark" .. labels)
    end
    eventually_equal(host, received, 'confluent_consume_records_served_total{route="metrics-get",mode="http-get"}')
    eventually_equal(host, bytes, 'confluent_consume_bytes_served_total{route="metrics-get",mode="http-get"}')
    eventually_equal(host, 3, 'confluent_consume_requests_total{route="metrics-get",mode="http-get",status="200"}')
  end)

  it("counts a stream while it is open and the events it received", function()
    helpers.kafka_tool("produce", "--topic " .. sse_topic .. " --count 12 --partitions 2")
    local conn = host:connect()
    local status = conn:send_request("GET", "/?from=earliest",
                                     { Host = "metrics-sse.test", Accept = "text/event-stream" })
    assert.equal(200, status)
    local events, why = conn:read_events(12, 10)
    assert.equal("count", why)
    local received = 0
    for _, e in ipairs(events) do
      if e.event == "message" then received = received + 1 end
    end
    assert.equal(12, received)
    eventually_equal(host, 1, 'confluent_consume_streams_open{route="metrics-sse",mode="server-sent-events"}')
    eventually_equal(host, received,
                     'confluent_consume_records_served_total{route="metrics-sse",mode="server-sent-events"}')
    conn:close()
    eventually_equal(host, 0, 'confluent_consume_streams_open{route="metrics-sse",mode="server-sent-events"}')
    eventually_equal(host, 1, 'confluent_consume_requests_total{route="metrics-sse",mode="server-sent-events",' ..
                        'status="200"}')
  end)

  it("counts a websocket stream as mode websocket while it is open, and the records it sent", function()
    helpers.kafka_tool("produce", "--topic " .. ws_topic .. " --count 12 --partitions 2")
    -- the client reads the 12 records, then keeps the connection open while the gauges are checked
    local collect = ws.start(host, "metrics-ws.test", "/?from=earliest", { { read = 12, timeout = 10 }, { quiet = 15 } })
    eventually_equal(host, 1, 'confluent_consume_streams_open{route="metrics-ws",mode="websocket"}')
    eventually_equal(host, 12, 'confluent_consume_records_served_total{route="metrics-ws",mode="websocket"}')
    local seen = collect()
    assert.equal(12, #seen.records)
    eventually_equal(host, 0, 'confluent_consume_streams_open{route="metrics-ws",mode="websocket"}')
    -- the upgrade's status, as nginx logs it
    eventually_equal(host, 1, 'confluent_consume_requests_total{route="metrics-ws",mode="websocket",status="101"}')
  end)

  it("counts as served only the records message functions keep, in server-sent-events and websocket",
     function()
    helpers.kafka_tool("produce", "--topic " .. fx_topic .. " --count 10")
    -- each stream reads all 10 records and serves the 5 of odd offsets, then stays open a moment: a record
    -- counted but not sent would show before it closes
    local conn = host:connect()
    local status = conn:send_request("GET", "/?from=earliest",
                                     { Host = "metrics-sse-fx.test", Accept = "text/event-stream" })
    assert.equal(200, status)
    local events = conn:read_events(5, 10)
    local offsets = {}
    for _, e in ipairs(events) do
      if e.event == "message" then offsets[#offsets + 1] = cjson.decode(e.data).offset end
    end
    assert.same({ 1, 3, 5, 7, 9 }, offsets)
    eventually_equal(host, 5,
                     'confluent_consume_records_served_total{route="metrics-sse-fx",mode="server-sent-events"}')
    conn:close()
    local seen = ws.run(host, "metrics-ws-fx.test", "/?from=earliest", { { read = 5 }, { quiet = 1 },
                                                                          { close = true } })
    assert.equal(5, #seen.records)
    eventually_equal(host, 5, 'confluent_consume_records_served_total{route="metrics-ws-fx",mode="websocket"}')
  end)

  it("shows a broker that goes down as connection errors of its group", function()
    local status, body = host:get("/?wait=0", { Host = "metrics-outage.test" })
    assert.equal(200, status, body)
    local errors = string.format('sum(confluent_consume_broker_errors_total{group="%s",kind="connect"}) or vector(0)',
                                 outage_group)
    local before = value(errors)
    helpers.broker(outage_dir, "stop")
    local after
    proc.wait_until(function()
      after = value(errors)
      return after > before
    end, SCRAPE_WAIT, 0.2)
    assert.is_true(after > before, "connect errors stayed at " .. tostring(after))
  end)

  it("answers every query of examples/grafana-dashboard.json, over families the Status API serves", function()
    -- a long-poll that waits on an empty topic, so that every family has a series
    local status = host:get("/?wait=300", { Host = "metrics-idle.test" })
    assert.equal(200, status)
    local text = assert(helpers.read_file(helpers.ROOT .. "/examples/grafana-dashboard.json"))
    local dashboard = cjson.decode(text)
    local names = {}
    for _, panel in ipairs(dashboard.panels) do
      for _, target in ipairs(panel.targets) do
        local code, body = http.once("127.0.0.1", PROMETHEUS_PORT, "GET",
                                     "/api/v1/query?query=" .. url_escape(target.expr))
        assert.equal(200, code, target.expr .. ": " .. body)
        for name in target.expr:gmatch("confluent_consume_[%w_]+") do
          names[name:gsub("_bucket$", "")] = true
        end
      end
    end
    local page
    proc.wait_until(function()
      local _, text = http.once("127.0.0.1", host.status_port, "GET", "/confluent-consume/metrics")
      page = text
      return text:find("confluent_consume_long_polls_waiting", 1, true)
    end, SCRAPE_WAIT, 0.2)
    for name in pairs(names) do
      assert.truthy(page:find("# TYPE " .. name .. " ", 1, true), name .. " is not served:\n" .. page)
    end
  end)
end)


describe("metrics with Kong's prometheus plugin on the node (a test double of its exporter)", function()
  local host, topic

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("metrics-kong"), 1)
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 3")
    host = helpers.start_host({ status = true, fixture_plugins = { "prometheus" }, routes = {
      helpers.route("metrics-kong", topic, { auto_offset_reset = "earliest" }),
    } })
  end)

  lazy_teardown(function()
    if host then
      host:stop()
    end
  end)

  it("registers counters and gauges with it and reports the node's values there", function()
    local status, body = host:get("/?wait=2000", { Host = "metrics-kong.test" })
    assert.equal(200, status, body)
    assert.equal(3, #helpers.records_of(cjson.decode(body)))
    local recorded, lag
    proc.wait_until(function()
      local _, page = http.once("127.0.0.1", host.status_port, "GET", "/prometheus-double/recorded")
      recorded = cjson.decode(page)
      lag = nil
      for labels, v in pairs(recorded.confluent_consume_consumer_lag.values) do
        if labels:find("," .. topic .. ",0", 1, true) then
          lag = v
        end
      end
      return recorded.confluent_consume_records_served_total.values["metrics-kong,http-get"] == 3 and lag == 0
    end, 10, 0.2)
    assert.same({ "route", "mode" }, recorded.confluent_consume_records_served_total.labels)
    assert.equal("counter", recorded.confluent_consume_records_served_total.type)
    assert.equal(3, recorded.confluent_consume_records_served_total.values["metrics-kong,http-get"])
    assert.equal("gauge", recorded.confluent_consume_consumer_lag.type)
    assert.equal(0, lag)
    -- histograms stay on the plugin's own page: Kong's histograms take observations, not bucket counts
    assert.is_nil(recorded.confluent_consume_commit_latency_seconds)
  end)
end)


describe("metrics of a node of two workers", function()
  local host, topic, sse_topic

  -- The value of the series `series` (name and labels exactly as on the page) on the Status API, or nil.
  local function served(series)
    local _, page = http.once("127.0.0.1", host.status_port, "GET", "/confluent-consume/metrics")
    local escaped = series:gsub("[%p]", "%%%0")
    return tonumber(page:match("\n" .. escaped .. " ([%d.e+]+)\n"))
  end

  local function eventually(expected, series)
    local last
    proc.wait_until(function()
      last = served(series)
      return last == expected
    end, 10, 0.2)
    assert.equal(expected, last, series)
  end

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("metrics-two"), 2)
    sse_topic = helpers.create_topic(helpers.unique_name("metrics-two-sse"), 1)
    host = helpers.start_host({ status = true, workers = 2, check_client_abort = true, routes = {
      helpers.route("metrics-two", topic, { auto_offset_reset = "earliest", max_records = 3 }),
      helpers.route("metrics-two-sse", sse_topic, { mode = "server-sent-events", heartbeat_interval = 1000 }),
    } })
  end)

  lazy_teardown(function()
    if host then
      host:stop()
    end
  end)

  it("sums what every worker served and merges their views of the lag", function()
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 40 --partitions 2")
    -- a connection per GET: the kernel spreads them over both workers (all ten on one: 1 in 512)
    local received, workers, count = 0, {}, 0
    for _ = 1, 10 do
      local status, body, headers = host:get("/?wait=2000", { Host = "metrics-two.test" })
      assert.equal(200, status, body)
      received = received + #helpers.records_of(cjson.decode(body))
      local pid = host:worker_pid_of(headers)
      if not workers[pid] then
        workers[pid], count = true, count + 1
      end
    end
    assert.equal(2, count, "both workers served")
    assert.is_true(received > 0 and received <= 30)
    eventually(received, 'confluent_consume_records_served_total{route="metrics-two",mode="http-get"}')
    eventually(10, 'confluent_consume_requests_total{route="metrics-two",mode="http-get",status="200"}')
    local lag = 0
    proc.wait_until(function()
      local _, page = http.once("127.0.0.1", host.status_port, "GET", "/confluent-consume/metrics")
      lag = 0
      for value in page:gmatch('confluent_consume_consumer_lag{[^}]*topic="' .. topic:gsub("%p", "%%%0") ..
                               '"[^}]*} ([%d.]+)') do
        lag = lag + tonumber(value)
      end
      return lag == 40 - received
    end, 10, 0.2)
    assert.equal(40 - received, lag, "lag summed over both partitions")
  end)

  it("counts the streams open on either worker", function()
    local conns = {}
    for i = 1, 2 do
      conns[i] = host:connect()
      local status = conns[i]:send_request("GET", "/", { Host = "metrics-two-sse.test", Accept = "text/event-stream" })
      assert.equal(200, status)
    end
    eventually(2, 'confluent_consume_streams_open{route="metrics-two-sse",mode="server-sent-events"}')
    for _, conn in ipairs(conns) do
      conn:close()
    end
    eventually(0, 'confluent_consume_streams_open{route="metrics-two-sse",mode="server-sent-events"}')
  end)
end)
