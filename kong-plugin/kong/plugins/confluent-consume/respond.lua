-- The error answers both modes give before a response starts: Kong's JSON `{"message": ...}`.
local kong = kong


local _M = {}


function _M.error(status, message)
  return kong.response.exit(status, { message = message })
end


-- The native consumer could not be created (invalid settings librdkafka refuses, no socket, no thread).
function _M.consumer_failed(err)
  kong.log.err("cannot create the Kafka consumer: ", err)
  return _M.error(500, "cannot create the Kafka consumer: " .. err)
end


return _M
