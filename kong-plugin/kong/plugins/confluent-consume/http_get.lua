-- `http-get` mode: a GET answers with the next records of every partition as JSON, in Kong's shape
-- `{"<topic>":{"partitions":{"<n>":{"records":[...],"high_watermark":H,"last_stable_offset":L,
-- "log_start_offset":S,"errcode":0}}}}`.
--
-- Query arguments: `wait` (ms to wait for the first record when none is ready; long-poll),
-- `max_records`, `max_bytes`; each bounded by the plugin config. With `cursor` or `from` the GET is a
-- cursor read (cursor_read.lua), which leaves the group alone.
local consumers = require "kong.plugins.confluent-consume.consumers"
local respond = require "kong.plugins.confluent-consume.respond"
local cursors = require "kong.plugins.confluent-consume.cursors"
local client = require "kong.plugins.confluent-consume.client"
local cursor_read = require "kong.plugins.confluent-consume.cursor_read"
local message_functions = require "kong.plugins.confluent-consume.message_functions"
local metrics = require "kong.plugins.confluent-consume.metrics"
local native = require "confluent_consume_native"
local lrucache = require "resty.lrucache"


local kong = kong
local ngx = ngx
local now = ngx.now
local update_time = ngx.update_time
local pairs = pairs
local ipairs = ipairs


local _M = {}


-- How many distinct query strings each configuration keeps parsed, per worker: clients repeat theirs.
local PARSED_QUERIES = 64


-- The handles this worker serves GETs from, each with what looking for abandoned claims needs.
local served = setmetatable({}, { __mode = "k" })  -- entry -> { partitions =, timeout = }
local recovering  -- whether the recovery timer runs


