-- `server-sent-events` mode: a GET opens a stream that pushes every record of the configured topics as it
-- arrives, one event per record:
--
--   id: <cursor>            the next offset of every partition, "<layout>-<o1>.<o2>..." (see README)
--   event: message
--   data: {"topic":…,"partition":…,"offset":…,"timestamp":…,"key":…,"value":…,"headers":{…}}
--
-- stream.lua reads the records (the shared handle, catch-up replay handles); this module writes them as
-- events. Commits are never needed: the event id is the position.
local consumers = require "kong.plugins.confluent-consume.consumers"
local respond = require "kong.plugins.confluent-consume.respond"
local stream = require "kong.plugins.confluent-consume.stream"
local native = require "confluent_consume_native"
local cjson = require "cjson.safe"


local kong = kong
local ngx = ngx
local print = ngx.print
local flush = ngx.flush


local _M = {}


-- The requested start: { cursor = id } to resume (the Last-Event-ID header, else ?last_event_id), or
-- { from = "earliest" | "latest" | <ms> } (?from, else auto_offset_reset); see the native parse_query.
local function read_start(conf)
  return native.parse_query(kong.request.get_raw_query(), conf, kong.request.get_header("Last-Event-ID"))
end


-- `chunk`: a string, or an array of them (several reads at once), written as one buffer chain: one
-- write syscall at the flush.
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


local function always()
  return true
end


-- The events a stream writes; reads that are ready together go out in one write (stream.lua's pump).
local SINK = {
  ready = always,
  coalesce = true,
  records = send,
  error = function(message)
    return send(error_event(message))
  end,
  wait = consumers.wait,
  heartbeat = function()
    return send(": heartbeat\n\n")
  end,
}


-- Answers a stream request for `conf`, a configuration of the plugin `plugin_name`.
function _M.serve(conf, plugin_name)
  local start, err = read_start(conf)
  if not start then
    return respond.error(400, err)
  end
  local request = {}
  stream.watch_abort(request, "a stream whose client left ends only at its next write")
  local live, cursors, fx = stream.open(conf, plugin_name, "sse", start, request)
  if not live then
    return cursors
  end
  ngx.status = 200
  ngx.header["Content-Type"] = "text/event-stream"
  ngx.header["Cache-Control"] = "no-cache"
  ngx.header["X-Accel-Buffering"] = "no"
  if send("retry: " .. conf.retry_interval .. "\n\n") then
    stream.run(conf, "sse", request, cursors, fx, SINK)
  end
  stream.end_catchup(request)
  return ngx.exit(request.aborted and 499 or 200)
end


return _M
