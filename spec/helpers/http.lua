-- A small HTTP/1.1 client for the specs, on luasocket: keep-alive connections, chunked and
-- Content-Length bodies, and incremental reads for event streams.
local socket = require "socket"


local _M = {}
local mt = { __index = _M }


function _M.connect(host, port, timeout)
  local sock = socket.tcp()
  sock:settimeout(timeout or 30)
  local ok, err = sock:connect(host, port)
  if not ok then
    return nil, "connect " .. host .. ":" .. port .. ": " .. tostring(err)
  end
  sock:setoption("tcp-nodelay", true)
  return setmetatable({ sock = sock }, mt)
end


function _M:close()
  self.sock:close()
end


function _M:settimeout(seconds)
  self.sock:settimeout(seconds)
end


-- Sends a request without waiting for the answer (read it with read_head, then read_body); true, or nil
-- and an error.
function _M:send(method, path, headers, body)
  local lines = { method .. " " .. path .. " HTTP/1.1" }
  headers = headers or {}
  local has_host = false
  for name, value in pairs(headers) do
    if name:lower() == "host" then has_host = true end
    lines[#lines + 1] = name .. ": " .. value
  end
  if not has_host then
    lines[#lines + 1] = "Host: localhost"
  end
  if body then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  local ok, err = self.sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  if not ok then
    return nil, "send: " .. tostring(err)
  end
  return true
end


-- Reads the status line and headers of the answer to the request sent last. Returns status, headers
-- (lower-case names).
function _M:read_head()
  local status_line, read_err = self.sock:receive("*l")
  if not status_line then
    return nil, "receive status: " .. tostring(read_err)
  end
  local status = tonumber(status_line:match("^HTTP/1%.%d (%d%d%d)"))
  local response_headers = {}
  while true do
    local line, header_err = self.sock:receive("*l")
    if not line then
      return nil, "receive headers: " .. tostring(header_err)
    end
    if line == "" then break end
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then
      response_headers[name:lower()] = value
    end
  end
  self.headers = response_headers
  self.chunked = (response_headers["transfer-encoding"] or ""):lower():find("chunked") ~= nil
  self.remaining = tonumber(response_headers["content-length"])
  return status, response_headers
end


-- Sends a request and reads the status line and headers. Returns status, headers (lower-case names).
function _M:send_request(method, path, headers, body)
  local ok, err = self:send(method, path, headers, body)
  if not ok then
    return nil, err
  end
  return self:read_head()
end


-- Reads the next piece of a chunked body (one chunk), "" at the end. For event streams.
function _M:read_chunk()
  local size_line, err = self.sock:receive("*l")
  if not size_line then
    return nil, err
  end
  local size = tonumber(size_line:match("^(%x+)"), 16)
  if not size then
    return nil, "bad chunk size: " .. size_line
  end
  if size == 0 then
    self.sock:receive("*l")
    return ""
  end
  local data, data_err = self.sock:receive(size)
  if not data then
    return nil, data_err
  end
  self.sock:receive("*l")
  return data
end


-- Reads the whole body of the current response.
function _M:read_body()
  if self.chunked then
    local parts = {}
    while true do
      local chunk, err = self:read_chunk()
      if not chunk then
        return nil, err
      end
      if chunk == "" then break end
      parts[#parts + 1] = chunk
    end
    return table.concat(parts)
  end
  if self.remaining then
    if self.remaining == 0 then return "" end
    return self.sock:receive(self.remaining)
  end
  return self.sock:receive("*a")
end


-- One request on this connection: status, body, headers.
function _M:request(method, path, headers, body)
  local status, response_headers = self:send_request(method, path, headers, body)
  if not status then
    return nil, response_headers
  end
  local response_body, err = self:read_body()
  if not response_body then
    return nil, err
  end
  return status, response_body, response_headers
end


-- Reads server-sent events from the current (chunked) response until `count` events of type `kind`
-- ("message" by default) arrived, the stream ended, or `timeout` seconds passed. Returns the list of all
-- events read ({id =, event =, data =, comment =}) and why it stopped: "count", "eof" or an error.
function _M:read_events(count, timeout, kind)
  kind = kind or "message"
  self.sock:settimeout(timeout)
  local deadline = socket.gettime() + timeout
  local events, matched = {}, 0
  self.pending = self.pending or ""
  while true do
    while true do
      local block, rest = self.pending:match("^(.-)\n\n(.*)$")
      if not block then break end
      self.pending = rest
      local event = {}
      for line in block:gmatch("[^\n]+") do
        local field, value = line:match("^([^:]*): ?(.*)$")
        if field == "" then
          event.comment = value
        elseif field == "data" then
          event.data = event.data and (event.data .. "\n" .. value) or value
        elseif field then
          event[field] = value
        end
      end
      events[#events + 1] = event
      if (event.event or "message") == kind and not event.comment and (event.data or event.id) then
        matched = matched + 1
        if matched >= count then
          return events, "count"
        end
      end
    end
    local remaining = deadline - socket.gettime()
    if remaining <= 0 then
      return events, "timeout"
    end
    self.sock:settimeout(remaining)
    local chunk, err = self:read_chunk()
    if not chunk then
      return events, err
    end
    if chunk == "" then
      return events, "eof"
    end
    self.pending = self.pending .. chunk
  end
end


-- One request on a fresh connection.
function _M.once(host, port, method, path, headers, body, timeout)
  local conn, err = _M.connect(host, port, timeout)
  if not conn then
    return nil, err
  end
  local status, response_body, response_headers = conn:request(method, path, headers, body)
  conn:close()
  return status, response_body, response_headers
end


return _M
