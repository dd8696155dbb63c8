-- The error answers both modes give before a response starts: Kong's JSON `{"message": ...}`.
--
-- A failure on Kafka's side (the consumer cannot be built, Kafka is unavailable or too slow) reaches the
-- client in full only with `error_handling.return_error_message` (Kong 3.15's field, default false);
-- otherwise the client gets its status's generic message and the reason goes to the error log. Errors in
-- the client's own input (400) always say what is wrong: they hold nothing of the gateway's.
local kong = kong
local pairs = pairs


local _M = {}


local GENERIC = {
  [500] = "cannot create the Kafka consumer",
  [503] = "Kafka is unavailable",
  [504] = "timed out waiting for Kafka",
}
-- What a 503 names when the cause is not Kafka's: the client learns which part to look at, and nothing
-- of the gateway's (the reason starts with it, see `unavailable`).
local UNAVAILABLE = {
  kafka = "Kafka is unavailable",
  registry = "Schema registry is unavailable",
  dlq = "Dead-letter topic is unavailable",
}


-- The reason a handle cannot serve, from its state's `err` and `source` ("kafka", "registry" or "dlq").
function _M.unavailable(err, source)
  return (UNAVAILABLE[source] or UNAVAILABLE.kafka) .. ": " .. err
end


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
    for _, generic in pairs(UNAVAILABLE) do
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


return _M
