-- Prometheus metrics of a node (README "Metrics"; the families are declared in src/metrics.rs).
--
-- Each nginx worker counts in plain Lua tables (requests, records and bytes served, open streams) and its
-- native module in atomics (Kafka's side). Once a second, and before it answers a scrape, a worker moves
-- what it counted into `lua_shared_dict confluent_consume`: counters are added there (`incr`), so the node
-- keeps their sums whichever workers come and go, as Kong's prometheus plugin does with its per-worker
-- counters; gauges are stored per worker with a short TTL, so a worker that is gone stops counting. The
-- dict's lock is taken once per series and second, never per request. A scrape reads the dict and lets
-- the native module merge the gauges, derive the lags, and write the text format (prometheus-client).
--
-- When the node also runs Kong's `prometheus` plugin, the counters and gauges (not the histograms) are
-- registered with it too and appear on Kong's own /metrics as kong_confluent_consume_*: each worker adds
-- its counts to Kong's counters as it syncs, and worker 0 sets the node's gauges once a second.
--
-- CONFLUENT_CONSUME_METRICS=off in nginx's environment turns the counting off (`make bench` measures what
-- it costs that way); the Status API then serves only the native module's numbers (Kafka's side), less
-- the record ages.
local native = require "confluent_consume_native"


local ngx = ngx
local kong = kong
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local sub = string.sub
local find = string.find
local match = string.match
local getenv = os.getenv
local pcall = pcall
local require = require
local unpack = unpack
local select = select


local DICT_NAME = "confluent_consume"
local SEP = "\31"  -- between a series key's family name and label values (src/metrics.rs SEP)
local COUNTER_PREFIX = "metrics\31c\31"  -- COUNTER_PREFIX .. key: the node's sum
local GAUGE_PREFIX = "metrics\31g\31"    -- GAUGE_PREFIX .. worker id .. SEP .. key: one worker's value
-- read when the module loads, in nginx's master (init_by_lua), which sees the whole environment
local ENABLED = getenv("CONFLUENT_CONSUME_METRICS") ~= "off"
local SYNC_INTERVAL = 1  -- s, as Kong's prometheus plugin syncs its worker counters
local GAUGE_TTL = 5      -- s; a gauge no worker renews (its worker is gone) expires


local _M = {}


local counted = {}  -- series key -> what this worker counted since its last sync
local levels = {}   -- series key -> this worker's gauge
local syncing       -- whether the sync timer runs
local warned_full   -- whether this worker logged that the dict had no room for a series
local kong_metrics  -- family name -> the metric registered with Kong's prometheus plugin, if it runs


-- The series key of `name` with its label values (src/metrics.rs FAMILIES gives their order).
function _M.key(name, a, b, c)
  if c ~= nil then
    return name .. SEP .. a .. SEP .. b .. SEP .. c
  elseif b ~= nil then
    return name .. SEP .. a .. SEP .. b
  end
  return name .. SEP .. a
end


function _M.count(key, n)
  if not ENABLED then
    return
  end
  counted[key] = (counted[key] or 0) + n
end


-- Moves a gauge of this worker by `delta` (a stream opens: +1, ends: -1).
function _M.move(key, delta)
  if not ENABLED then
    return
  end
  levels[key] = (levels[key] or 0) + delta
end


-- The label of the request's route: its name, else its id, as Kong's prometheus plugin names routes.
function _M.route_label()
  local route = kong.router.get_route()
  if not route then
    return ""
  end
  return route.name or route.id or ""
end


-- Counts a finished request of `conf` by its status (the `log` phase).
function _M.request(conf)
  if not ENABLED then
    return
  end
  local key = _M.key("requests", _M.route_label(), conf.mode, tostring(ngx.status))
  counted[key] = (counted[key] or 0) + 1
end


