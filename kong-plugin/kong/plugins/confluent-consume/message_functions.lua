-- `message_by_lua_functions`: Lua source from the configuration, each string returning
-- `function(message)`, applied in order to every record before it is served. A function returns the
-- message (changed or not) to serve it, or nil to drop it.
--
-- The functions come from whoever may configure plugins, and run inside a worker that serves every route,
-- so each runs in a sandbox: an environment of its own without os, io, load*, dofile, debug, coroutine,
-- ngx or kong, with `require` limited to REQUIRABLE; JIT compilation off for its code, so that a count
-- hook sees every instruction it runs; and at most INSTRUCTION_BUDGET instructions per call (and for the
-- chunk itself when it is compiled), after which it is cut off with an error.
--
-- A record whose function raises (or is cut off, or returns something other than a table or nil) is
-- served as it was read, with `message_function_error` saying which function failed and why
-- (`failed` below, where a dead letter queue can take it over). A batch yields to the event loop every
-- SLICE seconds of work, so a slow chain delays its own request, not the worker's others.
local cjson = require "cjson"
local cjson_safe = require "cjson.safe"
local jit = require "jit"


local ngx = ngx  -- nil when the schema is loaded outside nginx (validation needs none of it)
local type = type
local pcall = pcall
local load = load
local setfenv = setfenv
local getfenv = getfenv
local ipairs = ipairs
local pairs = pairs
local rawset = rawset
local tostring = tostring
local getmetatable = getmetatable
local sethook = debug.sethook
local gethook = debug.gethook
local getinfo = debug.getinfo
local byte = string.byte
local sub = string.sub
local gsub = string.gsub
local concat = table.concat


-- ~1.5 ms of interpreted Lua on the machines here; a message transform needs a few hundred.
local INSTRUCTION_BUDGET = 1000000
local HOOK_STEP = 1000  -- instructions between two looks at the budget
local BUDGET_TICKS = INSTRUCTION_BUDGET / HOOK_STEP
local SLICE = 0.005  -- s of work after which a batch lets the worker serve others
-- records between two looks at the clock (ngx.update_time costs about what a trivial function does),
-- unless a function ran HOOK_STEP instructions or more since the last look
local CLOCK_EVERY = 16
local CHUNK_NAME = "=fn"  -- errors then read "fn:<line>: ...", turned into "line <line>: ..."
local ERROR_FIELD = "message_function_error"

-- Globals a function may use. `getmetatable` is wrapped (see below); the libraries are copied per
-- function, so that a function that replaces string.format changes only its own copy.
local SAFE_GLOBALS = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "rawequal", "rawget", "rawset",
  "select", "setmetatable", "tonumber", "tostring", "type", "unpack", "_VERSION",
}
local SAFE_LIBRARIES = {
  string = { dump = false },       -- bytecode is of no use without load
  table = {},
  math = { randomseed = false },   -- the generator is the worker's
}
-- Modules `require` gives: each a fresh instance, whose settings (cjson.encode_max_depth, ...) are the
-- function's own rather than the worker's.
local REQUIRABLE = {
  ["cjson"] = function() return cjson.new() end,
  ["cjson.safe"] = function() return cjson_safe.new() end,
}


