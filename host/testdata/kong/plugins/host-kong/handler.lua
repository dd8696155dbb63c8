-- host-kong: a test plugin for how kong-host runs a plugin's access phase, which must be as Kong runs it
-- (spec/04-host_kong_spec.lua). It runs before host-echo (PRIORITY 1000); `config.action` says what its
-- access does.

local kong = kong
local ngx = ngx
local pcall = pcall
local ipairs = ipairs
local error = error
local coroutine_yield = coroutine.yield


local HostKong = {
  PRIORITY = 2000,
  VERSION = "0.1.0",
}


local ACTIONS = {
  -- kong.response.exit while Kong delays responses: what the plugin saw of it
  exit = function()
    return kong.response.exit(200, { delay_response = ngx.ctx.delay_response == true })
  end,

  -- Kong's runloop resumes each plugin's access in a coroutine of its own: yielding ends this plugin's
  -- access, and the next plugin runs
  yield = function()
    coroutine_yield()
    error("host-kong: access was resumed after a yield")
  end,

  -- the request waits, then answers (ngx.sleep inside the plugin's coroutine)
  sleep_exit = function()
    ngx.sleep(0.05)
    return kong.response.exit(201, { slept = true })
  end,

  -- a streamed response, written and flushed inside the plugin's coroutine
  stream = function()
    ngx.status = 200
    ngx.header["Content-Type"] = "text/plain"
    for _, part in ipairs({ "one ", "two ", "three" }) do
      ngx.print(part)
      ngx.flush(true)
      ngx.sleep(0.01)
    end
    return ngx.exit(200)
  end,

  -- a plugin error after the request had waited
  fail = function()
    ngx.sleep(0.01)
    error("host-kong was asked to fail")
  end,

  -- kong.response.exit inside pcall yields through it
  exit_in_pcall = function()
    pcall(kong.response.exit, 202, { in_pcall = true })
    error("host-kong: kong.response.exit returned")
  end,

  -- whether nginx can tell this request that its client left (lua_check_client_abort)
  on_abort = function()
    local ok, err = ngx.on_abort(function() end)
    return kong.response.exit(200, { on_abort = ok and "registered" or err })
  end,
}


function HostKong:access(conf)
  return ACTIONS[conf.action]()
end


function HostKong:header_filter()
  kong.response.set_header("X-Host-Kong-Header-Filter", "ran")
end


return HostKong
