-- The quick start from a checkout under a directory only its owner may enter (root's home is one). nginx
-- started as root runs its workers as `nobody` unless told otherwise, and `nobody` cannot read such a
-- checkout: every module a worker requires lazily (the Admin API) and the demo pages were "not found".
local helpers = require "spec.helpers.host"


local function current_user()
  local ok, output = helpers.sh("id -un")
  assert(ok, output)
  return (output:gsub("%s+$", ""))
end


describe("a checkout only its owner can read", function()
  local private = helpers.RUN_DIR .. "/private"
  local checkout = private .. "/checkout"
  local topic = helpers.unique_name("private")
  local host

  lazy_setup(function()
    helpers.create_topic(topic, 2)
    -- What the host serves from a checkout after `make build`: its own files and the native module.
    assert(helpers.sh("rm -rf " .. private .. " && mkdir -p " .. checkout .. "/target && chmod 0700 " .. private))
    local ok, output = helpers.sh(string.format("cp -a %s/host %s/kong-plugin %s/examples %s/ && cp -a %s/target/lua %s/target/",
                                                helpers.ROOT, helpers.ROOT, helpers.ROOT, checkout, helpers.ROOT,
                                                checkout))
    assert(ok, output)
    host = helpers.start_host({
      root = checkout,
      workers = 2,
      plugin_paths = { checkout .. "/kong-plugin" },
      cpath = checkout .. "/target/lua",
      static = checkout .. "/examples/web",
    })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    helpers.sh("rm -rf " .. private)
  end)

  it("is a directory no other user may enter", function()
    local ok, output = helpers.sh("stat -c '%a %U' " .. private)
    assert(ok, output)
    assert.equal("700 " .. current_user(), (output:gsub("%s+$", "")))
  end)

  it("runs the workers as the user who started the host", function()
    local pids = host:worker_pids()
    assert.equal(2, #pids)
    for _, pid in ipairs(pids) do
      local ok, output = helpers.sh("ps -o user= -p " .. pid)
      assert(ok, output)
      assert.equal(current_user(), (output:gsub("%s+", "")))
    end
  end)

  it("serves the quick start's Admin API calls and GET", function()
    local status, route = host:admin("POST", "/routes", "name=private-route&hosts[]=private.test")
    assert.equal(201, status)
    assert.equal("private-route", route.name)
    local plugin
    status, plugin = host:admin("POST", "/routes/private-route/plugins",
                                "name=confluent-consume" ..
                                "&config.bootstrap_servers[1].host=" .. helpers.BROKER_HOST ..
                                "&config.bootstrap_servers[1].port=" .. helpers.BROKER_PORT ..
                                "&config.topics[1].name=" .. topic ..
                                "&config.auto_offset_reset=earliest")
    assert.equal(201, status)
    assert.equal("confluent-consume", plugin.name)
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 4 --partitions 2")
    local records = host:collect("/messages?wait=2000", "private.test", 4, 20)
    assert.equal(4, #records)
  end)

  it("serves the demo page", function()
    local status, body = host:get("/demo/index.html")
    assert.equal(200, status)
    assert.truthy(body:find("<html", 1, true))
  end)
end)
