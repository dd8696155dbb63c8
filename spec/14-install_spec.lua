-- The README's quick start, run verbatim against the host on 8000/8001 and a broker on 9092, with the
-- plugin served from a tree installed by `luarocks make` (not from the source tree).
local helpers = require "spec.helpers.host"
local cjson = require "cjson"


-- The commands of the first shell block of the README's "Quick start" section, continuation lines joined.
local function quick_start_commands()
  local readme = assert(io.open(helpers.ROOT .. "/README.md")):read("*a")
  local section = assert(readme:match("\n## Quick start\n(.-)\n## "), "README has a Quick start section")
  local commands = {}
  local block = assert(section:match("```sh\n(.-)```"), "the Quick start section has a sh block")
  local joined = block:gsub("\\\n%s*", "")
  for line in joined:gmatch("[^\n]+") do
    if line:match("^curl ") then
      commands[#commands + 1] = line
    end
  end
  return commands
end


local function port_free(port)
  return not helpers.sh("bash -c 'exec 3<>/dev/tcp/127.0.0.1/" .. port .. "' 2>/dev/null")
end


describe("installation", function()
  local tree = helpers.RUN_DIR .. "/rocks-tree"
  local broker_dir = helpers.RUN_DIR .. "/broker-9092"
  local host

  lazy_setup(function()
    for _, port in ipairs({ 8000, 8001, 9092 }) do
      assert(port_free(port), "port " .. port .. " is in use (is `make run` running?); the quick start needs it")
    end
    helpers.sh("rm -rf " .. tree .. " " .. broker_dir)
    local ok, output = helpers.sh("cd " .. helpers.ROOT .. " && luarocks --lua-version=5.1 --tree " .. tree ..
                                  " make kong-plugin-confluent-consume-0.1.0-1.rockspec")
    assert(ok, output)
    ok, output = helpers.sh(helpers.ROOT .. "/scripts/broker.sh start --dir " .. broker_dir .. " --port 9092")
    assert(ok, output)
    ok, output = helpers.sh(helpers.ROOT .. "/scripts/broker.sh topic --port 9092 my-topic 3")
    assert(ok, output)
    local prefix = helpers.RUN_DIR .. "/host-quickstart"
    helpers.sh("rm -rf " .. prefix)
    ok, output = helpers.sh(string.format(
      "%s/host/bin/kong-host start --prefix %s --workers 2 --plugin-path %s/share/lua/5.1 --cpath %s/lib/lua/5.1",
      helpers.ROOT, prefix, tree, tree))
    assert(ok, output)
    host = { prefix = prefix }
  end)

  lazy_teardown(function()
    if host then helpers.sh(helpers.ROOT .. "/host/bin/kong-host stop --prefix " .. host.prefix) end
    helpers.sh(helpers.ROOT .. "/scripts/broker.sh stop --dir " .. broker_dir)
  end)

  it("installs the Lua modules and the native module with luarocks", function()
    local lfs_ok = helpers.sh("test -f " .. tree .. "/lib/lua/5.1/confluent_consume_native.so")
    assert.is_true(lfs_ok)
    assert.is_true((helpers.sh("test -f " .. tree .. "/share/lua/5.1/kong/plugins/confluent-consume/handler.lua")))
  end)

  it("serves the README quick start verbatim", function()
    local commands = quick_start_commands()
    assert.equal(3, #commands)
    for i, command in ipairs(commands) do
      commands[i] = command .. " 2>/dev/null" -- curl's progress meter goes to stderr
    end
    local ok, output = helpers.sh(commands[1])
    assert(ok, output)
    assert.equal("confluent-consumer", cjson.decode(output).name)
    ok, output = helpers.sh(commands[2])
    assert(ok, output)
    local plugin = cjson.decode(output)
    assert.equal("confluent-consume", plugin.name)
    assert.equal("my-topic", plugin.config.topics[1].name)
    -- auto_offset_reset=latest: the first GET fixes the start, later records are served
    ok, output = helpers.sh(commands[3])
    assert(ok, output)
    assert.same({}, cjson.decode(output)["my-topic"].partitions["0"].records)
    assert(helpers.sh(helpers.KAFKA_TOOL .. " produce --brokers 127.0.0.1:9092 --topic my-topic --count 6 --partitions 3"))
    local seen = 0
    for _ = 1, 10 do
      ok, output = helpers.sh(commands[3])
      assert(ok, output)
      seen = seen + #helpers.records_of(cjson.decode(output))
      if seen >= 6 then break end
      helpers.sleep(0.2)
    end
    assert.equal(6, seen)
  end)

  it("rejects an invalid config the way Kong does", function()
    local ok, output = helpers.sh("curl -s -X POST http://localhost:8001/routes/confluent-consumer/plugins " ..
                                  "--data name=confluent-consume --data config.bootstrap_servers[1].host=127.0.0.1 " ..
                                  "--data config.bootstrap_servers[1].port=9092")
    assert(ok, output)
    local err = cjson.decode(output)
    assert.equal("schema violation (config.topics: required field missing)", err.message)
    assert.equal("schema violation", err.name)
  end)
end)
