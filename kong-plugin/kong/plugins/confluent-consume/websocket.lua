-- `websocket` mode: a GET with a WebSocket upgrade opens a two-way stream. The server sends JSON text
-- frames, one per read (a batch of records, each with its cursor); the client may acknowledge records
-- (`?acks=true`): then at most `max_unacked_records` are outstanding, and the group commits only up to
-- what was acknowledged, so a new connection resumes from the last acknowledgement. The protocol, with
-- every frame, is in the README ("WebSocket protocol").
--
-- stream.lua reads the records (the shared handle, catch-up replay handles), as for server-sent-events.
-- Here a light thread reads the client's frames (acks, pause/resume, pings, close) and wakes the
-- writer, which alone writes to the socket: lua-resty-websocket's frames must not interleave.
local consumers = require "kong.plugins.confluent-consume.consumers"
local respond = require "kong.plugins.confluent-consume.respond"
local stream = require "kong.plugins.confluent-consume.stream"
local native = require "confluent_consume_native"
local cjson = require "cjson.safe"
local semaphore = require "ngx.semaphore"


local kong = kong
local ngx = ngx
local now = ngx.now
local update_time = ngx.update_time
local spawn = ngx.thread.spawn
local kill = ngx.thread.kill
local find = string.find
local lower = string.lower
local sub = string.sub
local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local require = require
local min = math.min
local huge = math.huge


-- Kong bundles lua-resty-websocket as `resty.websocket.*`; Debian's lua-nginx-websocket installs the
-- same files as `nginx.websocket.*`.
local function require_websocket(name)
  local ok, module = pcall(require, "resty.websocket." .. name)
  if ok then
    return module
  end
  return require("nginx.websocket." .. name)
end
local server = require_websocket("server")
-- The reader receives through the protocol module: the server object has one payload limit for both
-- directions, and a client frame is bounded far below what a read of records may send.
local protocol = require_websocket("protocol")


local MAX_CLIENT_FRAME = native.max_client_frame_bytes
local MAX_REASON = 123  -- bytes of a close frame's reason (RFC 6455 5.5: 125 minus the code)
local TEXT = 0x1  -- the text frame's opcode (RFC 6455 5.2)

-- Close codes (RFC 6455 7.4.1, and 4000-4999 for this application; README "WebSocket protocol").
local NORMAL = 1000
local GOING_AWAY = 1001       -- the worker exits or the configuration changed: reconnect to resume
local PROTOCOL_ERROR = 1002   -- a frame lua-resty-websocket refuses (unmasked, bad bits)
local UNSUPPORTED = 1003      -- binary or fragmented messages
local POLICY = 1008           -- a client frame that is not a valid ack or control
local TOO_BIG = 1009          -- a client frame above MAX_CLIENT_FRAME
local TRY_AGAIN = 1013        -- the stream broke (Kafka, fell behind): reconnect to resume
local ACK_TIMEOUT = 4008      -- the window stayed full for ack_timeout
local UNRESPONSIVE = 4009     -- no pong (nor anything else) for a whole heartbeat interval


local _M = {}


-- Whether the request asks for a WebSocket upgrade; anything else gets 426.
local function upgrade_requested()
  local upgrade = kong.request.get_header("Upgrade")
  return upgrade ~= nil and lower(upgrade) == "websocket"
end


-- The acknowledgement window of one connection. Per partition index a queue of the offsets sent and not
-- yet acknowledged, in order (`queues[i][first..last]`; an offset is still owed while `pending[i][offset]`),
-- `count` of them owed in all, and the cursor after what was sent (`sent_to`) and committed. `progress`
-- is when the client last acknowledged something, or the window last filled up: ack_timeout counts from
-- the later.
local function new_window(cursors)
  local window = { queues = {}, pending = {}, count = 0, sent_to = {}, committed = {} }
  for i, c in ipairs(cursors) do
    window.queues[i], window.pending[i] = { first = 1, last = 0 }, {}
    window.sent_to[i], window.committed[i] = c, c
  end
  update_time()
  window.progress = now()
  return window
end


-- Records that a frame carrying `sent` (per partition index, its offsets as runs `{first, last, ...}` of
-- consecutive offsets) went out, up to `next_cursors`; `limit` is the window's size.
local function window_sent(window, sent, next_cursors, limit)
  local before = window.count
  for i, runs in pairs(sent) do
    local queue, pending = window.queues[i], window.pending[i]
    local last = queue.last
    for r = 1, #runs, 2 do
      for offset = runs[r], runs[r + 1] do
        last = last + 1
        queue[last] = offset
        pending[offset] = true
      end
    end
    window.count = window.count + last - queue.last
    queue.last = last
  end
  for i, c in ipairs(next_cursors) do
    window.sent_to[i] = c
  end
  if before < limit and window.count >= limit then
    update_time()
    window.progress = now()
  end
end


