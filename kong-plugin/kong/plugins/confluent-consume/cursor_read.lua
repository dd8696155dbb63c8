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
local message_functions = require "kong.plugins.confluent-consume.message_functions"
local metrics = require "kong.plugins.confluent-consume.metrics"


local ngx = ngx
local now = ngx.now
local update_time = ngx.update_time
local tostring = tostring


local CURSOR_HEADER = "Confluent-Consume-Cursor"


local _M = {}


-- Reads `source` from `cursor` (a stream cursor: the native read parses it, checks it against what the
-- handle holds and formats the next one, so that a read within the live records is one native call).
-- Returns the answer's body, the cursor after the records read, the records the body holds, whether
-- the cursor lies below what the (live) handle holds, the records read (more than the body holds when
-- message functions dropped some) and the handle's Kafka error (nil when healthy); or nil, err,
-- refused (true when the handle refuses the cursor: the client's 400).
local function read(source, cursor, limits, fx)
  local handle = source.handle
  if not fx then
    local body, next_cursor, count, behind, kafka_err = handle:take(cursor, limits.max_records, limits.max_bytes)
    if not body then
      return nil, next_cursor, count
    end
    return body, next_cursor, count, behind, count, kafka_err
  end
  local by_partition, next_cursor, count, behind, kafka_err = handle:records(cursor, limits.max_records,
    limits.max_bytes)
  if not by_partition then
    return nil, next_cursor, count
  end
  message_functions.apply(fx.chain, by_partition, fx.partitions)
  local body, kept = message_functions.render_kong(fx.partitions, by_partition)
  return body, next_cursor, kept, behind, count, kafka_err
end


-- Writes the answer; the replay handle, if any, is closed first: the client has its position.
local function answer(request, body, cursor, kept)
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


-- The route's live handle, the message functions (nil without) and the stream cursor a read starts
-- from: the client's, else the one `from` names (on the live handle, or on a replay handle catching up
-- from it: stream.open); or nil, the answered error.
local function start(conf, plugin_name, limits, request, deadline)
  if limits.cursor then
    local live, fx = stream.open_live(conf, plugin_name, "kong", request, deadline, true)
    if not live then
      return nil, fx
    end
    return live, fx, limits.cursor
  end
  local live, cursors, fx = stream.open(conf, plugin_name, "kong", { from = limits.from }, request)
  if not live then
    return nil, cursors
  end
  return live, fx, (request.replay or live).handle:cursor(cursors)
end


-- Answers a cursor read for `conf`, a configuration of the plugin `plugin_name`; `limits` are the GET's
-- (http_get.lua's read_limits: wait in seconds, cursor or from).
--
-- Native calls: a read within the live records makes one (its read: `take`, or `records` with message
-- functions); the route's first, while its live handle gets ready, two more (state, partitions). A
-- cursor below the live records adds the catch-up: parse_cursor, the replay handle's creation, its
-- state and partitions, its reads. A `from` read adds its start (stream.open) and one `cursor`.
function _M.serve(conf, plugin_name, limits)
  local request = {}
  stream.watch_abort(request,
                     "a cursor read whose client left ends only when records arrive or its wait is over")
  update_time()
  local deadline = now() + conf.timeout / 1000
  local live, fx, cursor = start(conf, plugin_name, limits, request, deadline)
  if not live then
    return fx
  end
  local wait_until = now() + limits.wait
  while true do
    local source = request.replay or live
    local generation = source.generation
    local body, next_cursor, kept, behind, count, kafka_err = read(source, cursor, limits, fx)
    if not body then
      stream.end_catchup(request)
      local err, refused = next_cursor, kept
      if refused then
        return respond.error(400, "invalid cursor: " .. err)
      end
      return respond.kafka_failure(conf, 503, "Kafka is unavailable: " .. tostring(err))
    end
    if behind then
      -- the live handle does not hold (or no longer holds) the cursor's records: catch up from it
      local replay_start = { kind = "offsets", offsets = live.handle:parse_cursor(cursor) }
      local partitions, response = stream.catch_up(conf, live, request, replay_start, deadline)
      if not partitions then
        return response
      end
    elseif count == 0 and kafka_err then
      -- nothing left to read and Kafka unavailable: waiting would bring no records
      stream.end_catchup(request)
      return respond.kafka_failure(conf, 503, kafka_err)
    else
      update_time()
      if kept > 0 or now() >= wait_until or live.closed or request.aborted then
        return answer(request, body, next_cursor, kept)
      end
      -- message functions may have dropped every record read: the read goes on after them
      cursor = next_cursor
      if source == request.replay and stream.within(live, live.handle:parse_cursor(cursor)) then
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
