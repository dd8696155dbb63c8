-- Several workers, several concurrent clients: every record once, none twice (commit_strategy=auto).
local helpers = require "spec.helpers.host"


describe("http-get with 2 workers and 8 concurrent clients", function()
  local host, topic

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("conc"), 3)
    host = helpers.start_host({
      workers = 2,
      routes = { {
        name = "conc", hosts = { "conc.test" }, paths = { "/messages" },
        plugins = { { name = "confluent-consume",
                      config = helpers.plugin_config(topic, { auto_offset_reset = "earliest" }) } },
      } },
    })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("delivers the union of what was produced, with no duplicates", function()
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 5000 --partitions 3 --size 200")
    local dir = helpers.RUN_DIR .. "/conc-" .. host.proxy_port
    assert(helpers.sh("mkdir -p " .. dir))
    local procs = {}
    for i = 1, 8 do
      local cmd = string.format("luajit spec/helpers/drain_client.lua %d conc.test 'max_records=100&wait=500' 6 %s/%d.txt",
                                host.proxy_port, dir, i)
      procs[i] = assert(io.popen(cmd .. " 2>&1", "r"))
    end
    -- the second half arrives while the clients read
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 5000 --partitions 3 --size 200")
    for i = 1, 8 do
      local output = procs[i]:read("*a")
      procs[i]:close()
      assert.equal("", output)
    end
    local seen, total, per_client = {}, 0, {}
    for i = 1, 8 do
      per_client[i] = 0
      for line in io.lines(dir .. "/" .. i .. ".txt") do
        assert.is_nil(line:match("^ERROR"), line)
        assert.is_nil(seen[line], "delivered twice: " .. line)
        seen[line] = true
        total = total + 1
        per_client[i] = per_client[i] + 1
      end
    end
    assert.equal(10000, total)
    for p = 0, 2 do
      local count = 0
      for line in pairs(seen) do
        if line:match(" " .. p .. " %d+$") then count = count + 1 end
      end
      local wm = helpers.kafka_tool("watermarks", "--topic " .. topic)
      assert.equal(wm[tostring(p)].high, count)
    end
    local busy = 0
    for i = 1, 8 do
      if per_client[i] > 0 then busy = busy + 1 end
    end
    assert.is_true(busy >= 2, "records spread over only " .. busy .. " clients: " ..
                   table.concat(per_client, ","))
  end)
end)
