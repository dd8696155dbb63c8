-- Worker crash: an nginx worker is killed (SIGKILL) mid-stream. nginx respawns it, the new worker builds its
-- consumers again, and clients that retry (http-get) or resume by Last-Event-ID (SSE) lose nothing. The
-- http-get case kills the worker while it is writing a large claim to a client that does not read: those
-- records must go to the other clients at once, not after the claim's timeout + grace (60 s).
local helpers = require "spec.helpers.host"
local faults = require "spec.helpers.faults"
local socket = require "socket"


describe("nginx worker killed mid-stream", function()
  local COUNT, RATE, PARTITIONS, MAX_RECORDS = 10000, 2500, 3, 100
  -- README: the other workers notice a dead worker's claims within about a second. A timer looks twice a
  -- second (http_get.lua, cursors.lua); serving them again then needs a seek back in the topic (0.3-0.5 s
  -- on the test broker).
  local NOTICE_SECONDS = 1.5
  local host
  local T = {}

  local route = helpers.route

  lazy_setup(function()
    T.get = helpers.create_topic(helpers.unique_name("wcrash-get"), PARTITIONS)
    T.sse = helpers.create_topic(helpers.unique_name("wcrash-sse"), PARTITIONS)
    host = helpers.start_host({ workers = 2, routes = {
      -- the limits allow one large claim (the stalled client's); the polling clients ask for 100 records
      route("wcrash-get", T.get, { auto_offset_reset = "earliest", max_records = COUNT, max_bytes = 32 * 2^20,
                                   timeout = 3000 }),
      route("wcrash-sse", T.sse, { mode = "server-sent-events", auto_offset_reset = "earliest",
                                   heartbeat_interval = 1000, timeout = 3000 }),
    } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  -- Opens a GET that claims the whole backlog and never reads it: its worker stays in the middle of the
  -- write (the answer is far larger than the socket buffers, up to 4 MB on loopback). Returns the
  -- connection and the worker holding it.
  local function stalled_get()
    local sock = socket.tcp4()  -- tcp() has no descriptor to set options on before connect
    assert(sock:setoption("recv-buffer-size", 4096))
    sock:settimeout(10)
    assert(sock:connect("127.0.0.1", host.proxy_port))
    assert(sock:send("GET / HTTP/1.1\r\nHost: wcrash-get.test\r\n\r\n"))
    local _, local_port = sock:getsockname()
    local conn
    assert(faults.wait_until(function()
      for _, c in ipairs(faults.proxy_connections(host)) do
        if c.peer_port == tonumber(local_port) and c.send_q > 0 then
          conn = c
          return true
        end
      end
      return false
    end, 10), "the large answer did not fill the socket")
    return sock, conn.pid
  end

  it("http-get: clients that retry get every record; a killed worker's claim is served again at once", function()
    local CLIENTS = 4
    local t0 = helpers.now()
    local dir = faults.workdir("wcrash-get")
    -- every worker builds its consumer now (its threads show it), so a backlog gathers in each buffer
    -- while nobody reads
    local function threads(pid)
      local _, out = helpers.sh("ls /proc/" .. pid .. "/task | wc -l")
      return tonumber(out)
    end
    local baseline = {}
    for _, pid in ipairs(host:worker_pids()) do baseline[pid] = threads(pid) end
    assert(faults.wait_until(function()
      assert.equal(200, (host:get("/?max_records=1", { Host = "wcrash-get.test" })))
      for pid, n in pairs(baseline) do
        if threads(pid) <= n then return false end
      end
      return true
    end, 20, 0), "every worker has a consumer")
    -- records of 1 KB: once 7,500 are on the broker, the backlog is an answer of about 8 MB
    local producer = faults.start_producer(dir, helpers.BROKER_PORT, T.get, COUNT, RATE, PARTITIONS, 1024)
    assert(faults.wait_until(function()
      local total = 0
      for _, m in pairs(helpers.kafka_tool("watermarks", "--topic " .. T.get)) do total = total + m.high end
      return total >= COUNT * 3 / 4
    end, 30), "the backlog did not gather")
    local stalled, victim = stalled_get()
    local clients = faults.poll_clients(host, "wcrash-get.test", "wait=1000&max_records=" .. MAX_RECORDS,
                                        CLIENTS, dir)
    finally(function()
      stalled:close()
      clients:stop()
    end)
    assert(faults.wait_until(function() return clients:count() >= 1000 end, 30))
    local t_kill = helpers.now()
    faults.kill_worker(host, victim)
    local respawned = helpers.now() - t_kill
    assert.equal(COUNT, producer(60).produced)
    local produced = faults.topic_records(T.get, helpers.BROKER_PORT)
    faults.wait_until(function() return faults.covers(produced, (clients:deliveries())) end, 40, 0.5)
    clients:stop()
    local lists, errors = clients:deliveries()
    local t = faults.tally(produced, lists)
    local answers = faults.read_answers(dir)

    -- The stalled GET claimed first, so its claim is every offset below the lowest one the polling
    -- clients got before the kill, per partition.
    local claimed_below = {}
    for _, list in ipairs(answers) do
      for _, answer in ipairs(list) do
        if answer.t < t_kill then
          for _, r in ipairs(answer.records) do
            claimed_below[r.partition] = math.min(claimed_below[r.partition] or math.huge, r.offset)
          end
        end
      end
    end
    local stalled_count = 0
    for p = 0, PARTITIONS - 1 do
      assert.is_number(claimed_below[p], "partition " .. p .. " was served before the kill")
      stalled_count = stalled_count + claimed_below[p]
    end
    -- When its records were served again: the first answer after the kill holding one of them (the dead
    -- worker noticed) and the answer that completed them.
    local first_seen, noticed, redone = {}, math.huge, 0
    for _, list in ipairs(answers) do
      for _, answer in ipairs(list) do
        for _, r in ipairs(answer.records) do
          if r.offset < claimed_below[r.partition] then
            local k = r.partition .. ":" .. r.offset
            first_seen[k] = math.min(first_seen[k] or math.huge, answer.t)
            noticed = math.min(noticed, answer.t - t_kill)
          end
        end
      end
    end
    for _, seen_at in pairs(first_seen) do redone = math.max(redone, seen_at - t_kill) end

    -- A duplicate can only be a record the killed worker had written to a polling client whose claim it
    -- had not settled yet: the answer a client received last before its connection to that worker broke.
    local unsettled = 0
    for _, list in ipairs(answers) do
      for i, answer in ipairs(list) do
        if answer.t >= t_kill and answer.status == "none" then
          local last = list[i - 1]
          if last and not last.status then unsettled = unsettled + #last.records end
          break
        end
      end
    end
    faults.report("worker crash, http-get", t,
                  (", %d error answers, respawned in %.2f s; the killed worker's claim of %d records: first " ..
                   "served again %.2f s after the kill, all %.2f s after; at most %d records written but not " ..
                   "settled at the kill; %.1f s in all")
                  :format(errors, respawned, stalled_count, noticed, redone, unsettled, helpers.now() - t0))
    assert.same({}, { unpack(t.missing, 1, 10) }, #t.missing .. " records never delivered")
    assert.equal(COUNT, t.distinct_seqs)
    -- README: "while a worker writes an 8 MB answer" (7,000 records of 1 KB at least)
    assert.is_true(stalled_count >= 7000, "the stalled GET held a large claim (" .. stalled_count .. " records)")
    assert.is_true(t.duplicates <= unsettled, t.duplicates .. " duplicates, " .. unsettled .. " records unsettled")
    assert.is_true(noticed <= NOTICE_SECONDS, ("the killed worker's records were first served again %.2f s " ..
                                               "after the kill"):format(noticed))
  end)

  it("server-sent-events: clients resuming by Last-Event-ID see every record exactly once", function()
    local CLIENTS = 4
    local t0 = helpers.now()
    local dir = faults.workdir("wcrash-sse")
    local clients = faults.sse_clients(host, "wcrash-sse.test", CLIENTS, dir)
    finally(function() clients:stop() end)
    local producer = faults.start_producer(dir, helpers.BROKER_PORT, T.sse, COUNT, RATE, PARTITIONS)
    assert(faults.wait_until(function() return clients:count() >= CLIENTS * 2000 end, 30))
    -- a worker holding streams
    local victim = faults.proxy_connections(host)[1].pid
    local t_kill = helpers.now()
    faults.kill_worker(host, victim)
    assert.equal(COUNT, producer(60).produced)
    local produced = faults.topic_records(T.sse, helpers.BROKER_PORT)
    faults.await_covered(clients, produced, 40)
    local recovered = helpers.now() - t_kill
    local summary = clients:stop()
    local lists = clients:deliveries()
    assert.equal(CLIENTS, #lists)
    for i, list in ipairs(lists) do
      local t = faults.tally(produced, { list })
      faults.report("worker crash, server-sent-events client " .. i, t,
                    (", %d reconnects (all clients), all delivered %.1f s after the kill, %.1f s in all")
                    :format(summary.reconnects, recovered, helpers.now() - t0))
      assert.same({}, { unpack(t.missing, 1, 10) }, #t.missing .. " records never delivered")
      assert.equal(0, t.duplicates)
    end
    assert.is_true(summary.reconnects >= 1, "a stream was cut by the kill")
  end)
end)
