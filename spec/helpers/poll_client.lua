-- A GET client run as its own process by the fault specs: long-polls on a keep-alive connection until
-- STOP_FILE exists, retrying through errors the way a well-behaved client does (a failed request or a
-- broken connection: reconnect; a 5xx: wait a little and ask again). It writes one line per record,
-- "partition offset seq" (seq from a kafka-tool JSON value), and "status S" per answer that was not a 200,
-- flushing after every answer so the spec can watch progress. Each answer starts with a line "at T N D"
-- (T: when it was received, seconds since the epoch; N: its record count; D: seconds the request took),
-- so a spec can tell answers apart and time them.
-- usage: luajit spec/helpers/poll_client.lua PORT HOST_HEADER QUERY OUT STOP_FILE
package.path = "./?.lua;" .. package.path
local http = require "spec.helpers.http"
local socket = require "socket"
local cjson = require "cjson"

local port, host_header, query, out, stop_file = tonumber(arg[1]), arg[2], arg[3], arg[4], arg[5]
local RETRY_DELAY = 0.2
local MAX_SECONDS = 180  -- a client left behind by an aborted spec still ends


local function stopped()
  local f = io.open(stop_file, "r")
  if f then
    f:close()
    return true
  end
  return false
end


local file = assert(io.open(out, "w"))
local conn
local deadline = socket.gettime() + MAX_SECONDS
while not stopped() and socket.gettime() < deadline do
  if not conn then
    conn = http.connect("127.0.0.1", port, 30)
  end
  local status, body
  local t0 = socket.gettime()
  if conn then
    status, body = conn:request("GET", "/messages?" .. query, { Host = host_header })
  end
  if status == 200 then
    local lines = {}
    for _, t in pairs(cjson.decode(body)) do
      for partition, p in pairs(t.partitions) do
        for _, record in ipairs(p.records) do
          local seq = type(record.value) == "string" and record.value:match('"seq":(%d+)') or "-"
          lines[#lines + 1] = partition .. " " .. record.offset .. " " .. seq .. "\n"
        end
      end
    end
    local t = socket.gettime()
    file:write(string.format("at %.3f %d %.3f\n", t, #lines, t - t0), table.concat(lines))
  else
    local t = socket.gettime()
    file:write(string.format("at %.3f 0 %.3f\nstatus %s\n", t, t - t0, tostring(status or "none")))
    if not status and conn then
      conn:close()
      conn = nil
    end
    socket.sleep(RETRY_DELAY)  -- paces the retries of a client, as a real one would
  end
  file:flush()
end
if conn then
  conn:close()
end
file:close()
