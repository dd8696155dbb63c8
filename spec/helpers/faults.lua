-- What the fault specs (spec/2x) share: a producer and clients running as their own processes while the
-- spec kills things, and the bookkeeping that says what was produced, delivered, lost and duplicated.
-- Records are identified by (partition, offset) and carry kafka-tool's sequence number in their value, so a
-- record the producer wrote twice (an ack lost in a broker crash) is told apart from one delivered twice.
local helpers = require "spec.helpers.host"
local cjson = require "cjson"


local _M = {}


-- Whether process `pid` runs; a zombie (exited, not yet reaped) counts as gone.
local function alive(pid)
  local _, out = helpers.sh("ps -o stat= -p " .. pid)
  return out:match("^%s*[^%sZ]") ~= nil
end


-- Runs `command` in the background with its output in `log`; returns its pid.
local function spawn(command, log)
  local ok, output = helpers.sh(string.format("%s > %s 2>&1 & echo $!", command, log))
  assert(ok, output)
  return assert(tonumber(output:match("(%d+)%s*$")), output)
end


_M.alive = alive
_M.spawn = spawn


-- Waits until `condition()` is true or `seconds` pass; returns whether it became true.
function _M.wait_until(condition, seconds, step)
  local deadline = helpers.now() + seconds
  while not condition() do
    if helpers.now() > deadline then
      return false
    end
    helpers.sleep(step or 0.1)  -- the poll interval of this wait-with-deadline
  end
  return true
end


-- A directory of its own under the run dir, emptied.
function _M.workdir(name)
  local dir = helpers.RUN_DIR .. "/" .. helpers.unique_name(name)
  assert(helpers.sh("rm -rf " .. dir .. " && mkdir -p " .. dir))
  return dir
end


-- Starts `kafka-tool produce` of `count` JSON records (sequence numbers 0..count-1) of `size` bytes
-- (default 64) spread at `rate` per second over `partitions`. The returned function waits for it (up to
-- `seconds`) and returns its summary.
function _M.start_producer(dir, port, topic, count, rate, partitions, size)
  local log = dir .. "/producer.log"
  -- a generous message.timeout.ms: the producer must keep retrying through any outage the spec causes
  local pid = spawn(string.format("%s produce --brokers 127.0.0.1:%d --topic %s --count %d --rate %d " ..
                                  "--partitions %d --size %d --config message.timeout.ms=120000",
                                  helpers.KAFKA_TOOL, port, topic, count, rate, partitions, size or 64), log)
  return function(seconds)
    assert(_M.wait_until(function() return not alive(pid) end, seconds or 60), "the producer did not finish")
    local file = assert(io.open(log))
    local output = file:read("*a")
    file:close()
    return assert(cjson.decode(output:match("([^\n]+)\n*$") or ""), "producer: " .. output)
  end
end


local function hex_decode(hex)
  return (hex:gsub("..", function(h) return string.char(tonumber(h, 16)) end))
end


