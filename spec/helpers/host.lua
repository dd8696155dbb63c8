-- What the integration specs need from their surroundings, in one place: a broker, a producer, and a
-- gateway running the plugin. Here the gateway is the project's development host (nginx + lua-nginx-module,
-- host/bin/kong-host); under Kong's Pongo (CC_GATEWAY=kong, set by .pongo/pongo-setup.sh) spec/helpers/kong.lua
-- provides the gateway functions on top of Kong's own spec.helpers.
local cjson = require "cjson.safe"
local http = require "spec.helpers.http"


local _M = {}


-- Specs run from the repository root (scripts/run-tests.sh does so and exports CC_ROOT).
_M.ROOT = os.getenv("CC_ROOT") or assert(io.popen("pwd")):read("*l")
_M.BROKER_HOST = "127.0.0.1"
_M.BROKER_PORT = tonumber(os.getenv("CC_TEST_BROKER_PORT") or "19092")
-- A second broker on memory storage, for what the sqlite storage cannot serve (snappy batches).
_M.MEMORY_BROKER_PORT = tonumber(os.getenv("CC_TEST_MEMORY_BROKER_PORT") or "19093")
_M.KAFKA_TOOL = _M.ROOT .. "/target/release/kafka-tool"
_M.RUN_DIR = os.getenv("CC_TEST_RUN_DIR") or (_M.ROOT .. "/.run/test")


local port_counter = tonumber(os.getenv("CC_TEST_PORT_BASE") or "18200")


-- Two ports of the run's range (proxy, Admin API) for a gateway.
function _M.next_ports()
  port_counter = port_counter + 2
  return port_counter - 2, port_counter - 1
end
local name_counter = 0


-- Runs a shell command; returns ok (exit status 0), output. LuaJIT's popen close() does not report the
-- exit status, so the command prints it last.
function _M.sh(command)
  local pipe = assert(io.popen("(" .. command .. ") 2>&1; echo \"__exit=$?\"", "r"))
  local output = pipe:read("*a")
  pipe:close()
  local code = tonumber(output:match("__exit=(%d+)%s*$"))
  output = output:gsub("__exit=%d+%s*$", "")
  return code == 0, output
end


-- The native module's file: the production build, or the one with the `fault-injection` feature.
function _M.native_module_path(fault_injection)
  return _M.ROOT .. (fault_injection and "/target/fault-injection" or "/target") .. "/lua/confluent_consume_native.so"
end


-- Runs a shell command that must succeed (an assertion naming the command and its output otherwise);
-- returns its output.
function _M.sh_ok(command)
  local ok, output = _M.sh(command)
  assert(ok, command .. " failed: " .. output)
  return output
end


-- A unique topic/group name per call, so specs never see each other's records.
function _M.unique_name(prefix)
  name_counter = name_counter + 1
  return string.format("%s-%d-%d-%d", prefix or "t", os.time(), math.random(1e6), name_counter)
end


function _M.sleep(seconds)
  require("socket").sleep(seconds)
end


function _M.now()
  return require("socket").gettime()
end


-- Runs `kafka-tool <command> <args>` against the test broker (or the one on `port`) and returns its JSON
-- output decoded.
function _M.kafka_tool(command, args, port)
  local ok, output = _M.sh(_M.KAFKA_TOOL .. " " .. command .. " --brokers " .. _M.BROKER_HOST .. ":" ..
                           (port or _M.BROKER_PORT) .. " " .. (args or ""))
  assert(ok, "kafka-tool " .. command .. " " .. (args or "") .. " failed: " .. output)
  local last = output:match("([^\n]+)\n*$")
  local decoded, err = cjson.decode(last or "")
  assert(decoded, "kafka-tool output is not JSON (" .. tostring(err) .. "): " .. output)
  return decoded
end


