-- 1,000 connect/disconnect cycles of each mode on one worker: its threads, descriptors and resident memory
-- come back to where they were. The baseline is taken after a warm-up round of the same cycles, so what
-- the allocator keeps once (arenas, LuaJIT's heap, nginx's pools) is in it; what is left is growth per
-- cycle, which 1,000 cycles would show.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local wait = require "spec.helpers.wait"


-- README ("Memory bounds"): 1,000 cycles leave a worker's RSS within 2 MB of where it was. The
-- allocator's arenas do not shrink to the byte (server-sent-events cycles grew it 0.5 to 1.5 MB in
-- fresh-clone runs); a leak of 2 KB per cycle would exceed it.
local RSS_TOLERANCE_KB = 2 * 1024
local CYCLES = 1000


describe("1,000 connect/disconnect cycles", function()
  local host, pid, get_topic, sse_topic

  lazy_setup(function()
    get_topic = helpers.create_topic(helpers.unique_name("leak-get"), 2)
    sse_topic = helpers.create_topic(helpers.unique_name("leak-sse"), 2)
    helpers.kafka_tool("produce", "--topic " .. sse_topic .. " --count 200 --partitions 2")
    host = helpers.start_host({ workers = 1, check_client_abort = true, routes = {
      { name = "get", hosts = { "get.test" }, plugins = { { name = "confluent-consume",
        config = helpers.plugin_config(get_topic, { auto_offset_reset = "earliest" }) } } },
      { name = "sse", hosts = { "sse.test" }, plugins = { { name = "confluent-consume",
        config = helpers.plugin_config(sse_topic, { mode = "server-sent-events", auto_offset_reset = "latest",
                                                    enforce_latest_offset_reset = true }) } } },
    } })
    pid = host:worker_pids()[1]
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  local function send(path, host_header, accept)
    local conn = host:connect(10)
    assert(conn.sock:send("GET " .. path .. " HTTP/1.1\r\nHost: " .. host_header ..
                          (accept and ("\r\nAccept: " .. accept) or "") .. "\r\n\r\n"))
    return conn
  end

  -- One http-get cycle of three kinds: a GET read to its end, a long-poll left while it waits, and a
  -- GET left before it was answered.
  local function get_cycle(i)
    local kind = i % 3
    if kind == 0 then
      local conn = host:connect(10)
      local status = conn:request("GET", "/", { Host = "get.test" })
      assert.equal(200, status)
      conn:close()
    elseif kind == 1 then
      local conn = send("/?wait=1000", "get.test")
      -- left while it waits: once the worker has read it
      assert.truthy(proc.wait_until(function() return wait.request_read(host, wait.local_port(conn.sock)) end, 5))
      conn:close()
    else
      send("/", "get.test"):close()
    end
  end

  -- One SSE cycle: a live stream read until it started; every tenth from the oldest record, which
  -- starts a consumer of its own for the stream, left either once it streams or before it started; every
  -- tenth (another) a live stream left right after its request was sent.
  local function sse_cycle(i)
    if i % 10 == 5 then
      send("/", "sse.test", "text/event-stream"):close()
    elseif i % 10 == 0 then
      local conn = send("/?from=earliest", "sse.test", "text/event-stream")
      if i % 20 == 0 then
        assert(conn.sock:receive("*l"))  -- the status line: the stream started
      end
      conn:close()
    else
      local conn = host:connect(10)
      assert.equal(200, (conn:send_request("GET", "/", { Host = "sse.test", Accept = "text/event-stream" })))
      assert.matches("^retry:", conn:read_chunk())
      conn:close()
    end
  end

  local function run(cycle, n)
    for i = 1, n do
      cycle(i)
    end
  end

  local function check(name, cycle)
    run(cycle, 100)  -- warm-up
    local baseline = proc.steady(pid, 20)
    local t0 = helpers.now()
    run(cycle, CYCLES)
    local elapsed = helpers.now() - t0
    local after = proc.settle(pid, baseline, 15)
    print(string.format("%s: %d cycles in %.1f s; baseline %s; after %s (RSS %+.1f MB)", name, CYCLES,
                        elapsed, proc.format(baseline), proc.format(after),
                        (after.rss_kb - baseline.rss_kb) / 1024))
    assert.equal(baseline.threads, after.threads, "threads")
    assert.equal(baseline.fds, after.fds, "descriptors")
    assert.is_true(after.rss_kb - baseline.rss_kb <= RSS_TOLERANCE_KB,
                   string.format("RSS grew by %.1f MB", (after.rss_kb - baseline.rss_kb) / 1024))
  end

  it("of http-get leave no thread, descriptor or memory behind", function()
    check("http-get", get_cycle)
  end)

  it("of server-sent events leave no thread, descriptor or memory behind", function()
    check("server-sent events", sse_cycle)
  end)
end)