-- A series key's family name and its label values.
local function split(key)
  local parts, from = {}, 1
  while true do
    local at = find(key, SEP, from, true)
    parts[#parts + 1] = sub(key, from, (at or 0) - 1)
    if not at then
      return parts[1], { unpack(parts, 2) }
    end
    from = at + 1
  end
end


-- The dict also holds the delivery positions (cursors.lua), which a plain `set` or `incr` with an
-- initial value would evict when the dict is full: metrics take only free room, and say once that
-- some are missing.
local function no_room(err)
  if err == "no memory" and not warned_full then
    warned_full = true
    kong.log.warn("lua_shared_dict ", DICT_NAME, " is full: some metrics are not kept (make it larger)")
  end
end


-- Adds `n` to a counter: node-wide in the dict, and to Kong's counter when it has one.
local function add_counter(shm, key, n)
  local dict_key = COUNTER_PREFIX .. key
  local _, err = shm:incr(dict_key, n)
  if err == "not found" then
    local ok
    ok, err = shm:safe_add(dict_key, n)
    if not ok and err == "exists" then  -- another worker added it meanwhile
      shm:incr(dict_key, n)
    else
      no_room(err)
    end
  end
  if kong_metrics then
    local name, labels = split(key)
    local metric = kong_metrics[name]
    if metric then
      metric:inc(n, labels)
    end
  end
end


-- Moves this worker's numbers into the dict.
local function sync(shm)
  local native_counted, native_levels = native.metrics()
  for key, n in pairs(native_counted) do
    add_counter(shm, key, n)
  end
  for key, n in pairs(counted) do
    if n ~= 0 then
      add_counter(shm, key, n)
    end
    counted[key] = nil
  end
  local prefix = GAUGE_PREFIX .. ngx.worker.id() .. SEP
  for key, value in pairs(native_levels) do
    no_room(select(2, shm:safe_set(prefix .. key, value, GAUGE_TTL)))
  end
  for key, value in pairs(levels) do
    no_room(select(2, shm:safe_set(prefix .. key, value, GAUGE_TTL)))
  end
end


-- Every counter and gauge of the dict: counters key -> node's sum, gauges { {key, value}, ... } of every
-- worker, and the delivery positions of cursors.lua.
local function node_series(shm)
  local counters, gauges = {}, {}
  for _, dict_key in ipairs(shm:get_keys(0)) do
    if find(dict_key, COUNTER_PREFIX, 1, true) == 1 then
      counters[sub(dict_key, #COUNTER_PREFIX + 1)] = shm:get(dict_key)
    elseif find(dict_key, GAUGE_PREFIX, 1, true) == 1 then
      local value = shm:get(dict_key)
      local key = match(sub(dict_key, #GAUGE_PREFIX + 1), "^[^\31]*\31(.*)$")
      if value and key then
        gauges[#gauges + 1] = { key, value }
      end
    elseif sub(dict_key, 1, 2) == "n:" then
      -- cursors.lua's frontier of a group's partition: the next offset this node hands out
      local group, topic, partition = match(dict_key, "^n:(.*)%z(.*)%z(%d+)$")
      local value = shm:get(dict_key)
      if group and value then
        gauges[#gauges + 1] = { _M.key("delivery_position", group, topic, partition), value }
      end
    end
  end
  return counters, gauges
end


-- Kong's prometheus plugin, if the node runs it: our counters and gauges registered with it.
local function register_with_kong()
  local loaded = kong.configuration.loaded_plugins
  if not (loaded and loaded.prometheus) then
    return nil
  end
  local ok, exporter = pcall(require, "kong.plugins.prometheus.exporter")
  local prometheus = ok and exporter.get_prometheus and exporter.get_prometheus()
  if not prometheus then
    return nil
  end
  local registered = {}
  for _, family in ipairs(native.metric_families()) do
    local name = "confluent_consume_" .. family.name
    if family.type == "counter" then
      registered[family.name] = prometheus:counter(name .. "_total", family.help, family.labels)
    elseif family.type == "gauge" then
      registered[family.name] = prometheus:gauge(name, family.help, family.labels)
    end
  end
  return registered
end


-- The node's gauges into Kong's (worker 0, once a second): each replaced whole, so that the series of a
-- partition or route that went away go too.
local function set_kong_gauges(shm)
  local _, gauges = node_series(shm)
  local by_family = {}
  for key, value in pairs(native.merge_gauges(gauges)) do
    local name, labels = split(key)
    local list = by_family[name] or {}
    list[#list + 1] = { value, labels }
    by_family[name] = list
  end
  for name, metric in pairs(kong_metrics) do
    if metric.set then
      metric:reset()
      for _, item in ipairs(by_family[name] or {}) do
        metric:set(item[1], item[2])
      end
    end
  end
end


local function sync_timer(premature)
  if premature then
    return
  end
  local shm = ngx.shared[DICT_NAME]
  if shm then
    sync(shm)
    if kong_metrics and ngx.worker.id() == 0 then
      set_kong_gauges(shm)
    end
  end
end


-- Starts this worker's sync (Kong's init_worker phase; nothing native runs before it).
function _M.init_worker()
  if not ENABLED then
    native.count_record_ages(false)
    return
  end
  if syncing then
    return
  end
  kong_metrics = register_with_kong()
  local err
  syncing, err = ngx.timer.every(SYNC_INTERVAL, sync_timer)
  if not syncing then
    kong.log.err("cannot start the metrics sync timer (metrics stay at zero): ", err)
  end
end


-- The node's metrics in Prometheus' text format, or nil, err.
function _M.render()
  local shm = ngx.shared[DICT_NAME]
  if not shm then
    return nil, "lua_shared_dict " .. DICT_NAME .. " is not configured"
  end
  sync(shm)
  return native.render_metrics(node_series(shm))
end


return _M
