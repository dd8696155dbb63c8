-- The demo page (examples/web) in a real browser: Debian chromium, headless, driven by playwright-core
-- through spec/browser/sse_browser_test.mjs, for spec/16 (server-sent-events) and spec/36 (websocket).
--
-- Needs chromium (/usr/bin/chromium, or $CHROMIUM), node, and spec/browser/node_modules
-- (scripts/install-deps.sh installs all three). Without them the specs fail; they never skip.
local helpers = require "spec.helpers.host"
local cjson = require "cjson"
-- busted's assert (with assert.equal and the rest) is a global of the spec files only
local assert = require "luassert"


local _M = {}


local CHROMIUM = os.getenv("CHROMIUM") or "/usr/bin/chromium"
local BROWSER_DIR = helpers.ROOT .. "/spec/browser"
local read_file = helpers.read_file


-- Fails, saying what to install, when the browser, node or playwright-core is missing.
function _M.require_tools()
  assert((helpers.sh("test -x " .. CHROMIUM)),
         "this spec needs chromium at " .. CHROMIUM .. " (apt-get install chromium, or " ..
         "scripts/install-deps.sh; or set CHROMIUM)")
  assert((helpers.sh("command -v node")), "this spec needs node (Node.js 20+)")
  assert((helpers.sh("test -d " .. BROWSER_DIR .. "/node_modules/playwright-core")),
         "this spec needs playwright-core: (cd spec/browser && npm ci), or scripts/install-deps.sh")
end


-- The last line of `text`, decoded as JSON; `what` names who printed it.
function _M.last_json_line(text, what)
  local line = (text or ""):match("([^\n]+)\n*$")
  local decoded = line and cjson.decode(line)
  assert(type(decoded) == "table", what .. " printed no JSON: " .. tostring(text))
  return decoded
end


-- Every partition's offsets in arrival order must be 0, 1, 2, ..., per_partition - 1: no gap, no
-- duplicate, no reordering. `received` is the page's window.received.
function _M.assert_contiguous(received, topic, partitions, per_partition)
  local offsets = {}
  for p = 0, partitions - 1 do
    offsets[p] = {}
  end
  for i, r in ipairs(received) do
    assert.equal(topic, r.topic, "record " .. i .. " topic")
    assert.is_not_nil(offsets[r.partition], "record " .. i .. " partition " .. tostring(r.partition))
    assert.matches("^%x+%-[%d.]+$", r.id, "record " .. i .. " has a cursor")
    table.insert(offsets[r.partition], r.offset)
  end
  for p = 0, partitions - 1 do
    local expected = {}
    for i = 1, per_partition do
      expected[i] = i - 1
    end
    assert.same(expected, offsets[p], "partition " .. p .. " offsets, in arrival order")
  end
end


local Session = {}
Session.__index = Session


-- Opens `url` in the browser, in the background, waiting for `expect` records (and, with `expect2`,
-- a phase file once the first `expect` arrived, then `expect2`); see sse_browser_test.mjs. `name` keeps
-- the files of concurrent sessions apart.
function _M.start(name, url, expect, opts)
  opts = opts or {}
  local base = string.format("%s/browser-%s", helpers.RUN_DIR, name)
  local self = setmetatable({ phase_file = base .. ".phase1.json", out_file = base .. ".out",
                              rc_file = base .. ".rc", timeout_ms = opts.timeout_ms or 90000 }, Session)
  for _, f in ipairs({ self.phase_file, self.out_file, self.rc_file }) do
    os.remove(f)
  end
  local phases = opts.expect2 and string.format("--phase-file %s --expect2 %d ", self.phase_file, opts.expect2)
                 or ""
  self.pipe = assert(io.popen(string.format(
    "node %s/sse_browser_test.mjs --url '%s' --expect %d %s--timeout-ms %d --settle-ms %d --chromium %s " ..
    ">%s 2>&1; echo $? >%s", BROWSER_DIR, url, expect, phases, self.timeout_ms, opts.settle_ms or 1500,
    CHROMIUM, self.out_file, self.rc_file)))
  return self
end


-- Waits until `path` exists (true), or the script ended or timed out first (false).
function Session:wait_for(path)
  local deadline = helpers.now() + self.timeout_ms / 1000 + 15
  while helpers.now() < deadline do
    if read_file(path) then
      return true
    end
    if read_file(self.rc_file) then
      return false
    end
    helpers.sleep(0.1)  -- the poll interval of this wait-with-deadline
  end
  return false
end


-- Waits for the first phase; returns its snapshot, or fails with the script's output.
function Session:phase1(what)
  if not self:wait_for(self.phase_file) then
    local output, rc = self:finish()
    error("the browser did not receive " .. what .. " (exit " .. tostring(rc) .. "): " .. output)
  end
  return _M.last_json_line(read_file(self.phase_file), "phase 1")
end


-- Waits for the script to end; returns its output and exit status.
function Session:finish()
  if not self.finished then
    self.finished = true
    self:wait_for(self.rc_file)
    self.pipe:read("*a")
    self.pipe:close()  -- waits for the script, whose own --timeout-ms bounds it
  end
  return read_file(self.out_file) or "", tonumber(read_file(self.rc_file) or "")
end


-- Waits for the script to end successfully; returns what it printed, decoded.
function Session:result()
  local text, rc = self:finish()
  assert(rc == 0, "the browser script failed (exit " .. tostring(rc) .. "): " .. text)
  return _M.last_json_line(text, "the browser script")
end


return _M
