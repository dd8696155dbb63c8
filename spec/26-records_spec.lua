-- Edge-case records have one documented representation in both modes, and none of them is an error:
-- empty keys and values, tombstones with and without a key, null and binary header values, a repeated
-- header name, a header name that is not UTF-8, and a record larger than max_bytes, buffer_max_bytes and
-- librdkafka's max.partition.fetch.bytes (1 MiB).
local helpers = require "spec.helpers.host"
local cjson = require "cjson.safe"


local null = cjson.null
local BIG = 2000000
local LIMITS = { max_bytes = 65536, buffer_max_bytes = 65536, auto_offset_reset = "earliest" }


local function route(name, topic, overrides)
  local config = helpers.plugin_config(topic, LIMITS)
  for k, v in pairs(overrides or {}) do
    config[k] = v
  end
  return { name = name, hosts = { name .. ".test" }, plugins = { { name = "confluent-consume", config = config } } }
end


describe("edge-case records", function()
  local host, topic

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("records"), 1)
    local one = function(args) helpers.kafka_tool("produce-one", "--topic " .. topic .. " " .. args) end
    one("--key '' --value ''")                                              -- 0: empty key and value
    one("--null-value")                                                     -- 1: no key, no value
    one("--key k --null-value")                                             -- 2: a tombstone
    one("--value h --header dup=first --header dup=second --header-hex bin=00ff0a --header-null none")
    one("--value n --header-raw ff6e616d65=76")                             -- 4: header name 0xff "name"
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 1 --size " .. BIG ..
                       " --config message.max.bytes=3000000")               -- 5: 2 MB of JSON
    one("--value after")                                                    -- 6
    host = helpers.start_host({ workers = 1, routes = {
      route("noop", topic),
      route("raw", topic),
      route("json", topic, { message_deserializer = "json" }),
      route("sse", topic, { mode = "server-sent-events" }),
    } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  -- Every record of the route by GETs; also how many records came with the big one.
  local function drain(name)
    local records, big_company = {}, nil
    local deadline = helpers.now() + 30
    while #records < 7 and helpers.now() < deadline do
      local status, body, _, json = host:get("/?wait=1000", { Host = name .. ".test" })
      assert.equal(200, status, body)
      assert.is_table(json, body)
      local got = helpers.records_of(json)
      for _, r in ipairs(got) do
        records[#records + 1] = r.record
        if r.offset == 5 then big_company = #got end
        assert.is_true(#body <= LIMITS.max_bytes + 1000 or #got == 1, "only a single record exceeds max_bytes")
      end
    end
    assert.equal(7, #records)
    return records, big_company
  end

  local function check_common(records)
    for i, r in ipairs(records) do
      assert.equal(i - 1, r.offset)
      assert.is_number(r.timestamp)
    end
    assert.equal("", records[1].key)
    assert.equal(null, records[2].key)
    assert.equal(null, records[2].value)
    assert.equal("k", records[3].key)
    assert.equal(null, records[3].value)
    -- a repeated name appears once per header in the object, in record order; parsers keep the last
    assert.same({ dup = "second", bin = { base64 = "AP8K" }, none = null }, records[4].headers)
    assert.same({ ["\239\191\189name"] = "v" }, records[5].headers, "U+FFFD for a byte that is not UTF-8")
  end

  it("http-get, noop: each has its representation, the big record comes alone", function()
    local records, big_company = drain("noop")
    check_common(records)
    assert.equal("", records[1].value)
    assert.is_nil(records[1].value_error)
    assert.equal(1, big_company, "a record above max_bytes is returned alone")
    assert.is_string(records[6].value)
    assert.is_true(#records[6].value >= BIG)
    assert.equal("after", records[7].value)
  end)

  it("http-get, json: an empty value is not JSON and says so; null stays null", function()
    local records = drain("json")
    check_common(records)
    assert.equal("", records[1].value)
    assert.equal("not valid JSON", records[1].value_error)
    assert.is_nil(records[3].value_error)
    assert.equal(0, records[6].value.seq)
    assert.equal("after", records[7].value)
    assert.equal("not valid JSON", records[7].value_error)
  end)

  it("the raw http-get body names a repeated header once, with its last value", function()
    local bodies = {}
    local deadline = helpers.now() + 20
    repeat
      local status, body = host:get("/?max_records=4&wait=1000", { Host = "raw.test" })
      assert.equal(200, status)
      bodies[#bodies + 1] = body
    until body:find('"offset":3', 1, true) or helpers.now() > deadline
    local raw = table.concat(bodies)
    assert.matches('"dup":"second"', raw, 1, true)
    assert.is_nil(raw:find('"dup":"first"', 1, true))
  end)

  it("server-sent events: the same records, one event each, the big one in one data line", function()
    local conn = host:connect(30)
    assert.equal(200, (conn:send_request("GET", "/?from=earliest", { Host = "sse.test", Accept = "text/event-stream" })))
    local events, why = conn:read_events(7, 30)
    conn:close()
    assert.equal("count", why)
    local records = {}
    for _, e in ipairs(events) do
      if e.data and (e.event or "message") == "message" then
        assert.is_nil(e.data:find("\n", 1, true))
        records[#records + 1] = assert(cjson.decode(e.data))
        assert.matches("^%x+%-" .. #records .. "$", e.id)
      end
    end
    assert.equal(7, #records)
    check_common(records)
    assert.equal("", records[1].value)
    assert.is_true(#records[6].value >= BIG)
    assert.equal("after", records[7].value)
  end)
end)
