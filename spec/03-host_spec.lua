-- kong-host: schema validator and form decoding (plain LuaJIT), and an
-- integration run of the host with the host-echo test plugin.
--
-- Run from the repository root:  luajit /usr/bin/busted spec/03-host_spec.lua

local function script_dir()
  local source = debug.getinfo(1, "S").source:sub(2)
  local dir = source:match("^(.*)/[^/]*$") or "."
  local p = io.popen("cd '" .. dir .. "' && pwd")
  local abs = p:read("*l")
  p:close()
  return abs
end


local SPEC_DIR = script_dir()
local REPO_DIR = SPEC_DIR:gsub("/spec$", "")
local HOST_DIR = REPO_DIR .. "/host"
local KONG_HOST = HOST_DIR .. "/bin/kong-host"

package.path = HOST_DIR .. "/lua/?.lua;" .. HOST_DIR .. "/lua/?/init.lua;" ..
               package.path

local cjson = require "cjson.safe"
local socket = require "socket"
local schema = require "kong_host.schema"
local form = require "kong_host.form"
local typedefs = require "kong.db.schema.typedefs"


local null = cjson.null


-- A small plugin schema exercising the features real plugin schemas use.
local FAKE_SCHEMA = {
  name = "fake",
  fields = {
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          { bootstrap_servers = {
              type = "array",
              elements = { type = "record", fields = {
                { host = typedefs.host { required = true } },
                { port = typedefs.port { required = true } },
              } },
          } },
          { topics = {
              type = "array", required = true, len_min = 1,
              elements = { type = "record", fields = {
                { name = { type = "string", required = true } },
              } },
          } },
          { mode = { type = "string", required = true, default = "http-get",
                     one_of = { "http-get", "server-sent-events" } } },
          { timeout = typedefs.timeout { default = 10000 } },
          { keepalive_enabled = { type = "boolean", default = false } },
          { ratio = { type = "number", gt = 0 } },
          { api_key = { type = "string", referenceable = true, encrypted = true } },
          { api_secret = { type = "string", referenceable = true, encrypted = true } },
          { tags = { type = "set", elements = { type = "string" } } },
          { headers = { type = "map", keys = { type = "string", match = "^x%-" },
                        values = { type = "string" } } },
          { security = { type = "record", fields = {
              { ssl_verify = { type = "boolean", default = true } },
          } } },
          { limits = { type = "record", required = true, fields = {
              { max = { type = "integer", default = 10 } },
          } } },
          { group = { type = "string", custom_validator = function(v)
              if v:find(" ", 1, true) then
                return nil, "must not contain spaces"
              end
              return true
          end } },
        },
        entity_checks = {
          { mutually_required = { "api_key", "api_secret" } },
        },
    } },
  },
  entity_checks = {
    { conditional = {
        if_field = "config.mode", if_match = { eq = "server-sent-events" },
        then_field = "config.keepalive_enabled", then_match = { eq = true },
    } },
  },
}


local function validate(config, opts)
  opts = opts or {}
  opts.schema = opts.schema or FAKE_SCHEMA
  return schema.validate_plugin({ name = "fake", config = config }, opts)
end


local MINIMAL = { topics = { { name = "t" } } }


