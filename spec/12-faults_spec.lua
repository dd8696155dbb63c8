-- Kafka failures: an unreachable broker is answered with a JSON 503 and a broker that does not answer
-- with a 504, within `timeout` (never a hang or a stack trace), librdkafka's reason reaches the error log,
-- and service resumes when the broker is back.
local helpers = require "spec.helpers.host"
local cjson = require "cjson"
local proc = require "spec.helpers.proc"
local socket = require "socket"


describe("http-get when Kafka fails", function()
  local host, topic, broker_dir, silent
  local port = helpers.MEMORY_BROKER_PORT + 1
  local H = { Host = "down.test" }

  local function broker(action, extra)
    helpers.broker(broker_dir, action, extra)
  end

  lazy_setup(function()
    broker_dir = helpers.RUN_DIR .. "/broker-faults"
    helpers.sh("rm -rf " .. broker_dir)
    broker("start", "--port " .. port .. " --storage sqlite")
    topic = helpers.unique_name("down")
    assert(helpers.sh(string.format("%s/scripts/broker.sh topic --port %d %s 1", helpers.ROOT, port, topic)))
    -- these routes tell the client librdkafka's reason; "nowhere-default" keeps Kong's default and does not
    local reasons = { return_error_message = true }
    local config = helpers.plugin_config(topic, { auto_offset_reset = "earliest", timeout = 3000,
                                                  error_handling = reasons })
    config.bootstrap_servers[1].port = port
    local nowhere = helpers.plugin_config("nowhere", { timeout = 2000, error_handling = reasons })
    nowhere.bootstrap_servers[1].port = port + 1  -- nothing listens there
    local nowhere_default = helpers.plugin_config("nowhere", { timeout = 2000 })
    nowhere_default.bootstrap_servers[1].port = port + 1
    -- a "broker" that takes connections and never answers: a listening socket nobody accepts on (the
    -- kernel completes the handshake for its backlog)
    silent = assert(socket.bind("127.0.0.1", 0, 16))
    local _, silent_port = silent:getsockname()
    -- timeout 1 s: shorter than it takes to tell why such a port never answers (two start-up attempts 250 ms
    -- apart, then a 1 s probe of the port; spec/29 waits for that 503), so the request times out first
    local mute = helpers.plugin_config("mute", { timeout = 1000 })
    mute.bootstrap_servers[1].port = tonumber(silent_port)
    -- a CA librdkafka cannot load: the consumer cannot be created at all
    local bad_ca = helpers.plugin_config(topic, { error_handling = reasons, security = { ssl = true,
      ca_certificate = "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n" } })
    host = helpers.start_host({ workers = 1, routes = {
      { name = "badca", hosts = { "badca.test" }, plugins = { { name = "confluent-consume", config = bad_ca } } },
      { name = "mute", hosts = { "mute.test" }, plugins = { { name = "confluent-consume", config = mute } } },
      { name = "down", hosts = { "down.test" }, plugins = { { name = "confluent-consume", config = config } } },
      { name = "nowhere", hosts = { "nowhere.test" },
        plugins = { { name = "confluent-consume", config = nowhere } } },
      { name = "nowhere-default", hosts = { "nowhere-default.test" },
        plugins = { { name = "confluent-consume", config = nowhere_default } } },
    } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    if silent then silent:close() end
    broker("stop")
  end)

  local function produce(count)
    assert(helpers.sh(string.format("%s produce --brokers 127.0.0.1:%d --topic %s --count %d",
                                    helpers.KAFKA_TOOL, port, topic, count)))
  end

  it("answers 503 with the cause when no broker ever answered", function()
    local t0 = helpers.now()
    local status, body, headers, json = host:get("/messages", { Host = "nowhere.test" })
    local elapsed = helpers.now() - t0
    assert.equal(503, status, body)
    assert.matches("application/json", headers["content-type"], 1, true)
    assert.matches("Connection refused", json.message, 1, true)
    assert.is_true(elapsed < 2.5, "answered after " .. elapsed .. " s")
    assert.is_nil(body:find("traceback", 1, true))
  end)

  it("answers 503 with a generic message by default (error_handling.return_error_message = false), " ..
     "the reason going to the error log", function()
    local status, body = host:get("/messages", { Host = "nowhere-default.test" })
    assert.equal(503, status, body)
    assert.same({ message = "Kafka is unavailable" }, cjson.decode(body))
    assert.truthy(proc.wait_until(function()
      return host:error_log():find("Kafka is unavailable: cannot connect to Kafka at 127.0.0.1:" .. (port + 1), 1,
                                   true)
    end, 5), "the reason is in the error log")
  end)

  it("fails within timeout while the broker is down, then recovers without restarting nginx", function()
    produce(5)
    assert.equal(5, #host:collect("/messages?wait=2000", "down.test", 5))

    broker("stop", "--signal KILL")
    -- the consumer has noticed once librdkafka's reason is in the error log
    assert.truthy(proc.wait_until(function()
      local log = host:error_log()
      return log:find("Connection refused", 1, true) or log:find("brokers are down", 1, true)
    end, 10), "librdkafka's reason is in the error log")
    local t0 = helpers.now()
    local status, body, _, json = host:get("/messages?wait=1000", H)
    local elapsed = helpers.now() - t0
    assert.equal(503, status, body)
    assert.matches("^Kafka is unavailable: ", json.message)
    assert.is_true(elapsed < 3.5, "answered after " .. elapsed .. " s")
    assert.is_nil(body:find("traceback", 1, true))

    broker("start", "--port " .. port .. " --storage sqlite")
    produce(3)
    -- until the broker answers again, requests fail with 503; then the 3 new records arrive
    local records = {}
    proc.wait_until(function()
      status, body, _, json = host:get("/messages?wait=1000", H)
      if status ~= 200 then
        assert.equal(503, status, body)
        return false
      end
      for _, r in ipairs(helpers.records_of(json)) do records[#records + 1] = r end
      return #records >= 3
    end, 20, 0.3)  -- 0.3 s: the poll interval of a client retrying after an error
    assert.equal(200, status, body)
    assert.equal(3, #records)
    assert.equal(5, records[1].offset)
  end)

  it("answers 504 when the broker takes the connection but does not answer within timeout", function()
    local t0 = helpers.now()
    local status, body, headers, json = host:get("/messages", { Host = "mute.test" })
    local elapsed = helpers.now() - t0
    print(("a broker that never answers: %d after %.2f s (timeout 1 s)"):format(status, elapsed))
    assert.equal(504, status, body)
    assert.matches("application/json", headers["content-type"], 1, true)
    assert.equal("timed out waiting for Kafka", json.message)
    assert.is_true(elapsed >= 0.95 and elapsed < 2, "answered after " .. elapsed .. " s")
  end)

  it("answers 500 saying why when the consumer cannot be created", function()
    local status, body, headers, json = host:get("/messages", { Host = "badca.test" })
    assert.equal(500, status, body)
    assert.matches("application/json", headers["content-type"], 1, true)
    assert.matches("^cannot create the Kafka consumer: .", json.message)
    assert.is_nil(body:find("traceback", 1, true))
  end)
end)
