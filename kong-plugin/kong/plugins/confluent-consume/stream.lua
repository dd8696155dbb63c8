-- What the two streaming modes (`server-sent-events`, `websocket`) share: where a stream starts, its
-- catch-up consumer, and the loop that reads records and hands them to the mode's sink.
--
-- Every stream of a worker reads the same shared handle (broadcast from the live edge). A stream that
-- starts behind it (`from=earliest`, a timestamp, an old cursor, a websocket group's committed offsets)
-- first reads a private replay handle and joins the shared one once its cursor is within what the shared
-- handle holds: no gap and no duplicate at the seam. Streams at the same position share one read and one
-- rendering per format.
local consumers = require "kong.plugins.confluent-consume.consumers"
local client = require "kong.plugins.confluent-consume.client"
local respond = require "kong.plugins.confluent-consume.respond"
local message_functions = require "kong.plugins.confluent-consume.message_functions"
local metrics = require "kong.plugins.confluent-consume.metrics"
local semaphore = require "ngx.semaphore"


local kong = kong
local ngx = ngx
local now = ngx.now
local update_time = ngx.update_time
local concat = table.concat
local unpack = unpack
local pcall = pcall
local error = error
local tostring = tostring
local ipairs = ipairs
local max = math.max
local min = math.min


local _M = {}


-- How each format reads the native handle, and renders what message functions made of records.
local FORMATS = {
  sse = { method = "read", render = message_functions.render_sse },
  websocket = { method = "frame", render = message_functions.render_websocket },
}


-- What each format calls the cursor a request starts from, for its 400.
local CURSOR_ARGUMENT = { sse = "Last-Event-ID", websocket = "last_event_id", kong = "cursor" }


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


_M.within = within


-- The reads of `owner` (the shared handle, or a chain's state for it) in `generation` and `format`, by
-- position.
local function reads_of(owner, format, generation, max_records, max_bytes)
  local caches = owner.read_caches
  if not caches then
    caches = {}
    owner.read_caches = caches
  end
  local cache = caches[format]
  if not cache or cache.generation ~= generation or cache.max_records ~= max_records
     or cache.max_bytes ~= max_bytes then
    cache = { generation = generation, max_records = max_records, max_bytes = max_bytes, reads = {} }
    caches[format] = cache
  end
  return cache.reads
end


-- With message functions (`fx`): the records come one by one, go through the chain, and are rendered
-- here. `done` (shared handle only) keeps what the chain made of each record. Returns what a native read
-- does (`count` the records read, which move the cursors), and `served`: those the functions kept.
local function read_through(source, cursors, max_records, max_bytes, fx, done)
  local by_partition, next_cursors, count, behind, kafka_err = source.handle:records(cursors, max_records,
                                                                                      max_bytes)
  if not by_partition then
    return nil, next_cursors
  end
  message_functions.apply(fx.chain, by_partition, fx.partitions, done)
  local body, served, sent = FORMATS[fx.format].render(fx.layout, cursors, fx.partitions, by_partition)
  return body, next_cursors, count, behind, kafka_err, sent, served
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
  local hit = reads_of(state, fx.format, live.generation, max_records, max_bytes)[key]
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


-- Reads the shared handle; streams at the same position in the same generation share one rendering,
-- and what `prepare` (the sink's, if any) makes of it.
local function read_live(live, format, cursors, max_records, max_bytes, fx, prepare)
  local key = concat(cursors, ".")
  local reads = reads_of(fx and fx.state or live, format, live.generation, max_records, max_bytes)
  local hit = reads[key]
  if not hit then
    if fx then
      hit = read_live_through(live, cursors, max_records, max_bytes, fx)
    else
      local handle = live.handle
      hit = { handle[FORMATS[format].method](handle, cursors, max_records, max_bytes) }
    end
    if hit[1] then
      reads[key] = hit
    end
  end
  -- a read of message functions may have been cached, and prepared, while this one waited for it
  if prepare and hit[1] and not hit.prepared then
    hit.prepared = prepare(hit[1])
  end
  local body, next_cursors, count, behind, kafka_err, sent, served = unpack(hit, 1, 7)
  return body, next_cursors, count, behind, kafka_err, sent, served, hit.prepared
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
function _M.end_catchup(request)
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


-- Watches for the client of a stream or cursor read `request` going away: the handler marks and wakes
-- the request, which ends itself and releases its replay handle, whether it reads or is still starting
-- (closing a replay handle still connecting wakes a request waiting for it). Not ngx.exit() here: see
-- http_get.lua's watch_abort (a wait of Kong's access coroutine left pending crashes the worker).
-- `unnoticed` says what happens when nginx cannot tell (client.on_abort).
function _M.watch_abort(request, unnoticed)
  client.on_abort(function()
    request.aborted = true
    _M.end_catchup(request)
    if request.live then
      consumers.wake(request.live)
    end
  end, unnoticed)
end
-- The shared handle of `conf` (of the plugin `plugin_name`) for a stream of `format`, once ready (waiting
-- until `deadline`), and the message functions (nil without). `request` gets `live` and the keys of its
-- metrics. With `trust_ready` (cursor reads) a handle found ready once is not asked again: its
-- partitions (kept on it, as its layout) never change, and the caller learns of a Kafka failure from
-- its reads' kafka_error. On failure the request is answered (an error status) and nil is returned.
function _M.open_live(conf, plugin_name, format, request, deadline, trust_ready)
  local route = metrics.route_label()
  request.records_key = metrics.key("records_served", route, conf.mode)
  request.bytes_key = metrics.key("bytes_served", route, conf.mode)
  request.catchup_key = metrics.key("catchup_streams", route, conf.mode)
  request.open_key = metrics.key("streams_open", route, conf.mode)
  -- an http-get route's own consumer reads its group; its cursor reads go through a live handle
  local live, err, busy
  if conf.mode == "http-get" then
    live, err = consumers.live(conf, plugin_name)
  else
    live, err, busy = consumers.get(conf, plugin_name)
  end
  if busy then
    return nil, respond.consumers_busy(err)
  elseif not live then
    return nil, respond.consumer_failed(conf, err)
  end
  request.live = live
  local live_partitions = trust_ready and live.partitions
  if not live_partitions then
    local status, message
    live_partitions, status, message = consumers.await_ready(live, deadline)
    if status then
      return nil, respond.kafka_failure(conf, status, message)
    end
    live.partitions = live_partitions
  end
  local chain
  chain, err = message_functions.chain(conf)
  if err then
    return nil, respond.error(500, err)
  elseif chain then
    live.layout = live.layout or live.handle:layout()
    return live, { chain = chain, partitions = live_partitions, layout = live.layout, format = format,
                   state = message_functions.shared_state(chain, live), timeout = conf.timeout / 1000 }
  end
  return live, nil
end


-- Starts the request's catch-up consumer on `live`'s configuration from `replay_start` (consumers.replay's
-- `start`), in a catch-up slot, waiting for both until `deadline`. Returns the consumer's partitions; on
-- failure the request is answered (an error status) and nil is returned.
function _M.catch_up(conf, live, request, replay_start, deadline)
  if not take_catchup_slot(conf, live, request, deadline) then
    kong.response.set_header("Retry-After", 1)
    return nil, respond.error(503, "too many streams of this route are catching up on this worker " ..
                                   "(max_catchup_streams); retry")
  end
  local replay, err = consumers.replay(live, replay_start)
  if not replay then
    _M.end_catchup(request)
    return nil, respond.consumer_failed(conf, err)
  end
  request.replay = replay
  metrics.move(request.catchup_key, 1)
  local partitions, status, message = consumers.await_ready(replay, deadline)
  if not partitions then
    _M.end_catchup(request)
    return nil, respond.kafka_failure(conf, status, message)
  end
  return partitions
end


-- Prepares a stream of `format` for `conf` (of the plugin `plugin_name`) from `start` (the native
-- parse_query's `{cursor =}` or `{from =}`), before anything is sent: the shared handle, the cursors to
-- start from, the message functions (nil without) and the partitions. `request` gets `live`, the keys
-- of its metrics and, for a stream that catches up, `replay` and `slot`. On failure the request is
-- answered (an error status) and nil is returned.
function _M.open(conf, plugin_name, format, start, request)
  update_time()
  local deadline = now() + conf.timeout / 1000
  local live, fx = _M.open_live(conf, plugin_name, format, request, deadline)
  if not live then
    return nil, fx
  end
  local cursors, replay_start, err
  if start.cursor then
    cursors, err = live.handle:parse_cursor(start.cursor)
    if not cursors then
      return nil, respond.error(400, "invalid " .. CURSOR_ARGUMENT[format] .. ": " .. err)
    end
    if not within(live, cursors) then
      replay_start = { kind = "offsets", offsets = cursors }
    end
  elseif start.from == "latest" then
    cursors = {}
    for i, b in ipairs(live.handle:bounds()) do
      cursors[i] = b[2]
    end
  elseif start.from == "earliest" or start.from == "committed" then
    replay_start = { kind = start.from }
  else
    replay_start = { kind = "timestamp", ms = start.from }
  end

  if replay_start then
    local partitions, response = _M.catch_up(conf, live, request, replay_start, deadline)
    if not partitions then
      return nil, response
    end
    if not cursors then
      cursors = {}
      for i, p in ipairs(partitions) do
        cursors[i] = p.start
      end
    end
  end
  return live, cursors, fx, live.partitions
end


-- A coalescing sink's reads of the shared handle, and so its writes, hold at most this many bytes of
-- records (a larger record goes alone). lua-nginx-module copies each write into a buffer of the
-- request and keeps it for the next writes; ngx.flush() reuses that buffer as its marker and clears its
-- in-memory flag, so when a later write is larger the buffer is replaced without being freed: a stream
-- holds every larger write it made until it ends. With the route's max_bytes (1 MiB) a stream that fell
-- behind held several times its lag (10,000 streams, records 10 ms apart: +408 to +927 MB; with 4 KiB
-- +207 and +264 MB, with 8 KiB +233 to +337 MB: docs/performance.md, "Streams at scale"). Catch-up
-- streams (their own handle, at most max_catchup_streams) keep the route's limits: there a larger write
-- is throughput.
local LIVE_WRITE_MAX_BYTES = 4096


-- One read of `source` at `cursors` (see read_live for the values); `live_max_bytes` bounds a read of
-- the shared handle.
local function read_once(conf, format, live, source, cursors, fx, sink, live_max_bytes)
  if source == live then
    return read_live(live, format, cursors, conf.max_records, live_max_bytes, fx, sink.prepare)
  end
  if fx then
    return read_through(source, cursors, conf.max_records, conf.max_bytes, fx)
  end
  local handle = source.handle
  return handle[FORMATS[format].method](handle, cursors, conf.max_records, conf.max_bytes)
end


-- The loop of `run`. A sink that can write several reads at once (`sink.coalesce`) gets every read that
-- is ready now in one write (one write syscall however many records), up to one read's limits (of the
-- shared handle: LIVE_WRITE_MAX_BYTES): records
-- that arrived while the stream waited its turn leave together, and a record that arrives alone is
-- written as soon as the read after it finds nothing more, which the loop makes anyway before it waits.
-- With thousands of streams per worker the kernel's work per write is most of the worker's CPU
-- (docs/performance.md), and a worker that falls behind hands its streams more records per turn.
local function pump(conf, format, request, cursors, fx, sink)
  local live = request.live
  local replay = request.replay
  local heartbeat = conf.heartbeat_interval / 1000
  local last_error
  local source = replay or live
  local live_max_bytes = sink.coalesce and min(conf.max_bytes, LIVE_WRITE_MAX_BYTES) or conf.max_bytes
  -- reads not yet written (coalescing sinks): bodies, their records, the records message functions kept
  -- of them, their bytes, and the last read's cursors and `sent`
  local pending, pending_count, pending_served, pending_bytes = {}, 0, 0, 0
  local pending_cursors, pending_sent

  local function write_pending()
    if pending_count == 0 then
      return true
    end
    local out = #pending == 1 and pending[1] or pending
    if not sink.records(out, pending_cursors, pending_count, pending_sent) then
      return false
    end
    metrics.count(request.records_key, pending_served)
    metrics.count(request.bytes_key, pending_bytes)
    pending, pending_count, pending_served, pending_bytes = {}, 0, 0, 0
    return true
  end

  while true do
    if request.aborted or ngx.worker.exiting() or live.closed then
      -- the client reconnects with its cursor, to this or another worker
      return
    end
    if not sink.ready() then
      return
    end
    local generation = source.generation
    -- one native call per pass (none when another stream at this position read it): the read also
    -- tells the handle's Kafka error; `served`: the records message functions kept of the `count` read
    -- (all of them without functions)
    local body, next_cursors, count, behind, kafka_err, sent, served, prepared = read_once(conf, format, live,
                                                                                           source, cursors, fx,
                                                                                           sink, live_max_bytes)
    if body and not prepared and sink.prepare then
      prepared = sink.prepare(body)
    end
    if not body or behind or count == 0 then
      -- what was read before goes first, whatever this read found
      if not write_pending() then
        return
      end
    end
    if not body then
      sink.error(respond.kafka_message(conf, 503, "stream interrupted: " .. tostring(next_cursors)) ..
                 "; reconnect to resume", true)
      return
    end
    if behind then
      sink.error("this stream fell too far behind the live records; reconnect with its cursor to resume", true)
      return
    end
    if count > 0 then
      pending[#pending + 1] = prepared or body
      pending_count, pending_bytes = pending_count + count, pending_bytes + #body
      pending_served = pending_served + (served or count)
      pending_cursors, pending_sent = next_cursors, sent
      cursors = next_cursors
      local max_bytes = source == live and live_max_bytes or conf.max_bytes
      if not sink.coalesce or pending_count >= conf.max_records or pending_bytes >= max_bytes then
        if not write_pending() then
          return
        end
      end
    end
    if source == replay and within(live, cursors) then
      _M.end_catchup(request)
      replay, source = nil, live
    elseif count == 0 then
      if kafka_err ~= last_error then
        last_error = kafka_err
        if kafka_err and not sink.error(respond.kafka_message(conf, 503, kafka_err),
                                        false) then
          return
        end
      end
      if not sink.wait(source, generation, heartbeat) then
        if not sink.heartbeat() then
          return
        end
      end
    end
  end
end


-- Streams until the client goes away, falls behind, the sink ends it, or the worker exits. The `sink`
-- of the mode:
--   ready()                 -> false to end the stream (websocket: the client closed, or its window holds)
--   prepare(body)           -> (optional) what records() gets instead of the rendered body, made once
--                              per read of the shared handle however many streams send it
--   records(body, next_cursors, count, sent) -> false when the client cannot be written to
--   coalesce                -> (optional) true when records() takes an array of bodies, written as one;
--                              `count` is then theirs together, `sent` the last read's alone (such a
--                              sink must not need it: websocket's window does, and does not coalesce)
--   error(message, final)   -> false when the client cannot be written to; `final` ends the stream
--   wait(source, generation, seconds) -> true when woken before `seconds` passed
--   heartbeat()             -> false when the client cannot be written to
function _M.run(conf, format, request, cursors, fx, sink)
  local live = request.live
  metrics.move(request.open_key, 1)
  live.streams = live.streams + 1
  -- a stream ends by returning, also on a Lua error in it, which would otherwise leave it counted
  local ok, err = pcall(pump, conf, format, request, cursors, fx, sink)
  live.streams = live.streams - 1
  metrics.move(request.open_key, -1)
  if not ok then
    _M.end_catchup(request)
    error(err, 0)
  end
end


return _M