describe("kong-host schema validator", function()
  it("fills defaults, including nested records that are present", function()
    local entity = assert(validate({ topics = { { name = "t" } },
                                     security = {} }))
    local c = entity.config
    assert.equal("http-get", c.mode)
    assert.equal(10000, c.timeout)
    assert.is_false(c.keepalive_enabled)
    assert.is_true(c.security.ssl_verify)
    assert.same({ max = 10 }, c.limits)          -- required record
    assert.is_true(entity.enabled)
    assert.same({ "grpc", "grpcs", "http", "https", "ws", "wss" },
                entity.protocols)
  end)

  it("leaves an absent non-required record without default as nil", function()
    local entity = assert(validate(MINIMAL))
    assert.is_nil(entity.config.security)
  end)

  it("reports a missing required field like Kong", function()
    local ok, errors, message = validate({})
    assert.is_nil(ok)
    assert.same({ config = { topics = "required field missing" } }, errors)
    assert.equal("schema violation (config.topics: required field missing)",
                 message)
  end)

  it("treats an explicit null as missing for required fields", function()
    local _, errors = validate({ topics = { { name = "t" } }, mode = null })
    assert.same({ config = { mode = "required field missing" } }, errors)
  end)

  it("collects several errors, sorted, per field path", function()
    local _, errors, message = validate({
      topics = {},
      mode = "ws",
      bootstrap_servers = { { host = "127.0.0.1", port = 70000 } },
      timeout = 1.5,
      unknown = 1,
    })
    assert.same({ config = {
      topics = "length must be at least 1",
      mode = "expected one of: http-get, server-sent-events",
      bootstrap_servers = { { port = "value should be between 0 and 65535" } },
      timeout = "expected an integer",
      unknown = "unknown field",
    } }, errors)
    assert.equal("5 schema violations (" ..
                 "config.bootstrap_servers.1.port: value should be between 0 and 65535; " ..
                 "config.mode: expected one of: http-get, server-sent-events; " ..
                 "config.timeout: expected an integer; " ..
                 "config.topics: length must be at least 1; " ..
                 "config.unknown: unknown field)", message)
  end)

  it("reports type errors with Kong's wording", function()
    local _, errors = validate({
      topics = "t", keepalive_enabled = "yes", ratio = "x",
      security = "on", group = 5,
    })
    assert.same({ config = {
      topics = "expected an array",
      keepalive_enabled = "expected a boolean",
      ratio = "expected a number",
      security = "expected a record",
      group = "expected a string",
    } }, errors)
  end)

  it("rejects empty strings, gt violations and custom validator failures", function()
    local _, errors = validate({ topics = { { name = "" } }, ratio = 0,
                                 group = "a b" })
    assert.same({ config = {
      topics = { { name = "length must be at least 1" } },
      ratio = "value must be greater than 0",
      group = "must not contain spaces",
    } }, errors)
  end)

  it("validates map keys and values and deduplicates sets", function()
    local _, errors = validate({ topics = { { name = "t" } },
                                 headers = { ["y-no"] = "v" } })
    assert.same({ config = { headers = { ["y-no"] = "invalid value: y-no" } } },
                errors)

    local entity = assert(validate({ topics = { { name = "t" } },
                                     tags = { "a", "b", "a" } }))
    assert.same({ "a", "b" }, entity.config.tags)
  end)

  it("runs entity checks on records and on the plugin entity", function()
    local _, errors, message = validate({ topics = { { name = "t" } },
                                          api_key = "k" })
    assert.same({ config = { ["@entity"] = {
      "all or none of these fields must be set: 'api_key', 'api_secret'" } } },
      errors)
    assert.equal("schema violation (all or none of these fields must be " ..
                 "set: 'api_key', 'api_secret')", message)

    _, errors, message = validate({ topics = { { name = "t" } },
                                    mode = "server-sent-events" })
    assert.same({
      ["@entity"] = { "failed conditional validation given value of field 'config.mode'" },
      config = { keepalive_enabled = "value must be true" },
    }, errors)
    assert.equal("2 schema violations (config.keepalive_enabled: value must " ..
                 "be true; failed conditional validation given value of " ..
                 "field 'config.mode')", message)
  end)

  it("supports the other entity checks", function()
    local def = {
      type = "record",
      fields = {
        { a = { type = "string" } }, { b = { type = "string" } },
        { c = { type = "string" } },
      },
      entity_checks = {
        { at_least_one_of = { "a", "b" } },
        { only_one_of = { "b", "c" } },
        { mutually_exclusive = { "a", "c" } },
        { conditional_at_least_one_of = {
            if_field = "a", if_match = { eq = "x" },
            then_at_least_one_of = { "b" },
        } },
        { custom_entity_check = {
            field_sources = { "a" },
            fn = function(r)
              if r.a == "bad" then
                return nil, "a must not be bad"
              end
              return true
            end,
        } },
      },
    }

    local _, errors = schema.validate_record(def, {})
    assert.same({ ["@entity"] = {
      "at least one of these fields must be non-empty: 'a', 'b'",
      "only one of these fields must be non-empty: 'b', 'c'",
    } }, errors)

    _, errors = schema.validate_record(def, { a = "x", c = "c" })
    assert.same({ ["@entity"] = {
      "only one or none of these fields must be set: 'a', 'c'",
      "at least one of these fields must be non-empty: 'b'",
    } }, errors)

    _, errors = schema.validate_record(def, { a = "bad", b = "b" })
    assert.same({ ["@entity"] = { "a must not be bad" } }, errors)

    assert.truthy(schema.validate_record(def, { a = "y", b = "b" }))
  end)

  it("refuses scoping to a consumer (typedefs.no_consumer)", function()
    local _, errors = schema.validate_plugin({
      name = "fake", config = MINIMAL,
      consumer = { id = "6b5a2ed6-1a42-4d0e-8e73-a1e8de2f6c6d" },
    }, { schema = FAKE_SCHEMA })
    assert.same({ consumer = "value must be null" }, errors)
  end)

  it("reports a plugin that is not enabled", function()
    local _, errors, message = schema.validate_plugin({ name = "nope" },
                                                      { enabled = {} })
    assert.same({ name = "plugin 'nope' not enabled; add it to the " ..
                         "'plugins' configuration property" }, errors)
    assert.equal("schema violation (name: plugin 'nope' not enabled; add " ..
                 "it to the 'plugins' configuration property)", message)
  end)

  it("coerces form strings to the schema types", function()
    local entity = assert(validate({
      topics = { { name = "orders" } },
      tags = "solo",
      bootstrap_servers = { { host = "127.0.0.1", port = "9092" } },
      keepalive_enabled = "true",
      timeout = "500",
    }, { coerce = true }))
    assert.same({ { host = "127.0.0.1", port = 9092 } },
                entity.config.bootstrap_servers)
    assert.same({ "solo" }, entity.config.tags)
    assert.is_true(entity.config.keepalive_enabled)
    assert.equal(500, entity.config.timeout)
  end)

  it("checks that references resolve and resolves them on demand", function()
    local function getenv(name)
      return ({ MY_KEY = "key", MY_SECRET = "secret" })[name]
    end

    local entity = assert(validate({
      topics = { { name = "t" } },
      api_key = "{vault://env/my-key}",
      api_secret = "{vault://env/my-secret}",
    }, { getenv = getenv }))
    -- Stored as given; resolved only for the plugin.
    assert.equal("{vault://env/my-key}", entity.config.api_key)

    local conf = assert(schema.resolve_references(FAKE_SCHEMA, entity.config,
                                                  getenv))
    assert.equal("key", conf.api_key)
    assert.equal("secret", conf.api_secret)

    local _, errors = validate({
      topics = { { name = "t" } },
      api_key = "{vault://env/missing-one}",
      api_secret = "x",
    }, { getenv = getenv })
    assert.same({ config = { api_key = "could not resolve reference " ..
      "{vault://env/missing-one}: environment variable MISSING_ONE is not set" } },
      errors)
  end)

  it("makes typedefs callable with overrides, without changing them", function()
    local t = typedefs.timeout { default = 1000 }
    assert.equal(1000, t.default)
    assert.equal("integer", t.type)
    assert.is_nil(typedefs.timeout.default)
    assert.same({ 0, 65535 }, typedefs.port.between)
    assert.equal(null, typedefs.no_consumer.eq)
  end)

  it("builds Kong's schema violation object", function()
    local _, errors = validate({})
    assert.same({
      code = 2,
      name = "schema violation",
      message = "schema violation (config.topics: required field missing)",
      fields = { config = { topics = "required field missing" } },
    }, schema.schema_violation(errors))
  end)
end)


