-- WebSocket clients for the specs: spec/helpers/ws_client.py (the `websockets` library, Debian's
-- python3-websockets under Debian's python3) against a gateway's proxy port.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local cjson = require "cjson"


local _M = {}


local PYTHON = "/usr/bin/python3"  -- Debian's, which has python3-websockets


local function command(host, host_header, path, script, extra)
  return string.format("%s %s/spec/helpers/ws_client.py --port %d --host %s --path '%s' --script '%s' %s 2>&1",
                       PYTHON, helpers.ROOT, host.proxy_port, host_header, path, cjson.encode(script or {}),
                       extra or "")
end


local function result_of(output)
  return assert(cjson.decode(output:match("([^\n]+)\n*$") or ""), output)
end


-- Runs one client of `host` (Host header `host_header`) on `path` with `script` (see ws_client.py) and
-- returns what it saw.
function _M.run(host, host_header, path, script)
  local pipe = assert(io.popen(command(host, host_header, path, script)))
  local output = pipe:read("*a")
  pipe:close()
  return result_of(output)
end


-- Starts `clients` clients as `run` does, in the background, and returns once every one is connected;
-- the returned function waits for them and gives what they printed.
function _M.start(host, host_header, path, script, clients)
  local ready = helpers.RUN_DIR .. "/ws-" .. host_header .. ".ready"
  os.remove(ready)
  local pipe = assert(io.popen(command(host, host_header, path, script, string.format(
    "--clients %d --timeout 60 --ready-file %s", clients or 1, ready))))
  local collect = function()
    local output = pipe:read("*a")
    pipe:close()
    return result_of(output)
  end
  local connected = proc.wait_until(function()
    local file = io.open(ready)
    if file then file:close() end
    return file ~= nil
  end, 60, 0.05)
  if not connected then
    error("the clients did not connect: " .. cjson.encode(collect()))
  end
  return collect
end


return _M
