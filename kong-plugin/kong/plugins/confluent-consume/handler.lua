-- confluent-consume: serves Kafka topics over HTTP. Each phase delegates to one module.
local consumers = require "kong.plugins.confluent-consume.consumers"
local message_functions = require "kong.plugins.confluent-consume.message_functions"


local MODES = {
  ["http-get"] = require "kong.plugins.confluent-consume.http_get",
  ["server-sent-events"] = require "kong.plugins.confluent-consume.sse",
}


local ConfluentConsume = {
  -- Below Kong's authentication plugins (1000+), as Kong's own consume plugins (754).
  PRIORITY = 754,
  VERSION = "0.1.0",
}


function ConfluentConsume:configure(configs)
  consumers.retain(configs)
  message_functions.retain(configs)
end


function ConfluentConsume:access(conf)
  return MODES[conf.mode].serve(conf)
end


return ConfluentConsume
