-- Plugins whose consumers come out identical share one per worker (README, `cluster_name`). The identity
-- is derived from the settings the native module parsed, so an option that only shapes requests never
-- splits a consumer, and one that shapes the consumer always does.
--
-- What is counted: each native consumer's doorbell socket (helpers.doorbells).
local helpers = require "spec.helpers.host"


describe("plugins sharing a consumer", function()
  local host, pid

  local function doorbells()
    return helpers.doorbells(pid)
  end

  local function get(name)
    local status, body = host:get("/", { Host = name .. ".test" })
    assert.equal(200, status, body)
  end

  lazy_setup(function()
    local topic = helpers.create_topic(helpers.unique_name("share"), 1)
    local other_topic = helpers.create_topic(helpers.unique_name("share-other"), 1)
    -- one group for all: a random group is named after the plugin id, which alone makes consumers differ
    local group = { mode = "manual", consumer_group_id = helpers.unique_name("share-group") }
    host = helpers.start_host({ workers = 1, routes = {
      helpers.route("base", topic, { consumer_group = group }),
      helpers.route("fewer", topic, { consumer_group = group, max_records = 5, max_wait = 1000 }),
      helpers.route("slower", topic, { consumer_group = group, fetch_wait_max_ms = 20 }),
      helpers.route("elsewhere", other_topic, { consumer_group = group }),
    } })
    pid = host:worker_pids()[1]
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("share one consumer when only request-side options differ, and not when the consumer differs", function()
    assert.same({}, doorbells())
    get("base")
    local shared = doorbells()
    assert.equal(1, #shared)
    get("fewer")
    assert.same(shared, doorbells(), "max_records and max_wait do not make another consumer")
    get("slower")
    assert.equal(2, #doorbells(), "fetch_wait_max_ms does")
    get("elsewhere")
    assert.equal(3, #doorbells(), "another topic does")

    -- a change of a request-side option keeps the consumer (Kong's configure phase retains it)
    local _, plugins = host:admin("GET", "/plugins")
    local fewer
    for _, plugin in ipairs(plugins.data) do
      if plugin.config.max_records == 5 then fewer = plugin end
    end
    assert.equal(200, (host:admin("PATCH", "/plugins/" .. fewer.id, { config = { max_records = 7 } })))
    get("fewer")
    get("base")
    local after = doorbells()
    assert.equal(3, #after)
    local kept = false
    for _, path in ipairs(after) do
      kept = kept or path == shared[1]
    end
    assert.is_true(kept, "the shared consumer was not rebuilt")
  end)
end)


describe("confluent-consume and kafka-consume", function()
  local host, pid

  local function get(name)
    local status, body = host:get("/", { Host = name .. ".test" })
    assert.equal(200, status, body)
  end

  lazy_setup(function()
    local topic = helpers.create_topic(helpers.unique_name("share-both"), 1)
    local group = { mode = "manual", consumer_group_id = helpers.unique_name("share-both-group") }
    -- kafka-consume's default `latest` is not enforced, so it behaves as confluent-consume's `earliest`
    local kafka = helpers.route("kafka", topic, { consumer_group = group })
    kafka.plugins[1].name = "kafka-consume"
    host = helpers.start_host({ workers = 1, routes = {
      helpers.route("confluent", topic, { consumer_group = group }),
      kafka,
    } })
    pid = host:worker_pids()[1]
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("share a consumer when their consumers come out identical, and each plugin's configuration " ..
     "changes keep the consumers the other still uses", function()
    get("confluent")
    local shared = helpers.doorbells(pid)
    assert.equal(1, #shared)
    get("kafka")
    assert.same(shared, helpers.doorbells(pid), "one consumer for both plugins")

    -- Kong configures each plugin name on its own: kafka-consume's change must not close the consumer
    local _, plugins = host:admin("GET", "/plugins")
    local kafka_plugin
    for _, plugin in ipairs(plugins.data) do
      if plugin.name == "kafka-consume" then kafka_plugin = plugin end
    end
    assert.equal(200, (host:admin("PATCH", "/plugins/" .. kafka_plugin.id, { config = { max_records = 7 } })))
    get("kafka")
    get("confluent")
    assert.same(shared, helpers.doorbells(pid), "kept through kafka-consume's configure phase")
    assert.equal(204, (host:admin("DELETE", "/plugins/" .. kafka_plugin.id)))
    get("confluent")
    assert.same(shared, helpers.doorbells(pid), "kept while confluent-consume still uses it")
  end)
end)
