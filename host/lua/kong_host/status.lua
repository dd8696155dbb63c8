-- The Status API (Kong's `status_listen`): the routes of every loaded plugin's `status_api.lua`, which
-- Kong attaches to its Status API app the same way (`kong.plugins.<name>.status_api`, a table of
-- path -> { METHOD = handler(self, db, helpers) }). Exact paths only: the plugin's routes have no
-- parameters.
local runner = require "kong_host.runner"


local ngx = ngx
local kong = kong
local pairs = pairs
local ipairs = ipairs
local pcall = pcall
local require = require
local find = string.find


local _M = {}


local routes  -- path -> methods, read once per worker


local function load_routes()
  local loaded = {}
  for _, name in ipairs(runner.loaded_names()) do
    local module_name = "kong.plugins." .. name .. ".status_api"
    local ok, mod = pcall(require, module_name)
    if ok then
      for path, methods in pairs(mod) do
        loaded[path] = methods
      end
    elseif not find(mod, "module '" .. module_name .. "' not found", 1, true) then
      ngx.log(ngx.ERR, "cannot load ", module_name, ": ", mod)
    end
  end
  return loaded
end


function _M.handle()
  routes = routes or load_routes()
  local methods = routes[ngx.var.uri]
  if not methods then
    return kong.response.exit(404, { message = "Not found" })
  end
  local handler = methods[ngx.req.get_method()]
  if not handler then
    return kong.response.exit(405, { message = "Method not allowed" })
  end
  return handler({ params = ngx.req.get_uri_args() }, kong.db, {})
end


return _M
