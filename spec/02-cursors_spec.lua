-- Unit tests of the node-wide claim/settle logic, with a fake shared dict and a fake native handle.
package.path = "kong-plugin/?.lua;" .. package.path


local function fake_dict()
  local data = {}
  return {
    data = data,
    get = function(_, k) return data[k] end,
    set = function(_, k, v) data[k] = v; return true end,
    add = function(_, k, v)
      if data[k] ~= nil then return false, "exists" end
      data[k] = v
      return true
    end,
    delete = function(_, k) data[k] = nil end,
    incr = function(_, k, v, init)
      data[k] = (data[k] or init) + v
      return data[k]
    end,
  }
end


-- The pid of a process that has exited (and been reaped).
local function dead_pid()
  local pipe = assert(io.popen("sh -c 'echo $$'"))
  local pid = tonumber(pipe:read("*l"))
  pipe:close()
  return pid
end


-- A handle whose partitions hold offsets [0, size) each. As the native take does, it picks the records,
-- calls `on_selected`, then renders; `rendered(dict)` (optional) sees the dict at the moment of rendering.
local function fake_handle(sizes, rendered)
  return {
    take = function(_, cursors, max_records, _, on_selected)
      local next_cursors, count = {}, 0
      for i, size in ipairs(sizes) do
        local from = cursors[i]
        local n = math.max(0, math.min(size - from, max_records - count))
        next_cursors[i] = from + n
        count = count + n
      end
      on_selected(next_cursors, count)
      if rendered then
        rendered()
      end
      return "body", next_cursors, count, false
    end,
  }
end