function _M.create_topic(name, partitions, port)
  local ok, output = _M.sh(string.format("%s/scripts/broker.sh topic --port %d %s %d",
                                         _M.ROOT, port or _M.BROKER_PORT, name, partitions or 1))
  assert(ok, "cannot create topic " .. name .. ": " .. output)
  return name
end


-- A broker of the spec's own (for faults): scripts/broker.sh `action` ("start", "stop") on `dir`.
function _M.broker(dir, action, extra)
  local ok, output = _M.sh(string.format("%s/scripts/broker.sh %s --dir %s %s", _M.ROOT, action, dir,
                                         extra or ""))
  assert(ok, output)
end


-- The plugin config for `topic` on the test broker (at `port`, default BROKER_PORT), with the top-level
-- fields of each table of `...` (overrides, later ones winning) merged in.
function _M.plugin_config(topics, overrides, port, ...)
  if type(topics) == "string" then
    topics = { topics }
  end
  local config = {
    bootstrap_servers = { { host = _M.BROKER_HOST, port = port or _M.BROKER_PORT } },
    topics = {},
  }
  for i, name in ipairs(topics) do
    config.topics[i] = { name = name }
  end
  for _, fields in ipairs({ overrides or {}, ... }) do
    for k, v in pairs(fields) do
      config[k] = v
    end
  end
  return config
end


-- A route `name` with host `<name>.test` running the plugin on `topic` with `overrides` (then the
-- top-level fields of each table of `...`), its brokers at `port` (default BROKER_PORT).
function _M.route(name, topic, overrides, port, ...)
  return { name = name, hosts = { name .. ".test" },
           plugins = { { name = "confluent-consume", config = _M.plugin_config(topic, overrides, port, ...) } } }
end


