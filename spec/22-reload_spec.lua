-- nginx reload (HUP) while 50 SSE streams, polling clients and idle long-polls are open, with a new config:
-- the old workers end their streams cleanly (the clients resume by Last-Event-ID: nothing lost, nothing
-- twice), answer their long-polls with a normal 200 at once, and exit; the new config takes effect.
local helpers = require "spec.helpers.host"
local faults = require "spec.helpers.faults"
local wait = require "spec.helpers.wait"


describe("nginx reload", function()
  local STREAMS, POLLERS, LONG_POLLS = 50, 3, 5
  local COUNT, RATE, PARTITIONS = 3000, 600, 3
  -- README: on a reload, waiting long-polls get a normal 200 "at once": the worker closes its consumers
  -- as it starts to exit, which wakes them (consumers.lua). Counted from the HUP, this leaves nginx's
  -- master the time to load the new configuration and signal the old workers.
  local AT_ONCE_SECONDS = 0.5
  local host
  local T = {}

  local route = helpers.route

  -- The config before the reload, and after it with `max_records` of the http-get route and `extra` routes.
  local function routes(max_records, extra)
    local list = {
      -- 50 streams starting or resuming at once start 50 replay consumers: a generous timeout
      route("reload-sse", T.sse, { mode = "server-sent-events", auto_offset_reset = "earliest",
                                   heartbeat_interval = 1000, timeout = 30000 }),
      route("reload-get", T.get, { auto_offset_reset = "earliest", max_records = max_records }),
      route("reload-idle", T.idle, {}),
    }
    for _, r in ipairs(extra or {}) do
      list[#list + 1] = r
    end
    return list
  end

  lazy_setup(function()
    T.sse = helpers.create_topic(helpers.unique_name("reload-sse"), PARTITIONS)
    T.get = helpers.create_topic(helpers.unique_name("reload-get"), PARTITIONS)
    T.idle = helpers.create_topic(helpers.unique_name("reload-idle"), 1)
    T.new = helpers.create_topic(helpers.unique_name("reload-new"), 1)
    host = helpers.start_host({ workers = 2, routes = routes(100) })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("ends old workers' streams and long-polls cleanly, loses and repeats nothing, and applies the new config",
     function()
    local t0 = helpers.now()
    local sse_dir, get_dir = faults.workdir("reload-sse"), faults.workdir("reload-get")
    local old_workers = host:worker_pids()
    local streams = faults.sse_clients(host, "reload-sse.test", STREAMS, sse_dir)
    local pollers = faults.poll_clients(host, "reload-get.test", "wait=3000", POLLERS, get_dir)
    finally(function()
      streams:stop()
      pollers:stop()
    end)
    -- long-polls on a topic nobody writes to, that would wait 20 s; each prints its status and when it
    -- was answered
    local long_polls = {}
    for i = 1, LONG_POLLS do
      long_polls[i] = get_dir .. "/long-poll-" .. i .. ".out"
      faults.spawn(string.format("(curl -s -o /dev/null -w '%%{http_code} ' -H 'Host: reload-idle.test' " ..
                                 "'http://127.0.0.1:%d/?wait=20000'; date +%%s.%%N)", host.proxy_port),
                   long_polls[i])
    end
    assert(wait.requests_read(host, "curl", LONG_POLLS, 10), "the long-polls reached the workers")
    local sse_producer = faults.start_producer(sse_dir, helpers.BROKER_PORT, T.sse, COUNT, RATE, PARTITIONS)
    local get_producer = faults.start_producer(get_dir, helpers.BROKER_PORT, T.get, COUNT, RATE, PARTITIONS)
    assert(faults.wait_until(function() return streams:count() >= STREAMS * COUNT * 0.3 end, 30))
    -- still waiting: none was answered before the reload
    assert.same({}, wait.answers_to(host, "/?wait=20000"))

    local t_reload = helpers.now()
    host:reload(routes(20, { route("reload-new", T.new, {}) }))
    -- kong-host reload checks the configuration (nginx -t), then sends the HUP and returns
    local t_hup = helpers.now()
    assert(faults.wait_until(function()
      for _, pid in ipairs(old_workers) do
        if faults.alive(pid) then return false end
      end
      return true
    end, 20, 0.05), "the old workers did not exit")
    local old_exited = helpers.now() - t_reload

    -- every long-poll was answered normally when its worker left, at once
    local after_hup = 0
    for _, file in ipairs(long_polls) do
      assert(faults.wait_until(function()
        local f = assert(io.open(file))
        local done = f:read("*a"):match("^%d+ [%d.]+")
        f:close()
        return done
      end, 20), "a long-poll was never answered")
      local f = assert(io.open(file))
      local code, at = f:read("*a"):match("^(%d+) ([%d.]+)")
      f:close()
      assert.equal("200", code)
      after_hup = math.max(after_hup, tonumber(at) - t_hup)
    end

    assert.equal(COUNT, sse_producer(60).produced)
    assert.equal(COUNT, get_producer(60).produced)
    local sse_produced = faults.topic_records(T.sse, helpers.BROKER_PORT)
    local get_produced = faults.topic_records(T.get, helpers.BROKER_PORT)
    faults.wait_until(function()
      if not faults.covers(get_produced, (pollers:deliveries())) then return false end
      for _, list in ipairs((streams:deliveries())) do
        if not faults.covers(sse_produced, { list }) then return false end
      end
      return true
    end, 40, 0.5)
    local summary = streams:stop()
    pollers:stop()

    local worst = { missing = 0, duplicates = 0 }
    local lists = streams:deliveries()
    assert.equal(STREAMS, #lists)
    for _, list in ipairs(lists) do
      local t = faults.tally(sse_produced, { list })
      worst.missing = math.max(worst.missing, #t.missing)
      worst.duplicates = math.max(worst.duplicates, t.duplicates)
    end
    local g = faults.tally(get_produced, (pollers:deliveries()))
    print(("reload: the reload command took %.2f s; old workers exited %.2f s after it started, long-polls " ..
           "(wait=20 s) answered 200 at most %.2f s after the HUP; " ..
           "%d streams x %d records: at worst %d missing, %d duplicates per stream, %d reconnects, resumed " ..
           "within %.1f s; http-get: %d produced, %d delivered, %d missing, %d duplicates; %.1f s in all")
          :format(t_hup - t_reload, old_exited, after_hup, STREAMS, #sse_produced, worst.missing, worst.duplicates,
                  summary.reconnects, summary.resume_max_s, g.produced, g.delivered, #g.missing, g.duplicates,
                  helpers.now() - t0))
    assert.equal(0, worst.missing)
    assert.equal(0, worst.duplicates)
    -- each stream was cut by its worker leaving, cleanly: an end of stream, not a reset or a dead stream
    -- (a busy machine may answer a resume with a 5xx, which the client retries)
    assert.is_true(summary.reconnects >= STREAMS, summary.reconnects .. " reconnects")
    assert.equal(0, summary.broken, require("cjson").encode(summary.errors))
    assert.same({}, { unpack(g.missing, 1, 10) }, #g.missing .. " records never delivered")
    assert.equal(0, g.duplicates)
    assert.is_true(after_hup <= AT_ONCE_SECONDS, ("a long-poll was answered %.2f s after the HUP"):format(after_hup))
    assert.is_true(old_exited < 10, "the old workers took " .. old_exited .. " s to exit")

    -- the new config: at most 20 records per GET. The 50 records go to one partition in one batch, so they
    -- reach the worker together (a linger far longer than producing them takes) and the first answer is as
    -- full as allowed.
    helpers.kafka_tool("produce", "--topic " .. T.get .. " --count 50 --partition 0 --linger-ms 200")
    local counts, got = {}, 0
    assert(faults.wait_until(function()
      local status, body, _, json = host:get("/?wait=1000", { Host = "reload-get.test" })
      assert.equal(200, status, body)
      local n = #helpers.records_of(json)
      if n > 0 then counts[#counts + 1] = n end
      got = got + n
      return got >= 50
    end, 20, 0))
    assert.same({ 20, 20, 10 }, counts)
    local status, body, _, json = host:get("/?wait=0", { Host = "reload-new.test" })
    assert.equal(200, status, body)
    assert.is_table(json[T.new])
  end)
end)
