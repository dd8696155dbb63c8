-- A GET client run as its own process by the concurrency spec: reads on one keep-alive connection until
-- `idle` consecutive responses are empty, and writes "topic partition offset" per record to `out`.
-- usage: luajit spec/helpers/drain_client.lua PORT HOST_HEADER QUERY IDLE OUT
package.path = "./?.lua;" .. package.path
local http = require "spec.helpers.http"
local cjson = require "cjson"

local port, host_header, query, idle, out = tonumber(arg[1]), arg[2], arg[3], tonumber(arg[4]), arg[5]
local file = assert(io.open(out, "w"))
local conn = assert(http.connect("127.0.0.1", port, 30))
local empty = 0
while empty < idle do
  local status, body = conn:request("GET", "/messages?" .. query, { Host = host_header })
  if status ~= 200 then
    file:write("ERROR ", tostring(status), " ", tostring(body), "\n")
    break
  end
  local got = 0
  for topic, t in pairs(cjson.decode(body)) do
    for partition, p in pairs(t.partitions) do
      for _, record in ipairs(p.records) do
        file:write(topic, " ", partition, " ", record.offset, "\n")
        got = got + 1
      end
    end
  end
  empty = got == 0 and empty + 1 or 0
end
conn:close()
file:close()
