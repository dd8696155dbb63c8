-- http-get mode end to end: the real broker, the real nginx, the plugin as Kong loads it.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local wait = require "spec.helpers.wait"


local function drain(host, path, headers)
  -- Successive GETs on one keep-alive connection until a response has no records. Each GET long-polls
  -- (1 s unless the path says otherwise): partitions are fetched independently, so a GET without a wait
  -- can come back empty while another partition's records are still on their way.
  if not path:find("wait=", 1, true) then
    path = path .. (path:find("?", 1, true) and "&" or "?") .. "wait=1000"
  end
  local conn = host:connect()
  local all = {}
  for _ = 1, 1000 do
    local status, body = conn:request("GET", path, headers)
    assert.equal(200, status, body)
    local records = helpers.records_of(require("cjson").decode(body))
    if #records == 0 then break end
    for _, r in ipairs(records) do all[#all + 1] = r end
  end
  conn:close()
  return all
end


describe("http-get", function()
  local host
  local routes = {}
  local topics = {}

  -- One host serves every scenario of this file, each on its own route, topic and consumer group.
  local function route(name, topic_list, overrides)
    routes[#routes + 1] = {
      name = name,
      hosts = { name .. ".test" },
      paths = { "/messages" },
      plugins = { { name = "confluent-consume", config = helpers.plugin_config(topic_list, overrides) } },
    }
    return { Host = name .. ".test" }
  end

  local H = {}

  lazy_setup(function()
    topics.empty = helpers.create_topic(helpers.unique_name("empty"), 3)
    topics.three = helpers.create_topic(helpers.unique_name("three"), 3)
    topics.auto = helpers.create_topic(helpers.unique_name("auto"), 1)
    topics.off = helpers.create_topic(helpers.unique_name("off"), 1)
    topics.marks = helpers.create_topic(helpers.unique_name("marks"), 2)
    topics.latest = helpers.create_topic(helpers.unique_name("latest"), 1)
    topics.earliest = topics.latest
    topics.formats = helpers.create_topic(helpers.unique_name("formats"), 1)
    topics.limits = helpers.create_topic(helpers.unique_name("limits"), 1)
    topics.codecs = helpers.create_topic(helpers.unique_name("codecs"), 1, helpers.MEMORY_BROKER_PORT)
    topics.poll = helpers.create_topic(helpers.unique_name("poll"), 1)
    -- Records that exist before any consumer: latest must not see them, earliest must.
    helpers.kafka_tool("produce", "--topic " .. topics.latest .. " --count 5 --format text")
    helpers.kafka_tool("produce", "--topic " .. topics.three .. " --count 300 --partitions 3")

    H.empty = route("empty", topics.empty, { auto_offset_reset = "earliest" })
    H.three = route("three", topics.three, { auto_offset_reset = "earliest", max_records = 50 })
    H.auto = route("auto", topics.auto, { auto_offset_reset = "earliest" })
    H.marks = route("marks", topics.marks, { auto_offset_reset = "earliest" })
    H.off = route("off", topics.off, { auto_offset_reset = "earliest", commit_strategy = "off" })
    H.latest = route("latest", topics.latest, { auto_offset_reset = "latest", enforce_latest_offset_reset = true })
    -- Kong's default: latest without enforce_latest_offset_reset behaves like earliest
    H.latest_compat = route("latest-compat", topics.latest, { auto_offset_reset = "latest" })
    H.earliest = route("earliest", topics.earliest, { auto_offset_reset = "earliest" })
    H.json = route("json", topics.formats, { auto_offset_reset = "earliest", message_deserializer = "json" })
    H.noop = route("noop", topics.formats, { auto_offset_reset = "earliest" })
    H.limits = route("limits", topics.limits, { auto_offset_reset = "earliest", max_records = 20,
                                                max_bytes = 100000, max_wait = 3000 })
    H.codecs = route("codecs", topics.codecs, { auto_offset_reset = "earliest" })
    routes[#routes].plugins[1].config.bootstrap_servers[1].port = helpers.MEMORY_BROKER_PORT
    H.poll = route("poll", topics.poll, { auto_offset_reset = "earliest" })
    topics.http10 = helpers.create_topic(helpers.unique_name("http10"), 1)
    H.http10 = route("http10", topics.http10, { auto_offset_reset = "earliest" })
    host = helpers.start_host({ workers = 2, routes = routes })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("answers an empty topic with an empty array per partition, quickly", function()
    local t0 = helpers.now()
    local status, body, headers, json = host:get("/messages", H.empty)
    assert.is_true(helpers.now() - t0 < 1, "first GET took " .. (helpers.now() - t0) .. " s")
    assert.equal(200, status, body)
    assert.matches("application/json", headers["content-type"], 1, true)
    for p = 0, 2 do
      local partition = json[topics.empty].partitions[tostring(p)]
      assert.same({}, partition.records)
      assert.equal(0, partition.high_watermark)
    end
    assert.matches('"records":[]', body, 1, true)
  end)

  it("gives each partition Kong's errcode 0, log_start_offset and last_stable_offset beside high_watermark",
     function()
    helpers.kafka_tool("produce", "--topic " .. topics.marks .. " --count 6 --partitions 2")
    local per_partition = { ["0"] = 0, ["1"] = 0 }
    for _, r in ipairs(drain(host, "/messages", H.marks)) do
      per_partition[tostring(r.partition)] = per_partition[tostring(r.partition)] + 1
    end
    assert.equal(6, per_partition["0"] + per_partition["1"])
    -- the last stable offset comes with librdkafka's statistics, once a second
    local partitions
    assert.truthy(proc.wait_until(function()
      local status, body, _, json = host:get("/messages", H.marks)
      assert.equal(200, status, body)
      partitions = json[topics.marks].partitions
      return partitions["0"].last_stable_offset == per_partition["0"] and
             partitions["1"].last_stable_offset == per_partition["1"]
    end, 5), "last_stable_offset reached the high watermark")
    for p, count in pairs(per_partition) do
      local partition = partitions[p]
      assert.same({}, partition.records)
      assert.equal(0, partition.errcode)
      assert.equal(0, partition.log_start_offset)
      assert.equal(count, partition.high_watermark)
      -- a topic without transactions: everything is stable
      assert.equal(partition.high_watermark, partition.last_stable_offset)
    end
  end)

  it("answers an HTTP/1.0 GET with 200, its records and a Content-Length, and commits them", function()
    helpers.kafka_tool("produce", "--topic " .. topics.http10 .. " --count 3 --format text")
    -- HTTP/1.0 cannot be chunked: lua-nginx-module buffers such an answer unless its length is set
    local function get10()
      local sock = require("socket").tcp()
      sock:settimeout(10)
      assert(sock:connect("127.0.0.1", host.proxy_port))
      assert(sock:send("GET /messages?wait=2000 HTTP/1.0\r\nHost: http10.test\r\n\r\n"))
      local answer = sock:receive("*a")
      sock:close()
      local head, body = answer:match("^(.-\r\n)\r\n(.*)$")
      return head, body
    end
    local head, body = get10()
    assert.matches("^HTTP/1%.1 200", head)  -- nginx answers with its own version
    assert.equal(#body, tonumber(head:lower():match("\r\ncontent%-length: (%d+)")))
    local records = helpers.records_of(require("cjson").decode(body))
    assert.equal(3, #records)
    -- committed: the next GET waits out its 2 s and finds nothing new
    head, body = get10()
    assert.matches("^HTTP/1%.1 200", head)  -- nginx answers with its own version
    assert.equal(0, #helpers.records_of(require("cjson").decode(body)))
  end)

  it("delivers every record of 3 partitions in partition order over one keep-alive connection", function()
    local records = drain(host, "/messages", H.three)
    assert.equal(300, #records)
    local next_offset, seqs = { [0] = 0, 0, 0 }, {}
    for _, r in ipairs(records) do
      assert.equal(next_offset[r.partition], r.offset)
      next_offset[r.partition] = r.offset + 1
      local value = require("cjson").decode(r.record.value)
      seqs[value.seq] = true
    end
    for seq = 0, 299 do
      assert.is_true(seqs[seq], "seq " .. seq .. " missing")
    end
  end)

  it("commits after delivery with commit_strategy=auto, never with off", function()
    helpers.kafka_tool("produce", "--topic " .. topics.auto .. " --count 10")
    helpers.kafka_tool("produce", "--topic " .. topics.off .. " --count 10")
    assert.equal(10, #drain(host, "/messages", H.auto))
    assert.equal(10, #drain(host, "/messages", H.off))
    local plugins = select(2, host:admin("GET", "/plugins"))
    local ids = {}
    for _, p in ipairs(plugins.data) do ids[p.route.id] = p.id end
    local routes_list = select(2, host:admin("GET", "/routes"))
    local group = {}
    for _, r in ipairs(routes_list.data) do group[r.name] = "kong-confluent-consume-" .. ids[r.id] end
    -- commits are asynchronous: wait for this one
    local committed
    assert.truthy(proc.wait_until(function()
      committed = helpers.kafka_tool("committed", "--topic " .. topics.auto .. " --group " .. group.auto)
      return committed["0"] == 10
    end, 5), "committed " .. tostring(committed and committed["0"]))
    local off = helpers.kafka_tool("committed", "--topic " .. topics.off .. " --group " .. group.off)
    assert.equal(require("cjson").null, off["0"])
  end)

  it("honours auto_offset_reset: enforced latest sees only records produced after the group had no " ..
     "offset; latest not enforced (Kong's default) and earliest see every record", function()
    local _, _, _, first = host:get("/messages", H.latest)
    assert.same({}, first[topics.latest].partitions["0"].records)
    helpers.kafka_tool("produce", "--topic " .. topics.latest .. " --count 3 --format text")
    local records = drain(host, "/messages?wait=2000", H.latest)
    assert.equal(3, #records)
    assert.same({ 5, 6, 7 }, { records[1].offset, records[2].offset, records[3].offset })
    local earliest = drain(host, "/messages", H.earliest)
    assert.equal(8, #earliest)
    assert.equal(0, earliest[1].offset)
    local compat = drain(host, "/messages", H.latest_compat)
    assert.equal(8, #compat)
    assert.equal(0, compat[1].offset)
  end)

  it("renders values per message_deserializer, never failing on bad JSON or bytes", function()
    local t = topics.formats
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --key k1 --value '{\"a\": [1, 2]}'")
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --value 'not json'")
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --key-hex ff00 --value-hex c328")
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --value-hex 6c696e65310a6c696e6532 " ..
                       "--header trace=abc --header-hex bin=80")
    helpers.kafka_tool("produce-one", "--topic " .. t .. " --key tomb --null-value")
    local json = drain(host, "/messages", H.json)
    assert.equal(5, #json)
    assert.same({ a = { 1, 2 } }, json[1].record.value)
    assert.equal("k1", json[1].record.key)
    assert.is_nil(json[1].record.value_error)
    assert.equal("not json", json[2].record.value)
    assert.equal("not valid JSON", json[2].record.value_error)
    assert.same({ base64 = "/wA=" }, json[3].record.key)
    assert.same({ base64 = "wyg=" }, json[3].record.value)
    assert.same({ trace = "abc", bin = { base64 = "gA==" } }, json[4].record.headers)
    assert.equal(require("cjson").null, json[5].record.value)
    local noop = drain(host, "/messages", H.noop)
    assert.equal(5, #noop)
    assert.equal('{"a": [1, 2]}', noop[1].record.value)
    assert.equal("line1\nline2", noop[4].record.value)
    assert.is_number(noop[1].record.timestamp)
  end)

  it("limits by max_records and max_bytes and rejects bad arguments", function()
    helpers.kafka_tool("produce", "--topic " .. topics.limits .. " --count 50 --size 200")
    local _, _, _, json = host:get("/messages?max_records=3&wait=2000", H.limits)
    assert.equal(3, #json[topics.limits].partitions["0"].records)
    _, _, _, json = host:get("/messages?max_bytes=1", H.limits)
    assert.equal(1, #json[topics.limits].partitions["0"].records, "one record even above max_bytes")
    _, _, _, json = host:get("/messages?max_bytes=700", H.limits)
    assert.equal(2, #json[topics.limits].partitions["0"].records)
    _, _, _, json = host:get("/messages", H.limits)
    assert.equal(20, #json[topics.limits].partitions["0"].records, "config max_records caps")
    local bad = {
      "wait=-1", "wait=abc", "wait=3001", "wait=1.5", "wait=1&wait=2", "max_records=0",
      "max_records=21", "max_bytes=0", "max_bytes=100001", "max_bytes=99999999999999999999",
      "wait=1e3", "wait=0x10", "wait=+5", "wait=%205", "wait=5%00", "wait=1;DROP", "max_records=",
      "wait=" .. string.rep("9", 5000),
    }
    for _, query in ipairs(bad) do
      local status, body, _, err = host:get("/messages?" .. query, H.limits)
      assert.equal(400, status, query .. ": " .. body)
      assert.is_string(err.message, query)
    end
  end)

  it("long-polls with wait: returns early when a record arrives, empty at the deadline", function()
    local t0 = helpers.now()
    local _, _, _, json = host:get("/messages?wait=800", H.poll)
    local elapsed = helpers.now() - t0
    assert.same({}, json[topics.poll].partitions["0"].records)
    assert.is_true(elapsed >= 0.75 and elapsed < 1.5, "waited " .. elapsed)
    -- A record is produced once the GET waits: the GET returns then, not at its 5 s deadline.
    local body_file = os.tmpname()
    local waiting = assert(io.popen(string.format(
      "curl -s -o %s -w '%%{time_total}' -H 'Host: poll.test' 'http://127.0.0.1:%d/messages?wait=5000'",
      body_file, host.proxy_port)))
    assert.truthy(wait.requests_read(host, "curl", 1, 5), "the GET is waiting")
    helpers.kafka_tool("produce-one", "--topic " .. topics.poll .. " --value late")
    elapsed = tonumber(waiting:read("*a"))
    waiting:close()
    local file = assert(io.open(body_file))
    json = require("cjson").decode(file:read("*a"))
    file:close()
    os.remove(body_file)
    assert.equal("late", json[topics.poll].partitions["0"].records[1].value)
    assert.is_true(elapsed < 2.5, "returned after " .. elapsed .. " s")
  end)

  it("reads gzip, snappy, lz4 and zstd batches", function()
    for _, codec in ipairs({ "gzip", "snappy", "lz4", "zstd" }) do
      helpers.kafka_tool("produce", "--topic " .. topics.codecs .. " --count 100 --compression " .. codec,
                         helpers.MEMORY_BROKER_PORT)
    end
    local records = drain(host, "/messages", H.codecs)
    assert.equal(400, #records)
    for i, r in ipairs(records) do
      assert.equal(i - 1, r.offset)
      assert.is_table(require("cjson").decode(r.record.value))
    end
  end)
end)
