-- Consumers follow the plugin's configuration: created on first use, rebuilt when it changes, closed when
-- it goes away; the worker's threads and descriptors come back to where they were.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local wait = require "spec.helpers.wait"


describe("consumer life cycle", function()
  local host, topic, pid

  local function count(what)
    local _, out = helpers.sh("ls /proc/" .. pid .. "/" .. what .. " | wc -l")
    return tonumber(out)
  end

  -- waits until the count of `what` is at most `expected`; returns the last count
  local function settle(what, expected, seconds)
    proc.wait_until(function() return count(what) <= expected end, seconds, 0.05)
    return count(what)
  end

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("life"), 2)
    host = helpers.start_host({ workers = 1, routes = {
      { name = "life", hosts = { "life.test" }, plugins = { { name = "confluent-consume",
        config = helpers.plugin_config(topic, { auto_offset_reset = "earliest" }) } } },
    } })
    pid = host:worker_pids()[1]
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("rebuilds the consumer on a config change and closes it when the plugin is deleted", function()
    -- a baseline taken while a connection of the host's start-up is still closing would be one fd high
    local baseline = proc.steady(pid, 5, 1)
    local threads, fds = baseline.threads, baseline.fds
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 10 --partitions 2")
    assert.equal(10, #host:collect("/?wait=2000", "life.test", 10))
    local with_consumer = count("task")
    assert.is_true(with_consumer > threads, "the consumer runs on threads of its own")

    local _, plugins = host:admin("GET", "/plugins")
    local id = plugins.data[1].id
    -- a long-poll waiting when the configuration changes is answered normally, not with an error
    local waiting = assert(io.popen(string.format(
      "curl -s -o /dev/null -w '%%{http_code} %%{time_total}' -H 'Host: life.test' 'http://127.0.0.1:%d/?wait=8000'",
      host.proxy_port)))
    assert.truthy(wait.requests_read(host, "curl", 1, 5), "the long-poll is waiting")
    assert.same({}, wait.answers_to(host, "/?wait=8000"))
    local patched = host:admin("PATCH", "/plugins/" .. id, { config = { fetch_wait_max_ms = 20 } })
    assert.equal(200, patched)
    local code, seconds = waiting:read("*a"):match("^(%d+) ([%d.]+)")
    waiting:close()
    assert.equal("200", code)
    assert.is_true(tonumber(seconds) < 5, "the long-poll ended with its consumer (" .. seconds .. " s)")
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 4 --partitions 2")
    assert.equal(4, #host:collect("/?wait=2000", "life.test", 4),
                 "the new consumer continues where the old one stopped")
    assert.equal(0, #host:collect("/?wait=300", "life.test", 1, 0.1), "and delivers nothing twice")
    -- librdkafka starts a thread per broker it learns of, so one consumer's count may differ by one from
    -- another's depending on when it was taken; two consumers' threads would be several more
    local after_change = settle("task", with_consumer, 5)
    assert.is_true(after_change <= with_consumer + 1,
                   "the old consumer's threads ended (" .. after_change .. " threads, " .. with_consumer .. " before)")

    assert.equal(204, (host:admin("DELETE", "/plugins/" .. id)))
    local threads_after, fds_after = settle("task", threads, 5), settle("fd", fds, 5)
    assert.is_true(threads_after <= threads, threads_after .. " threads, " .. threads .. " before")
    assert.is_true(fds_after <= fds, fds_after .. " fds, " .. fds .. " before")
  end)
end)
