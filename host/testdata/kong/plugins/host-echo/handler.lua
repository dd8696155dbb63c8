-- host-echo: a terminating test plugin for kong-host. It answers every
-- request with its conf, the query and what configure() last saw, so tests
-- can observe each worker's view of the configuration.

local kong = kong
local ngx = ngx


local HostEcho = {
  PRIORITY = 1000,
  VERSION = "0.1.0",
}


local worker_state = {
  init_worker_calls = 0,
  configure_calls = 0,
  configured_seqs = {},
}


function HostEcho:init_worker()
  worker_state.init_worker_calls = worker_state.init_worker_calls + 1
end


function HostEcho:configure(configs)
  worker_state.configure_calls = worker_state.configure_calls + 1
  local seqs = {}
  for i, conf in ipairs(configs or {}) do
    seqs[i] = conf.__seq__
  end
  worker_state.configured_seqs = seqs
  kong.log.notice("configured with ", #seqs, " config(s)")
end


function HostEcho:access(conf)
  if conf.fail then
    error("host-echo was asked to fail")
  end

  kong.ctx.plugin.seen = true
  kong.response.set_header("X-Echo-Worker", ngx.worker.pid())

  return kong.response.exit(conf.status, {
    conf = conf,
    query = kong.request.get_query(),
    header = kong.request.get_header("X-Echo"),
    -- what an authentication plugin before this one left (key-auth, spec/03)
    consumer = kong.client.get_consumer(),
    credential = kong.client.get_credential(),
    headers = kong.request.get_headers(),
    method = kong.request.get_method(),
    path = kong.request.get_path(),
    node_id = kong.node.get_id(),
    worker_pid = ngx.worker.pid(),
    worker = worker_state,
  })
end


function HostEcho:header_filter(conf)
  if kong.ctx.plugin.seen then
    kong.response.set_header("X-Echo-Mode", conf.mode)
  end
end


return HostEcho
