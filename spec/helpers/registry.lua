-- The project's Schema Registry (tools/schema-registry/server.py) and Confluent's serializers
-- (tools/schema-registry/produce.py) for the specs: start a registry on a port of the run's range, stop
-- and restart it with the same schemas, read what it counted, and produce records in Confluent's wire
-- format through it. Both run in the serializers' virtualenv (scripts/install-deps.sh installs it).
--
--   local registry = require "spec.helpers.registry"
--   local sr = registry.start{ auth = "basic" }   -- "none" (default), "basic" or "oauth2"
--   sr.url, sr.port, sr.token_url, sr.credentials  -- credentials: the ones it accepts (below)
--   sr:produce{ format = "avro", schema = "spec/fixtures/registry/order.avsc", topic = t,
--               records = { { value = {...}, key = "k" } } }   --> { records = { {partition, offset,
--                                                            --      value_schema_id, key_schema_id} }, schema_ids }
--   sr:try_produce{...}  --> true, report | false, what produce.py printed (a refused schema or record)
--   sr:request("GET", "/schemas/ids/1")  --> status, decoded body, headers (a raw REST call)
--   sr:counters()  --> { schema_id_requests, schema_id_requests_by_id = { ["1"] = n }, token_requests,
--                        token_requests_granted, unauthorized, requests }; sr:reset() zeroes them
--   sr:token_requests(), sr:set_delay(seconds), sr:client_properties()
--   sr:stop(); sr:restart()   -- the same port and schemas
local cjson = require "cjson.safe"
local helpers = require "spec.helpers.host"
local http = require "spec.helpers.http"
local proc = require "spec.helpers.proc"


local _M = {}
local Registry = {}
Registry.__index = Registry


_M.TOOLS = helpers.ROOT .. "/tools/schema-registry"
-- What the registry accepts unless a spec gives its own: basic credentials, an oauth2 client and a
-- resource owner (for the password grant).
_M.CREDENTIALS = {
  basic = { username = "sr-user", password = "sr-basic-secret" },
  oauth2 = { client_id = "sr-client", client_secret = "sr-client-secret", username = "sr-owner",
             password = "sr-owner-secret" },
}


local function write_file(path, content)
  local file = assert(io.open(path, "w"))
  file:write(content)
  file:close()
end


-- A request to the registry on a fresh connection: status, decoded body (or the raw body when it is
-- not JSON), headers; nil, err when it cannot connect.
function Registry:request(method, path, body, headers)
  headers = headers or {}
  local encoded = body
  if type(body) == "table" then
    encoded = cjson.encode(body)
    headers["Content-Type"] = headers["Content-Type"] or "application/vnd.schemaregistry.v1+json"
  end
  local status, response, response_headers = http.once("127.0.0.1", self.port, method, path, headers, encoded, 10)
  if not status then
    return nil, response
  end
  local decoded = cjson.decode(response)
  if decoded == nil then
    decoded = response
  end
  return status, decoded, response_headers
end


local function test_endpoint(self, method, path, body)
  local status, decoded = self:request(method, "/_test/" .. path, body)
  assert(status == 200, "registry /_test/" .. path .. ": " .. tostring(status) .. " " .. cjson.encode(decoded))
  return decoded
end


-- What the registry counted since it started (or since reset()).
function Registry:counters()
  return test_endpoint(self, "GET", "counters")
end


-- The token endpoint's requests, oldest first: grant_type, client_auth_method, client_id,
-- client_authenticated, username, fields (the form; secret fields by name with a null value), headers
-- (without Authorization), status.
function Registry:token_requests()
  return test_endpoint(self, "GET", "token_requests")
end


function Registry:reset()
  test_endpoint(self, "POST", "reset")
end