-- Every record of `topic` on the broker at `port`, as { partition, offset, seq }, read with kafka-tool.
function _M.topic_records(topic, port)
  local marks = helpers.kafka_tool("watermarks", "--topic " .. topic, port)
  local total = 0
  for _, m in pairs(marks) do
    total = total + m.high - m.low
  end
  local ok, output = helpers.sh(string.format("%s consume --brokers 127.0.0.1:%d --topic %s --count %d --print",
                                              helpers.KAFKA_TOOL, port, topic, total))
  assert(ok, output)
  local records = {}
  for line in output:gmatch("[^\n]+") do
    local r = cjson.decode(line)
    if r and r.offset then
      local value = r.value_hex ~= cjson.null and hex_decode(r.value_hex) or ""
      records[#records + 1] = { partition = r.partition, offset = r.offset,
                                seq = tonumber(value:match('"seq":(%d+)')) }
    end
  end
  assert(#records == total, "read " .. #records .. " of the topic's " .. total .. " records")
  return records
end


-- Reads the "partition offset seq" lines the client processes wrote in `dir`, one list per file;
-- "status S" lines are counted as errors.
function _M.read_deliveries(dir)
  local lists, errors = {}, 0
  local _, names = helpers.sh("ls " .. dir .. "/*.txt 2>/dev/null")
  for name in names:gmatch("[^\n]+") do
    local list = {}
    for line in io.lines(name) do
      local partition, offset, seq = line:match("^(%d+) (%d+) (%S+)$")
      if partition then
        list[#list + 1] = { partition = tonumber(partition), offset = tonumber(offset), seq = tonumber(seq) }
      elseif line:match("^status") then
        errors = errors + 1
      end
    end
    lists[#lists + 1] = list
  end
  return lists, errors
end


-- The answers the poll clients (spec/helpers/poll_client.lua) writing into `dir` received, one list per
-- client in order: { t = <when received>, seconds = <how long the request took>, status = <nil for a 200,
-- else "none" or the status>, records = { {partition, offset, seq}, ... } }.
function _M.read_answers(dir)
  local lists = {}
  local _, names = helpers.sh("ls " .. dir .. "/*.txt 2>/dev/null")
  for name in names:gmatch("[^\n]+") do
    local list, answer = {}, nil
    for line in io.lines(name) do
      local t, seconds = line:match("^at (%S+) %d+ (%S+)$")
      local partition, offset, seq = line:match("^(%d+) (%d+) (%S+)$")
      if t then
        answer = { t = tonumber(t), seconds = tonumber(seconds), records = {} }
        list[#list + 1] = answer
      elseif partition and answer then
        answer.records[#answer.records + 1] = { partition = tonumber(partition), offset = tonumber(offset),
                                                seq = tonumber(seq) }
      elseif answer then
        answer.status = line:match("^status (%S+)")
      end
    end
    lists[#lists + 1] = list
  end
  return lists
end


local function key(r)
  return r.partition .. ":" .. r.offset
end


-- Compares what the clients got (`lists`, one per client) with what the topic holds (`produced`).
-- Returns { produced, distinct_seqs, producer_duplicates, delivered, missing (list), duplicates,
-- duplicates_within (a client that saw a record twice) }.
function _M.tally(produced, lists)
  local seqs, distinct_seqs = {}, 0
  local wanted = {}
  for _, r in ipairs(produced) do
    wanted[key(r)] = true
    if r.seq and not seqs[r.seq] then
      seqs[r.seq] = true
      distinct_seqs = distinct_seqs + 1
    end
  end
  local seen, delivered, duplicates, within = {}, 0, 0, 0
  for _, list in ipairs(lists) do
    local mine = {}
    for _, r in ipairs(list) do
      local k = key(r)
      delivered = delivered + 1
      if seen[k] then
        duplicates = duplicates + 1
      end
      if mine[k] then
        within = within + 1
      end
      seen[k], mine[k] = true, true
    end
  end
  local missing = {}
  for _, r in ipairs(produced) do
    if not seen[key(r)] then
      missing[#missing + 1] = key(r)
    end
  end
  return { produced = #produced, distinct_seqs = distinct_seqs, producer_duplicates = #produced - distinct_seqs,
           delivered = delivered, missing = missing, duplicates = duplicates, duplicates_within = within }
end


-- Prints a tally (see tally) under `name`, with `extra` appended, for the figures of the test output.
function _M.report(name, t, extra)
  print(("%s: produced %d records (%d distinct sequence numbers, %d producer duplicates), delivered %d, " ..
         "duplicates %d%s"):format(name, t.produced, t.distinct_seqs, t.producer_duplicates, t.delivered,
                                   t.duplicates, extra or ""))
end


-- True when the union of `lists` holds every record of `produced`.
function _M.covers(produced, lists)
  return #_M.tally(produced, lists).missing == 0
end


-- Waits up to `seconds` until each client of `clients` (sse_clients, poll_clients) has every record of
-- `produced`.
function _M.await_covered(clients, produced, seconds)
  return _M.wait_until(function()
    for _, list in ipairs((clients:deliveries())) do
      if not _M.covers(produced, { list }) then return false end
    end
    return true
  end, seconds, 0.5)
end


-- Counts the records delivered so far to the clients writing into `dir`.
function _M.delivered_count(dir)
  local _, out = helpers.sh("cat " .. dir .. "/*.txt 2>/dev/null | grep -c '^[0-9]'")
  return tonumber(out:match("%d+")) or 0
end


-- The established connections of the gateway's proxy port, from the server's side (ss): a list of
-- { pid = <worker>, peer_port =, send_q = <bytes not yet sent> }.
function _M.proxy_connections(host)
  local ok, out = helpers.sh(string.format("ss -tnpH state established '( sport = :%d )'", host.proxy_port))
  assert(ok, out)
  local list = {}
  for line in out:gmatch("[^\n]+") do
    local send_q, peer_port = line:match("^%s*%d+%s+(%d+)%s+%S+:%d+%s+%S+:(%d+)")
    local pid = line:match("pid=(%d+)")
    if pid then
      list[#list + 1] = { pid = tonumber(pid), peer_port = tonumber(peer_port), send_q = tonumber(send_q) }
    end
  end
  return list
end


-- Kills worker `pid` with SIGKILL and waits until nginx has respawned it; returns the new worker pids.
function _M.kill_worker(host, pid)
  local before = #host:worker_pids()
  assert(helpers.sh("kill -KILL " .. pid))
  local pids
  assert(_M.wait_until(function()
    pids = host:worker_pids()
    for _, p in ipairs(pids) do
      if p == pid then return false end
    end
    return #pids == before
  end, 10), "nginx did not replace the killed worker")
  return pids
end


local Clients = {}
Clients.__index = Clients


-- Starts `n` retrying long-poll clients (spec/helpers/poll_client.lua) on `host`'s route `host_header`.
function _M.poll_clients(host, host_header, query, n, dir)
  local self = setmetatable({ dir = dir, stop_file = dir .. "/stop", pids = {} }, Clients)
  for i = 1, n do
    self.pids[i] = spawn(string.format("cd %s && luajit spec/helpers/poll_client.lua %d %s '%s' %s/%d.txt %s",
                                       helpers.ROOT, host.proxy_port, host_header, query, dir, i, self.stop_file),
                         dir .. "/" .. i .. ".log")
  end
  return self
end


-- Starts `n` SSE clients (spec/helpers/sse_clients.py --resume) on `host`'s route `host_header`; returns
-- once all are connected.
function _M.sse_clients(host, host_header, n, dir, extra)
  local self = setmetatable({ dir = dir, stop_file = dir .. "/stop", pids = {} }, Clients)
  local ready = dir .. "/ready"
  self.log = dir .. "/sse_clients.log"
  self.pids[1] = spawn(string.format("python3 %s/spec/helpers/sse_clients.py --port %d --host %s --clients %d " ..
                                     "--resume --idle 15 --timeout 120 --out %s --stop-file %s --ready-file %s %s",
                                     helpers.ROOT, host.proxy_port, host_header, n, dir, self.stop_file, ready,
                                     extra or ""), self.log)
  assert(_M.wait_until(function() return helpers.sh("test -s " .. ready) end, 20), "SSE clients did not start")
  return self
end


-- Stops the clients (they finish the answer in hand) and waits for them to exit; returns the SSE
-- clients' summary when there is one. Idempotent: call it from `finally` too, so that clients of a
-- failed test never go on reading from a later test's gateway.
function Clients:stop()
  assert(io.open(self.stop_file, "w")):close()
  local ok = _M.wait_until(function()
    for _, pid in ipairs(self.pids) do
      if alive(pid) then return false end
    end
    return true
  end, 40)
  if not ok then
    for _, pid in ipairs(self.pids) do helpers.sh("kill " .. pid) end
  end
  assert(ok, "clients did not stop")
  if self.log then
    local file = assert(io.open(self.log))
    local output = file:read("*a")
    file:close()
    return cjson.decode(output:match("([^\n]+)\n*$") or "") or output
  end
end


function Clients:deliveries()
  return _M.read_deliveries(self.dir)
end


function Clients:count()
  return _M.delivered_count(self.dir)
end


return _M
