-- `server-sent-events` mode: a GET opens a stream that pushes every record of the configured topics as it
-- arrives, one event per record:
--
--   id: <cursor>            the next offset of every partition, "<layout>-<o1>.<o2>..." (see README)
--   event: message
--   data: {"topic":…,"partition":…,"offset":…,"timestamp":…,"key":…,"value":…,"headers":{…}}
--
-- Every stream of a worker reads the same shared handle (broadcast from the live edge). A stream that
-- starts behind it (`from=earliest`, a timestamp, an old Last-Event-ID) first reads a private replay
-- handle and joins the shared one once its cursor is within what the shared handle holds: no gap and no
-- duplicate at the seam. Commits are never needed: the event id is the position.
local consumers = require "kong.plugins.confluent-consume.consumers"
local respond = require "kong.plugins.confluent-consume.respond"
local client = require "kong.plugins.confluent-consume.client"
local message_functions = require "kong.plugins.confluent-consume.message_functions"
local metrics = require "kong.plugins.confluent-consume.metrics"
local native = require "confluent_consume_native"
local cjson = require "cjson.safe"
local semaphore = require "ngx.semaphore"


local kong = kong
local ngx = ngx
local now = ngx.now
local update_time = ngx.update_time
local print = ngx.print
local flush = ngx.flush
local concat = table.concat
local unpack = unpack
local pcall = pcall
local error = error
local ipairs = ipairs
local max = math.max


local _M = {}


-- The requested start: { cursor = id } to resume (the Last-Event-ID header, else ?last_event_id), or
-- { from = "earliest" | "latest" | <ms> } (?from, else auto_offset_reset); see the native parse_query.
local function read_start(conf)
  return native.parse_query(kong.request.get_raw_query(), conf, kong.request.get_header("Last-Event-ID"))
end


local function send(chunk)
  local ok, err = print(chunk)
  if ok then
    ok, err = flush(true)
  end
  return ok, err
end


local function error_event(message)
  return "event: error\ndata: " .. cjson.encode({ message = message }) .. "\n\n"
end


-- True when the shared handle holds every record from `cursors` on.
local function within(live, cursors)
  local bounds = live.handle:bounds()
  if not bounds then
    return false
  end
  for i, b in ipairs(bounds) do
    if cursors[i] < b[1] then
      return false
    end
  end
  return true
end


