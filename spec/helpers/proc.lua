-- What the leak and bounds specs measure of an nginx worker, read from /proc: threads, open descriptors,
-- resident memory. Waiting for a condition with a deadline instead of sleeping a fixed time. And starting
-- and stopping the specs' own background processes (TLS terminators, brokers, a token endpoint).
local helpers = require "spec.helpers.host"


local _M = {}


local function count_entries(dir)
  local _, out = helpers.sh("ls " .. dir .. " | wc -l")
  return tonumber(out)
end


-- { threads, fds, rss_kb } of process `pid`.
function _M.stats(pid)
  local file = assert(io.open("/proc/" .. pid .. "/status"))
  local status = file:read("*a")
  file:close()
  return {
    threads = count_entries("/proc/" .. pid .. "/task"),
    fds = count_entries("/proc/" .. pid .. "/fd"),
    rss_kb = tonumber(status:match("VmRSS:%s*(%d+)")),
  }
end


function _M.format(s)
  return string.format("threads %d, fds %d, RSS %.1f MB", s.threads, s.fds, s.rss_kb / 1024)
end


-- Starts `command` in the background (output to `log`); returns its pid.
function _M.spawn(command, log)
  local output = helpers.sh_ok(string.format("(%s) >%s 2>&1 </dev/null & echo $!", command, log))
  return assert(tonumber(output:match("(%d+)%s*$")), output)
end


-- Stops a pid started by `spawn`, and the children it forked (socat forks one per connection); `sleep 0.1`
-- is the poll interval of a 5 s wait for it to exit before it is killed.
function _M.kill(pid)
  helpers.sh(string.format("pkill -TERM -P %d; kill -TERM %d; for i in $(seq 50); do " ..
                           "kill -0 %d 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL %d", pid, pid, pid, pid))
end


-- Waits until `condition()` returns a true value or `seconds` pass; returns that value (or false).
function _M.wait_until(condition, seconds, step)
  local deadline = helpers.now() + seconds
  while true do
    local value = condition()
    if value or helpers.now() > deadline then
      return value or false
    end
    helpers.sleep(step or 0.1)  -- the poll interval of this wait-with-deadline
  end
end


-- The stats of `pid` once its threads and descriptors stopped changing: the same for `window` seconds
-- (default 2; closing consumers end their threads a while after the requests that used them), waiting at
-- most `seconds`.
function _M.steady(pid, seconds, window)
  window = window or 2
  local last, since = _M.stats(pid), helpers.now()
  _M.wait_until(function()
    local s = _M.stats(pid)
    if s.threads ~= last.threads or s.fds ~= last.fds then
      since = helpers.now()
    end
    last = s
    return helpers.now() - since >= window
  end, seconds, 0.25)
  return last
end


-- Waits until the worker's threads and descriptors are back to `baseline` (at most `seconds`); returns
-- its stats then.
function _M.settle(pid, baseline, seconds)
  local last
  _M.wait_until(function()
    last = _M.stats(pid)
    return last.threads == baseline.threads and last.fds == baseline.fds
  end, seconds, 0.2)
  return last
end


return _M
