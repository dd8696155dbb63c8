-- kong-host runs a plugin's access phase as Kong's runloop does (kong/init.lua,
-- execute_collecting_plugins_iterator; kong/pdk/response.lua): in a coroutine per plugin, with
-- kong.response.exit delayed until the plugins' access loop is over, a plugin error answered with a 500,
-- and nginx's lua_check_client_abort off unless kong.conf turns it on. Written as Kong's plugin specs are
-- (blueprints, start_kong, proxy_client), with the host-kong and host-echo test plugins (host/testdata);
-- no broker.
local helpers = require "spec.helpers.host"
local cjson = require "cjson.safe"


local TESTDATA = helpers.ROOT .. "/host/testdata"
local ACTIONS = { "exit", "yield", "sleep_exit", "stream", "fail", "exit_in_pcall", "on_abort" }


-- Starts a gateway with a route `<action>.test` per action: host-kong doing it, then host-echo.
local function start(env)
  local bp = helpers.get_db_utils(nil, nil, { "host-kong", "host-echo" })
  for _, action in ipairs(ACTIONS) do
    local route = bp.routes:insert({ name = action, hosts = { action .. ".test" } })
    bp.plugins:insert({ name = "host-kong", route = { id = route.id }, config = { action = action } })
    bp.plugins:insert({ name = "host-echo", route = { id = route.id }, config = { message = "after " .. action } })
  end
  env.plugins = "bundled,host-kong,host-echo"
  env.lua_package_path = TESTDATA .. "/?.lua;;"
  assert(helpers.start_kong(env))
end


describe("a plugin's access phase", function()
  local client

  lazy_setup(function()
    start({ nginx_worker_processes = 1 })
  end)

  lazy_teardown(function()
    helpers.stop_kong()
  end)

  before_each(function()
    client = helpers.proxy_client()
  end)

  after_each(function()
    if client then client:close() end
  end)

  local function get(action)
    local res = client:get("/", { headers = { Host = action .. ".test" } })
    local body = res:read_body()
    return res, body, cjson.decode(body)
  end

  it("delays kong.response.exit: the plugin sees ctx.delay_response, later plugins' access is skipped",
     function()
    local res, body, json = get("exit")
    assert.equal(200, res.status, body)
    assert.same({ delay_response = true }, json)
    assert.is_nil(res.headers["X-Echo-Mode"], "host-echo's access did not run")
    assert.equal("ran", res.headers["X-Host-Kong-Header-Filter"], "the header_filter phase still runs")
  end)

  it("runs each plugin's access in a coroutine of its own: a yield ends it and the next plugin runs", function()
    -- were host-kong resumed after its yield, it would raise an error and the answer would be a 500
    local res, body, json = get("yield")
    assert.equal(200, res.status, body)
    assert.equal("after yield", json.conf.message)
    assert.equal("plain", res.headers["X-Echo-Mode"])
  end)

  it("lets the plugin's coroutine sleep, then answer", function()
    local res, body, json = get("sleep_exit")
    assert.equal(201, res.status, body)
    assert.same({ slept = true }, json)
  end)

  it("streams a response written and flushed inside the plugin's coroutine", function()
    local res, body = get("stream")
    assert.equal(200, res.status)
    assert.equal("one two three", body)
    assert.equal("chunked", res.headers["Transfer-Encoding"])
    assert.is_nil(res.headers["X-Echo-Mode"])
  end)

  it("answers a plugin error with Kong's 500 and skips the later plugins", function()
    local res, body, json = get("fail")
    assert.equal(500, res.status, body)
    assert.equal("An unexpected error occurred", json.message)
    assert.is_nil(res.headers["X-Echo-Mode"])
  end)

  it("yields kong.response.exit through a pcall", function()
    -- had kong.response.exit returned, host-kong would raise an error and the answer would be a 500
    local res, body, json = get("exit_in_pcall")
    assert.equal(202, res.status, body)
    assert.same({ in_pcall = true }, json)
  end)

  it("shows the plugins inserted through the blueprints on the Admin API", function()
    local admin = helpers.admin_client()
    local res = admin:get("/plugins")
    local body = res:read_body()
    admin:close()
    assert.equal(200, res.status, body)
    assert.equal(2 * #ACTIONS, #cjson.decode(body).data)
  end)

  it("leaves lua_check_client_abort off, as Kong's nginx template does", function()
    local _, body, json = get("on_abort")
    assert.same({ on_abort = "lua_check_client_abort is off" }, json, body)
  end)
end)


describe("a plugin's access phase with nginx_proxy_lua_check_client_abort = on", function()
  lazy_setup(function()
    start({ nginx_worker_processes = 1, nginx_proxy_lua_check_client_abort = "on" })
  end)

  lazy_teardown(function()
    helpers.stop_kong()
  end)

  it("can be told that its client left", function()
    local client = helpers.proxy_client()
    local res = client:get("/", { headers = { Host = "on_abort.test" } })
    local body = res:read_body()
    client:close()
    assert.equal(200, res.status, body)
    assert.same({ on_abort = "registered" }, cjson.decode(body))
  end)
end)