-- The reads of `owner` (the shared handle, or a chain's state for it) in `generation`, by position.
local function reads_of(owner, generation, max_records, max_bytes)
  local cache = owner.read_cache
  if not cache or cache.generation ~= generation or cache.max_records ~= max_records
     or cache.max_bytes ~= max_bytes then
    cache = { generation = generation, max_records = max_records, max_bytes = max_bytes, reads = {} }
    owner.read_cache = cache
  end
  return cache.reads
end


-- With message functions (`fx`): the records come one by one, go through the chain, and are rendered
-- here. `done` (shared handle only) keeps what the chain made of each record.
local function read_through(source, cursors, max_records, max_bytes, fx, done)
  local by_partition, next_cursors, count, behind = source.handle:records(cursors, max_records, max_bytes)
  if not by_partition then
    return nil, next_cursors
  end
  message_functions.apply(fx.chain, by_partition, fx.partitions, done)
  return message_functions.render_sse(fx.layout, cursors, fx.partitions, by_partition), next_cursors, count,
         behind
end


-- The shared handle's records go through the chain once per worker, however many streams read them:
-- one read at a time runs it (it may yield), and what it made of each record stays until the handle's
-- buffer drops the record.
local function read_live_through(live, cursors, max_records, max_bytes, fx)
  local state = fx.state
  local lock = state.lock
  if not lock then
    lock = semaphore.new(1)
    state.lock = lock
  end
  if not lock:wait(fx.timeout) then
    return { nil, "timed out waiting for another stream's message functions" }
  end
  local key = concat(cursors, ".")
  local hit = reads_of(state, live.generation, max_records, max_bytes)[key]
  if hit then
    lock:post(1)
    return hit
  end
  state.done = state.done or message_functions.new_done(#fx.partitions)
  local ok, result = pcall(function()
    local read = { read_through(live, cursors, max_records, max_bytes, fx, state.done) }
    local bounds = live.handle:bounds()
    if bounds then
      message_functions.forget_below(state.done, bounds)
    end
    return read
  end)
  lock:post(1)
  if not ok then
    error(result, 0)
  end
  return result
end


-- Reads the shared handle; streams at the same position in the same generation share one rendering.
local function read_live(live, cursors, max_records, max_bytes, fx)
  local key = concat(cursors, ".")
  local reads = reads_of(fx and fx.state or live, live.generation, max_records, max_bytes)
  local hit = reads[key]
  if not hit then
    if fx then
      hit = read_live_through(live, cursors, max_records, max_bytes, fx)
    else
      hit = { live.handle:read(cursors, max_records, max_bytes) }
    end
    if hit[1] then
      reads[key] = hit
    end
  end
  return unpack(hit, 1, 4)
end


-- A stream behind the live records reads a consumer of its own, which may hold buffer_max_bytes per
-- partition: `max_catchup_streams` bounds how many one worker runs per configuration. A stream waits for
-- a free slot until `deadline`.
local function take_catchup_slot(conf, live, request, deadline)
  local slots = live.catchup_slots
  if not slots then
    slots = semaphore.new(conf.max_catchup_streams)
    live.catchup_slots = slots
  end
  update_time()
  if not slots:wait(max(0, deadline - now())) then
    return nil
  end
  request.slot = slots
  return true
end


-- Closes the stream's catch-up consumer, if any, and frees its slot; safe to call again.
local function end_catchup(request)
  if request.replay then
    consumers.close(request.replay)
    request.replay = nil
    metrics.move(request.catchup_key, -1)
  end
  if request.slot then
    request.slot:post(1)
    request.slot = nil
  end
end


-- Streams until the client goes away, falls behind, or the worker exits.
local function stream(conf, live, request, cursors, fx)
  local replay = request.replay
  local heartbeat = conf.heartbeat_interval / 1000
  local last_error
  local source = replay or live
  while true do
    if request.aborted or ngx.worker.exiting() or live.closed then
      -- the client reconnects with its Last-Event-ID, to this or another worker
      return
    end
    local generation = source.generation
    local body, next_cursors, count, behind
    if source == live then
      body, next_cursors, count, behind = read_live(live, cursors, conf.max_records, conf.max_bytes, fx)
    elseif fx then
      body, next_cursors, count = read_through(source, cursors, conf.max_records, conf.max_bytes, fx)
    else
      body, next_cursors, count = source.handle:read(cursors, conf.max_records, conf.max_bytes)
    end
    if not body then
      send(error_event(respond.kafka_message(conf, 503, "stream interrupted: " .. tostring(next_cursors)) ..
                       "; reconnect to resume"))
      return
    end
    if behind then
      send(error_event("this stream fell too far behind the live records; reconnect with " ..
                       "Last-Event-ID to resume"))
      return
    end
    if count > 0 then
      if not send(body) then
        return
      end
      metrics.count(request.records_key, count)
      metrics.count(request.bytes_key, #body)
      cursors = next_cursors
    end
    if source == replay and within(live, cursors) then
      end_catchup(request)
      replay, source = nil, live
    elseif count == 0 then
      local kafka_err = consumers.kafka_error(source)
      if kafka_err ~= last_error then
        last_error = kafka_err
        if kafka_err and not send(error_event(respond.kafka_message(conf, 503, "Kafka is unavailable: " ..
                                                                           kafka_err))) then
          return
        end
      end
      if not consumers.wait(source, generation, heartbeat) then
        if not send(": heartbeat\n\n") then
          return
        end
      end
    end
  end
end


-- The client went away: wake the request, which ends its stream and releases its replay handle, whether
-- the stream runs or is still starting (its replay handle still connecting). Not ngx.exit() here: see
-- http_get.lua's watch_abort (a wait of Kong's access coroutine left pending crashes the worker).
local function watch_abort(request)
  client.on_abort(function()
    request.aborted = true
    -- closing the replay handle also wakes a request still waiting for it to connect
    end_catchup(request)
    if request.live then
      consumers.wake(request.live)
    end
  end, "a stream whose client left ends only at its next write")
end


-- Answers a stream request for `conf`, a configuration of the plugin `plugin_name`.
function _M.serve(conf, plugin_name)
  local start, err = read_start(conf)
  if not start then
    return respond.error(400, err)
  end
  local route = metrics.route_label()
  local request = {
    records_key = metrics.key("records_served", route, conf.mode),
    bytes_key = metrics.key("bytes_served", route, conf.mode),
    catchup_key = metrics.key("catchup_streams", route, conf.mode),
  }
  watch_abort(request)
  local live
  live, err = consumers.get(conf, plugin_name)
  if not live then
    return respond.consumer_failed(conf, err)
  end
  request.live = live
  update_time()
  local deadline = now() + conf.timeout / 1000
  local live_partitions, status, message = consumers.await_ready(live, deadline)
  if status then
    return respond.kafka_failure(conf, status, message)
  end
  local fx
  local chain
  chain, err = message_functions.chain(conf)
  if err then
    return respond.error(500, err)
  elseif chain then
    fx = { chain = chain, partitions = live_partitions, layout = live.handle:layout(),
           state = message_functions.shared_state(chain, live), timeout = conf.timeout / 1000 }
  end

  local cursors, replay_start
  if start.cursor then
    cursors, err = live.handle:parse_cursor(start.cursor)
    if not cursors then
      return respond.error(400, "invalid Last-Event-ID: " .. err)
    end
    if not within(live, cursors) then
      replay_start = { kind = "offsets", offsets = cursors }
    end
  elseif start.from == "latest" then
    cursors = {}
    for i, b in ipairs(live.handle:bounds()) do
      cursors[i] = b[2]
    end
  elseif start.from == "earliest" then
    replay_start = { kind = "earliest" }
  else
    replay_start = { kind = "timestamp", ms = start.from }
  end

  if replay_start then
    if not take_catchup_slot(conf, live, request, deadline) then
      kong.response.set_header("Retry-After", 1)
      return respond.error(503, "too many streams of this route are catching up on this worker " ..
                                "(max_catchup_streams); retry")
    end
    local replay
    replay, err = consumers.replay(conf, plugin_name, replay_start)
    if not replay then
      end_catchup(request)
      return respond.consumer_failed(conf, err)
    end
    request.replay = replay
    metrics.move(request.catchup_key, 1)
    local partitions
    partitions, status, message = consumers.await_ready(replay, deadline)
    if not partitions then
      end_catchup(request)
      return respond.kafka_failure(conf, status, message)
    end
    if not cursors then
      cursors = {}
      for i, p in ipairs(partitions) do
        cursors[i] = p.start
      end
    end
  end

  ngx.status = 200
  ngx.header["Content-Type"] = "text/event-stream"
  ngx.header["Cache-Control"] = "no-cache"
  ngx.header["X-Accel-Buffering"] = "no"
  if send("retry: " .. conf.retry_interval .. "\n\n") then
    local open = metrics.key("streams_open", route, conf.mode)
    metrics.move(open, 1)
    -- a stream ends by returning, also on a Lua error in it, which would otherwise leave it counted
    local ok, stream_err = pcall(stream, conf, live, request, cursors, fx)
    metrics.move(open, -1)
    if not ok then
      end_catchup(request)
      error(stream_err, 0)
    end
  end
  end_catchup(request)
  return ngx.exit(request.aborted and 499 or 200)
end


return _M
