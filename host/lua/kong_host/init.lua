-- kong-host: runs unmodified Kong plugins on plain nginx + lua-nginx-module.
--
-- Entry points called from the generated nginx.conf:
--   init(opts)       init_by_lua: load plugins, load the declarative
--                    config into the shared store, install the `kong` PDK
--   init_worker()    init_worker_by_lua: plugins' init_worker, first
--                    configure, 1 s configuration sync timer
--   access(), content(), header_filter(), log()   proxy server phases
--   admin()          Admin API server
--   status()         Status API server (--status-listen)

local utils = require "kong_host.utils"
local store = require "kong_host.store"
local runner = require "kong_host.runner"
local declarative = require "kong_host.declarative"
local pdk = require "kong_host.pdk"


local ngx = ngx
local error = error
local pcall = pcall
local ipairs = ipairs
local ngx_log = ngx.log
local ERR = ngx.ERR


local SYNC_INTERVAL = 1


local _M = {}


-- The master sees the whole environment but workers only the variables
-- declared with `env NAME;`. Validating references in init_by_lua with
-- the workers' view keeps a config from starting that could not run.
local function worker_getenv(names)
  local declared = {}
  for _, name in ipairs(names or {}) do
    declared[name] = true
  end
  return function(name)
    if declared[name] then
      return os.getenv(name)
    end
  end
end


-- opts:
--   env                 names declared with `env NAME;` (--env)
--   prefix              nginx prefix directory
--   declarative_config  path of the YAML/JSON config, or nil
--   plugins             array of plugin names to load
--   proxy_listen, admin_listen, workers, plugin_paths: informational
function _M.init(opts)
  utils.seed_random()

  local configuration = {
    prefix = opts.prefix,
    declarative_config = opts.declarative_config,
    proxy_listen = opts.proxy_listen,
    admin_listen = opts.admin_listen,
    nginx_worker_processes = opts.workers,
    plugins = opts.plugins or {},
    loaded_plugins = {},  -- name -> true, as Kong's: what a plugin checks to find another one
    plugin_paths = opts.plugin_paths,
    database = "off",
    role = "traditional",
  }

  for _, name in ipairs(configuration.plugins) do
    configuration.loaded_plugins[name] = true
  end

  -- Plugin modules capture the global at load time (`local kong = kong`),
  -- so it must exist before they are required, as in Kong.
  _G.kong = pdk.new(configuration)

  local ok, err = runner.load_plugins(configuration.plugins)
  if not ok then
    error("kong-host: " .. err, 0)
  end

  local previous
  previous, err = store.read()
  if not previous then
    ngx_log(ERR, "discarding stored configuration: ", err)
  end

  local doc = previous
  if opts.declarative_config then
    doc, err = declarative.load_file(opts.declarative_config, {
      enabled = runner.enabled_set(),
      previous = previous,
      getenv = worker_getenv(opts.env),
    })
    if not doc then
      error("kong-host: " .. err, 0)
    end
  end

  local _, werr = store.write(doc or store.empty_document())
  if werr then
    error("kong-host: " .. werr, 0)
  end

  store.node_id(utils.uuid)

  for _, name in ipairs(configuration.plugins) do
    ngx_log(ngx.NOTICE, "kong-host: loaded plugin '", name, "'")
  end
end


local function sync_timer(premature)
  if premature then
    return
  end
  local ok, err = pcall(runner.sync)
  if not ok then
    ngx_log(ERR, "configuration sync failed: ", err)
  end
end


function _M.init_worker()
  utils.seed_random(ngx.worker.pid())

  runner.init_worker()
  runner.sync()

  -- Idle workers must also see changes (and call configure) promptly.
  local ok, err = ngx.timer.every(SYNC_INTERVAL, sync_timer)
  if not ok then
    ngx_log(ERR, "could not start configuration sync timer: ", err)
  end
end


_M.access = runner.access
_M.content = runner.content
_M.header_filter = runner.header_filter
_M.log = runner.log


function _M.admin()
  return require("kong_host.admin").handle()
end


function _M.status()
  return require("kong_host.status").handle()
end


return _M
