-- The demo page (examples/web) in a real browser: Debian chromium, headless, driven by playwright-core
-- through spec/browser/sse_browser_test.mjs. The page's EventSource reads a 3-partition topic; halfway
-- the gateway reloads (every worker exits, so every stream ends), the browser reconnects on its own with
-- Last-Event-ID, and must end up with every record exactly once, in order per partition.
--
-- Needs chromium (/usr/bin/chromium, or $CHROMIUM), node, and spec/browser/node_modules
-- (scripts/install-deps.sh installs all three). Without them the spec fails; it never skips.
local helpers = require "spec.helpers.host"
local cjson = require "cjson"


local CHROMIUM = os.getenv("CHROMIUM") or "/usr/bin/chromium"
local BROWSER_DIR = helpers.ROOT .. "/spec/browser"
local PARTITIONS = 3
local PER_PHASE = 30
local TIMEOUT_MS = 90000


local read_file = helpers.read_file


local function last_json_line(text, what)
  local line = (text or ""):match("([^\n]+)\n*$")
  local decoded = line and cjson.decode(line)
  assert(type(decoded) == "table", what .. " printed no JSON: " .. tostring(text))
  return decoded
end


-- Every partition's offsets in arrival order must be 0, 1, 2, ...: no gap, no duplicate, no reordering.
local function assert_contiguous(received, topic, per_partition)
  local offsets = {}
  for p = 0, PARTITIONS - 1 do
    offsets[p] = {}
  end
  for i, r in ipairs(received) do
    assert.equal(topic, r.topic, "event " .. i .. " topic")
    assert.is_not_nil(offsets[r.partition], "event " .. i .. " partition " .. tostring(r.partition))
    assert.matches("^%x+%-[%d.]+$", r.id, "event " .. i .. " has a cursor id")
    table.insert(offsets[r.partition], r.offset)
  end
  for p = 0, PARTITIONS - 1 do
    local expected = {}
    for i = 1, per_partition do
      expected[i] = i - 1
    end
    assert.same(expected, offsets[p], "partition " .. p .. " offsets, in arrival order")
  end
end


describe("the demo page in headless chromium", function()
  local host, topic

  lazy_setup(function()
    assert((helpers.sh("test -x " .. CHROMIUM)),
           "this spec needs chromium at " .. CHROMIUM .. " (apt-get install chromium, or " ..
           "scripts/install-deps.sh; or set CHROMIUM)")
    assert((helpers.sh("command -v node")), "this spec needs node (Node.js 20+)")
    assert((helpers.sh("test -d " .. BROWSER_DIR .. "/node_modules/playwright-core")),
           "this spec needs playwright-core: (cd spec/browser && npm ci), or scripts/install-deps.sh")
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

    local base = string.format("%s/browser-%d", helpers.RUN_DIR, host.proxy_port)
    local phase_file, out_file, rc_file = base .. ".phase1.json", base .. ".out", base .. ".rc"
    for _, f in ipairs({ phase_file, out_file, rc_file }) do
      os.remove(f)
    end
    local url = string.format("http://127.0.0.1:%d/demo/index.html?stream=/stream", host.proxy_port)
    -- In the background: the spec watches the phase file, then the exit status file.
    local pipe = assert(io.popen(string.format(
      "node %s/sse_browser_test.mjs --url '%s' --expect %d --phase-file %s --expect2 %d " ..
      "--timeout-ms %d --settle-ms 1500 --chromium %s >%s 2>&1; echo $? >%s",
      BROWSER_DIR, url, PER_PHASE, phase_file, 2 * PER_PHASE, TIMEOUT_MS, CHROMIUM, out_file, rc_file)))
    local finished = false
    local function wait_for(path)
      local deadline = helpers.now() + TIMEOUT_MS / 1000 + 15
      while helpers.now() < deadline do
        if read_file(path) then
          return true
        end
        if read_file(rc_file) then
          return false
        end
        helpers.sleep(0.1)  -- the poll interval of this wait-with-deadline
      end
      return false
    end
    local function finish()
      if not finished then
        finished = true
        pipe:read("*a")
        pipe:close()  -- waits for the script, whose own --timeout-ms bounds it
      end
      return read_file(out_file) or "", tonumber(read_file(rc_file) or "")
    end

    -- phase 1: the first records arrive
    if not wait_for(phase_file) then
      local output, rc = finish()
      error("the browser did not receive the first " .. PER_PHASE .. " records (exit " .. tostring(rc) ..
            "): " .. output)
    end
    local phase1 = last_json_line(read_file(phase_file), "phase 1")
    assert.equal(PER_PHASE, #phase1.received)
    assert.equal(1, phase1.opens)
    assert_contiguous(phase1.received, topic, PER_PHASE / PARTITIONS)

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
    wait_for(rc_file)
    local text, rc = finish()
    assert(rc == 0, "the browser script failed (exit " .. tostring(rc) .. "): " .. text)
    local final = last_json_line(text, "the browser script")
    assert.equal(2 * PER_PHASE, #final.received, "records received in the browser")
    assert_contiguous(final.received, topic, 2 * PER_PHASE / PARTITIONS)
    assert.is_true(final.opens >= 2, "the page reconnected (opens = " .. tostring(final.opens) .. ")")
    assert.same({}, final.serverErrors, "no error events")
  end)
end)
