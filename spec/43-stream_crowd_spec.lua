-- Many server-sent-event streams on one node of two workers (issue 17): every stream gets every live
-- record, and the crowd's tail, over every record of every client, stays within a bound computed in the
-- same run from one client alone on the same route. The count is what CI affords (bench scenario 13 runs
-- 10,000); the clients are kafka-tool sse-clients, two threads polling every socket.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local cjson = require "cjson"


-- Records per run, 20 ms apart: 50 records/s, the rate of the issue's target.
local RECORDS, INTERVAL_MS = 200, 20
local CROWD = 2000


-- Runs `clients` kafka-tool sse-clients on `host`'s route `host_header` from the live edge, produces
-- RECORDS stamped records to `topic` once every stream is open, and returns the clients' summary: every
-- client times every record (p50/p99/max over all of them).
local function crowd(host, host_header, topic, clients)
  local ready = helpers.RUN_DIR .. "/" .. helpers.unique_name("crowd") .. ".ready"
  local pipe = assert(io.popen(string.format(
    "%s sse-clients --port %d --host %s --path '/?from=latest' --clients %d --sample %d --events %d " ..
    "--timeout-ms 60000 --no-samples --ready-file %s 2>&1", helpers.KAFKA_TOOL, host.proxy_port, host_header,
    clients, clients, RECORDS, ready)))
  local opened
  assert.truthy(proc.wait_until(function()
    local file = io.open(ready)
    opened = file and tonumber(file:read("*a"))
    if file then file:close() end
    return opened
  end, 60, 0.05), "the clients did not open their streams")
  helpers.kafka_tool("produce", string.format("--topic %s --count %d --interval-ms %d", topic, RECORDS,
                                              INTERVAL_MS))
  local output = pipe:read("*a")
  pipe:close()
  return assert(cjson.decode(output:match("([^\n]+)\n*$") or ""), output)
end


describe("many SSE streams on one node of two workers", function()
  local host, topic

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("crowd"), 1)
    host = helpers.start_host({ workers = 2, routes = {
      helpers.route("crowd", topic, { mode = "server-sent-events" }),
    } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("gives all " .. CROWD .. " streams every record, with a p99 over all of them within a bound from one " ..
     "client's", function()
    local alone = crowd(host, "crowd.test", topic, 1)
    assert.equal(1, alone.complete, "the lone client got every record")
    local many = crowd(host, "crowd.test", topic, CROWD)
    -- Each record is one write per stream: the crowd's tail grows with the streams a worker writes before
    -- a given one. The bound allows ten times the lone client's p99 and at least half a second, far above
    -- what coalesced writes give here (about 100-250 ms on 2 shared cores) and far below what a stream
    -- waiting for a later record or a heartbeat (seconds) would show.
    local bound = math.max(10 * alone.p99_ms, alone.p99_ms + 500)
    print(string.format("\n1 client: p50 %.1f, p99 %.1f ms; %d clients: p50 %.1f, p99 %.1f, max %.1f ms " ..
                        "(bound %.1f); generator CPU %.1f s in %.1f s",
                        alone.p50_ms, alone.p99_ms, CROWD, many.p50_ms, many.p99_ms, many.max_ms, bound,
                        many.cpu_seconds, many.seconds))
    assert.equal(CROWD, many.complete, "clients that got every record")
    assert.equal(RECORDS, many.min_events, "the fewest records a client got")
    assert.equal(CROWD * RECORDS, many.samples, "records timed")
    assert.is_true(many.p99_ms <= bound, string.format("p99 %.1f ms over all clients is within %.1f ms",
                                                       many.p99_ms, bound))
  end)
end)
