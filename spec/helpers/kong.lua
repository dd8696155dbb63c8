-- The integration specs' gateway under Kong's Pongo: spec/helpers/host.lua's gateway functions on top of
-- Kong's own spec.helpers (Kong/kong spec/helpers.lua), so the same specs run against real Kong. host.lua
-- installs this when CC_GATEWAY=kong, which .pongo/pongo-setup.sh exports. `make test` does not run it
-- (no Docker on the project's machines).
--
-- Each gateway is a Kong node of its own prefix and ports on Pongo's Postgres; routes and plugins are
-- inserted through Kong's blueprints. Brokers, topics and kafka-tool are as on the development host:
-- scripts/broker.sh runs tansu inside the test container (pongo-setup.sh builds it), because the fault
-- specs kill and restart their brokers.
local kong_helpers = require "spec.helpers"


local _M = {}


-- Where pongo-setup.sh built the native module, its fault-injection build and kafka-tool.
local BUILD = os.getenv("CC_BUILD_DIR") or "/kong-plugin/.pongo/build"


local db, bp           -- Kong's database and blueprints, from the first gateway on
local running = 0      -- gateways started and not stopped: the first one starts from empty tables


-- Consumers (with their nested keyauth_credentials) and certificates, as the declarative config lists them.
local function insert_entities(opts)
  for _, certificate in ipairs(opts.certificates or {}) do
    bp.certificates:insert(certificate)
  end
  for _, consumer in ipairs(opts.consumers or {}) do
    local credentials = consumer.keyauth_credentials
    local fields = {}
    for k, v in pairs(consumer) do
      if k ~= "keyauth_credentials" then fields[k] = v end
    end
    local inserted = bp.consumers:insert(fields)
    for _, credential in ipairs(credentials or {}) do
      bp.keyauth_credentials:insert({ key = credential.key, consumer = { id = inserted.id } })
    end
  end
end


local function insert_routes(routes)
  for _, route in ipairs(routes or {}) do
    local inserted = bp.routes:insert({ name = route.name, hosts = route.hosts, paths = route.paths,
                                        methods = route.methods })
    for _, plugin in ipairs(route.plugins or {}) do
      bp.plugins:insert({ name = plugin.name, route = { id = inserted.id }, config = plugin.config })
    end
  end
end


-- A copy of a kong.conf table: Kong's kong_exec adds its own entries to the one it is given.
local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end


local function replace_routes(routes)
  assert(db.plugins:truncate())
  assert(db.routes:truncate())
  insert_routes(routes)
end


function _M.install(helpers, Host)
  helpers.KAFKA_TOOL = BUILD .. "/target/release/kafka-tool"

  function helpers.native_module_path(fault_injection)
    return BUILD .. (fault_injection and "/target/fault-injection" or "/target") .. "/lua/confluent_consume_native.so"
  end

  -- Kong's spec.helpers as Kong's plugin specs use them.
  helpers.get_db_utils = kong_helpers.get_db_utils
  helpers.start_kong = kong_helpers.start_kong
  helpers.stop_kong = kong_helpers.stop_kong
  helpers.proxy_client = kong_helpers.proxy_client
  helpers.admin_client = kong_helpers.admin_client

  -- See host.lua's start_host for `opts`; cpath, plugin_paths, plugins, root and env are the development
  -- host's and have no meaning here.
  function helpers.start_host(opts)
    local plugins = { "confluent-consume", "kafka-consume" }
    for _, name in ipairs(opts.fixture_plugins or {}) do
      plugins[#plugins + 1] = name
    end
    if running == 0 or not bp then
      bp, db = kong_helpers.get_db_utils(nil, { "routes", "services", "plugins", "consumers",
                                                "keyauth_credentials", "certificates" }, plugins)
    end
    insert_entities(opts)
    insert_routes(opts.routes)

    local proxy_port, admin_port = helpers.next_ports()
    local prefix = helpers.RUN_DIR .. "/kong-" .. proxy_port
    local native = helpers.native_module_path(opts.fault_injection)
    local file = io.open(native)
    assert(file, native .. " is missing: .pongo/pongo-setup.sh builds it")
    file:close()
    local env = {
      prefix = prefix,
      database = kong_helpers.test_conf.database,
      plugins = "bundled," .. table.concat(plugins, ","),
      lua_package_path = opts.fixture_plugins and (helpers.ROOT .. "/spec/fixtures/plugins/?.lua") or nil,
      lua_package_cpath = native:match("^(.*)/") .. "/?.so",
      proxy_listen = "127.0.0.1:" .. proxy_port,
      admin_listen = "127.0.0.1:" .. admin_port,
      nginx_worker_processes = opts.workers or 1,
      nginx_http_lua_shared_dict = "confluent_consume 16m",
      nginx_proxy_lua_check_client_abort = opts.check_client_abort and "on" or "off",
      -- which worker answered (Host:worker_pid_of), as the development host adds it
      nginx_proxy_add_header = "X-Kong-Host-Worker $pid always",
      -- workers and nodes follow Admin API changes within a second, as the development host's do
      worker_state_update_frequency = 1,
      db_update_frequency = 1,
    }
    assert(kong_helpers.start_kong(copy(env)))
    running = running + 1
    return setmetatable({ prefix = prefix, proxy_port = proxy_port, admin_port = admin_port,
                          pid_file = prefix .. "/pids/nginx.pid", kong_env = env }, Host)
  end

  function Host:reload(routes)
    if routes then
      replace_routes(routes)
    end
    -- with the node's settings again: kong_exec would otherwise pass its default plugin list
    assert(kong_helpers.kong_exec("reload --prefix " .. self.prefix, copy(self.kong_env)))
  end

  function Host:stop()
    kong_helpers.stop_kong(self.prefix, true)  -- keeps the logs
    running = running - 1
  end
end


return _M
