-- key-auth for the development host: authenticates a request by an API key of a `keyauth_credentials`
-- entity, as Kong's bundled key-auth does for the plugins after it to notice: the same priority, answers
-- (401 "No API key found in request" with `WWW-Authenticate: Key realm="kong"`, 401 "Unauthorized", 401
-- "Duplicate API key found"), `kong.client.authenticate(consumer, credential)`, the X-Consumer-* headers
-- on the request, and `anonymous`. Written for the host (Kong's own lives in Kong); keys are read from
-- the worker's copy of the configuration, so no cache is needed.
local kong = kong
local type = type
local error = error
local ipairs = ipairs


local REALM = 'Key realm="kong"'


local KeyAuth = {
  -- Kong's: authentication plugins run before the plugins they protect (confluent-consume: 754).
  PRIORITY = 1250,
  VERSION = "3.10.0",
}


-- The headers Kong sets on the request for the upstream (here: for the plugins after this one).
local function set_consumer(consumer, credential)
  kong.client.authenticate(consumer, credential)
  local request = kong.service.request
  local function set(name, value)
    if value ~= nil then
      request.set_header(name, value)
    else
      request.clear_header(name)
    end
  end
  set("X-Consumer-ID", consumer and consumer.id)
  set("X-Consumer-Custom-ID", consumer and consumer.custom_id)
  set("X-Consumer-Username", consumer and consumer.username)
  set("X-Credential-Identifier", credential and credential.id)
  set("X-Anonymous-Consumer", not credential or nil)
end


-- The key of the request: the first of key_names found in the headers, else the query string; or nil,
-- status, message, headers.
local function find_key(conf)
  local headers = kong.request.get_headers()
  local query = kong.request.get_query()
  for _, name in ipairs(conf.key_names) do
    local value = conf.key_in_header and headers[name] or nil
    if value == nil and conf.key_in_query then
      value = query[name]
    end
    if type(value) == "table" then
      return nil, 401, "Duplicate API key found"
    end
    if type(value) == "string" then
      if conf.hide_credentials then
        query[name] = nil
        kong.service.request.set_query(query)
        kong.service.request.clear_header(name)
      end
      if value ~= "" then
        return value
      end
      break
    end
  end
  return nil, 401, "No API key found in request", { ["WWW-Authenticate"] = REALM }
end


local function authenticate(conf)
  local key, status, message, headers = find_key(conf)
  if not key then
    return nil, status, message, headers
  end
  local credential = kong.db.keyauth_credentials:select_by_key(key)
  if not credential or credential.ttl == 0 then
    return nil, 401, "Unauthorized"
  end
  local consumer = kong.client.load_consumer(credential.consumer.id)
  if not consumer then
    kong.log.err("the consumer of credential ", credential.id, " does not exist")
    return nil, 500, "An unexpected error occurred"
  end
  set_consumer(consumer, credential)
  return true
end


function KeyAuth:access(conf)
  if not conf.run_on_preflight and kong.request.get_method() == "OPTIONS" then
    return
  end
  -- with `anonymous`, authentication plugins are alternatives: one that already succeeded is enough
  if conf.anonymous and kong.client.get_credential() then
    return
  end
  local ok, status, message, headers = authenticate(conf)
  if ok then
    return
  end
  if not conf.anonymous then
    return kong.response.error(status, message, headers)
  end
  local anonymous = kong.client.load_consumer(conf.anonymous, true)
  if not anonymous then
    error("anonymous consumer " .. conf.anonymous .. " is configured but doesn't exist")
  end
  set_consumer(anonymous, nil)
end


return KeyAuth
