-- Waiting on what a gateway did, instead of sleeping a fixed time: the requests its access log shows as
-- answered, and the connections of its proxy port whose request it has read (ss).
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"


local tonumber = tonumber
local ipairs = ipairs


local _M = {}


-- The requests the gateway has answered, from its access log (nginx writes a line when a request ends,
-- in the "combined" format): a list of { method, path, status }.
function _M.answered(host)
  local file = io.open(host.prefix .. "/logs/access.log", "r")
  if not file then
    return {}
  end
  local list = {}
  for line in file:lines() do
    local method, path, status = line:match('"(%u+) (%S+) HTTP/[%d.]+" (%d+) ')
    if method then
      list[#list + 1] = { method = method, path = path, status = tonumber(status) }
    end
  end
  file:close()
  return list
end


-- The answers to GETs of exactly `path`, in order.
function _M.answers_to(host, path)
  local list = {}
  for _, r in ipairs(_M.answered(host)) do
    if r.path == path then
      list[#list + 1] = r
    end
  end
  return list
end


-- Waits until the access log shows `n` answers to `path` (at most `seconds`); returns their statuses,
-- or nil and what it saw.
function _M.answered_to(host, path, n, seconds)
  local list
  local ok = proc.wait_until(function()
    list = _M.answers_to(host, path)
    return #list >= n
  end, seconds, 0.05)
  local statuses = {}
  for i, r in ipairs(list) do
    statuses[i] = r.status
  end
  if not ok then
    return nil, #list .. " of " .. n .. " answers to " .. path .. " after " .. seconds .. " s"
  end
  return statuses
end


-- The server side of the connection from client port `peer_port` to the gateway's proxy: { recv_q,
-- send_q } (bytes the gateway has not read yet, bytes it wrote that the client has not taken), or nil
-- when there is none.
function _M.server_side(host, peer_port)
  local _, out = helpers.sh(string.format("ss -tnH state established '( sport = :%d and dport = :%d )'",
                                          host.proxy_port, peer_port))
  local recv_q, send_q = out:match("^%s*(%d+)%s+(%d+)")
  if not recv_q then
    return nil
  end
  return { recv_q = tonumber(recv_q), send_q = tonumber(send_q) }
end


-- Whether the gateway has read every byte sent on the connection from client port `peer_port` (its
-- request is in the gateway's hands: being handled, or waiting, not queued in the kernel).
function _M.request_read(host, peer_port)
  local side = _M.server_side(host, peer_port)
  return side ~= nil and side.recv_q == 0
end


-- The client ports of the established connections to the gateway's proxy held by processes named
-- `name` (e.g. "curl") that the spec started.
function _M.client_ports(host, name)
  local _, out = helpers.sh(string.format("ss -tnpH state established '( dport = :%d )'", host.proxy_port))
  local ports = {}
  for line in out:gmatch("[^\n]+") do
    if line:find('(("' .. name .. '",', 1, true) then
      local port = line:match("^%s*%d+%s+%d+%s+%S+:(%d+)%s")
      ports[#ports + 1] = tonumber(port)
    end
  end
  return ports
end


-- Waits until `n` connections of processes named `name` are open to the proxy and the gateway has read
-- every request on them (at most `seconds`); returns whether it happened.
function _M.requests_read(host, name, n, seconds)
  return proc.wait_until(function()
    local ports = _M.client_ports(host, name)
    if #ports < n then
      return false
    end
    for _, port in ipairs(ports) do
      if not _M.request_read(host, port) then
        return false
      end
    end
    return true
  end, seconds, 0.05)
end


-- For a client socket of this process (luasocket): its local port.
function _M.local_port(sock)
  local _, port = sock:getsockname()
  return tonumber(port)
end


return _M