describe("cursors", function()
  local cursors, dict, clock, pid

  before_each(function()
    dict, clock, pid = fake_dict(), 1000, 1  -- pid 1 always exists
    _G.kong = {}
    _G.ngx = {
      shared = { confluent_consume = dict },
      now = function() return clock end,
      sleep = function() end,
      worker = { pid = function() return pid end },
    }
    package.loaded["kong.plugins.confluent-consume.cursors"] = nil
    cursors = require "kong.plugins.confluent-consume.cursors"
  end)

  local partitions = {
    { topic = "t", partition = 0, start = 0 },
    { topic = "t", partition = 1, start = 0 },
  }

  it("hands out disjoint ranges to consecutive claims", function()
    local entry = { group_id = "g", handle = fake_handle({ 10, 10 }) }
    local a = assert(cursors.claim(entry, partitions, { max_records = 6, max_bytes = 1e6 }, 1))
    local b = assert(cursors.claim(entry, partitions, { max_records = 6, max_bytes = 1e6 }, 1))
    assert.equal(6, a.count)
    assert.same({ 0 }, a.starts)
    assert.same({ 6 }, a.ends)
    assert.same({ 6, 0 }, b.starts)
    assert.same({ 10, 2 }, b.ends)
  end)

  it("commits up to the oldest claim still in flight", function()
    local entry = { group_id = "g", handle = fake_handle({ 10 }) }
    local one = { partitions[1] }
    local a = assert(cursors.claim(entry, one, { max_records = 3, max_bytes = 1e6 }, 1))
    local b = assert(cursors.claim(entry, one, { max_records = 3, max_bytes = 1e6 }, 1))
    assert.same({ 0 }, assert(cursors.settle(entry, one, b, true, 1)), "a is still in flight")
    assert.same({ 6 }, assert(cursors.settle(entry, one, a, true, 1)))
  end)

  it("rolls back a failed delivery so its records are served again", function()
    local entry = { group_id = "g", handle = fake_handle({ 10 }) }
    local one = { partitions[1] }
    local a = assert(cursors.claim(entry, one, { max_records = 4, max_bytes = 1e6 }, 1))
    assert.same({ false }, assert(cursors.settle(entry, one, a, false, 1)))
    local again = assert(cursors.claim(entry, one, { max_records = 4, max_bytes = 1e6 }, 1))
    assert.same({ 0 }, again.starts)
  end)

  it("serves again exactly a failed claim's records, not what later claims delivered", function()
    local entry = { group_id = "g", handle = fake_handle({ 20, 20 }) }
    local limits = { max_records = 6, max_bytes = 1e6 }
    local a = assert(cursors.claim(entry, partitions, limits, 1))  -- p0 [0, 6)
    local b = assert(cursors.claim(entry, partitions, limits, 1))  -- p0 [6, 12)
    assert.same({ 6 }, b.starts)
    assert(cursors.settle(entry, partitions, b, true, 1))
    assert.same({ false, false }, assert(cursors.settle(entry, partitions, a, false, 1)))
    -- the redo read is capped at the range's size: p0 [0, 6) again, p1 untouched
    local redo = assert(cursors.claim(entry, partitions, { max_records = 100, max_bytes = 1e6 }, 1))
    assert.same({ 0 }, redo.starts)
    assert.same({ 6 }, redo.ends)
    -- then the frontier: p0 from 12 (b's records are not served twice), p1 from 0
    local c = assert(cursors.claim(entry, partitions, { max_records = 100, max_bytes = 1e6 }, 1))
    assert.same({ 12, 0 }, c.starts)
    assert.same({ 20, 20 }, c.ends)
  end)

  it("does not commit past records still to be served again", function()
    local entry = { group_id = "g", handle = fake_handle({ 10 }) }
    local one = { partitions[1] }
    local a = assert(cursors.claim(entry, one, { max_records = 3, max_bytes = 1e6 }, 1))
    local b = assert(cursors.claim(entry, one, { max_records = 3, max_bytes = 1e6 }, 1))
    assert(cursors.settle(entry, one, a, false, 1))
    assert.same({ 0 }, assert(cursors.settle(entry, one, b, true, 1)))
    local redo = assert(cursors.claim(entry, one, { max_records = 3, max_bytes = 1e6 }, 1))
    assert.same({ 6 }, assert(cursors.settle(entry, one, redo, true, 1)))
  end)

  it("serves at once again the records of a claim whose worker died", function()
    local entry = { group_id = "g", handle = fake_handle({ 10 }) }
    local one = { partitions[1] }
    local limits = { max_records = 3, max_bytes = 1e6 }
    pid = dead_pid()
    assert(cursors.claim(entry, one, limits, 1))  -- [0, 3), never settled: its worker was killed
    pid = 1
    local b = assert(cursors.claim(entry, one, limits, 1))
    assert.same({ 3 }, b.starts)
    assert.same({ 0 }, assert(cursors.settle(entry, one, b, true, 1)), "the dead claim holds commits back")
    -- a worker looks for dead workers' claims every RECOVER_INTERVAL (0.5 s), not after timeout + grace
    clock = clock + cursors.RECOVER_INTERVAL
    local again = assert(cursors.claim(entry, one, limits, 1))
    assert.same({ 0 }, again.starts)
    assert.same({ 3 }, again.ends)
    assert.same({ 6 }, assert(cursors.settle(entry, one, again, true, 1)))
    local next_claim = assert(cursors.claim(entry, one, limits, 1))
    assert.same({ 6 }, next_claim.starts)
  end)

  it("keeps a live worker's claim until timeout and grace expire, then serves its records again", function()
    local entry = { group_id = "g", handle = fake_handle({ 10 }) }
    local one = { partitions[1] }
    local limits = { max_records = 2, max_bytes = 1e6 }
    local a = assert(cursors.claim(entry, one, limits, 1))  -- a slow write, still going on
    clock = clock + 30
    local b = assert(cursors.claim(entry, one, limits, 1))
    assert.same({ 2 }, b.starts)
    clock = clock + 3600
    local again = assert(cursors.claim(entry, one, limits, 1))
    assert.same({ 0 }, again.starts)
    -- b and the late a both succeed: nothing left to serve again, commits move on
    assert(cursors.settle(entry, one, b, true, 1))
    assert(cursors.settle(entry, one, again, true, 1))
    assert.same({ 4 }, assert(cursors.settle(entry, one, a, true, 1)))
  end)

  it("does not serve again what a claim taken for abandoned delivered after all", function()
    local entry = { group_id = "g", handle = fake_handle({ 10 }) }
    local one = { partitions[1] }
    local a = assert(cursors.claim(entry, one, { max_records = 4, max_bytes = 1e6 }, 1))
    clock = clock + 3600
    local b = assert(cursors.claim(entry, one, { max_records = 1, max_bytes = 1e6 }, 1))
    assert.same({ 0 }, b.starts, "a's records are served again")
    assert.same({ 1 }, b.ends)
    assert.same({ 0 }, assert(cursors.settle(entry, one, a, true, 1)), "b is still in flight")
    local c = assert(cursors.claim(entry, one, { max_records = 10, max_bytes = 1e6 }, 1))
    assert.same({ 4 }, c.starts, "a was delivered: [1, 4) is not served a third time")
  end)

  it("records a claim under the group's lock and renders its records after the lock is released", function()
    local held_at_render
    local entry = { group_id = "g" }
    entry.handle = fake_handle({ 10 }, function() held_at_render = dict.data["lock:g"] ~= nil end)
    local take = entry.handle.take
    local held_at_selection
    entry.handle.take = function(self, cursors_, max_records, max_bytes, on_selected)
      held_at_selection = dict.data["lock:g"] ~= nil
      return take(self, cursors_, max_records, max_bytes, on_selected)
    end
    local one = { partitions[1] }
    local claim = assert(cursors.claim(entry, one, { max_records = 3, max_bytes = 1e6 }, 1))
    assert.equal(3, claim.count)
    assert.same({ 0 }, claim.starts)
    assert.equal(3, dict.data["n:g\0t\0" .. "0"])
    assert.is_true(held_at_selection)
    assert.is_false(held_at_render)
  end)

  it("releases the lock and settles nothing when the handle refuses the read", function()
    local entry = { group_id = "g", handle = { take = function() return nil, "Kafka is unavailable: x" end } }
    local claim, err = cursors.claim(entry, partitions, { max_records = 1, max_bytes = 1 }, 1)
    assert.is_nil(claim)
    assert.equal("Kafka is unavailable: x", err)
    assert.is_nil(dict.data["lock:g"])
  end)

  it("puts a recorded claim back when its rendering fails", function()
    local entry = { group_id = "g", handle = {
      take = function(_, cursors_, _, _, on_selected)
        on_selected({ cursors_[1] + 2 }, 2)
        return nil, "not enough memory"
      end,
    } }
    local one = { partitions[1] }
    local claim, err = cursors.claim(entry, one, { max_records = 2, max_bytes = 1e6 }, 1)
    assert.is_nil(claim)
    assert.equal("not enough memory", err)
    assert.is_nil(dict.data["lock:g"])
    assert.equal("0:2", dict.data["r:g\0t\0" .. "0"], "the range is served again")
  end)

  it("reports a missing shared dict clearly", function()
    ngx.shared.confluent_consume = nil
    local entry = { group_id = "g", handle = fake_handle({ 1 }) }
    local claim, err = cursors.claim(entry, partitions, { max_records = 1, max_bytes = 1 }, 1)
    assert.is_nil(claim)
    assert.matches("lua_shared_dict confluent_consume", err)
  end)

  it("takes over at once a lock held by a worker that died", function()
    dict:add("lock:g", dead_pid())
    ngx.sleep = function(seconds) clock = clock + seconds end
    package.loaded["kong.plugins.confluent-consume.cursors"] = nil
    cursors = require "kong.plugins.confluent-consume.cursors"
    local entry = { group_id = "g", handle = fake_handle({ 1, 1 }) }
    local t0 = clock
    assert(cursors.claim(entry, partitions, { max_records = 1, max_bytes = 1 }, 1))
    assert.equal(t0, clock)
    assert.is_nil(dict.data["lock:g"])
    assert.is_nil(dict.data["lock:g:taker"])
  end)

  it("times out instead of spinning on a held lock", function()
    dict:add("lock:g", 1)  -- a live worker's
    ngx.sleep = function(seconds) clock = clock + seconds end
    package.loaded["kong.plugins.confluent-consume.cursors"] = nil
    cursors = require "kong.plugins.confluent-consume.cursors"
    local entry = { group_id = "g", handle = fake_handle({ 1 }) }
    local claim, err = cursors.claim(entry, partitions, { max_records = 1, max_bytes = 1 }, 1)
    assert.is_nil(claim)
    assert.matches("timed out", err)
  end)
end)