-- The record values of the `message` events among `events` (an SSE stream's, as read_events gives them).
function _M.message_values(events)
  local values = {}
  for _, e in ipairs(events) do
    if e.event == "message" then
      values[#values + 1] = cjson.decode(e.data).value
    end
  end
  return values
end



-- The offsets of `records` (as a client decoded them), in their order.
function _M.offsets(records)
  local list = {}
  for i, r in ipairs(records) do
    list[i] = r.offset
  end
  return list
end


-- The first `count` records of `topic` on the broker, as kafka-tool reads them: { partition, offset,
-- key_hex, value_hex, headers }.
function _M.records_on_broker(topic, count)
  local output = _M.sh_ok(string.format("%s consume --brokers %s:%d --topic %s --count %d --print",
                                        _M.KAFKA_TOOL, _M.BROKER_HOST, _M.BROKER_PORT, topic, count))
  local records = {}
  for line in output:gmatch("[^\n]+") do
    local decoded = cjson.decode(line)
    if decoded.value_hex ~= nil or decoded.key_hex ~= nil then
      records[#records + 1] = decoded
    end
  end
  return records
end


local Host = {}
Host.__index = Host


-- Starts a gateway serving `routes` (Kong declarative format: {name, hosts, paths, plugins}).
-- opts: workers (default 1), routes, env (list of variable names nginx may read), static (a directory
-- served read-only under /demo/ on the proxy port), check_client_abort (true: nginx tells a request at
-- once that its client left, as kong.conf's `nginx_proxy_lua_check_client_abort = on` does; default off,
-- Kong's default), fault_injection (true: the native module built with the `fault-injection` feature),
-- fixture_plugins (names of test plugins under spec/fixtures/plugins, loaded beside the project's and
-- Kong's bundled ones), consumers (Kong's declarative `consumers`, with nested `keyauth_credentials`),
-- certificates (Kong's `certificates`),
-- proxy_port and admin_port (fixed ports, e.g. Kong's 8000/8001; default two from CC_TEST_PORT_BASE up),
-- status (true: a Status API listener, as Kong's status_listen, on a port of the run's range: status_port).
-- Development host only: cpath (the native module's directory), plugin_paths (directories holding
-- kong/plugins/<name>/; default the project's kong-plugin), plugins (the names to load; default every
-- plugin under plugin_paths), root (the checkout whose host/bin/kong-host runs the gateway; default ROOT).
function _M.start_host(opts, attempt)
  local proxy_port, admin_port = opts.proxy_port, opts.admin_port
  if not (proxy_port and admin_port) then
    proxy_port, admin_port = _M.next_ports()
  end
  local prefix = _M.RUN_DIR .. "/host-" .. proxy_port
  assert(_M.sh("rm -rf " .. prefix .. " && mkdir -p " .. prefix))
  local config_file = prefix .. "/kong.json"
  local entities = { consumers = opts.consumers, certificates = opts.certificates }
  _M.write_declarative(config_file, opts.routes, entities)
  local env_args = ""
  for _, name in ipairs(opts.env or {}) do
    env_args = env_args .. " --env " .. name
  end
  local plugin_paths, plugins = opts.plugin_paths, opts.plugins
  if opts.fixture_plugins then
    plugin_paths = { _M.ROOT .. "/kong-plugin", _M.ROOT .. "/spec/fixtures/plugins" }
    plugins = { "bundled", "confluent-consume", "kafka-consume", unpack(opts.fixture_plugins) }
  end
  if plugins then
    env_args = env_args .. " --plugins " .. table.concat(plugins, ",")
  end
  for _, dir in ipairs(plugin_paths or {}) do
    env_args = env_args .. " --plugin-path " .. dir
  end
  if opts.check_client_abort then
    env_args = env_args .. " --check-client-abort"
  end
  local status_port = opts.status and _M.next_ports()
  if status_port then
    env_args = env_args .. " --status-listen 127.0.0.1:" .. status_port
  end
  local cpath = opts.cpath or _M.native_module_path(opts.fault_injection):match("^(.*)/")
  -- The specs' own LUA_PATH (scripts/run-specs.sh) must not reach nginx: through the `;;` of its
  -- lua_package_path the workers would find modules in this checkout that the gateway's files lack.
  local ok, output = _M.sh(string.format(
    "env -u LUA_PATH -u LUA_CPATH %s/host/bin/kong-host start --prefix %s --config %s --workers %d " ..
    "--proxy-listen 127.0.0.1:%d --admin-listen 127.0.0.1:%d --cpath %s%s%s",
    opts.root or _M.ROOT, prefix, config_file, opts.workers or 1, proxy_port, admin_port,
    cpath, env_args, opts.static and (" --static " .. opts.static) or ""))
  -- the ports lie in the ephemeral range, so a client socket of any process may hold one for a moment
  if not ok and output:find("already in use", 1, true) and (attempt or 1) < 3 and not opts.proxy_port then
    return _M.start_host(opts, (attempt or 1) + 1)
  end
  assert(ok, "cannot start the host: " .. output)
  return setmetatable({ prefix = prefix, proxy_port = proxy_port, admin_port = admin_port, status_port = status_port,
                        pid_file = prefix .. "/logs/nginx.pid", root = opts.root or _M.ROOT,
                        entities = entities }, Host)
end


-- Writes a declarative config (Kong's format) of `routes` and `entities` ({consumers =, certificates =},
-- each as Kong's kong.yml lists them: consumers with nested keyauth_credentials) to `path`.
function _M.write_declarative(path, routes, entities)
  local doc = { _format_version = "3.0", routes = routes or {} }
  for name, list in pairs(entities or {}) do
    doc[name] = list
  end
  local file = assert(io.open(path, "w"))
  file:write(assert(cjson.encode(doc)))
  file:close()
end


-- Reloads the gateway (nginx HUP), with `routes` as its new declarative config when given: new workers
-- start with the config, old ones finish their requests and exit.
function Host:reload(routes)
  if routes then
    _M.write_declarative(self.prefix .. "/kong.json", routes, self.entities)
  end
  local ok, output = _M.sh(self.root .. "/host/bin/kong-host reload --prefix " .. self.prefix)
  assert(ok, "cannot reload the host: " .. output)
end


function Host:stop()
  _M.sh(self.root .. "/host/bin/kong-host stop --prefix " .. self.prefix)
end


-- Kills the whole instance at once, as when its machine dies: SIGKILL of the master and every worker, by
-- pid. Nothing is closed cleanly; returns once none of them is left.
function Host:kill()
  local file = assert(io.open(self.pid_file))
  local master = file:read("*n")
  file:close()
  local pids = self:worker_pids()
  -- the master first: killed after its workers, it could still respawn one (a worker's SIGCHLD comes
  -- before its own SIGKILL), which then went on serving as an orphan
  table.insert(pids, 1, master)
  local list = table.concat(pids, " ")
  assert(_M.sh("kill -KILL " .. list))
  -- a killed process lingers as a zombie until its parent reaps it; its leader is a zombie as soon as it
  -- exits, while its other threads (librdkafka's) may still be exiting and holding its sockets open, so
  -- every thread is looked at (-L)
  local function running()
    local _, states = _M.sh("ps -L -o stat= -p " .. table.concat(pids, ","))
    for state in states:gmatch("%S+") do
      if not state:find("^Z") then
        return true
      end
    end
    return false
  end
  local deadline = _M.now() + 10
  while running() do
    assert(_M.now() < deadline, "the instance's processes outlived SIGKILL: " .. list)
    _M.sleep(0.05)
  end
end


-- GET (or another method) on the proxy: status, body, headers, decoded JSON body (when it is JSON).
function Host:request(method, path, headers, body)
  local status, response_body, response_headers = http.once("127.0.0.1", self.proxy_port, method, path,
                                                            headers, body)
  assert(status, "proxy request failed: " .. tostring(response_body))
  return status, response_body, response_headers, cjson.decode(response_body)
end


function Host:get(path, headers)
  return self:request("GET", path, headers)
end


-- Times `n` GETs of `path` on one keep-alive connection (each must answer 200); returns the sorted
-- durations in seconds.
function Host:time_requests(path, host_header, n)
  local conn = self:connect()
  local times = {}
  for i = 1, n do
    local t0 = _M.now()
    local status, body = conn:request("GET", path, { Host = host_header })
    times[i] = _M.now() - t0
    assert(status == 200, "GET " .. path .. ": " .. tostring(status) .. " " .. tostring(body))
  end
  conn:close()
  table.sort(times)
  return times
end


-- GETs `path` (an http-get route; give it a `wait`) until `n` records arrived or `seconds` passed: a
-- long-poll answers as soon as the first records are there, which may be fewer than were produced.
-- Returns the records as `records_of` lists them.
function Host:collect(path, host_header, n, seconds)
  local all = {}
  local deadline = _M.now() + (seconds or 10)
  while #all < n and _M.now() < deadline do
    local status, body, _, json = self:get(path, { Host = host_header })
    assert(status == 200, "GET " .. path .. ": " .. tostring(status) .. " " .. tostring(body))
    for _, r in ipairs(_M.records_of(json)) do
      all[#all + 1] = r
    end
  end
  return all
end


-- A keep-alive connection to the proxy.
function Host:connect(timeout)
  return assert(http.connect("127.0.0.1", self.proxy_port, timeout))
end


-- Admin API call; `body` is a table (sent as JSON) or a string (sent as a form).
function Host:admin(method, path, body)
  local headers, payload = {}, nil
  if type(body) == "table" then
    headers["Content-Type"], payload = "application/json", cjson.encode(body)
  elseif type(body) == "string" then
    headers["Content-Type"], payload = "application/x-www-form-urlencoded", body
  end
  local status, response_body = http.once("127.0.0.1", self.admin_port, method, path, headers, payload)
  assert(status, "admin request failed: " .. tostring(response_body))
  return status, cjson.decode(response_body) or response_body
end


-- The text of the file at `path`, or nil when it cannot be read (not written yet).
function _M.read_file(path)
  local file = io.open(path, "r")
  if not file then
    return nil
  end
  local text = file:read("*a")
  file:close()
  return text
end


function Host:error_log()
  return _M.read_file(self.prefix .. "/logs/error.log") or ""
end


-- The pid of the worker that answered a response with these headers (lower-case names, as `request`
-- returns them).
function Host:worker_pid_of(headers)
  return tonumber(headers["x-kong-host-worker"])
end


-- The doorbell socket paths of the native consumers of the worker `pid`, sorted: each consumer has one,
-- named after its worker's pid, which the kernel lists in /proc/net/unix for as long as the consumer lives.
function _M.doorbells(pid)
  local paths = {}
  local file = assert(io.open("/proc/net/unix"))
  local pattern = "(%S*/confluent%-consume%-" .. pid .. "%-%d+%.sock)$"
  for line in file:lines() do
    local path = line:match(pattern)
    if path then
      paths[path] = true
    end
  end
  file:close()
  local list = {}
  for path in pairs(paths) do
    list[#list + 1] = path
  end
  table.sort(list)
  return list
end


-- The pids of the host's nginx workers.
function Host:worker_pids()
  local file = assert(io.open(self.pid_file))
  local master = file:read("*n")
  file:close()
  local _, output = _M.sh("pgrep -P " .. master)
  local pids = {}
  for pid in output:gmatch("%d+") do
    pids[#pids + 1] = tonumber(pid)
  end
  return pids
end


---------------------------------------------------------------------------------------------------------
-- Kong's spec.helpers, in the shape Kong's plugin specs use them (spec/03-plugins/*/..._spec.lua): entities
-- inserted through blueprints (get_db_utils), one gateway started with them (start_kong), clients to its
-- proxy and Admin API. Here the gateway is a development host; under Kong (spec/helpers/kong.lua) these are
-- Kong's own functions.
---------------------------------------------------------------------------------------------------------


local blueprint_entities = { routes = {}, plugins = {} }  -- inserted since the last get_db_utils
local kong_host  -- the gateway start_kong started


local function new_uuid()
  return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function(c)
    return string.format("%x", c == "x" and math.random(0, 15) or math.random(8, 11))
  end))
end


local function inserter(list)
  return {
    insert = function(_, entity)
      local copy = {}
      for k, v in pairs(entity) do copy[k] = v end
      copy.id = copy.id or new_uuid()
      list[#list + 1] = copy
      return copy
    end,
  }
end


-- Blueprints (bp.routes:insert, bp.plugins:insert) for the gateway the next start_kong starts. The
-- arguments are Kong's (strategy, tables to truncate, plugins to enable); the host has no database, so
-- they do not matter here.
function _M.get_db_utils()
  blueprint_entities = { routes = {}, plugins = {} }
  return { routes = inserter(blueprint_entities.routes), plugins = inserter(blueprint_entities.plugins) }
end


-- Starts a gateway with the entities inserted through the blueprints. `env` holds kong.conf properties;
-- those the host follows: plugins ("bundled,a,b": the host bundles key-auth),
-- nginx_worker_processes, nginx_proxy_lua_check_client_abort ("on"), and lua_package_path (directories
-- "DIR/?.lua" holding kong/plugins/<name>/, as for Kong's fixture plugins).
function _M.start_kong(env)
  env = env or {}
  local routes, by_id = {}, {}
  for i, route in ipairs(blueprint_entities.routes) do
    routes[i] = { id = route.id, name = route.name, hosts = route.hosts, paths = route.paths,
                  methods = route.methods, plugins = {} }
    by_id[route.id] = routes[i]
  end
  for _, plugin in ipairs(blueprint_entities.plugins) do
    local route = assert(plugin.route and by_id[plugin.route.id], "a plugin needs the route it was inserted for")
    route.plugins[#route.plugins + 1] = { id = plugin.id, name = plugin.name, config = plugin.config }
  end
  local plugin_paths, plugins = { _M.ROOT .. "/kong-plugin" }, nil
  for dir in (env.lua_package_path or ""):gmatch("([^;]+)/%?%.lua") do
    plugin_paths[#plugin_paths + 1] = dir
  end
  for name in (env.plugins or ""):gmatch("[^,%s]+") do
    plugins = plugins or {}
    plugins[#plugins + 1] = name
  end
  kong_host = _M.start_host({ workers = tonumber(env.nginx_worker_processes) or 1, routes = routes,
                              check_client_abort = env.nginx_proxy_lua_check_client_abort == "on",
                              plugin_paths = plugin_paths, plugins = plugins })
  return true
end


function _M.stop_kong()
  if kong_host then
    kong_host:stop()
    kong_host = nil
  end
  return true
end


local Client = {}


-- A client like Kong's spec helpers' (lua-resty-http): send{method, path, headers, body, query} returns a
-- response with status, headers (any case) and read_body(), or nil, err; get/post/put/patch/delete(path,
-- opts) assert that it did.
local function http_client(port, timeout)
  local conn = assert(http.connect("127.0.0.1", port, (timeout or 60000) / 1000))
  return setmetatable({ conn = conn }, Client)
end


local function url_escape(value)
  return (tostring(value):gsub("[^%w%-_.~]", function(c) return string.format("%%%02X", c:byte()) end))
end


local function form_encode(t)
  local parts = {}
  for k, v in pairs(t) do
    parts[#parts + 1] = url_escape(k) .. "=" .. url_escape(v)
  end
  table.sort(parts)
  return table.concat(parts, "&")
end


function Client:send(opts)
  local headers, content_type = {}, ""
  for name, value in pairs(opts.headers or {}) do
    headers[name] = value
    if name:lower() == "content-type" then content_type = value end
  end
  local body = opts.body
  if type(body) == "table" then
    body = content_type:find("application/json", 1, true) and cjson.encode(body) or form_encode(body)
  end
  local path = opts.path or "/"
  if type(opts.query) == "table" then
    path = path .. "?" .. form_encode(opts.query)
  end
  local status, response_body, response_headers = self.conn:request(opts.method or "GET", path, headers, body)
  if not status then
    return nil, response_body
  end
  return {
    status = status,
    headers = setmetatable({}, { __index = function(_, name) return response_headers[name:lower()] end }),
    read_body = function() return response_body end,
  }
end


function Client:close()
  self.conn:close()
end


Client.__index = function(_, key)
  if Client[key] then
    return Client[key]
  end
  local method = key:upper()
  if method == "GET" or method == "POST" or method == "PUT" or method == "PATCH" or method == "DELETE" then
    return function(self, path, opts)
      local request = { method = method, path = path }
      for k, v in pairs(opts or {}) do request[k] = v end
      return assert(self:send(request))
    end
  end
end


function _M.proxy_client(timeout)
  return http_client(assert(kong_host, "start_kong first").proxy_port, timeout)
end


function _M.admin_client(timeout)
  return http_client(assert(kong_host, "start_kong first").admin_port, timeout)
end


-- Every record of a Kong-shaped http-get body, as a flat list of {topic, partition, offset, record}.
function _M.records_of(body)
  local list = {}
  for topic, t in pairs(body) do
    for partition, p in pairs(t.partitions) do
      for _, record in ipairs(p.records) do
        list[#list + 1] = { topic = topic, partition = tonumber(partition), offset = record.offset,
                            record = record }
      end
    end
  end
  table.sort(list, function(a, b)
    if a.topic ~= b.topic then return a.topic < b.topic end
    if a.partition ~= b.partition then return a.partition < b.partition end
    return a.offset < b.offset
  end)
  return list
end


if os.getenv("CC_GATEWAY") == "kong" then
  require("spec.helpers.kong").install(_M, Host)
end


return _M
