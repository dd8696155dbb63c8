-- The error answers both modes give before a response starts: Kong's JSON `{"message": ...}`.
--
-- A failure on Kafka's side (the consumer cannot be built, Kafka is unavailable or too slow) reaches the
-- client in full only with `error_handling.return_error_message` (Kong 3.15's field, default false);
-- otherwise the client gets its status's generic message and the reason goes to the error log. Errors in
-- the client's own input (400) always say what is wrong: they hold nothing of the gateway's.
local kong = kong
local ipairs = ipairs


local _M = {}


local GENERIC = {
  [500] = "cannot create the Kafka consumer",
  [503] = "Kafka is unavailable",
  [504] = "timed out waiting for Kafka",
}
-- What a 503 names, by whose failure it is: the client learns which part to look at, and nothing of the
-- gateway's. The native side's reasons start with these (State::unavailable in src/consumer.rs).
local UNAVAILABLE = {
  "Kafka is unavailable",
  "Schema registry is unavailable",
  "Dead-letter topic is unavailable",
}


function _M.error(status, message)
  return kong.response.exit(status, { message = message })
end


-- What the client may see of the Kafka failure `reason` (answered with `status`, or sent as an SSE
-- error event); the reason itself goes to the error log.
function _M.kafka_message(conf, status, reason)
  kong.log.err(reason)
  if conf.error_handling.return_error_message then
    return reason
  end
  if status == 503 then
    for _, generic in ipairs(UNAVAILABLE) do
      if reason:sub(1, #generic + 1) == generic .. ":" then
        return generic
      end
    end
  end
  return GENERIC[status]
end


function _M.kafka_failure(conf, status, reason)
  return _M.error(status, _M.kafka_message(conf, status, reason))
end


-- The native consumer could not be created (invalid settings librdkafka refuses, no socket, no thread).
function _M.consumer_failed(conf, err)
  return _M.kafka_failure(conf, 500, "cannot create the Kafka consumer: " .. err)
end


-- consumer_group.mode kong_consumer: this worker already reads max_consumer_groups Kong consumers' groups
-- of the plugin, each in use. Not a Kafka failure: precise whatever error_handling says.
function _M.consumers_busy(message)
  kong.response.set_header("Retry-After", 1)
  return _M.error(503, message)
end


return _M
