-- The message functions' sandbox, budget and rendering, under plain LuaJIT (no nginx, no broker): what a
-- function can reach, that it cannot change the worker's libraries or another function's globals, that
-- bytecode and chunks that never return are refused, and that changed records are rendered in the
-- shapes the native module renders.
package.path = "kong-plugin/?.lua;" .. package.path

-- what message_functions.apply uses of ngx: a clock that never asks to yield
_G.ngx = { update_time = function() end, now = function() return 0 end, sleep = function() end }

local cjson = require "cjson"
local message_functions = require "kong.plugins.confluent-consume.message_functions"


local PARTITIONS = { { topic = "t", partition = 0 }, { topic = "t", partition = 1 } }


local function record(offset, value)
  return cjson.encode({ offset = offset, timestamp = 1, key = cjson.null, value = value, headers = {} })
end


-- Runs the functions (sources) over one record of partition 0; returns what the client would get.
local function through(sources, value)
  local chain = assert(message_functions.chain({ message_by_lua_functions = sources }))
  local by_partition = { { record(7, value or "v"), offsets = { 7 } }, { offsets = {} } }
  message_functions.apply(chain, by_partition, PARTITIONS)
  return by_partition[1][1] and cjson.decode(by_partition[1][1]), by_partition[1][1]
end


describe("message functions", function()
  it("compile only from text: bytecode, syntax errors, other returns and endless chunks are refused", function()
    assert.is_true(message_functions.validate("return function(m) return m end"))
    local bytecode = string.dump(function() return function(m) return m end end)
    local ok, err = message_functions.validate(bytecode)
    assert.is_nil(ok)
    assert.equal("does not compile: attempt to load chunk with wrong mode", err)
    assert.same({ nil, "does not compile: line 2: unexpected symbol near '?'" },
                { message_functions.validate("local a = 1\n?") })
    assert.same({ nil, "must return a function(message), returns nothing" },
                { message_functions.validate("local a = 1") })
    assert.same({ nil, "fails when loaded: line 1: attempt to call global 'loadstring' (a nil value)" },
                { message_functions.validate("loadstring('x')") })
    assert.same({ nil, "fails when loaded: cut off after 1000000 Lua instructions" },
                { message_functions.validate("repeat until false") })
  end)

  it("compile once per configuration table: Kong's new table for a changed configuration keeps its __key__", function()
    local one = { __key__ = "k", message_by_lua_functions = { "return function(m) return m end" } }
    local chain = message_functions.chain(one)
    assert.equal(chain, message_functions.chain(one), "the same configuration")
    local two = { __key__ = "k", message_by_lua_functions = { "return function(m) return m end" } }
    assert.not_equal(chain, message_functions.chain(two), "a new revision under the same __key__")
    assert.is_nil(message_functions.chain({ __key__ = "k" }))
  end)

  it("see only the sandbox's globals", function()
    local m = through({ [[
      return function(m)
        m.missing = type(os) .. type(io) .. type(debug) .. type(jit) .. type(package) .. type(ngx) ..
                    type(kong) .. type(coroutine) .. type(load) .. type(loadstring) .. type(dofile) ..
                    type(loadfile) .. type(getfenv) .. type(setfenv) .. type(string.dump) ..
                    type(math.randomseed) .. type((getmetatable("x")))
        m.present = type(string.rep) .. type(table.concat) .. type(math.floor) .. type(pcall) .. type(_G)
        return m
      end ]] })
    assert.equal(("nil"):rep(17), m.missing)
    assert.equal("functionfunctionfunctionfunctiontable", m.present)
  end)

  it("cannot change the worker's libraries, cjson settings or another function's globals", function()
    local m = through({
      "string.upper = nil; table.concat = nil; shared = 'first' return function(m) return m end",
      [[local json = require("cjson")
        json.encode_max_depth(1)
        return function(m) m.shared = shared m.same = require("cjson") == json return m end]],
    })
    assert.is_nil(m.shared, "each function has globals of its own")
    assert.is_true(m.same, "one instance per function")
    assert.equal("A", string.upper("a"))
    assert.equal("ab", table.concat({ "a", "b" }))
    assert.equal('[[[1]]]', cjson.encode({ { { 1 } } }))
  end)

  it("serve a changed message without topic and partition, and drop on nil", function()
    local m = through({ "return function(m) m.value = m.topic .. m.partition .. m.value return m end" })
    assert.equal("t0v", m.value)
    assert.is_nil(m.topic)
    assert.is_nil(m.partition)
    assert.is_false((select(2, through({ "return function(m) return nil end" }))))
  end)

  it("serve a record as read, with the error, when a function fails or returns no JSON object", function()
    local read = cjson.decode(record(7, "v"))
    local cases = {
      { "return function(m) error({}) end", "function 1: an error value of type table" },
      { "return function(m) error(setmetatable({}, { __tostring = function() while true do end end })) end",
        "function 1: an error value of type table" },
      { "return function(m) return { 1, 2 } end",
        "function 1: returned a table that is not a JSON object (an array)" },
      { "return function(m) print(m) return m end", "function 1: line 1: attempt to call global 'print'"
        .. " (a nil value)" },
      { "return function(m) m.f = pairs return m end",
        "function 1: returned a table that is not a JSON object (Cannot serialise function: type not supported)" },
    }
    for _, case in ipairs(cases) do
      local m = through({ case[1] })
      assert.equal(case[2], m.message_function_error, case[1])
      m.message_function_error = nil
      assert.same(read, m)
    end
  end)

  it("render http-get bodies, server-sent events and websocket frames as the native module does, with " ..
     "how many records each serves", function()
    local by_partition = {
      { '{"offset":3,"v":1}', false, '{"offset":5,"v":2}', offsets = { 3, 4, 5 }, high_watermark = 6 },
      { offsets = {} },
    }
    local body, kept = message_functions.render_kong(PARTITIONS, by_partition)
    assert.equal(2, kept)
    assert.equal('{"t":{"partitions":{"0":{"records":[{"offset":3,"v":1},{"offset":5,"v":2}],"high_watermark":6}' ..
                 ',"1":{"records":[],"high_watermark":null}}}}', body)
    local events, served = message_functions.render_sse("5f4034c2", { 3, 9 }, PARTITIONS, {
      { '{"offset":3}', false, "{}", offsets = { 3, 4, 5 } }, { offsets = {} },
    })
    assert.equal('id: 5f4034c2-4.9\nevent: message\ndata: {"topic":"t","partition":0,"offset":3}\n\n' ..
                 'id: 5f4034c2-6.9\nevent: message\ndata: {"topic":"t","partition":0}\n\n', events)
    assert.equal(2, served)
    -- the offsets a frame carries come as runs of consecutive offsets, as the native `frame` gives them
    local frame, sent
    frame, served, sent = message_functions.render_websocket("5f4034c2", { 3, 9 }, PARTITIONS, {
      { '{"offset":3}', '{"offset":4}', false, '{"offset":6}', offsets = { 3, 4, 5, 6 } }, { offsets = {} },
    })
    assert.equal('{"type":"records","records":[{"cursor":"5f4034c2-4.9","topic":"t","partition":0,"offset":3},' ..
                 '{"cursor":"5f4034c2-5.9","topic":"t","partition":0,"offset":4},' ..
                 '{"cursor":"5f4034c2-7.9","topic":"t","partition":0,"offset":6}],"cursor":"5f4034c2-7.9"}', frame)
    assert.equal(3, served)
    assert.same({ { 3, 4, 6, 6 } }, sent)
  end)
end)
