-- Broker crash: the broker is killed (SIGKILL) mid-stream and restarted on its persistent (sqlite) storage
-- while a producer writes 10k records and clients read through the plugin. http-get clients that retry
-- get every record at least once, duplicates bounded by the batches in flight at the crash; SSE clients
-- that resume with Last-Event-ID (or keep their stream through the outage) see exactly what was produced.
-- Figures are printed for the report.
local helpers = require "spec.helpers.host"
local faults = require "spec.helpers.faults"


describe("broker killed mid-stream", function()
  local port = helpers.MEMORY_BROKER_PORT + 10
  local COUNT, RATE, PARTITIONS, MAX_RECORDS, TIMEOUT = 10000, 2500, 3, 100, 3
  local broker_dir, host
  local T = {}

  local function broker(action, extra)
    helpers.broker(broker_dir, action, extra)
  end

  local function route(name, topic, overrides)
    local r = helpers.route(name, topic, overrides)
    r.plugins[1].config.bootstrap_servers[1].port = port
    return r
  end

  lazy_setup(function()
    broker_dir = helpers.RUN_DIR .. "/broker-crash"
    helpers.sh("rm -rf " .. broker_dir)
    broker("start", "--port " .. port .. " --storage sqlite")
    T.get = helpers.create_topic(helpers.unique_name("crash-get"), PARTITIONS, port)
    T.sse = helpers.create_topic(helpers.unique_name("crash-sse"), PARTITIONS, port)
    host = helpers.start_host({ workers = 2, routes = {
      route("crash-get", T.get, { auto_offset_reset = "earliest", commit_strategy = "auto",
                                  max_records = MAX_RECORDS, timeout = TIMEOUT * 1000 }),
      route("crash-sse", T.sse, { mode = "server-sent-events", auto_offset_reset = "earliest",
                                  heartbeat_interval = 1000, timeout = 3000 }),
    } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    broker("stop")
  end)

  -- Once the clients hold `at` records: SIGKILL the broker, keep it down `down` seconds, restart it on
  -- the same storage. Returns how many records the clients held at the kill.
  local function crash(clients, at, down)
    assert(faults.wait_until(function() return clients:count() >= at end, 30), "too few records before the crash")
    broker("stop", "--signal KILL")
    local held = clients:count()
    helpers.sleep(down)  -- paces the fault: the broker stays down this long (not a synchronisation)
    broker("start", "--port " .. port .. " --storage sqlite")
    return held
  end

  it("http-get with commit_strategy=auto delivers every record at least once, duplicates bounded", function()
    local CLIENTS = 4
    local t0 = helpers.now()
    local dir = faults.workdir("crash-get")
    local clients = faults.poll_clients(host, "crash-get.test", "wait=1000", CLIENTS, dir)
    finally(function() clients:stop() end)
    local producer = faults.start_producer(dir, port, T.get, COUNT, RATE, PARTITIONS)
    local held = crash(clients, COUNT * 0.3, 2)
    assert.equal(COUNT, producer(60).produced)
    local produced = faults.topic_records(T.get, port)
    faults.wait_until(function() return faults.covers(produced, (clients:deliveries())) end, 40, 0.5)
    clients:stop()
    local lists, errors = clients:deliveries()
    local t = faults.tally(produced, lists)
    -- README: while the broker is down, GETs answer 503 with the reason, within `timeout`
    local statuses, slowest = {}, 0
    for _, list in ipairs(faults.read_answers(dir)) do
      for _, answer in ipairs(list) do
        if answer.status then
          statuses[answer.status] = (statuses[answer.status] or 0) + 1
          slowest = math.max(slowest, answer.seconds)
        end
      end
    end
    faults.report("broker crash, http-get", t, (", %d held at the kill, %d error answers while down (%s), the " ..
                                                "slowest in %.2f s, %.1f s in all")
                  :format(held, errors, require("cjson").encode(statuses), slowest, helpers.now() - t0))
    assert.same(errors > 0 and { ["503"] = errors } or {}, statuses)
    assert.is_true(slowest <= TIMEOUT, ("an error answer took %.2f s"):format(slowest))
    assert.is_true(held < COUNT, "the broker was killed mid-stream")
    assert.same({}, { unpack(t.missing, 1, 10) }, #t.missing .. " records never delivered")
    assert.equal(COUNT, t.distinct_seqs)
    -- at most what was in flight at the crash: one batch per client
    assert.is_true(t.duplicates <= CLIENTS * MAX_RECORDS, t.duplicates .. " duplicates")
  end)

  it("server-sent-events clients resuming by Last-Event-ID see every record exactly once", function()
    local CLIENTS = 2
    local t0 = helpers.now()
    local dir = faults.workdir("crash-sse")
    -- client 1 reconnects on the error event the outage causes, client 2 keeps its stream open through it
    local clients = faults.sse_clients(host, "crash-sse.test", CLIENTS, dir, "--reconnect-on-error 1")
    finally(function() clients:stop() end)
    local producer = faults.start_producer(dir, port, T.sse, COUNT, RATE, PARTITIONS)
    local held = crash(clients, CLIENTS * COUNT * 0.3, 2)
    assert.equal(COUNT, producer(60).produced)
    local produced = faults.topic_records(T.sse, port)
    faults.await_covered(clients, produced, 40)
    local summary = clients:stop()
    local lists = clients:deliveries()
    assert.equal(CLIENTS, #lists)
    for i, list in ipairs(lists) do
      local t = faults.tally(produced, { list })
      faults.report("broker crash, server-sent-events client " .. i, t,
                    (", %d reconnects (all clients), %.1f s"):format(summary.reconnects, helpers.now() - t0))
      assert.same({}, { unpack(t.missing, 1, 10) }, #t.missing .. " records never delivered")
      assert.equal(0, t.duplicates)
      assert.equal(COUNT, t.distinct_seqs)
    end
    assert.is_true(held < CLIENTS * COUNT, "the broker was killed mid-stream")
  end)
end)
