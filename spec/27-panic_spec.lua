-- Panics never cross the FFI: a panic inside a native call comes back to Lua as `nil, "internal error: …"`
-- (a string, so the answer is a clean JSON 500 and the log names the panic), a panic on a consumer thread
-- ends that consumer with the panic logged, and the same nginx worker keeps serving records either way.
-- Runs against the fault-injection build of the native module (`make fault-injection`), whose one extra
-- export `inject_panic` panics on purpose; the production build has no such export (checked below).
local helpers = require "spec.helpers.host"


local FAULT_SO = helpers.native_module_path(true)
local PRODUCTION_SO = helpers.native_module_path(false)
local LOADER = "luaopen_confluent_consume_native"


local function load_module(path)
  local open = assert(package.loadlib(path, LOADER))
  return open()
end


local function assert_built()
  local file = io.open(FAULT_SO, "r")
  assert(file, FAULT_SO .. " is missing: run `make fault-injection`")
  file:close()
end


describe("native module under LuaJIT", function()
  it("answers a panicking call with nil and a string, and keeps working", function()
    assert_built()
    local native = load_module(FAULT_SO)
    for _ = 1, 3 do
      local ok, err = native.inject_panic("call", "deliberate panic (unit)")
      assert.is_nil(ok)
      assert.equal("string", type(err))
      assert.matches("^internal error: deliberate panic %(unit%) %(at src/fault%.rs:%d+%)$", err)
    end
    local none, err = native.inject_panic("elsewhere", "x")
    assert.is_nil(none)
    assert.equal("unknown panic site 'elsewhere'", err)
    local limits = native.parse_query("wait=5", { mode = "http-get", max_wait = 10, max_records = 1,
                                                  max_bytes = 1 })
    assert.equal(5, limits.wait)
  end)

  it("has no inject_panic in the production build", function()
    local native = load_module(PRODUCTION_SO)
    assert.is_nil(native.inject_panic)
    assert.is_function(native.parse_query)
  end)
end)


describe("a panic in a running gateway", function()
  local host, topic, worker
  local RECORDS = "records.test"

  lazy_setup(function()
    assert_built()
    topic = helpers.create_topic(helpers.unique_name("panic"), 1)
    local config = helpers.plugin_config(topic, { auto_offset_reset = "earliest" })
    local function panic_route(name, site, message)
      return { name = name, hosts = { name .. ".test" },
               plugins = { { name = "cc-panic", config = { site = site, message = message } } } }
    end
    host = helpers.start_host({
      workers = 1,
      fault_injection = true,
      fixture_plugins = { "cc-panic" },
      routes = {
        { name = "records", hosts = { RECORDS }, plugins = { { name = "confluent-consume", config = config } } },
        panic_route("call", "call", "deliberate panic (spec 27)"),
        panic_route("thread", "consumer", "deliberate consumer panic (spec 27)"),
      },
    })
  end)

  lazy_teardown(function()
    if host then host:stop() end
  end)

  -- Produces `count` records and GETs until every one of them arrived (duplicates allowed); returns the
  -- worker pids that answered.
  local function produce_and_collect(count)
    local before = helpers.kafka_tool("watermarks", "--topic " .. topic)
    helpers.kafka_tool("produce", "--topic " .. topic .. " --count " .. count)
    local high = before["0"].high
    local wanted, missing = {}, count
    for offset = high, high + count - 1 do
      wanted[offset] = true
    end
    local pids = {}
    local deadline = helpers.now() + 30
    while missing > 0 and helpers.now() < deadline do
      local status, body, headers, json = host:get("/messages?wait=1000", { Host = RECORDS })
      if status == 200 then
        pids[host:worker_pid_of(headers)] = true
        for _, r in ipairs(helpers.records_of(json)) do
          if wanted[r.offset] then
            wanted[r.offset] = nil
            missing = missing - 1
          end
        end
      else
        -- a consumer rebuilt after a panic may answer 503 until it is ready again
        assert.is_true(status == 503 or status == 504, status .. " " .. body)
        helpers.sleep(0.2)  -- paces the client's retries while the consumer is rebuilt
      end
    end
    assert.equal(0, missing, "records not delivered")
    return pids
  end

  local function only_key(set)
    local keys = {}
    for k in pairs(set) do keys[#keys + 1] = k end
    assert.equal(1, #keys)
    return tonumber(keys[1])
  end

  local function assert_clean_log()
    local log = host:error_log()
    assert.is_nil(log:find("unknown reason", 1, true), "a Lua error that was not a string")
    assert.is_nil(log:find("traceback", 1, true))
    assert.is_nil(log:find("exited on signal", 1, true), "a worker died")
  end

  it("answers a panicking native call with a clean JSON 500 and keeps serving on the same worker", function()
    worker = only_key(produce_and_collect(5))
    assert.same({ worker }, host:worker_pids())
    for _ = 1, 3 do
      local status, body, headers, json = host:get("/", { Host = "call.test" })
      assert.equal(500, status, body)
      assert.matches("application/json", headers["content-type"], 1, true)
      assert.matches("^internal error: deliberate panic %(spec 27%) %(at src/fault%.rs:%d+%)$", json.message)
      assert.equal(worker, host:worker_pid_of(headers))
    end
    assert.matches("native call failed: internal error: deliberate panic (spec 27)", host:error_log(), 1, true)
    assert.equal(worker, only_key(produce_and_collect(5)))
    assert.same({ worker }, host:worker_pids())
    assert_clean_log()
  end)

  it("ends a consumer whose thread panicked, logs why, and serves from a new one", function()
    worker = worker or only_key(produce_and_collect(1))
    local status, body = host:get("/", { Host = "thread.test" })
    assert.equal(200, status, body)
    local logged = "the consumer thread panicked: deliberate consumer panic (spec 27) (at src/fault.rs:"
    local deadline = helpers.now() + 15
    while not host:error_log():find(logged, 1, true) and helpers.now() < deadline do
      -- a GET keeps the worker busy with the consumer, whose log is written when it ends
      host:get("/messages?wait=200", { Host = RECORDS })
    end
    assert.matches(logged, host:error_log(), 1, true)
    assert.equal(worker, only_key(produce_and_collect(5)))
    assert.same({ worker }, host:worker_pids())
    assert_clean_log()
  end)
end)
