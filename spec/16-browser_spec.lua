-- The demo page (examples/web) in a real browser: Debian chromium, headless, driven by playwright-core
-- through spec/browser/sse_browser_test.mjs. The page's EventSource reads a 3-partition topic; halfway
-- the gateway reloads (every worker exits, so every stream ends), the browser reconnects on its own with
-- Last-Event-ID, and must end up with every record exactly once, in order per partition.
--
-- Needs chromium, node and playwright-core (spec/helpers/browser.lua); without them the spec fails.
local helpers = require "spec.helpers.host"
local browser = require "spec.helpers.browser"


local PARTITIONS = 3
local PER_PHASE = 30


describe("the demo page in headless chromium", function()
  local host, topic

  lazy_setup(function()
    browser.require_tools()
    topic = helpers.create_topic(helpers.unique_name("browser"), PARTITIONS)
    host = helpers.start_host({
      workers = 2,
      static = helpers.ROOT .. "/examples/web",
      routes = { {
        name = "demo-stream",
        paths = { "/stream" },
        plugins = { { name = "confluent-consume", config = helpers.plugin_config(topic, {
          mode = "server-sent-events",
          auto_offset_reset = "earliest",
          retry_interval = 500,
          message_deserializer = "json",
        }) } },
      } },
    })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("resumes after a gateway reload: every record once, in order, after a reconnect", function()
    local status = host:get("/demo/index.html")
    assert.equal(200, status, "the host serves the demo page")
    helpers.kafka_tool("produce", string.format("--topic %s --count %d --partitions %d --key-prefix k-",
                                                topic, PER_PHASE, PARTITIONS))

    local url = string.format("http://127.0.0.1:%d/demo/index.html?stream=/stream", host.proxy_port)
    local session = browser.start("sse-" .. host.proxy_port, url, PER_PHASE, { expect2 = 2 * PER_PHASE })

    -- phase 1: the first records arrive
    local phase1 = session:phase1("the first " .. PER_PHASE .. " records")
    assert.equal(PER_PHASE, #phase1.received)
    assert.equal(1, phase1.opens)
    browser.assert_contiguous(phase1.received, topic, PARTITIONS, PER_PHASE / PARTITIONS)

    -- The gateway reloads: the old workers end every stream, the page reconnects with Last-Event-ID.
    -- Half the new records go out while the old workers wind down (either generation may deliver
    -- them), half once they are gone (only a resumed stream can).
    local old_workers = host:worker_pids()
    assert.equal(2, #old_workers)
    host:reload()
    helpers.kafka_tool("produce", string.format("--topic %s --count %d --partitions %d --key-prefix k-",
                                                topic, PER_PHASE / 2, PARTITIONS))
    local deadline = helpers.now() + 15
    repeat
      helpers.sleep(0.1)  -- the poll interval of this wait-with-deadline
      local alive = {}
      for _, pid in ipairs(host:worker_pids()) do
        alive[pid] = true
      end
      local old_alive = false
      for _, pid in ipairs(old_workers) do
        old_alive = old_alive or alive[pid] or false
      end
    until not old_alive or helpers.now() > deadline
    assert(helpers.now() <= deadline, "the old workers did not exit within 15 s of the reload")
    helpers.kafka_tool("produce", string.format("--topic %s --count %d --partitions %d --key-prefix k-",
                                                topic, PER_PHASE / 2, PARTITIONS))

    -- phase 2: everything, exactly once
    local final = session:result()
    assert.equal(2 * PER_PHASE, #final.received, "records received in the browser")
    browser.assert_contiguous(final.received, topic, PARTITIONS, 2 * PER_PHASE / PARTITIONS)
    assert.is_true(final.opens >= 2, "the page reconnected (opens = " .. tostring(final.opens) .. ")")
    assert.same({}, final.serverErrors, "no error events")
  end)
end)
