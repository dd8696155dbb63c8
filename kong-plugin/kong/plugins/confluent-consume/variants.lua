-- The two names Kong 3.15 gives its consume plugins, `confluent-consume` and `kafka-consume`, served by
-- the same modules: each name's handler and schema are built here, and nothing else differs.
--
-- kafka-consume's schema is confluent-consume's with Kong's differences for kafka-consume: none of the
-- Confluent Cloud, keepalive and top-level oauthbearer fields (Kong refuses them there as unknown fields; src/schema.rs marks
-- the same fields `confluent_only`, and spec/05 compares both schemas with it), `auto_offset_reset`
-- defaulting to `latest`, and no Service scope (Kong 3.12+ `typedefs.no_service`).
local typedefs = require "kong.db.schema.typedefs"


local kong = kong
local pairs = pairs
local ipairs = ipairs
local next = next


local _M = {}


-- Below Kong's authentication plugins (1000+), exactly as Kong's own consume plugins.
local PRIORITIES = {
  ["confluent-consume"] = 754,
  ["kafka-consume"] = 753,
}

-- confluent-consume's fields that Kong's kafka-consume does not have.
_M.CONFLUENT_ONLY = {
  cluster_api_key = true,
  cluster_api_secret = true,
  confluent_cloud_api_key = true,
  confluent_cloud_api_secret = true,
  keepalive = true,
  keepalive_enabled = true,
  oauthbearer = true,  -- kafka-consume has it as authentication.oauthbearer
}

local KAFKA_CONSUME_DEFAULTS = {
  auto_offset_reset = "latest",
}


-- The handler of `plugin_name`: the mode modules serve its requests, and its `configure` phase tells the
-- consumer registry which consumers its configurations still use.
function _M.handler(plugin_name)
  local consumers = require "kong.plugins.confluent-consume.consumers"
  local metrics = require "kong.plugins.confluent-consume.metrics"
  local modes = {
    ["http-get"] = require "kong.plugins.confluent-consume.http_get",
    ["server-sent-events"] = require "kong.plugins.confluent-consume.sse",
    websocket = require "kong.plugins.confluent-consume.websocket",
  }
  local handler = {
    PRIORITY = PRIORITIES[plugin_name],
    VERSION = "0.1.0",
  }

  function handler:init_worker()
    metrics.init_worker()
  end

  function handler:configure(configs)
    consumers.retain(configs, plugin_name)
  end

  function handler:access(conf)
    return modes[conf.mode].serve(conf, plugin_name)
  end

  function handler:log(conf)
    metrics.request(conf)
  end

  return handler
end


-- The Status API routes of `plugin_name` (Kong loads a plugin's status_api.lua into its Status API,
-- status_listen): GET /<plugin_name>/metrics, the node's metrics of both plugin names in Prometheus'
-- text format. Each name has its own path, so that a node loading both has no route twice.
function _M.status_api(plugin_name)
  local metrics = require "kong.plugins.confluent-consume.metrics"
  return {
    ["/" .. plugin_name .. "/metrics"] = {
      GET = function()
        local body, err = metrics.render()
        if not body then
          kong.log.err("cannot render metrics: ", err)
          return kong.response.exit(500, { message = "An unexpected error occurred" })
        end
        return kong.response.exit(200, body, { ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8" })
      end,
    },
  }
end


local function copy(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = v
  end
  return out
end


-- kafka-consume's schema, derived from confluent-consume's (see the top of this file). The field
-- definitions are shared, except those whose default differs, which are copies.
function _M.kafka_consume_schema()
  local confluent = require "kong.plugins.confluent-consume.schema"
  local schema = copy(confluent)
  schema.name = "kafka-consume"
  schema.fields = { { service = typedefs.no_service } }
  for _, entry in ipairs(confluent.fields) do
    local name, def = next(entry)
    if name == "config" then
      local config = copy(def)
      config.fields = {}
      for _, field in ipairs(def.fields) do
        local field_name, field_def = next(field)
        if not _M.CONFLUENT_ONLY[field_name] then
          local default = KAFKA_CONSUME_DEFAULTS[field_name]
          if default ~= nil then
            field_def = copy(field_def)
            field_def.default = default
          end
          config.fields[#config.fields + 1] = { [field_name] = field_def }
        end
      end
      def = config
    end
    schema.fields[#schema.fields + 1] = { [name] = def }
  end
  return schema
end


return _M