describe("kong-host form decoding", function()
  it("decodes Kong's nested form syntax", function()
    local args = form.parse_urlencoded(
      "name=confluent-consume" ..
      "&config.bootstrap_servers%5B1%5D.host=127.0.0.1" ..
      "&config.bootstrap_servers[1].port=9092" ..
      "&config.bootstrap_servers[2].host=h2&config.bootstrap_servers[2].port=1" ..
      "&config.topics[1].name=my-topic" ..
      "&config.authentication.user=x" ..
      "&config.tags[]=a&config.tags[]=b" ..
      "&hosts=a.test&hosts=b.test")

    assert.same({
      name = "confluent-consume",
      hosts = { "a.test", "b.test" },
      config = {
        bootstrap_servers = {
          { host = "127.0.0.1", port = "9092" },
          { host = "h2", port = "1" },
        },
        topics = { { name = "my-topic" } },
        authentication = { user = "x" },
        tags = { "a", "b" },
      },
    }, form.decode(args))
  end)

  it("orders by index and accepts 0-based indexes", function()
    assert.same({ a = { "x", "y" } },
                form.decode({ ["a[1]"] = "y", ["a[0]"] = "x" }))
  end)

  it("decodes plus and percent escapes", function()
    assert.same({ ["a b"] = "c d/e" },
                form.parse_urlencoded("a+b=c+d%2Fe"))
  end)

  it("rejects malformed names", function()
    local ok, err = form.decode({ ["a[1"] = "x" })
    assert.is_nil(ok)
    assert.equal("invalid argument name 'a[1'", err)
  end)
end)


