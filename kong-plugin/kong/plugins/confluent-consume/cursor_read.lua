-- http-get cursor reads: a GET with `?cursor=<c>` (or `?from=earliest|latest|<ms>` for a first cursor)
-- reads exactly from that position and answers in Kong's shape, with the cursor after its records in the
-- `Confluent-Consume-Cursor` header. Nothing is kept on the gateway and nothing is committed: the client
-- owns its position, so the next GET may go to any worker of any node reading the same cluster.
--
-- The cursor is server-sent-events' event id, and the reading path is a stream's (stream.lua): the
-- route's live handle (consumers.live: from the live edge, shared, its reads change nothing) when it
-- holds the cursor, else a private replay handle catching up from it, closed when the answer is written.
local consumers = require "kong.plugins.confluent-consume.consumers"
local respond = require "kong.plugins.confluent-consume.respond"
local stream = require "kong.plugins.confluent-consume.stream"
local client = require "kong.plugins.confluent-consume.client"
local message_functions = require "kong.plugins.confluent-consume.message_functions"
local metrics = require "kong.plugins.confluent-consume.metrics"


local ngx = ngx
local now = ngx.now
local update_time = ngx.update_time
local tostring = tostring


local CURSOR_HEADER = "Confluent-Consume-Cursor"


local _M = {}


-- See http_get.lua's watch_abort: the handler only marks and wakes the request. A replay handle still
-- connecting is closed at once, which wakes a request waiting for it.
local function watch_abort(request)
  client.on_abort(function()
    request.aborted = true
    stream.end_catchup(request)
    if request.live then
      consumers.wake(request.live)
    end
  end, "a cursor read whose client left ends only when records arrive or its wait is over")
end


-- Reads `source` from `cursors` on. Returns the answer's body, the cursors after the records read, the
-- records the body holds, whether the cursors lie below what the (live) handle holds, the records read
-- (more than the body holds when message functions dropped some) and the handle's Kafka error (nil when
-- healthy); or nil, err.
local function read(source, cursors, limits, fx)
  local handle = source.handle
  if not fx then
    local body, next_cursors, count, behind, kafka_err = handle:take(cursors, limits.max_records, limits.max_bytes)
    return body, next_cursors, count, behind, count, kafka_err
  end
  local by_partition, next_cursors, count, behind, kafka_err = handle:records(cursors, limits.max_records,
    limits.max_bytes)
  if not by_partition then
    return nil, next_cursors
  end
  message_functions.apply(fx.chain, by_partition, fx.partitions)
  local body, kept = message_functions.render_kong(fx.partitions, by_partition)
  return body, next_cursors, kept, behind, count, kafka_err
end


-- Writes the answer; the replay handle, if any, is closed first: the client has its position.
local function answer(request, source, body, next_cursors, kept)
  local cursor = source.handle:cursor(next_cursors)
  stream.end_catchup(request)
  if request.aborted then
    return ngx.exit(499)
  end
  ngx.status = 200
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = #body
  ngx.header[CURSOR_HEADER] = cursor
  local ok = ngx.print(body)
  if ok then
    ok = ngx.flush(true)
  end
  if ok and kept > 0 then
    metrics.count(request.records_key, kept)
    metrics.count(request.bytes_key, #body)
  end
  return ngx.exit(ok and 200 or 499)
end


-- Answers a cursor read for `conf`, a configuration of the plugin `plugin_name`; `limits` are the GET's
-- (http_get.lua's read_limits: wait in seconds, cursor or from).
function _M.serve(conf, plugin_name, limits)
  local request = {}
  watch_abort(request)
  local start = limits.cursor and { cursor = limits.cursor } or { from = limits.from }
  local live, cursors, fx = stream.open(conf, plugin_name, "kong", start, request)
  if not live then
    return cursors
  end
  update_time()
  local wait_until = now() + limits.wait
  while true do
    local source = request.replay or live
    local generation = source.generation
    local body, next_cursors, kept, behind, count, kafka_err = read(source, cursors, limits, fx)
    if not body then
      stream.end_catchup(request)
      return respond.kafka_failure(conf, 503, "Kafka is unavailable: " .. tostring(next_cursors))
    end
    if behind then
      -- the live handle dropped the cursor's records since it was found there: catch up from it
      live, cursors, fx = stream.open(conf, plugin_name, "kong", { cursor = live.handle:cursor(cursors) }, request)
      if not live then
        return cursors
      end
    elseif count == 0 and kafka_err then
      -- nothing left to read and Kafka unavailable: waiting would bring no records
      stream.end_catchup(request)
      return respond.kafka_failure(conf, 503, "Kafka is unavailable: " .. kafka_err)
    else
      update_time()
      if kept > 0 or now() >= wait_until or live.closed or request.aborted then
        return answer(request, source, body, next_cursors, kept)
      end
      -- message functions may have dropped every record read: the read goes on after them
      cursors = next_cursors
      if source == request.replay and stream.within(live, cursors) then
        stream.end_catchup(request)
      elseif count == 0 then
        local waiting = metrics.key("long_polls_waiting", metrics.route_label())
        metrics.move(waiting, 1)
        consumers.wait(source, generation, wait_until - now())
        metrics.move(waiting, -1)
      end
    end
  end
end


return _M
