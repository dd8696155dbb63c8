-- The demo page's WebSocket view (examples/web, ?ws=) in headless chromium (spec/helpers/browser.lua): the
-- browser's own WebSocket reads a 3-partition topic and acknowledges every frame; halfway the gateway
-- reloads (every worker closes its connections with 1001), the page reconnects with its last cursor, and
-- must end up with every record exactly once, in order per partition, and the group's commits at the end
-- of every partition (the browser's acknowledgements reached the gateway).
local helpers = require "spec.helpers.host"
local browser = require "spec.helpers.browser"
local proc = require "spec.helpers.proc"


local PARTITIONS = 3
local PER_PHASE = 30


describe("the demo page's WebSocket view in headless chromium", function()
  local host, topic, group

  lazy_setup(function()
    browser.require_tools()
    topic = helpers.create_topic(helpers.unique_name("wsbrowser"), PARTITIONS)
    group = topic .. "-g"
    host = helpers.start_host({
      workers = 2,
      static = helpers.ROOT .. "/examples/web",
      routes = { {
        name = "demo-ws",
        paths = { "/ws" },
        protocols = { "http", "ws" },
        plugins = { { name = "confluent-consume", config = helpers.plugin_config(topic, {
          mode = "websocket",
          auto_offset_reset = "earliest",
          message_deserializer = "json",
          consumer_group = { mode = "manual", consumer_group_id = group },
        }) } },
      } },
    })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("receives every record once, in order, acknowledges them, and resumes after a gateway reload", function()
    helpers.kafka_tool("produce", string.format("--topic %s --count %d --partitions %d --key-prefix k-",
                                                topic, PER_PHASE, PARTITIONS))
    local url = string.format("http://127.0.0.1:%d/demo/index.html?ws=/ws", host.proxy_port)
    local session = browser.start("ws-" .. host.proxy_port, url, PER_PHASE, { expect2 = 2 * PER_PHASE })

    local phase1 = session:phase1("the first " .. PER_PHASE .. " records")
    assert.equal(PER_PHASE, #phase1.received)
    assert.equal(1, phase1.opens)
    browser.assert_contiguous(phase1.received, topic, PARTITIONS, PER_PHASE / PARTITIONS)

    host:reload()
    helpers.kafka_tool("produce", string.format("--topic %s --count %d --partitions %d --key-prefix k-",
                                                topic, PER_PHASE, PARTITIONS))

    local final = session:result()
    assert.equal(2 * PER_PHASE, #final.received, "records received in the browser")
    browser.assert_contiguous(final.received, topic, PARTITIONS, 2 * PER_PHASE / PARTITIONS)
    assert.is_true(final.opens >= 2, "the page reconnected (opens = " .. tostring(final.opens) .. ")")
    assert.same({}, final.serverErrors, "no error frames")
    local per_partition = 2 * PER_PHASE / PARTITIONS
    local committed
    assert.truthy(proc.wait_until(function()
      committed = helpers.kafka_tool("committed", "--topic " .. topic .. " --group " .. group)
      return committed["0"] == per_partition and committed["1"] == per_partition and
             committed["2"] == per_partition
    end, 10, 0.1), "the browser's acknowledgements are committed: " .. require("cjson").encode(committed))
  end)
end)
