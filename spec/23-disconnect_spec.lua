-- Clients that go away, configurations that change under open streams, and a broker that is not there
-- yet: nothing is committed for records a client did not get, nothing is lost, no thread or descriptor is
-- left behind, and service starts by itself once Kafka is reachable.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local cjson = require "cjson.safe"


local function committed(topic, group, port)
  return helpers.kafka_tool("committed", "--topic " .. topic .. " --group " .. group, port)
end


-- Sends a GET on a fresh raw connection and returns it unread.
local function send_get(host, path, host_header)
  local conn = host:connect()
  assert(conn.sock:send("GET " .. path .. " HTTP/1.1\r\nHost: " .. host_header .. "\r\n\r\n"))
  return conn
end


-- The body of a chunked response as received, or nil when it was cut short.
local function dechunk(raw)
  local parts, pos = {}, 1
  while true do
    local size_hex, data_start = raw:match("^(%x+)\r\n()", pos)
    if not size_hex then
      return nil
    end
    local size = tonumber(size_hex, 16)
    if size == 0 then
      return table.concat(parts)
    end
    if #raw < data_start + size + 1 then
      return nil
    end
    parts[#parts + 1] = raw:sub(data_start, data_start + size - 1)
    pos = data_start + size + 2
  end
end


local function offsets_of(records)
  local list = {}
  for i, r in ipairs(records) do
    list[i] = r.offset
  end
  return list
end


local function range(from, to)
  local list = {}
  for i = from, to do
    list[#list + 1] = i
  end
  return list
end


describe("http-get when the client goes away", function()
  local host, topic, group
  local H = "gone.test"

  before_each(function()
    topic = helpers.create_topic(helpers.unique_name("gone"), 1)
    group = helpers.unique_name("gone-group")
    host = helpers.start_host({ workers = 1, routes = {
      { name = "gone", hosts = { H }, plugins = { { name = "confluent-consume",
        config = helpers.plugin_config(topic, {
          auto_offset_reset = "earliest", max_bytes = 32 * 1024 * 1024, max_records = 100000,
          buffer_max_bytes = 64 * 1024 * 1024,
          consumer_group = { mode = "manual", consumer_group_id = group } }) } } },
    } })
    -- the consumer is ready before the clients below come and go
    assert.equal(200, (host:get("/", { Host = H })))
  end)

  after_each(function()
    if host then host:stop() end
  end)

  it("commits nothing for a long-poll left before its records arrived; the next GET gets them", function()
    local before = committed(topic, group)
    local conn = send_get(host, "/?wait=10000", H)
    helpers.sleep(0.5)
    conn:close()
    helpers.sleep(0.5)
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 5")
    -- long enough for a delivery to the closed socket and its commit to have happened, were there one
    helpers.sleep(2)
    assert.same(before, committed(topic, group), "nothing was committed for the records nobody received")
    local records = host:collect("/?wait=2000", H, 5)
    assert.same(range(0, 4), offsets_of(records))
    assert.truthy(proc.wait_until(function() return committed(topic, group)["0"] == 5 end, 10),
                  "the GET that delivered them committed them")
  end)

  it("serves again the records of a response its client left while it was being written", function()
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 100 --size 200000")
    -- the 20 MB answer cannot fit in the socket buffers, so the client leaves while it is written
    helpers.sleep(2)
    local conn = send_get(host, "/", H)
    conn.sock:shutdown("send")  -- with lua_check_client_abort on, nginx takes this as the client leaving
    conn.sock:settimeout(20)
    local received = conn.sock:receive("*a") or ""
    conn:close()
    local first = cjson.decode(dechunk(received:match("\r\n\r\n(.*)$") or "") or "")
    local got = first and helpers.records_of(first) or {}
    print(string.format("left while written: the client read %d bytes, %s", #received,
                        first and ("a whole answer of " .. #got .. " records") or "an incomplete answer"))
    local seen = {}
    for _, r in ipairs(got) do seen[r.offset] = true end
    for _, r in ipairs(host:collect("/?wait=1000", H, 100 - #got, 20)) do seen[r.offset] = true end
    local missing = {}
    for offset = 0, 99 do
      if not seen[offset] then missing[#missing + 1] = offset end
    end
    assert.same({}, missing, "every record reached a client")
  end)
end)


describe("http-get without lua_check_client_abort", function()
  local host, topic, group
  local H = "noabort.test"

  lazy_setup(function()
    topic = helpers.create_topic(helpers.unique_name("noabort"), 1)
    group = helpers.unique_name("noabort-group")
    host = helpers.start_host({ workers = 1, routes = {
      { name = "noabort", hosts = { H }, plugins = { { name = "confluent-consume",
        config = helpers.plugin_config(topic, { auto_offset_reset = "earliest",
          consumer_group = { mode = "manual", consumer_group_id = group } }) } } },
    } })
    -- as Kong's default nginx template leaves it
    local conf = host.prefix .. "/nginx.conf"
    assert(helpers.sh("sed -i 's/lua_check_client_abort on;/lua_check_client_abort off;/' " .. conf))
    assert(helpers.sh("grep -q 'lua_check_client_abort off;' " .. conf))
    local old = host:worker_pids()[1]
    assert(helpers.sh(helpers.ROOT .. "/host/bin/kong-host reload --prefix " .. host.prefix))
    assert.truthy(proc.wait_until(function()
      local pids = host:worker_pids()
      return #pids == 1 and pids[1] ~= old
    end, 15), "the reloaded worker replaced the old one")
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  it("keeps serving, and says once per worker what a disconnect during a long-poll costs", function()
    assert.equal(200, (host:get("/", { Host = H })))
    for _ = 1, 2 do
      send_get(host, "/?wait=100", H):close()
    end
    -- what the warning is about: a long-poll whose client left is answered into the closed socket (the
    -- kernel accepts the write), so the records it took count as delivered and are committed
    send_get(host, "/?wait=10000", H):close()
    helpers.sleep(0.5)
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 3")
    assert.truthy(proc.wait_until(function() return committed(topic, group)["0"] == 3 end, 10))
    assert.equal(0, #host:collect("/?wait=500", H, 1, 1))
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count 2")
    assert.same({ 3, 4 }, offsets_of(host:collect("/?wait=2000", H, 2, 10)), "and goes on serving")
    local _, warnings = host:error_log():gsub("set lua_check_client_abort on", "")
    assert.equal(1, warnings)
  end)
end)