-- Every registry API answer (not the token endpoint's) waits `seconds` first; 0 ends it.
function Registry:set_delay(seconds)
  test_endpoint(self, "PUT", "delay", { seconds = seconds })
end


-- Starts the server (again) on self.port and waits until it answers.
function Registry:run()
  local args = { "--port", self.port, "--auth", self.auth, "--state", self.dir .. "/state.json",
                 "--credentials", self.dir .. "/credentials.json", "--token-lifetime", self.token_lifetime,
                 "--delay", self.delay }
  self.pid = proc.spawn(string.format("exec %s/run server %s", _M.TOOLS, table.concat(args, " ")),
                        self.dir .. "/server.log")
  local answered = proc.wait_until(function()
    return self:request("GET", "/_test/counters") == 200
  end, 20, 0.05)
  assert(answered, "the registry did not answer on port " .. self.port .. ": " .. helpers.read_file(self.dir .. "/server.log"))
end


function Registry:stop()
  if self.pid then
    proc.kill(self.pid)
    self.pid = nil
  end
end


-- Stops it and starts it again on the same port; it keeps its schemas (its state file), and its counters
-- start from zero.
function Registry:restart()
  self:stop()
  self:run()
end


-- opts: auth ("none", "basic", "oauth2"), credentials (default CREDENTIALS), port (default the next of the
-- run's range), token_lifetime (s, default 3600), delay (s, default 0). Returns a started registry.
function _M.start(opts)
  opts = opts or {}
  local port = opts.port or helpers.next_ports()
  local self = setmetatable({
    port = port,
    url = "http://127.0.0.1:" .. port,
    token_url = "http://127.0.0.1:" .. port .. "/oauth2/token",
    auth = opts.auth or "none",
    credentials = opts.credentials or _M.CREDENTIALS,
    token_lifetime = opts.token_lifetime or 3600,
    delay = opts.delay or 0,
    dir = helpers.RUN_DIR .. "/registry-" .. port .. "-" .. helpers.unique_name("sr"),
  }, Registry)
  helpers.sh_ok("mkdir -p " .. self.dir)
  -- the secrets go to a file of the run's own, never onto a command line
  write_file(self.dir .. "/credentials.json", cjson.encode(self.credentials))
  helpers.sh_ok("chmod 600 " .. self.dir .. "/credentials.json")
  self:run()
  return self
end


-- The registry client properties of Confluent's serializers for this registry's auth mode.
function Registry:client_properties()
  local c = self.credentials
  if self.auth == "basic" then
    return { ["basic.auth.user.info"] = c.basic.username .. ":" .. c.basic.password }
  elseif self.auth == "oauth2" then
    return { ["bearer.auth.credentials.source"] = "OAUTHBEARER",
             ["bearer.auth.issuer.endpoint.url"] = self.token_url,
             ["bearer.auth.client.id"] = c.oauth2.client_id,
             ["bearer.auth.client.secret"] = c.oauth2.client_secret,
             ["bearer.auth.scope"] = "schema_registry",
             -- Confluent Cloud's headers, which the client requires; this registry ignores them
             ["bearer.auth.logical.cluster"] = "lsrc-test", ["bearer.auth.identity.pool.id"] = "pool-test" }
  end
  return {}
end


-- Produces records with Confluent's serializers (tools/schema-registry/produce.py) through this
-- registry. opts: format ("avro", "protobuf", "json"), schema (a file), topic, records (a list of
-- { value = , key = , headers = { name = "text" }, partition = }), and optionally message (Protobuf full
-- name), key_format ("string" or a format), key_schema, key_message, references (a list of
-- { name = , subject = , schema = file }, in dependency order), proto_paths, no_auto_register,
-- use_latest_version, no_validate, subject_name_strategy, broker_port (default the test broker).
-- Returns true and produce.py's report: { topic, records = { { partition, offset, value_schema_id,
-- key_schema_id } }, schema_ids }, or false and what produce.py printed when it failed (a schema the
-- registry refused, a record its schema refused, a registry it could not reach).
function Registry:try_produce(opts)
  local n = helpers.unique_name("produce")
  local records_file = self.dir .. "/" .. n .. ".jsonl"
  local lines = {}
  for i, record in ipairs(opts.records) do
    lines[i] = cjson.encode(record)
  end
  write_file(records_file, table.concat(lines, "\n") .. "\n")
  local credentials_file = self.dir .. "/" .. n .. "-client.json"
  write_file(credentials_file, cjson.encode(self:client_properties()))
  helpers.sh_ok("chmod 600 " .. credentials_file)
  local args = {
    "--format", opts.format, "--schema", opts.schema, "--topic", opts.topic, "--records", records_file,
    "--registry", self.url, "--registry-credentials", credentials_file,
    "--broker", helpers.BROKER_HOST .. ":" .. (opts.broker_port or helpers.BROKER_PORT),
  }
  local function add(flag, value)
    if value then
      args[#args + 1] = flag
      if value ~= true then
        args[#args + 1] = value
      end
    end
  end
  add("--message", opts.message)
  add("--key-format", opts.key_format)
  add("--key-schema", opts.key_schema)
  add("--key-message", opts.key_message)
  add("--subject-name-strategy", opts.subject_name_strategy)
  add("--no-auto-register", opts.no_auto_register)
  add("--use-latest-version", opts.use_latest_version)
  add("--no-validate", opts.no_validate)
  for _, reference in ipairs(opts.references or {}) do
    add("--reference", reference.name .. "=" .. reference.subject .. "=" .. reference.schema)
  end
  for _, dir in ipairs(opts.proto_paths or {}) do
    add("--proto-path", dir)
  end
  local ok, output = helpers.sh(string.format("cd %s && %s/run produce %s", helpers.ROOT, _M.TOOLS,
                                               table.concat(args, " ")))
  if not ok then
    return false, output
  end
  local report = cjson.decode(output:match("([^\n]+)\n*$") or "")
  assert(report, "produce.py printed no report: " .. output)
  return true, report
end


-- try_produce that must succeed: returns the report.
function Registry:produce(opts)
  local ok, report = self:try_produce(opts)
  assert(ok, "produce.py failed: " .. tostring(report))
  return report
end


return _M
