-- With one worker, requests waiting on Kafka never hold up the others: waiting happens in Lua on the
-- doorbell, not inside a native call.
local helpers = require "spec.helpers.host"
local wait = require "spec.helpers.wait"


describe("the event loop of a one-worker nginx", function()
  local host, topic

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("loop"), 1)
    local config = helpers.plugin_config(topic, { auto_offset_reset = "earliest" })
    host = helpers.start_host({ workers = 1, routes = {
      { name = "wait", hosts = { "wait.test" }, plugins = { { name = "confluent-consume", config = config } } },
      { name = "quick", hosts = { "quick.test" }, plugins = { { name = "confluent-consume", config = config } } },
    } })
    host:get("/messages", { Host = "quick.test" }) -- the handle exists before timing starts
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  local function p99_of_quick_requests(n)
    return host:time_requests("/messages", "quick.test", n)[math.ceil(n * 0.99)]
  end

  it("answers other requests at their usual speed while GETs wait 5 s", function()
    local idle = p99_of_quick_requests(50)
    local waiters = {}
    local t0 = helpers.now()
    for i = 1, 3 do
      waiters[i] = assert(io.popen(string.format(
        "curl -s -o /dev/null -w '%%{http_code}' -H 'Host: wait.test' 'http://127.0.0.1:%d/messages?wait=5000'",
        host.proxy_port)))
    end
    -- one worker runs a request's handler as soon as it has read it, up to where it waits: once nginx has
    -- read all three, they are parked on the doorbell
    assert.truthy(wait.requests_read(host, "curl", 3, 4), "the waiters reached the worker")
    local busy = p99_of_quick_requests(50)
    assert.same({}, wait.answers_to(host, "/messages?wait=5000"), "the waiters waited through the quick requests")
    assert.is_true(helpers.now() - t0 < 4, "the quick requests finished before the waiters")
    for i = 1, 3 do
      assert.equal("200", waiters[i]:read("*a"))
      waiters[i]:close()
    end
    local waited = helpers.now() - t0
    assert.is_true(waited >= 4.9, "the waiters really waited (" .. waited .. " s)")
    assert.is_true(busy < math.max(0.05, idle * 5),
                   string.format("p99 %.1f ms while waiting vs %.1f ms idle", busy * 1000, idle * 1000))
  end)
end)
