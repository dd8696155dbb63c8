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
  }
end


-- A handle whose partitions hold offsets [0, size) each.
local function fake_handle(sizes)
  return {
    take = function(_, cursors, max_records)
      local next_cursors, count = {}, 0
      for i, size in ipairs(sizes) do
        local from = cursors[i]
        local n = math.max(0, math.min(size - from, max_records - count))
        next_cursors[i] = from + n
        count = count + n
      end
      return "body", next_cursors, count
    end,
  }
end


describe("cursors", function()
  local cursors, dict, clock

  before_each(function()
    dict, clock = fake_dict(), 1000
    _G.kong = {}
    _G.ngx = {
      shared = { confluent_consume = dict },
      now = function() return clock end,
      sleep = function() end,
      worker = { pid = function() return 1 end },
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

  it("ignores abandoned claims once they expire", function()
    local entry = { group_id = "g", handle = fake_handle({ 10 }) }
    local one = { partitions[1] }
    assert(cursors.claim(entry, one, { max_records = 2, max_bytes = 1e6 }, 1)) -- never settled
    local b = assert(cursors.claim(entry, one, { max_records = 2, max_bytes = 1e6 }, 1))
    clock = clock + 3600
    assert.same({ 4 }, assert(cursors.settle(entry, one, b, true, 1)))
  end)

  it("reports a missing shared dict clearly", function()
    ngx.shared.confluent_consume = nil
    local entry = { group_id = "g", handle = fake_handle({ 1 }) }
    local claim, err = cursors.claim(entry, partitions, { max_records = 1, max_bytes = 1 }, 1)
    assert.is_nil(claim)
    assert.matches("lua_shared_dict confluent_consume", err)
  end)

  it("times out instead of spinning on a held lock", function()
    dict:add("lock:g", 99)
    ngx.sleep = function(seconds) clock = clock + seconds end
    package.loaded["kong.plugins.confluent-consume.cursors"] = nil
    cursors = require "kong.plugins.confluent-consume.cursors"
    local entry = { group_id = "g", handle = fake_handle({ 1 }) }
    local claim, err = cursors.claim(entry, partitions, { max_records = 1, max_bytes = 1 }, 1)
    assert.is_nil(claim)
    assert.matches("timed out", err)
  end)
end)
