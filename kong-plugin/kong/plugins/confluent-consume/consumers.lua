-- Per-worker registry of native consumer handles.
--
-- A handle is created lazily on the first request of a worker (never before nginx forks), shared by every
-- request and plugin whose consumer settings are identical, and closed when no configuration uses it any
-- more (Kong's `configure` phase) or when the worker exits. Each handle has a doorbell: a timer holding a
-- cosocket on the handle's Unix socket, woken by the consumer thread, which wakes the waiting requests.
-- With consumer_group.mode kong_consumer (http-get, websocket), each Kong consumer's group has a handle of
-- its own, at most max_consumer_groups per configuration and worker.
local native = require "confluent_consume_native"
local semaphore = require "ngx.semaphore"


local kong = kong
local ngx = ngx
local timer_at = ngx.timer.at
local worker_exiting = ngx.worker.exiting
local tostring = tostring
local type = type
local pairs = pairs
local ipairs = ipairs


local DOORBELL_READ_TIMEOUT = 1000 -- ms; how often an idle doorbell checks for close / worker exit
-- The fields of a Kong consumer that name its group (consumer_group.mode kong_consumer), first set first.
local GROUP_FIELDS = { "username", "custom_id", "id" }


local _M = {}


local handles = {}  -- consumer identity -> entry
-- conf table -> the configuration revision as the native side read it, once per worker:
--   { settings =, identity =, group_id =, plugin_name =, handover =, per_consumer =,
--     groups = { [group] = known }, group_count = <entries of groups> }
-- Kong hands a plugin the same conf table for as long as its configuration lasts and a new one when it
-- changes (its `__key__` names the plugin's place, not its revision, and stays), so a revision goes when
-- its table does. `groups` (consumer_group.mode kong_consumer, http-get and websocket) holds the
-- settings of each Kong consumer's group, { settings =, identity =, group_id =, used = <ngx.now()> }, at
-- most max_consumer_groups of them.
local known = setmetatable({}, { __mode = "k" })
-- plugin name -> { identity -> true }: the consumers each plugin's configurations use (its last
-- `configure`); Kong configures confluent-consume and kafka-consume separately
local live_by_plugin = {}
local warned = {}  -- plugin id -> true once a request without a Kong consumer was logged
local open_entries = setmetatable({}, { __mode = "k" })  -- every entry not closed yet, shared or replay
local exit_watch         -- whether the exit watch timer is pending


-- What the plugin hands to the native side beside `conf`: the PEMs of the Kong certificate
-- `security.certificate_id` names, read through the PDK as any Kong plugin reads an entity. Read once per
-- configuration revision and worker, never per request; an unknown id is not remembered, so creating the
-- certificate makes the next request work.
local function handover_of(conf)
  local certificate_id = conf.security.certificate_id
  if not certificate_id then
    return {}
  end
  local certificate, err = kong.db.certificates:select({ id = certificate_id })
  if err then
    return nil, "security.certificate_id: cannot read certificate " .. certificate_id .. ": " .. tostring(err)
  elseif not certificate then
    return nil, "security.certificate_id: no certificate with id " .. certificate_id
  end
  return { certificate = { cert = certificate.cert, key = certificate.key } }
end


-- The native settings of `conf`, a configuration of `plugin_name`, the identity of its consumer (the
-- configurations whose consumers come out identical share one, whichever plugin they belong to) and its
-- consumer group, with the group a request without a Kong consumer reads.
local function revision_of(conf, plugin_name)
  local revision = known[conf]
  if revision then
    return revision
  end
  local handover, err = handover_of(conf)
  if not handover then
    return nil, err
  end
  local settings, identity, group_id = native.settings(conf, plugin_name, handover)
  if not settings then
    return nil, identity
  end
  revision = {
    settings = settings,
    identity = identity,
    group_id = group_id,
    plugin_name = plugin_name,
    handover = handover,
    -- http-get commits each Kong consumer's reads, and websocket its acknowledgements, to that consumer's
    -- group; server-sent-events streams share the route's one consumer whoever they authenticated as: the
    -- event id is the position, and no group is read or committed
    per_consumer = conf.mode ~= "server-sent-events" and conf.consumer_group.mode == "kong_consumer",
    groups = {},
    group_count = 0,
  }
  known[conf] = revision
  return revision
end


-- The consumer group of the Kong consumer the request authenticated as: Kong's username, else
-- custom_id, else id; nil without one.
local function kong_consumer_group()
  local consumer = kong.client.get_consumer()
  if not consumer then
    return nil
  end
  for _, field in ipairs(GROUP_FIELDS) do
    local value = consumer[field]
    if type(value) == "string" and value ~= "" then
      return value
    end
  end
end


local function write_log(entry)
  local lines = entry.handle:drain_log()
  if not lines then
    return
  end
  for _, line in ipairs(lines) do
    local log = kong.log[line[1]] or kong.log.err
    log(line[2])
  end
end


local function wake_all(entry)
  entry.generation = entry.generation + 1
  local waiting = -entry.sema:count()
  if waiting > 0 then
    entry.sema:post(waiting)
  end
  local wakeups = entry.wakeups
  if wakeups then
    entry.wakeups = nil
    for wakeup in pairs(wakeups) do
      wakeup:post(1)
    end
  end
end


local function close(entry)
  if entry.closed then
    return
  end
  entry.closed = true
  open_entries[entry] = nil
  entry.handle:close()
  wake_all(entry)
  if handles[entry.key] == entry then
    handles[entry.key] = nil
  end
end


-- The doorbell loop of one handle, in a timer: wakes waiters whenever the consumer thread rings.
local function doorbell(premature, entry)
  if premature or entry.closed then
    return
  end
  local sock = ngx.socket.tcp()
  sock:settimeouts(DOORBELL_READ_TIMEOUT, DOORBELL_READ_TIMEOUT, DOORBELL_READ_TIMEOUT)
  local ok, err = sock:connect("unix:" .. entry.handle:doorbell_path())
  if not ok then
    kong.log.err("cannot connect to the consumer's doorbell: ", err)
    close(entry)
    return
  end
  -- the consumer thread rings only the connected: a ring before now (often "ready", on a busy worker)
  -- was lost, so let every waiter look again
  wake_all(entry)
  while not entry.closed do
    local data, read_err = sock:receiveany(4096)
    if worker_exiting() then
      close(entry)
      break
    end
    if data then
      wake_all(entry)
    elseif read_err ~= "timeout" then
      -- the consumer thread ended: the handle was closed, or the worker is going away
      close(entry)
      break
    end
    write_log(entry)
  end
  write_log(entry)
  sock:close()
end


-- A pending timer runs at once, "premature", when the worker starts to exit (reload, stop): closing every
-- handle then wakes the waiting long-polls and streams at once, to be answered and ended normally, rather
-- than when a doorbell next looks at ngx.worker.exiting() (up to DOORBELL_READ_TIMEOUT later).
local EXIT_WATCH_DELAY = 24 * 3600

local function watch_exit(premature)
  if not premature then
    exit_watch = timer_at(EXIT_WATCH_DELAY, watch_exit)
    return
  end
  for entry in pairs(open_entries) do
    close(entry)
  end
end


local function create(key, known_conf, start)
  local handle, err = native.new_consumer(known_conf.settings, start)
  if not handle then
    return nil, err
  end
  local entry = {
    key = key,
    handle = handle,
    known_conf = known_conf,  -- what a stream's catch-up handle of this group is built from
    group_id = known_conf.group_id,
    sema = semaphore.new(),
    generation = 0,
    streams = 0,  -- the streams reading it (stream.lua): a Kong consumer's group is not evicted under them
    closed = false,
  }
  local ok, timer_err = timer_at(0, doorbell, entry)
  if not ok then
    handle:close()
    return nil, "cannot start the doorbell timer: " .. tostring(timer_err)
  end
  if not exit_watch then
    exit_watch, timer_err = timer_at(EXIT_WATCH_DELAY, watch_exit)
    if not exit_watch then
      kong.log.warn("cannot watch for the worker's exit (waiters then end within a second): ", timer_err)
    end
  end
  open_entries[entry] = true
  if key then
    handles[key] = entry
  end
  return entry
end


-- Makes room for one more Kong consumer's group in the full `revision`: forgets the least recently used
-- group no request uses (a long-poll waiting on it, a websocket stream reading it), and closes its handle.
-- False when every one is in use.
local function evict_group(revision)
  local oldest_group, oldest
  for group, known_conf in pairs(revision.groups) do
    local entry = handles[known_conf.identity]
    local waiting = entry and not entry.closed and (entry.sema:count() < 0 or entry.streams > 0)
    if not waiting and (not oldest or known_conf.used < oldest.used) then
      oldest_group, oldest = group, known_conf
    end
  end
  if not oldest then
    return false
  end
  revision.groups[oldest_group] = nil
  revision.group_count = revision.group_count - 1
  local entry = handles[oldest.identity]
  if entry then
    close(entry)
  end
  return true
end


-- The settings of the consumer that serves this request of a kong_consumer configuration: its Kong
-- consumer's group, else (logged once per worker and plugin) the configuration's random group. Returns
-- nil, message, true when the configuration already reads max_consumer_groups groups that all have
-- waiting requests.
local function consumer_settings(conf, revision)
  local group = kong_consumer_group()
  if not group then
    local plugin = conf.__plugin_id or conf.__key__ or ""
    if not warned[plugin] then
      warned[plugin] = true
      kong.log.warn("consumer_group.mode is kong_consumer, but a request came without an authenticated ",
                    "Kong consumer: it reads the random group ", revision.group_id, " (put an authentication ",
                    "plugin on the route; logged once per worker and plugin)")
    end
    return revision
  end
  local known_conf = revision.groups[group]
  if not known_conf then
    if revision.group_count >= conf.max_consumer_groups and not evict_group(revision) then
      return nil, "too many Kong consumers read through this plugin on this worker at once " ..
                  "(max_consumer_groups); retry", true
    end
    local settings, identity, group_id = native.settings(conf, revision.plugin_name, {
      consumer_group = group,
      certificate = revision.handover.certificate,
    })
    if not settings then
      return nil, identity
    end
    known_conf = { settings = settings, identity = identity, group_id = group_id }
    revision.groups[group] = known_conf
    revision.group_count = revision.group_count + 1
  end
  known_conf.used = ngx.now()
  return known_conf
end


-- Returns this worker's shared handle entry for `conf` of `plugin_name` (and, in kong_consumer mode, the
-- request's Kong consumer), creating it on first use; or nil, message, and true when the reason is
-- max_consumer_groups.
function _M.get(conf, plugin_name)
  local known_conf, err = revision_of(conf, plugin_name)
  if not known_conf then
    return nil, err
  end
  if known_conf.per_consumer then
    local busy
    known_conf, err, busy = consumer_settings(conf, known_conf)
    if not known_conf then
      return nil, err, busy
    end
  end
  local key = known_conf.identity
  local entry = handles[key]
  if entry and not entry.closed then
    return entry
  end
  return create(key, known_conf)
end


-- The key of a configuration's live handle beside its own consumer's (an http-get route's cursor reads).
local function live_key(identity)
  return identity .. ":live"
end


-- This worker's live handle for `conf` of `plugin_name`: a shared consumer from the live edge whose reads
-- change nothing and which never commits (a broadcast handle), whatever the mode; http-get's cursor reads
-- go through it, as streams go through theirs. Created on first use; or nil, message.
function _M.live(conf, plugin_name)
  local revision, err = revision_of(conf, plugin_name)
  if not revision then
    return nil, err
  end
  local key = live_key(revision.identity)
  local entry = handles[key]
  if entry and not entry.closed then
    return entry
  end
  return create(key, revision, "live")
end


-- A private handle for one stream of the shared handle `live` that catches up from `start` ({kind =
-- "earliest" | "committed"}, {kind = "timestamp", ms = ...} or {kind = "offsets", offsets = {...}}), in
-- `live`'s group (a Kong consumer's, in kong_consumer mode: "committed" is where its acknowledgements
-- left off); close it with `_M.close`.
function _M.replay(live, start)
  return create(nil, live.known_conf, start)
end


_M.close = close
-- Wakes every request waiting on `entry`, to look at it again.
_M.wake = wake_all


-- Waits until the handle is ready (at most until `deadline`, from ngx.now()).
-- Returns its partitions, or nil, status, message for an HTTP error.
function _M.await_ready(entry, deadline)
  while true do
    local generation = entry.generation
    local phase, err = entry.handle:state()
    if err then
      return nil, 503, err
    end
    if phase == "ready" then
      return entry.handle:partitions()
    end
    if phase ~= "starting" or entry.closed then
      return nil, 503, "the Kafka consumer was closed; retry"
    end
    ngx.update_time()
    if not _M.wait(entry, generation, deadline - ngx.now()) and ngx.now() >= deadline then
      return nil, 504, "timed out waiting for Kafka"
    end
  end
end


-- Waits until the handle rings or `timeout` seconds pass. `generation` is the value read before the
-- caller last looked at the handle, so a ring in between is never missed. With `wakeup` (a semaphore
-- of the caller's) the wait is on it, and a ring posts it: whoever else posts it (a websocket's reader
-- thread with an acknowledgement) wakes the caller as well.
function _M.wait(entry, generation, timeout, wakeup)
  if entry.generation ~= generation or entry.closed then
    return true
  end
  if timeout <= 0 then
    return false
  end
  if not wakeup then
    return entry.sema:wait(timeout)
  end
  local wakeups = entry.wakeups
  if not wakeups then
    wakeups = setmetatable({}, { __mode = "k" })
    entry.wakeups = wakeups
  end
  wakeups[wakeup] = true
  local woken = wakeup:wait(timeout)
  wakeups[wakeup] = nil
  return woken
end


-- Kong's `configure` phase of `plugin_name` with all its configurations: keeps the handles of the live
-- configurations of every plugin and closes the others.
function _M.retain(configs, plugin_name)
  local live = {}
  for _, conf in ipairs(configs or {}) do
    -- a configuration the native side refuses has no handle to keep; its requests report why
    local revision = revision_of(conf, plugin_name)
    if revision then
      live[revision.identity] = true
      live[live_key(revision.identity)] = true
      for _, known_conf in pairs(revision.groups) do
        live[known_conf.identity] = true
      end
    end
  end
  live_by_plugin[plugin_name] = live
  for key, entry in pairs(handles) do
    local used = false
    for _, identities in pairs(live_by_plugin) do
      used = used or identities[key] == true
    end
    if not used then
      close(entry)
    end
  end
end


return _M