-- How records are read into messages and rendered back: an instance of its own, so the worker's cjson
-- settings do not change what clients receive. Where lua-cjson has them (OpenResty's, as in Kong), empty
-- arrays stay arrays and `/` is not escaped, as the native module renders them.
local json = cjson_safe.new()
if json.decode_array_with_array_mt then
  json.decode_array_with_array_mt(true)
end
if json.encode_escape_forward_slash then
  json.encode_escape_forward_slash(false)
end


local _M = {}


local sandboxes = setmetatable({}, { __mode = "k" })  -- environment -> true, for every sandbox made


-- The instruction budget. Functions may pcall, so once the budget is spent the hook fires on every
-- instruction and raises again in sandboxed code until the call returns; it never raises in the
-- plugin's own code, which runs a few instructions under the hook around each call.
local ticks, exhausted
local spent = 0  -- ticks since apply() last looked at the clock

local function budget_hook()
  ticks = ticks + 1
  if ticks < BUDGET_TICKS then
    return
  end
  local info = getinfo(2, "f")
  if info and sandboxes[getfenv(info.func)] then
    if not exhausted then
      exhausted = true
      sethook(budget_hook, "", 1)
    end
    error("cut off after " .. INSTRUCTION_BUDGET .. " Lua instructions", 0)
  end
end


-- Calls fn(arg) within the budget: true, result or false, error. A hook set in Lua before (a debugger's)
-- is put back afterwards.
local function run(fn, arg)
  local previous, mask, count = gethook()
  ticks, exhausted = 0, false
  sethook(budget_hook, "", HOOK_STEP)
  local ok, result = pcall(fn, arg)
  if type(previous) == "function" then
    sethook(previous, mask, count)
  else
    sethook()
  end
  spent = spent + ticks
  return ok, result
end


-- An error as text: "line 3: ..." for one raised at a line of the function's source. An error value
-- that is not a string is never converted with tostring(), which could run its __tostring outside the
-- budget.
local function describe(err)
  if type(err) == "string" then
    return (gsub(err, "^fn:(%d+): ", "line %1: "))
  end
  if type(err) == "number" then
    return tostring(err)
  end
  return "an error value of type " .. type(err)
end


local function copy_library(name, left_out)
  local copy = {}
  for key, value in pairs(_G[name]) do
    if left_out[key] == nil then
      copy[key] = value
    end
  end
  return copy
end


local function new_environment()
  local env = {}
  for _, name in ipairs(SAFE_GLOBALS) do
    env[name] = _G[name]
  end
  for name, left_out in pairs(SAFE_LIBRARIES) do
    env[name] = copy_library(name, left_out)
  end
  -- a string's metatable is the worker's own `string` table
  env.getmetatable = function(value)
    if type(value) == "table" then
      return getmetatable(value)
    end
  end
  local loaded = {}
  env.require = function(name)
    if loaded[name] == nil then
      local open = REQUIRABLE[name]
      if not open then
        error("module '" .. tostring(name) .. "' is not available to message functions", 2)
      end
      loaded[name] = open()
    end
    return loaded[name]
  end
  env._G = env
  sandboxes[env] = true
  return env
end


-- Compiles one function's source: the function, or nil and why not.
local function compile(source)
  if type(source) ~= "string" then
    return nil, "expected a string"
  end
  -- text only: LuaJIT does not verify bytecode
  local chunk, err = load(source, CHUNK_NAME, "t")
  if not chunk then
    return nil, "does not compile: " .. describe(err)
  end
  setfenv(chunk, new_environment())
  jit.off(chunk, true)  -- and every function defined in it: the budget hook does not fire in JIT code
  local ok, fn = run(chunk)
  if not ok then
    return nil, "fails when loaded: " .. describe(fn)
  end
  if type(fn) ~= "function" then
    return nil, "must return a function(message), returns " .. (fn == nil and "nothing" or "a " .. type(fn))
  end
  return fn
end


-- schema.lua's custom_validator of each element: Kong answers 400 with the path
-- (config.message_by_lua_functions.<index>) and this message.
function _M.validate(source)
  local fn, err = compile(source)
  if not fn then
    return nil, err
  end
  return true
end


-- conf table -> chain. Kong hands a plugin the same conf table for as long as its configuration lasts and
-- a new one when it changes (its `__key__` stays: it names the plugin's place, not its revision), so a
-- chain is compiled once per revision and goes when the configuration does.
local chains = setmetatable({}, { __mode = "k" })


-- The compiled functions of `conf`, once per configuration revision: nil when it has none, or nil, err
-- when one does not compile (a conf that bypassed the schema). A chain keeps the functions' state (their
-- upvalues) for as long as the configuration lasts.
function _M.chain(conf)
  local sources = conf.message_by_lua_functions
  if type(sources) ~= "table" or #sources == 0 then
    return nil
  end
  local chain = chains[conf]
  if chain then
    return chain
  end
  chain = { shared = setmetatable({}, { __mode = "k" }) }
  for i, source in ipairs(sources) do
    local fn, err = compile(source)
    if not fn then
      return nil, "message_by_lua_functions[" .. i .. "] " .. err
    end
    chain[i] = fn
  end
  chains[conf] = chain
  return chain
end


-- Per-handle state a chain keeps (server-sent-events: what it made of the shared handle's records);
-- it goes with the chain or the handle, whichever goes first.
function _M.shared_state(chain, entry)
  local state = chain.shared[entry]
  if not state then
    state = {}
    chain.shared[entry] = state
  end
  return state
end


-- The record is served as read, with the error. The one place a failed record passes: a dead letter
-- queue (enable_dlq) would take it here.
local function failed(record_json, index, why)
  return sub(record_json, 1, -2) .. ',"' .. ERROR_FIELD .. '":' .. json.encode("function " .. index .. ": " .. why)
         .. "}"
end


-- One record (its JSON as the native module rendered it) through the chain: the JSON object to serve
-- (without topic and partition, which the mode renders where it always does), or false when a function
-- dropped it.
local function apply(chain, record_json, topic, partition)
  local message, err = json.decode(record_json)
  if not message then
    return failed(record_json, 1, "the record cannot be read as a message: " .. err)
  end
  message.topic, message.partition = topic, partition
  for i, fn in ipairs(chain) do
    local ok, result = run(fn, message)
    if not ok then
      return failed(record_json, i, describe(result))
    end
    if result == nil then
      return false
    end
    if type(result) ~= "table" then
      return failed(record_json, i, "returned a " .. type(result) .. ", not a message table or nil")
    end
    message = result
  end
  rawset(message, "topic", nil)
  rawset(message, "partition", nil)
  local text, err = json.encode(message)
  if not text or byte(text, 1) ~= 123 then  -- "{"
    return failed(record_json, #chain, "returned a table that is not a JSON object (" ..
                                        (err or "an array") .. ")")
  end
  return text
end


-- Runs the chain over records as the native handle's `records` read returns them (per partition an
-- array of record JSON, with `offsets`), replacing each with what `apply` makes of it. `done`, when
-- given, holds per partition what earlier reads made of each offset, and gets what this one makes.
-- Yields to the event loop every SLICE seconds of work (looked at every CLOCK_EVERY records, and after
-- every record whose functions ran HOOK_STEP instructions or more).
function _M.apply(chain, by_partition, partitions, done)
  local update_time, now = ngx.update_time, ngx.now
  update_time()
  local slice_end = now() + SLICE
  local until_clock = CLOCK_EVERY
  for i, records in ipairs(by_partition) do
    local p = partitions[i]
    local seen = done and done[i]
    local offsets = records.offsets
    for j = 1, #records do
      local result = seen and seen.by_offset[offsets[j]]
      if result == nil then
        result = apply(chain, records[j], p.topic, p.partition)
        if seen then
          seen.by_offset[offsets[j]] = result
          seen.order[#seen.order + 1] = offsets[j]
        end
        until_clock = until_clock - 1
        if until_clock == 0 or spent > 0 then
          until_clock, spent = CLOCK_EVERY, 0
          update_time()
          if now() >= slice_end then
            ngx.sleep(0.001)  -- sleep(0) is a bare yield only with OpenResty's delayed-events patch
            update_time()
            slice_end = now() + SLICE
          end
        end
      end
      records[j] = result
    end
  end
end


-- A fresh `done` for `apply`, one entry per partition.
function _M.new_done(count)
  local done = {}
  for i = 1, count do
    done[i] = { by_offset = {}, order = {}, head = 1 }
  end
  return done
end


-- Forgets what `done` holds below `bounds[i][1]` (the records a shared handle no longer holds).
function _M.forget_below(done, bounds)
  for i, seen in ipairs(done) do
    local from = bounds[i] and bounds[i][1]
    local order, head = seen.order, seen.head
    while from and order[head] and order[head] < from do
      seen.by_offset[order[head]] = nil
      order[head] = nil
      head = head + 1
    end
    seen.head = head
  end
end


-- The http-get body of processed records, in the shape the native `take` renders
-- (`{"<topic>":{"partitions":{"<n>":{"records":[...],"high_watermark":H}}}}`), and how many records
-- it holds.
function _M.render_kong(partitions, by_partition)
  local out, n, kept = { "{" }, 1, 0
  local topic
  for i, p in ipairs(partitions) do
    local records = by_partition[i]
    if p.topic ~= topic then
      n = n + 1
      out[n] = (topic and "}}," or "") .. json.encode(p.topic) .. ':{"partitions":{'
      topic = p.topic
    else
      n = n + 1
      out[n] = ","
    end
    local list = {}
    for _, record in ipairs(records) do
      if record then
        list[#list + 1] = record
      end
    end
    kept = kept + #list
    n = n + 1
    out[n] = '"' .. p.partition .. '":{"records":[' .. concat(list, ",") .. '],"high_watermark":' ..
             (records.high_watermark or "null") .. "}"
  end
  n = n + 1
  out[n] = topic and "}}}" or "}"
  return concat(out), kept
end


-- Calls `emit(cursor, json, i, offset)` for every processed record served (not dropped), in partition
-- order: `cursor` is the stream cursor after it (`layout` and the partitions' next offsets from
-- `cursors` on), `json` the record with its topic and partition in front, as the native reads render it.
local function each_served(layout, cursors, partitions, by_partition, emit)
  local position = {}
  for i, c in ipairs(cursors) do
    position[i] = c
  end
  for i, records in ipairs(by_partition) do
    local p = partitions[i]
    local prefix = '{"topic":' .. json.encode(p.topic) .. ',"partition":' .. p.partition
    for j, record in ipairs(records) do
      local offset = records.offsets[j]
      position[i] = offset + 1
      if record then
        emit(layout .. "-" .. concat(position, "."),
             prefix .. (record == "{}" and "}" or "," .. sub(record, 2)), i, offset)
      end
    end
  end
end


-- The server-sent events of processed records, as the native `read` renders them: one per record
-- served, its id the cursor after it; and how many records were served.
function _M.render_sse(layout, cursors, partitions, by_partition)
  local out, n = {}, 0
  each_served(layout, cursors, partitions, by_partition, function(cursor, record)
    n = n + 1
    out[n] = "id: " .. cursor .. "\nevent: message\ndata: " .. record .. "\n\n"
  end)
  return concat(out), n
end


-- The websocket frame of processed records, as the native `frame` renders it, how many records it
-- carries, and their offsets per partition index as the native `frame` gives them (`sent`, runs `{first,
-- last, ...}` of consecutive offsets, for the connection's acknowledgement window).
function _M.render_websocket(layout, cursors, partitions, by_partition)
  local out, n, sent = {}, 0, {}
  local last = layout .. "-" .. concat(cursors, ".")
  each_served(layout, cursors, partitions, by_partition, function(cursor, record, i, offset)
    n = n + 1
    out[n] = '{"cursor":"' .. cursor .. '",' .. sub(record, 2)
    last = cursor
    local runs = sent[i]
    if not runs then
      runs = {}
      sent[i] = runs
    end
    local n = #runs
    if n > 0 and runs[n] == offset - 1 then
      runs[n] = offset
    else
      runs[n + 1], runs[n + 2] = offset, offset
    end
  end)
  return '{"type":"records","records":[' .. concat(out, ",") .. '],"cursor":"' .. last .. '"}', n, sent
end

return _M