-- Acknowledges the offsets of partition `i` below `upto`, then drops the acknowledged ones at the front.
local function settle(window, i, upto)
  local queue, pending = window.queues[i], window.pending[i]
  local first = queue.first
  while first <= queue.last and (queue[first] < upto or not pending[queue[first]]) do
    local offset = queue[first]
    if pending[offset] then
      pending[offset] = nil
      window.count = window.count - 1
    end
    queue[first] = nil
    first = first + 1
  end
  if first > queue.last then
    queue.first, queue.last = 1, 0
  else
    queue.first = first
  end
end


-- Commits, for each partition, up to its oldest unacknowledged record (everything sent when none is);
-- only what moved, unless `all`. Always through the shared handle, even while the stream reads a
-- catch-up handle: one consumer sends a group's commits in order, two could land out of order.
local function commit(conn, all)
  local window = conn.window
  local offsets, any = {}, false
  for i, queue in ipairs(window.queues) do
    local frontier = queue[queue.first] or window.sent_to[i]
    if all or frontier ~= window.committed[i] then
      offsets[i], window.committed[i], any = frontier, frontier, true
    else
      offsets[i] = false
    end
  end
  if any then
    conn.request.live.handle:commit(offsets)
  end
end


-- The client breaks the protocol, or the stream must end: the writer sends `reason` as an error frame
-- (unless the close is normal or a reload's) and closes with `code`.
local function close_with(conn, code, reason)
  if not conn.closing then
    conn.closing = { code = code, reason = reason }
  end
  conn.wakeup:post(1)
end


-- Applies an acknowledgement (a parsed client frame), or closes the connection when it is bogus.
local function acknowledge(conn, frame)
  local window = conn.window
  if not window then
    return close_with(conn, POLICY, "ack: this connection has no acknowledgements; connect with ?acks=true")
  end
  if frame.cursor then
    local upto, err = conn.request.live.handle:parse_cursor(frame.cursor)
    if not upto then
      return close_with(conn, POLICY, "ack: " .. err)
    end
    for i, c in ipairs(upto) do
      if c > window.sent_to[i] then
        return close_with(conn, POLICY, "ack: the cursor is beyond the records sent")
      end
    end
    for i, c in ipairs(upto) do
      settle(window, i, c)
    end
  else
    local i = conn.index[frame.topic .. "\0" .. frame.partition]
    if not i then
      return close_with(conn, POLICY, "ack: this stream has no partition " .. frame.partition .. " of that topic")
    end
    local pending = window.pending[i]
    if pending[frame.offset] then
      pending[frame.offset] = nil
      window.count = window.count - 1
      settle(window, i, 0)
    elseif frame.offset >= window.sent_to[i] then
      return close_with(conn, POLICY, "ack: offset " .. frame.offset .. " of partition " .. frame.partition ..
                                      " was not sent")
    end
    -- else a record acknowledged before: nothing to do
  end
  update_time()
  window.progress = now()
  commit(conn)
  conn.wakeup:post(1)
end


-- One text frame of the client.
local function on_text(conn, text)
  local frame, err = native.parse_client_frame(text)
  if not frame then
    return close_with(conn, POLICY, err)
  end
  if frame.type == "ack" then
    return acknowledge(conn, frame)
  end
  conn.paused = frame.type == "pause"
  conn.wakeup:post(1)
end


-- The reader thread: the client's frames until it closes, breaks the protocol or the stream ends.
local function read_frames(conn)
  local sock = conn.wb.sock
  local request = conn.request
  while not request.aborted and not conn.closing do
    local data, kind, err = protocol.recv_frame(sock, MAX_CLIENT_FRAME, true)
    -- a time-out only says the client sent nothing for `timeout`: the writer's pings tell a dead one apart
    local idle = not data and err and find(err, ": timeout", 1, true)
    if err == "again" then
      return close_with(conn, UNSUPPORTED, "fragmented messages are not accepted")
    elseif not data and not idle then
      if err == "exceeding max payload len" then
        return close_with(conn, TOO_BIG, "a client frame may have at most " .. MAX_CLIENT_FRAME .. " bytes")
      elseif err and find(err, "^failed to receive") then
        -- the client went away
        request.aborted = true
        conn.wakeup:post(1)
        return
      end
      return close_with(conn, PROTOCOL_ERROR, err or "unreadable frame")
    elseif data then
      update_time()
      conn.heard = now()
      if kind == "text" then
        on_text(conn, data)
      elseif kind == "ping" then
        conn.pong = data
        conn.wakeup:post(1)
      elseif kind == "close" then
        return close_with(conn, NORMAL, "")
      elseif kind ~= "pong" then
        return close_with(conn, UNSUPPORTED, kind .. " frames are not accepted; send JSON text frames")
      end
    end
  end
end


-- Sends the pending pong and, when the stream must end, the error frame and the close. False when the
-- stream ends.
local function tend(conn)
  local wb = conn.wb
  if conn.pong then
    local payload = conn.pong
    conn.pong = nil
    if not wb:send_pong(payload) then
      return false
    end
  end
  local closing = conn.closing
  if closing then
    -- an error frame says what went wrong; a normal close or a reload is no error
    if closing.code ~= NORMAL and closing.code ~= GOING_AWAY then
      wb:send_text(cjson.encode({ type = "error", message = closing.reason, final = true }))
    end
    wb:send_close(closing.code, sub(closing.reason, 1, MAX_REASON))
    conn.closed = true
    return false
  end
  return not conn.request.aborted
end


-- Whether the writer must hold its records: paused, or the window full.
local function held(conn)
  return conn.paused or (conn.window and conn.window.count >= conn.conf.max_unacked_records)
end


local function ping(conn)
  update_time()
  if conn.pinged and conn.heard < conn.pinged then
    close_with(conn, UNRESPONSIVE, "no pong within heartbeat_interval")
    return tend(conn)
  end
  conn.pinged = now()
  return conn.wb:send_ping() ~= nil
end


-- The writer's side, for stream.run.
local function new_sink(conn)
  local conf = conn.conf
  local heartbeat = conf.heartbeat_interval / 1000
  local ack_timeout = conf.ack_timeout / 1000
  local sink = {}

  function sink.ready()
    local live = conn.request.live
    while true do
      if not tend(conn) then
        return false
      end
      if not held(conn) or ngx.worker.exiting() or live.closed then
        -- stream.run looks at the worker and the handle, and ends the stream
        return true
      end
      update_time()
      local wait = heartbeat
      local window = conn.window
      local full = window and window.count >= conf.max_unacked_records
      if full then
        local left = window.progress + ack_timeout - now()
        if left <= 0 then
          close_with(conn, ACK_TIMEOUT, "no acknowledgement within ack_timeout while the window was full")
          return tend(conn)
        end
        wait = min(wait, left)
      end
      -- woken by the reader (an ack, resume, a ping, a close), or by the handle (records, its close)
      if not consumers.wait(live, live.generation, wait, conn.wakeup) and not ping(conn) then
        return false
      end
    end
  end

  -- A read's text frame is its header and its payload, as lua-resty-websocket's build_frame would
  -- concatenate them: the header is built once per read (stream.lua caches it with the read), and the
  -- cosocket copies the two pieces into its buffer as it would one string. Concatenating them in Lua made
  -- a new string of the whole read (a copy, its interning, fresh pages): a third more worker CPU per
  -- record than SSE (docs/performance.md). build_frame given the payload's length and an empty payload
  -- returns the header alone.
  function sink.prepare(payload)
    return { protocol.build_frame(true, TEXT, #payload, "", false), payload }
  end

  function sink.records(frame, next_cursors, _, sent)
    if not conn.wb.sock:send(frame) then
      return false
    end
    if conn.window then
      window_sent(conn.window, sent, next_cursors, conf.max_unacked_records)
    end
    return true
  end

  function sink.error(message, final)
    if final then
      close_with(conn, TRY_AGAIN, message)
      return tend(conn)
    end
    return conn.wb:send_text(cjson.encode({ type = "error", message = message, final = false })) ~= nil
  end

  function sink.wait(source, generation, seconds)
    return consumers.wait(source, generation, seconds, conn.wakeup)
  end

  function sink.heartbeat()
    return ping(conn)
  end

  return sink
end


-- Answers a websocket request for `conf`, a configuration of the plugin `plugin_name`.
function _M.serve(conf, plugin_name)
  if not upgrade_requested() then
    kong.response.set_header("Upgrade", "websocket")
    return respond.error(426, "this route streams records over a WebSocket (mode websocket): send a " ..
                              "WebSocket upgrade request")
  end
  -- no Last-Event-ID header: a browser cannot set headers on a WebSocket; ?last_event_id carries it
  local start, err = native.parse_query(kong.request.get_raw_query(), conf)
  if not start then
    return respond.error(400, err)
  end
  local request = {}
  local live, cursors, fx, partitions = stream.open(conf, plugin_name, "websocket", start, request)
  if not live then
    return cursors
  end
  -- the server object's payload limit bounds only what is sent here (the reader has its own)
  local wb
  wb, err = server:new({ timeout = conf.timeout, max_payload_len = huge })
  if not wb then
    stream.end_catchup(request)
    return respond.error(400, "invalid WebSocket handshake: " .. err)
  end
  update_time()
  local conn = { conf = conf, request = request, wb = wb, wakeup = semaphore.new(0), heard = now(), index = {} }
  for i, p in ipairs(partitions) do
    conn.index[p.topic .. "\0" .. p.partition] = i
  end
  if start.acks then
    conn.window = new_window(cursors)
    if start.cursor then
      -- resuming after a cursor acknowledges everything before it (the client had it), which a commit
      -- lost with its worker (the handle closes as the worker exits) would otherwise never say
      commit(conn, true)
    end
  end
  local reader = spawn(read_frames, conn)
  stream.run(conf, "websocket", request, cursors, fx, new_sink(conn))
  if not conn.closed and not request.aborted then
    close_with(conn, GOING_AWAY, "the stream ended on this worker; reconnect to resume")
    tend(conn)
  end
  request.aborted = true
  kill(reader)
  stream.end_catchup(request)
  return ngx.exit(ngx.HTTP_OK)
end


return _M
