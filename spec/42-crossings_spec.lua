-- How often a request calls into the native module (each call crosses from LuaJIT into Rust): a
-- steady-state GET makes two calls (its read, its commit), a stream one per pass of its loop (its
-- read), a cursor read within the live records one (its read, which parses the cursor, checks it
-- against the live records and formats the next; two with a query string the worker has not parsed
-- yet, as a new cursor is). The host loads the cc-crossings test plugin, which counts every call of the
-- native module and its handles made while serving a request, and answers the counts on a route of its
-- own.
local helpers = require "spec.helpers.host"
local cjson = require "cjson"


local function produce(topic, count)
  return helpers.kafka_tool("produce", "--topic " .. topic .. " --count " .. count .. " --partitions 2")
end


-- The names of a count table, sorted.
local function names(counts)
  local list = {}
  for name in pairs(counts or {}) do
    list[#list + 1] = name
  end
  table.sort(list)
  return list
end


-- A message function that marks every record it saw.
local FX_TAG = "return function(m) m.value = 'fx:' .. tostring(m.value) return m end"


describe("native calls per request", function()
  local host, get_topic, sse_topic

  -- the calls the requests made since the last look, by name (the doorbell timers' apart)
  local function crossings()
    local status, body = host:get("/", { Host = "crossings.test" })
    assert.equal(200, status)
    return (cjson.decode(body).access) or {}
  end

  lazy_setup(function()
    get_topic = helpers.create_topic(helpers.unique_name("crossget"), 2)
    sse_topic = helpers.create_topic(helpers.unique_name("crosssse"), 2)
    produce(get_topic, 60)
    host = helpers.start_host({
      workers = 1,
      fixture_plugins = { "cc-crossings" },
      routes = {
        helpers.route("get", get_topic, { auto_offset_reset = "earliest" }),
        helpers.route("sse", sse_topic, { mode = "server-sent-events" }),
        helpers.route("fx", get_topic, { auto_offset_reset = "earliest",
                                         message_by_lua_functions = { FX_TAG } }),
        { name = "crossings", hosts = { "crossings.test" }, plugins = { { name = "cc-crossings", config = {} } } },
      },
    })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  -- Reads on from `first` (a cursor at the live edge, 10 records produced after it) until the route's live
  -- consumer holds all 10, forgets the crossings so far, then reads 5 and 5 again from `first`: two cursor
  -- reads within the live records. `read(path)` answers the record count and the next cursor.
  local function read_twice_within_live(read, first)
    local found, cursor = 0, first
    while found < 10 do
      local count
      count, cursor = read("/?max_records=5&wait=5000&cursor=" .. cursor)
      found = found + count
    end
    crossings()
    local count, second = read("/?max_records=5&wait=5000&cursor=" .. first)
    assert.equal(5, count)
    assert.equal(5, (read("/?max_records=5&wait=5000&cursor=" .. second)))
  end

  it("makes two per GET once the route is warm: the claim's read (take) and the commit", function()
    local conn = host:connect(30)
    local function get()
      local status, body = conn:request("GET", "/?max_records=5&wait=5000", { Host = "get.test" })
      assert.equal(200, status)
      return #helpers.records_of(cjson.decode(body))
    end
    assert.equal(5, get())  -- the first GET builds the handle and waits for it
    crossings()
    for _ = 1, 6 do
      assert.equal(5, get())
    end
    conn:close()
    assert.same({ commit = 6, take = 6 }, crossings())
  end)

  it("makes one per pass of a stream's loop: its read, which also tells the Kafka state", function()
    local conn = host:connect(30)
    local status = conn:send_request("GET", "/?from=latest", { Host = "sse.test", Accept = "text/event-stream" })
    assert.equal(200, status)
    -- the stream is live once a record produced now reaches it
    produce(sse_topic, 1)
    local events, why = conn:read_events(1, 20)
    assert.equal("count", why)
    crossings()
    local records = 5
    for i = 1, records do
      produce(sse_topic, 1)
      events, why = conn:read_events(1, 20)
      assert.equal("count", why, "record " .. i)
    end
    conn:close()
    local counts = crossings()
    assert.same({ "read" }, names(counts))
    -- per record one read that returns it and one that finds nothing more before the stream waits
    -- (a ring for something else, e.g. a log line, adds a pass, so a little slack)
    assert.is_true(counts.read <= 2 * records + 2, "reads: " .. counts.read)
  end)

  it("makes one per cursor read within the live records (its read), and a plain GET after them still two",
     function()
    local conn = host:connect(30)
    local function read(path)
      local status, body, headers = conn:request("GET", path, { Host = "get.test" })
      assert.equal(200, status)
      return #helpers.records_of(cjson.decode(body)), headers["confluent-consume-cursor"]
    end
    local _, first = read("/?max_records=5&wait=100&from=latest")
    assert.is_string(first)
    produce(get_topic, 10)
    -- the route's live consumer holds the 10 records once cursor reads have found them all
    read_twice_within_live(read, first)
    -- the ready live handle's partitions are known; the read parses the cursor, finds it within what the
    -- live handle holds and formats the next one
    assert.same({ take = 2 }, crossings())
    -- the query of the first test's GETs, parsed then
    assert.equal(5, (read("/?max_records=5&wait=5000")))
    assert.same({ commit = 1, take = 1 }, crossings())
    conn:close()
  end)
  it("makes one per cursor read through message functions within the live records (its read, record by "
     .. "record), and more for a cursor below them (the catch-up)", function()
    local conn = host:connect(30)
    local function read(path)
      local status, body, headers = conn:request("GET", path, { Host = "fx.test" })
      assert.equal(200, status, body)
      local records = helpers.records_of(cjson.decode(body))
      for _, r in ipairs(records) do
        assert.matches("^fx:", r.record.value)
      end
      return #records, headers["confluent-consume-cursor"]
    end
    local _, first = read("/?max_records=5&wait=100&from=latest")
    produce(get_topic, 10)
    read_twice_within_live(read, first)
    assert.same({ records = 2 }, crossings())
    -- offset 0 of every partition lies below what the live handle (started at the live edge) holds
    local oldest = first:match("^(%x+)%-") .. "-0.0"
    assert.equal(5, (read("/?max_records=5&wait=5000&cursor=" .. oldest)))
    local counts = crossings()
    -- the live read that finds the cursor below its records, the cursor parsed for the replay handle's
    -- start, the handle made, asked until ready (state, as often as it is still starting; partitions),
    -- read and closed; and the new query string parsed
    assert.same({ "close", "new_consumer", "parse_cursor", "parse_query", "partitions", "records", "state" },
                names(counts))
    assert.same({ 1, 1, 1, 1, 1, 2 }, { counts.close, counts.new_consumer, counts.parse_cursor,
                                        counts.parse_query, counts.partitions, counts.records })
    conn:close()
  end)
end)