-- Once a RECOVER_INTERVAL, looks for the claims of dead workers in every group this worker serves, and
-- wakes the GETs waiting on a handle whose group has records to serve again: otherwise a dead worker's
-- records would wait for the next GET that claims, which while no new records arrive is as late as the
-- end of a long-poll's wait.
local function recover_all(premature)
  if premature then
    return
  end
  -- a copy: taking a group's lock may yield, and a request may add to `served` meanwhile
  local list = {}
  for entry, s in pairs(served) do
    list[#list + 1] = { entry, s }
  end
  for _, item in ipairs(list) do
    local entry, s = item[1], item[2]
    if entry.closed then
      served[entry] = nil
    else
      local found, err = cursors.recover(entry, s.partitions, s.timeout)
      if found then
        kong.log.warn("records claimed by a worker that died are served again (group ", entry.group_id, ")")
        consumers.wake(entry)
      elseif err then
        kong.log.warn("cannot look for the claims of dead workers: ", err)
      end
    end
  end
end


local function watch_claims(conf, entry, partitions)
  if not served[entry] then
    served[entry] = { partitions = partitions, timeout = conf.timeout / 1000 }
  end
  if not recovering then
    local err
    recovering, err = ngx.timer.every(cursors.RECOVER_INTERVAL, recover_all)
    if not recovering then
      kong.log.warn("cannot start the recovery timer (a dead worker's records wait for the next claim): ", err)
    end
  end
end


-- conf table -> the limits parsed of each recent query string (an lrucache): a client that loops GETs
-- sends the same query each time, and this spares each GET a call into the native module.
local parsed_queries = setmetatable({}, { __mode = "k" })


-- wait (in seconds), max_records and max_bytes from the query string, each bounded by the config (see
-- the native module's parse_query). The table is shared by the GETs with the same query: read only.
local function read_limits(conf)
  local raw = kong.request.get_raw_query()
  local cache = parsed_queries[conf]
  if not cache then
    cache = lrucache.new(PARSED_QUERIES)
    parsed_queries[conf] = cache
  end
  local limits = cache:get(raw)
  if limits then
    return limits
  end
  local err
  limits, err = native.parse_query(raw, conf)
  if not limits then
    return nil, err
  end
  limits.wait = limits.wait / 1000
  cache:set(raw, limits)
  return limits
end


-- With lua_check_client_abort on, a client that goes away while the request waits wakes it, and it ends
-- at once (no records are claimed then); one that goes away while its records are written lets the write
-- finish, so the claim is settled as undelivered and its records are served again. The handler only
-- marks and wakes the request, never ngx.exit()s it: Kong runs `access` in a coroutine of its own, whose
-- pending sleep or socket wait nginx would not cancel when the abort handler ended the request, and the
-- worker would crash when that wait completed. Killing the request mid-write would also leave the claim
-- unsettled and its records skipped.
local function watch_abort(request)
  client.on_abort(function()
    request.aborted = true
    if request.entry and not request.writing then
      consumers.wake(request.entry)
    end
  end, "a long-poll whose client left ends only when records arrive or its wait is over")
end


-- Settles a claim: delivered (then committed under `auto`) or to be served again.
local function settle(conf, entry, partitions, claim, delivered)
  if claim.count == 0 then
    return
  end
  local commits, err = cursors.settle(entry, partitions, claim, delivered, conf.timeout / 1000)
  if not commits then
    kong.log.err("cannot settle delivered records: ", err)
  elseif delivered and conf.commit_strategy == "auto" then
    entry.handle:commit(commits)
  end
end


-- Writes the claimed records (`kept` of them after message functions) and settles the claim.
local function deliver(conf, entry, partitions, claim, request, kept)
  ngx.status = 200
  ngx.header["Content-Type"] = "application/json"
  -- the length is known: no chunked encoding, and an HTTP/1.0 answer is not buffered whole by
  -- lua-nginx-module (lua_http10_buffering), whose ngx.flush then fails with "buffering"
  ngx.header["Content-Length"] = #claim.body
  request.writing = true
  local ok = ngx.print(claim.body)
  if ok then
    ok = ngx.flush(true)
  end
  ok = ok and not request.aborted
  settle(conf, entry, partitions, claim, ok)
  if ok and kept > 0 then
    local route = metrics.route_label()
    metrics.count(metrics.key("records_served", route, "http-get"), kept)
    metrics.count(metrics.key("bytes_served", route, "http-get"), #claim.body)
  end
  return ngx.exit(ok and 200 or 499)
end


-- Answers a GET for `conf`, a configuration of the plugin `plugin_name`.
function _M.serve(conf, plugin_name)
  local limits, err = read_limits(conf)
  if not limits then
    return respond.error(400, err)
  elseif limits.cursor or limits.from then
    return cursor_read.serve(conf, plugin_name, limits)
  end
  local request = {}
  watch_abort(request)
  local entry, busy
  entry, err, busy = consumers.get(conf, plugin_name)
  if busy then
    return respond.consumers_busy(err)
  elseif not entry then
    return respond.consumer_failed(conf, err)
  end
  request.entry = entry
  update_time()
  local started = now()
  -- a ready handle's partitions never change: only its first GETs ask for them (and for its state; a
  -- later GET learns of a Kafka failure from its claim)
  local partitions = entry.partitions
  if not partitions then
    local status, message
    partitions, status, message = consumers.await_ready(entry, started + conf.timeout / 1000)
    if not partitions then
      return respond.kafka_failure(conf, status, message)
    end
    entry.partitions = partitions
    watch_claims(conf, entry, partitions)
  end
  local chain
  chain, err = message_functions.chain(conf)
  if err then
    return respond.error(500, err)
  end
  local wait_until = now() + limits.wait
  while true do
    -- a client that left without nginx noticing (see client.lua) must not have records claimed for it
    if request.aborted or client.gone() then
      return ngx.exit(499)
    end
    local generation = entry.generation
    local claim
    claim, err = cursors.claim(entry, partitions, limits, conf.timeout / 1000, chain ~= nil)
    if not claim then
      return respond.kafka_failure(conf, 503, err)
    end
    local kept = claim.count
    if chain then
      message_functions.apply(chain, claim.body, partitions)
      claim.body, kept = message_functions.render_kong(partitions, claim.body)
    end
    update_time()
    local remaining = wait_until - now()
    -- a consumer closed by a configuration change (or a worker exit) ends the long-poll: the next GET
    -- goes to the consumer of the new configuration
    if kept > 0 or remaining <= 0 or entry.closed or request.aborted then
      return deliver(conf, entry, partitions, claim, request, kept)
    end
    if claim.count > 0 then
      -- the functions dropped every record claimed: consumed, and the long-poll goes on
      settle(conf, entry, partitions, claim, true)
    else
      local waiting = metrics.key("long_polls_waiting", metrics.route_label())
      metrics.move(waiting, 1)
      consumers.wait(entry, generation, remaining)
      metrics.move(waiting, -1)
      -- a Kafka failure meanwhile: the next claim is refused with it (503)
    end
  end
end


return _M