---------------------------------------------------------------------------
-- Integration
---------------------------------------------------------------------------


-- The first two ports of the run's range (scripts/run-tests.sh runs spec files one at a time).
local PORT_BASE = tonumber(os.getenv("CC_TEST_PORT_BASE") or "18100")
local PROXY = "127.0.0.1:" .. PORT_BASE


local ADMIN = "127.0.0.1:" .. (PORT_BASE + 1)


local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end


local function run(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  local ok, _, code = p:close()
  return ok == true or code == 0, out
end


-- curl helper: returns status, decoded JSON (or raw) body, headers.
-- opts.form: array of "k=v" strings (sent urlencoded, like curl -d)
-- opts.json: table sent as JSON; opts.host: Host header
local function http(method, url, opts)
  opts = opts or {}
  local cmd = { "curl -s -i -X", method, shell_quote("http://" .. url) }
  if opts.host then
    cmd[#cmd + 1] = "-H " .. shell_quote("Host: " .. opts.host)
  end
  for _, kv in ipairs(opts.form or {}) do
    cmd[#cmd + 1] = "--data-urlencode " .. shell_quote(kv)
  end
  if opts.json then
    cmd[#cmd + 1] = "-H 'Content-Type: application/json' -d " ..
                    shell_quote(cjson.encode(opts.json))
  end

  local p = io.popen(table.concat(cmd, " "))
  local raw = p:read("*a")
  p:close()

  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no HTTP answer from " .. url .. ": " .. raw)
  local status = tonumber(head:match("^HTTP/%S+ (%d+)"))
  local headers = {}
  for k, v in head:gmatch("\r\n([^:]+): ([^\r]*)") do
    headers[k:lower()] = v
  end
  return status, cjson.decode(body) or body, headers
end


-- Waits until every worker of the host in `prefix` has applied the configuration the Admin API holds now:
-- each logs "configuration version N applied" when its 1 s sync timer brings it up to date.
local function wait_for_sync(prefix)
  local status, body = http("GET", ADMIN .. "/status")
  assert.equal(200, status)
  local pattern = "configuration version " .. body.configuration_version .. " applied"
  local _, master = run("cat " .. shell_quote(prefix .. "/logs/nginx.pid"))
  local _, children = run("pgrep -P " .. assert(tonumber(master), "no master pid"))
  local deadline = socket.gettime() + 5
  while true do
    local file = assert(io.open(prefix .. "/logs/error.log"))
    local log = file:read("*a")
    file:close()
    local synced = true
    for pid in children:gmatch("%d+") do
      synced = synced and log:find("%] " .. pid .. "#%d+: [^\n]*" .. pattern) ~= nil
    end
    if synced then
      return
    end
    assert(socket.gettime() < deadline, "the workers did not apply version " .. body.configuration_version)
    socket.sleep(0.05)  -- the poll interval of this wait
  end
end


-- Hits a route until every worker has answered; returns pid -> answer.
local function answers_per_worker(host, path, workers)
  local seen, count = {}, 0
  for _ = 1, 200 do
    local status, body = http("GET", PROXY .. path, { host = host })
    assert.equal(200, status)
    if not seen[body.worker_pid] then
      seen[body.worker_pid] = body
      count = count + 1
      if count == workers then
        return seen
      end
    end
  end
  error("only " .. count .. " of " .. workers .. " workers answered")
end


describe("kong-host integration", function()
  local prefix

  lazy_setup(function()
    prefix = os.tmpname()
    os.remove(prefix)
    assert(run("mkdir -p " .. shell_quote(prefix)))

    local ok, out = run(table.concat({
      KONG_HOST, "start",
      "--prefix", shell_quote(prefix),
      "--config", shell_quote(HOST_DIR .. "/testdata/kong.yml"),
      "--plugin-path", shell_quote(HOST_DIR .. "/testdata"),
      "--workers", "2",
      "--proxy-listen", PROXY,
      "--admin-listen", ADMIN,
    }, " "))
    assert(ok, "kong-host start failed:\n" .. out)
  end)

  lazy_teardown(function()
    if prefix then
      run(KONG_HOST .. " stop --prefix " .. shell_quote(prefix))
      run("rm -rf " .. shell_quote(prefix))
    end
  end)

  it("routes by exact and wildcard host, longest prefix and regex", function()
    local status, body = http("GET", PROXY .. "/echo/x?a=1&a=2&b",
                              { host = "echo.test" })
    assert.equal(200, status)
    assert.equal("hello", body.conf.message)
    assert.same({ a = { "1", "2" }, b = true }, body.query)
    assert.same({ { host = "127.0.0.1", port = 9092 } }, body.conf.servers)
    assert.equal(1000, body.conf.timeout)

    status, body = http("GET", PROXY .. "/echo", { host = "a.wild.test" })
    assert.equal(200, status)
    assert.equal("hello", body.conf.message)

    status, body = http("GET", PROXY .. "/echo/deeper", { host = "echo.test" })
    assert.equal(200, status)
    assert.equal("deep", body.conf.message)

    status, body = http("GET", PROXY .. "/anything", { host = "svc.test" })
    assert.equal(200, status)
    assert.equal("from-service-route", body.conf.message)

    status, body = http("GET", PROXY .. "/items/42")
    assert.equal(200, status)
    assert.equal("regex", body.conf.message)

    status, body = http("GET", PROXY .. "/items/4x2")
    assert.equal(404, status)
    assert.same({ message = "no Route matched with those values" }, body)

    status = http("POST", PROXY .. "/items/42")
    assert.equal(404, status)
  end)

  it("creates routes and plugins from Kong's form syntax", function()
    local status, route = http("POST", ADMIN .. "/routes", { form = {
      "name=form-route", "hosts[]=form.test", "paths[]=/form",
    } })
    assert.equal(201, status)
    assert.equal("form-route", route.name)
    assert.same({ "form.test" }, route.hosts)
    assert.same({ "http", "https" }, route.protocols)
    assert.is_true(route.strip_path)
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", route.id)

    local body
    status, body = http("POST", ADMIN .. "/routes", { form = {
      "name=form-route", "hosts[]=other.test",
    } })
    assert.equal(409, status)
    assert.same({
      code = 5,
      name = "unique constraint violation",
      message = "UNIQUE violation detected on '{name=\"form-route\"}'",
      fields = { name = "form-route" },
    }, body)

    local plugin
    status, plugin = http("POST", ADMIN .. "/routes/form-route/plugins", {
      form = {
        "name=host-echo",
        "config.message=from form",
        "config.servers[1].host=127.0.0.1",
        "config.servers[1].port=9092",
        "config.status=201",
      },
    })
    assert.equal(201, status)
    assert.same({ id = route.id }, plugin.route)
    assert.equal(201, plugin.config.status)
    assert.same({ { host = "127.0.0.1", port = 9092 } }, plugin.config.servers)

    wait_for_sync(prefix)
    local answer
    status, answer = http("GET", PROXY .. "/form?x=y", { host = "form.test" })
    assert.equal(201, status)
    assert.equal("from form", answer.conf.message)
    assert.equal(plugin.id, answer.conf.__plugin_id)
    assert.same({ x = "y" }, answer.query)

    status, body = http("GET", ADMIN .. "/routes/form-route/plugins")
    assert.equal(200, status)
    assert.equal(1, #body.data)

    status, body = http("GET", ADMIN .. "/routes/no-such-route")
    assert.equal(404, status)
    assert.same({ message = "Not found" }, body)
  end)

  it("answers schema violations like Kong", function()
    local status, body = http("POST", ADMIN .. "/routes/echo-deep/plugins", {
      form = { "name=host-echo", "config.status=99" },
    })
    assert.equal(400, status)
    assert.same({
      code = 2,
      name = "schema violation",
      message = "2 schema violations (config.message: required field missing; " ..
                "config.status: value should be between 100 and 599)",
      fields = { config = {
        message = "required field missing",
        status = "value should be between 100 and 599",
      } },
    }, body)

    status, body = http("POST", ADMIN .. "/plugins", { json = {
      name = "no-such-plugin", route = { name = "echo" }, config = {},
    } })
    assert.equal(400, status)
    assert.equal("schema violation (name: plugin 'no-such-plugin' not " ..
                 "enabled; add it to the 'plugins' configuration property)",
                 body.message)
  end)

  it("applies a PATCH in every worker (configure called; a new conf, __seq__ changed, __key__ kept as in Kong)", function()
    local before = answers_per_worker("echo.test", "/echo", 2)

    local _, list = http("GET", ADMIN .. "/routes/echo/plugins")
    local plugin_id = list.data[1].id

    local status, patched = http("PATCH", ADMIN .. "/plugins/" .. plugin_id, {
      form = { "config.message=patched", "config.mode=fancy" },
    })
    assert.equal(200, status)
    assert.equal("patched", patched.config.message)
    -- Untouched fields survive the merge.
    assert.same({ { host = "127.0.0.1", port = 9092 } }, patched.config.servers)

    -- Idle workers pick the change up from their 1 s timer.
    wait_for_sync(prefix)

    local after = answers_per_worker("echo.test", "/echo", 2)
    for pid, old in pairs(before) do
      local new = after[pid]
      assert.truthy(new, "worker " .. pid .. " did not answer")
      assert.equal("patched", new.conf.message)
      assert.equal(plugin_id, new.conf.__plugin_id)
      assert.equal(old.conf.__key__, new.conf.__key__)
      assert.not_equal(old.conf.__seq__, new.conf.__seq__)
      assert.is_true(new.worker.configure_calls > old.worker.configure_calls)

      local found = false
      for _, key in ipairs(new.worker.configured_seqs) do
        found = found or key == new.conf.__seq__
      end
      assert.is_true(found, "configure did not receive the new conf")
    end
  end)

  it("answers 500 when a plugin throws", function()
    local _, list = http("GET", ADMIN .. "/routes/regex/plugins")
    local status = http("PATCH", ADMIN .. "/plugins/" .. list.data[1].id, {
      json = { config = { fail = true } },
    })
    assert.equal(200, status)
    wait_for_sync(prefix)

    local body
    status, body = http("GET", PROXY .. "/items/1")
    assert.equal(500, status)
    assert.same({ message = "An unexpected error occurred" }, body)
  end)

  it("deletes a route with its plugins", function()
    local status = http("DELETE", ADMIN .. "/routes/form-route")
    assert.equal(204, status)
    wait_for_sync(prefix)

    status = http("GET", PROXY .. "/form", { host = "form.test" })
    assert.equal(404, status)

    local _, plugins = http("GET", ADMIN .. "/plugins")
    for _, p in ipairs(plugins.data) do
      assert.not_equal("from form", p.config.message)
    end
  end)

  it("authenticates with key-auth as Kong: 401s, the consumer and credential for the plugins after it", function()
    local status, body, headers = http("GET", PROXY .. "/", { host = "keyed.test" })
    assert.equal(401, status)
    assert.same({ message = "No API key found in request" }, body)
    assert.equal('Key realm="kong"', headers["www-authenticate"])

    status, body = http("GET", PROXY .. "/?apikey=no-such-key", { host = "keyed.test" })
    assert.equal(401, status)
    assert.same({ message = "Unauthorized" }, body)

    status, body = http("GET", PROXY .. "/?apikey=bob-key&apikey=alice-key", { host = "keyed.test" })
    assert.equal(401, status)
    assert.same({ message = "Duplicate API key found" }, body)

    -- in the default header, and in the query string
    local cmd = "curl -s -H 'Host: keyed.test' -H 'apikey: bob-key' http://" .. PROXY .. "/"
    local _, raw = run(cmd)
    local answer = assert(cjson.decode(raw), raw)
    assert.equal("bob-custom", answer.consumer.custom_id)
    assert.equal("bob-key", answer.credential.key)
    assert.same({ id = answer.consumer.id }, answer.credential.consumer)
    assert.equal(answer.consumer.id, answer.headers["x-consumer-id"])
    assert.equal("bob-custom", answer.headers["x-consumer-custom-id"])
    assert.is_nil(answer.headers["x-consumer-username"])
    assert.equal(answer.credential.id, answer.headers["x-credential-identifier"])
    assert.is_nil(answer.headers["x-anonymous-consumer"])
    assert.equal("keyed", answer.conf.message)

    -- a plugin scoped to alice (declared under the consumer) runs instead of the route's for her
    status, answer = http("GET", PROXY .. "/?apikey=alice-second-key", { host = "keyed.test" })
    assert.equal(200, status)
    assert.equal("alice", answer.consumer.username)
    assert.equal("for-alice", answer.conf.message)
    assert.equal("alice-second-key", answer.credential.key, "a top-level credential of a declared consumer")
  end)

  it("reads key_names from the headers only when key_in_query is off, hides them, and lets anonymous in",
     function()
    local status, answer = http("GET", PROXY .. "/?x-key=alice-key", { host = "anonymous.test" })
    assert.equal(200, status)
    assert.equal("guest", answer.consumer.username, "a key in the query string is not read")
    assert.equal("true", answer.headers["x-anonymous-consumer"])
    assert.is_nil(answer.credential)

    local _, raw = run("curl -s -H 'Host: anonymous.test' -H 'X-Key: alice-key' http://" .. PROXY .. "/")
    answer = assert(cjson.decode(raw), raw)
    assert.equal("alice", answer.consumer.username)
    assert.is_nil(answer.headers["x-key"], "hide_credentials removes the key")
    assert.is_nil(answer.headers["x-anonymous-consumer"])
  end)

  it("serves consumers, their key-auth credentials and certificates in the Admin API as Kong does", function()
    local status, carol = http("POST", ADMIN .. "/consumers", { form = { "username=carol", "tags[]=t" } })
    assert.equal(201, status)
    assert.equal("carol", carol.username)
    assert.equal(null, carol.custom_id)
    assert.same({ "t" }, carol.tags)
    assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", carol.id)

    local body
    status, body = http("POST", ADMIN .. "/consumers", { form = { "username=carol" } })
    assert.equal(409, status)
    assert.same({ code = 5, name = "unique constraint violation", fields = { username = "carol" },
                  message = "UNIQUE violation detected on '{username=\"carol\"}'" }, body)

    status, body = http("POST", ADMIN .. "/consumers", { json = { tags = { "x" } } })
    assert.equal(400, status)
    assert.same({ code = 2, name = "schema violation",
                  message = "schema violation (at least one of these fields must be non-empty: " ..
                            "'custom_id', 'username')",
                  fields = { ["@entity"] = { "at least one of these fields must be non-empty: " ..
                                             "'custom_id', 'username'" } } }, body)

    status, body = http("PATCH", ADMIN .. "/consumers/carol", { form = { "custom_id=carol-1" } })
    assert.equal(200, status)
    assert.same({ carol.id, "carol", "carol-1" }, { body.id, body.username, body.custom_id })
    status, body = http("GET", ADMIN .. "/consumers/" .. carol.id)
    assert.equal(200, status)
    assert.equal("carol-1", body.custom_id)

    -- PUT creates under the path's username, then replaces
    status, body = http("PUT", ADMIN .. "/consumers/dave", { json = { custom_id = "d-1" } })
    assert.equal(200, status)
    assert.same({ "dave", "d-1" }, { body.username, body.custom_id })
    local dave_id = body.id
    status, body = http("PUT", ADMIN .. "/consumers/dave", { json = { tags = { "replaced" } } })
    assert.equal(200, status)
    assert.same({ dave_id, "dave", null }, { body.id, body.username, body.custom_id })

    -- a key is generated when none is given
    local credential
    status, credential = http("POST", ADMIN .. "/consumers/carol/key-auth", { form = {} })
    assert.equal(201, status)
    assert.matches("^%x+$", credential.key)
    assert.equal(32, #credential.key)
    assert.same({ id = carol.id }, credential.consumer)
    status, body = http("POST", ADMIN .. "/consumers/carol/key-auth", { form = { "key=alice-key" } })
    assert.equal(409, status)
    assert.same({ key = "alice-key" }, body.fields)
    status, body = http("GET", ADMIN .. "/consumers/carol/key-auth")
    assert.equal(200, status)
    assert.same({ credential.id }, { body.data[1].id })
    assert.equal(1, #body.data)
    status = http("GET", ADMIN .. "/consumers/dave/key-auth/" .. credential.id)
    assert.equal(404, status, "a credential is found under its own consumer only")
    status, body = http("GET", ADMIN .. "/consumers/no-such-consumer/key-auth")
    assert.equal(404, status)
    assert.same({ message = "Not found" }, body)

    wait_for_sync(prefix)
    status, body = http("GET", PROXY .. "/?apikey=" .. credential.key, { host = "keyed.test" })
    assert.equal(200, status)
    assert.equal("carol", body.consumer.username)

    -- deleting a consumer deletes its credentials (204 whether or not it existed)
    status = http("DELETE", ADMIN .. "/consumers/carol")
    assert.equal(204, status)
    status = http("DELETE", ADMIN .. "/consumers/carol")
    assert.equal(204, status)
    status = http("GET", ADMIN .. "/consumers/carol")
    assert.equal(404, status)
    wait_for_sync(prefix)
    status, body = http("GET", PROXY .. "/?apikey=" .. credential.key, { host = "keyed.test" })
    assert.equal(401, status)
    assert.same({ message = "Unauthorized" }, body)

    -- plugins scoped to a consumer, nested under it
    status, body = http("GET", ADMIN .. "/consumers/alice/plugins")
    assert.equal(200, status)
    assert.same({ "for-alice" }, { body.data[1].config.message })
    assert.equal(1, #body.data)
    status, body = http("POST", ADMIN .. "/consumers/guest/plugins", { form = {
      "name=host-echo", "config.message=for-guest" } })
    assert.equal(201, status)
    assert.equal(null, body.route)
    wait_for_sync(prefix)
    status, body = http("GET", PROXY .. "/", { host = "anonymous.test" })
    assert.equal(200, status)
    assert.same({ "guest", "for-guest" }, { body.consumer.username, body.conf.message })
    status = http("POST", ADMIN .. "/consumers/guest/plugins", { form = { "name=host-echo", "config.message=x" } })
    assert.equal(409, status)

    -- certificates: the declarative one, and one created here
    status, body = http("GET", ADMIN .. "/certificates/5f4034c2-0000-4000-8000-00000000c0de")
    assert.equal(200, status)
    assert.same({ "test" }, body.tags)
    assert.matches("^%-%-%-%-%-BEGIN PRIVATE KEY", body.key)
    status, body = http("POST", ADMIN .. "/certificates", { json = { cert = "-----BEGIN CERTIFICATE-----\n" } })
    assert.equal(400, status)
    assert.same({ key = "required field missing" }, body.fields)
    status, body = http("POST", ADMIN .. "/certificates", { json = {
      cert = "-----BEGIN CERTIFICATE-----\n", key = "-----BEGIN PRIVATE KEY-----\n", cert_alt = "-----BEGIN x" } })
    assert.equal(400, status)
    assert.same({ "all or none of these fields must be set: 'cert_alt', 'key_alt'" }, body.fields["@entity"])
    status, body = http("POST", ADMIN .. "/certificates", { json = {
      cert = "-----BEGIN CERTIFICATE-----\n", key = "-----BEGIN PRIVATE KEY-----\n" } })
    assert.equal(201, status)
    status = http("DELETE", ADMIN .. "/certificates/" .. body.id)
    assert.equal(204, status)
    status = http("GET", ADMIN .. "/certificates/" .. body.id)
    assert.equal(404, status)
  end)
end)


describe("kong-host declarative consumers", function()
  -- Starts (and stops) a host on `doc`, on the second pair of the run's ports; returns its output.
  local function start_with(doc)
    doc._format_version = "3.0"
    local dir = os.tmpname()
    os.remove(dir)
    assert(run("mkdir -p " .. shell_quote(dir)))
    local file = assert(io.open(dir .. "/kong.json", "w"))
    file:write(cjson.encode(doc))
    file:close()
    local _, out = run(table.concat({ KONG_HOST, "start", "--prefix", shell_quote(dir .. "/host"),
      "--config", shell_quote(dir .. "/kong.json"), "--plugin-path", shell_quote(HOST_DIR .. "/testdata"),
      "--proxy-listen", "127.0.0.1:" .. (PORT_BASE + 2), "--admin-listen", "127.0.0.1:" .. (PORT_BASE + 3) }, " "))
    run(KONG_HOST .. " stop --prefix " .. shell_quote(dir .. "/host") .. "; rm -rf " .. shell_quote(dir))
    return out
  end

  it("refuses what Kong refuses, naming the entity", function()
    for _, case in ipairs({
      { { consumers = { { username = "a" }, { username = "a" } } },
        "consumer 'a': UNIQUE violation detected on '{username=\"a\"}'" },
      { { consumers = { { tags = { "t" } } } },
        "consumer '1': schema violation (at least one of these fields must be non-empty: 'custom_id', 'username')" },
      { { keyauth_credentials = { { consumer = "nobody", key = "k" } } },
        'keyauth_credentials #1: consumer "nobody" not found' },
      { { consumers = { { username = "a", keyauth_credentials = { { key = "k" } } },
                        { username = "b", keyauth_credentials = { { key = "k" } } } } },
        "consumer 'b': keyauth_credentials #1: UNIQUE violation detected on '{key=\"k\"}'" },
      { { certificates = { { cert = "not a pem", key = "-----BEGIN PRIVATE KEY-----" } } },
        "certificate #1: schema violation (cert: invalid value: not a pem)" },
    }) do
      local out = start_with(case[1])
      assert.truthy(out:find("nginx failed to start", 1, true), out)
      assert.truthy(out:find(case[2], 1, true), "expected: " .. case[2] .. "\n" .. out)
    end
  end)
end)
