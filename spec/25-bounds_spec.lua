-- Every buffer between Kafka and a client is bounded: with 50 MB of backlog, SSE clients reading from the
-- oldest record and an http-get client, none of which reads its socket, the worker's resident memory
-- stays under the sum of the documented bounds while the backlog is there.
--
-- The bounds (README "Memory bounds"), per consumer handle (one per configuration per worker, plus one per
-- SSE stream while it catches up):
--   buffer_max_bytes per partition   the handle's buffer of encoded records (fetching pauses, or the oldest
--                                    records are dropped, above it)
--   1 MiB per partition              a fetch response in flight (librdkafka max.partition.fetch.bytes)
--   16 MiB (2 MiB catching up)       librdkafka's pre-fetch queue (queued.max.messages.kbytes)
--   4 MiB                            the handle itself: librdkafka's threads, metadata and allocator arenas
--                                    (an idle handle measures about 2 MB)
-- and per open response: 2 x max_bytes (the Lua string and nginx's copy of it; ngx.flush waits for the
-- socket, so an SSE stream never holds more than one write). At most max_catchup_streams streams of a
-- route catch up at once on a worker.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local socket = require "socket"


local MiB = 1024 * 1024
local HANDLE_KB = 4 * 1024
local LIBRDKAFKA_QUEUE_KB = 16 * 1024
local CATCHUP_QUEUE_KB = 2 * 1024
local FETCH_KB = 1024
local BACKLOG = 50 * MiB
local RECORD = 1000


-- What the worker may hold for `handles` shared consumer handles and `catchups` streams' catch-up
-- handles, of `partitions` partitions each, and `responses` open responses, in KB.
local function bound_kb(config, partitions, handles, catchups, responses)
  local buffer_kb = (config.buffer_max_bytes or 8 * MiB) / 1024
  local per_handle = HANDLE_KB + partitions * (buffer_kb + FETCH_KB)
  return handles * (per_handle + LIBRDKAFKA_QUEUE_KB) + catchups * (per_handle + CATCHUP_QUEUE_KB) +
         responses * 2 * (config.max_bytes or MiB) / 1024
end


-- A client that sends one request and never reads.
local function stuck_client(port, request)
  local sock = socket.tcp()
  assert(sock:connect("127.0.0.1", port))
  assert(sock:send(request))
  return sock
end


-- `slots`: the route's max_catchup_streams when fewer than `streams`; the other streams must be refused.
local function check(partitions, overrides, streams, slots)
  streams = streams or 1
  slots = slots or streams
  local topic = helpers.create_topic(helpers.unique_name("bounds"), partitions)
  helpers.kafka_tool("produce", string.format("--topic %s --count %d --size %d --partitions %d", topic,
                                              BACKLOG / RECORD, RECORD, partitions))
  local get_config = helpers.plugin_config(topic, { auto_offset_reset = "earliest" })
  local sse_config = helpers.plugin_config(topic, { mode = "server-sent-events" })
  for k, v in pairs(overrides) do
    get_config[k], sse_config[k] = v, v
  end
  local host = helpers.start_host({ workers = 1, routes = {
    { name = "get", hosts = { "get.test" }, plugins = { { name = "confluent-consume", config = get_config } } },
    { name = "sse", hosts = { "sse.test" }, plugins = { { name = "confluent-consume", config = sse_config } } },
  } })
  local ok, err = pcall(function()
    local pid = host:worker_pids()[1]
    local baseline = proc.steady(pid, 5)
    local clients = {
      stuck_client(host.proxy_port, "GET /?wait=5000 HTTP/1.1\r\nHost: get.test\r\n\r\n"),
    }
    local stream_clients = {}
    for i = 1, streams do
      stream_clients[i] = stuck_client(host.proxy_port, "GET /?from=earliest HTTP/1.1\r\n" ..
                                           "Host: sse.test\r\nAccept: text/event-stream\r\n\r\n")
    end
    -- the http-get handle, the SSE route's shared handle and each running stream's catch-up handle; a
    -- response each
    local bound = bound_kb(overrides, partitions, 2, slots, 1 + slots)
    local peak, samples = baseline, 0
    local deadline = helpers.now() + 10
    while helpers.now() < deadline do
      helpers.sleep(0.5)  -- paces the sampler: RSS twice a second over a fixed 10 s window
      local s = proc.stats(pid)
      samples = samples + 1
      if s.rss_kb > peak.rss_kb then peak = s end
    end
    print(string.format("%d stream(s), %d partition(s), buffer_max_bytes %d, max_bytes %d, 50 MB backlog: " ..
                        "RSS baseline %.1f MB, peak %.1f MB over %d samples in 10 s (+%.1f MB); bound +%.1f MB",
                        streams, partitions, overrides.buffer_max_bytes or 8 * MiB, overrides.max_bytes or MiB,
                        baseline.rss_kb / 1024,
                        peak.rss_kb / 1024, samples, (peak.rss_kb - baseline.rss_kb) / 1024, bound / 1024))
    assert.is_true(peak.rss_kb - baseline.rss_kb <= bound,
                   string.format("the worker grew by %.1f MB, more than the bound of %.1f MB",
                                 (peak.rss_kb - baseline.rss_kb) / 1024, bound / 1024))
    assert.is_true(peak.threads > baseline.threads, "the consumers ran")
    local statuses = {}
    for _, c in ipairs(stream_clients) do
      c:settimeout(2)
      local line = c:receive("*l") or "none"
      local status = line:match("^HTTP/1%.1 (%d+)") or line
      statuses[status] = (statuses[status] or 0) + 1
      if status == "503" then
        -- README (max_catchup_streams): a stream without a slot gets 503 with Retry-After: 1
        local retry_after
        repeat
          line = c:receive("*l")
          retry_after = retry_after or (line and line:match("^[Rr]etry%-[Aa]fter: *(%S+)"))
        until not line or line == ""
        assert.equal("1", retry_after)
      end
      c:close()
    end
    assert.same(streams > slots and { ["200"] = slots, ["503"] = streams - slots } or { ["200"] = streams },
                statuses)
    for _, c in ipairs(clients) do c:close() end
  end)
  host:stop()
  assert(ok, err)
end


describe("with 50 MB of backlog and clients that never read", function()
  it("the worker stays within its bounds (small buffers, 2 partitions)", function()
    -- small buffers make the bound far below what holding the backlog would take (about 2 x 50 MB)
    check(2, { buffer_max_bytes = MiB })
  end)

  it("the worker stays within its bounds (default buffers, 1 partition)", function()
    check(1, {})
  end)

  it("each stream catching up adds at most one handle's bound (4 streams)", function()
    -- a stream behind the live edge reads a consumer of its own: the worker's memory grows with the
    -- number of such streams, each bounded
    check(2, { buffer_max_bytes = MiB }, 4)
  end)

  it("runs at most max_catchup_streams such streams of a route; the others wait, then get 503", function()
    check(2, { buffer_max_bytes = MiB, max_catchup_streams = 2, timeout = 3000 }, 4, 2)
  end)
end)
