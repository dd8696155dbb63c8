-- Start-up failures a newcomer meets, each answered with the exact status and a message that names the
-- cause and the setting to check, the same reason in the error log, and no traceback:
--   a port nothing listens on, a host name that does not resolve, a topic that does not exist (in both
--   modes), and a port that accepts connections but never answers (found by the native module's probe).
-- The 504 "timed out waiting for Kafka" is left for a cluster that answers too slowly, which a local
-- broker cannot be made to do.
-- TLS and SASL failures (verification, TLS to a plaintext port with TLS on implicitly, wrong password,
-- mechanisms) are in spec/18-security_spec.lua, which runs the brokers they need. Authorization failures
-- cannot be produced live (tansu 0.6.0 has no ACLs); their mapping is unit-tested in src/diagnosis.rs.
local helpers = require "spec.helpers.host"
local cjson = require "cjson.safe"
local socket = require "socket"


local TIMEOUT = 3000
-- The port that never answers is probed after two failed start-up attempts, for at most a second.
local SILENT_TIMEOUT = 8000
local reasons = {}  -- every answer, printed at the end for the record


-- A loopback port nothing listens on (bound, then released).
local function closed_port()
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  server:close()
  return tonumber(port)
end


local read_file = helpers.read_file


-- Checks one failed answer: `status`, a JSON body whose message contains every one of `causes`, that
-- arrived within the route's timeout (+ 1 s), and an error log that carries the same reason.
local function assert_failure(name, status, got, body, elapsed, log, causes, timeout)
  reasons[#reasons + 1] = string.format("%-18s %s after %.2f s: %s", name, tostring(got), elapsed or -1,
                                        tostring(body))
  assert.equal(status, got, name .. ": " .. tostring(body))
  local json = cjson.decode(body or "")
  assert.is_table(json, name .. ": a JSON body: " .. tostring(body))
  assert.is_string(json.message, body)
  assert.is_nil(body:find("traceback", 1, true), body)
  assert.is_true(elapsed < (timeout or TIMEOUT) / 1000 + 1, name .. " answered after " .. elapsed .. " s")
  for _, cause in ipairs(causes) do
    assert.is_truthy(json.message:find(cause, 1, true), name .. ": the message names '" .. cause .. "': " ..
                     json.message)
  end
  local reason = json.message:gsub("^Kafka is unavailable: ", "")
  assert.is_truthy(log:find(reason, 1, true), name .. ": the error log says " .. reason)
  return json.message
end


describe("start-up errors name their cause and the setting to check", function()
  local host, silent, silent_port
  local topic = helpers.unique_name("startup")
  local missing = helpers.unique_name("missing")
  local refused_port = closed_port()

  local function route(name, overrides, port)
    -- the specs read the cause in the body: librdkafka's reason reaches the client only when asked
    local config = helpers.plugin_config(overrides.topics or topic, { timeout = overrides.timeout or TIMEOUT,
                                         error_handling = { return_error_message = true } })
    config.bootstrap_servers[1].port = port or helpers.BROKER_PORT
    for k, v in pairs(overrides) do
      if k ~= "topics" then config[k] = v end
    end
    return { name = name, hosts = { name .. ".test" }, plugins = { { name = "confluent-consume", config = config } } }
  end

  local function get(name, headers)
    headers = headers or {}
    headers.Host = name .. ".test"
    local t0 = helpers.now()
    local status, body = host:get("/", headers)
    return status, body, helpers.now() - t0
  end

  lazy_setup(function()
    helpers.create_topic(topic, 2)
    -- accepts TCP connections (the kernel completes them) but never reads nor answers
    silent = assert(socket.bind("127.0.0.1", 0))
    silent_port = select(2, silent:getsockname())
    host = helpers.start_host({ workers = 1, routes = {
      route("refused", {}, refused_port),
      route("missing-topic", { topics = { topic, missing } }),
      route("missing-topic-sse", { topics = { missing }, mode = "server-sent-events" }),
      route("silent", { timeout = SILENT_TIMEOUT }, tonumber(silent_port)),
    } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    if silent then silent:close() end
    io.stderr:write("\nanswers:\n  " .. table.concat(reasons, "\n  ") .. "\n")
  end)

  it("a port nothing listens on: 503 naming bootstrap_servers", function()
    local status, body, elapsed = get("refused")
    assert_failure("refused", 503, status, body, elapsed, host:error_log(), {
      "cannot connect to Kafka at 127.0.0.1:" .. refused_port,
      "check bootstrap_servers (host and port) and that the broker is running and reachable",
      "Connection refused",
    })
  end)

  it("a topic that does not exist: 503 naming topics[2].name", function()
    local status, body, elapsed = get("missing-topic")
    assert_failure("missing-topic", 503, status, body, elapsed, host:error_log(), {
      "topic '" .. missing .. "' does not exist: check topics[2].name",
    })
  end)

  it("server-sent-events: the same failure before the stream starts is a JSON 503", function()
    local status, body, elapsed = get("missing-topic-sse", { Accept = "text/event-stream" })
    assert_failure("missing-topic-sse", 503, status, body, elapsed, host:error_log(), {
      "topic '" .. missing .. "' does not exist: check topics[1].name",
    })
  end)

  it("a port that accepts connections but never answers: 503 naming bootstrap_servers", function()
    local status, body, elapsed = get("silent")
    assert_failure("silent", 503, status, body, elapsed, host:error_log(), {
      "the broker at 127.0.0.1:" .. silent_port .. " accepts connections but does not answer as a Kafka " ..
      "broker: check that bootstrap_servers (host and port) names a Kafka listener",
      "a plaintext Kafka request to 127.0.0.1:" .. silent_port .. " got no answer within 1000 ms",
    }, SILENT_TIMEOUT)
  end)

  -- A host name that does not resolve. Resolving any syntactically valid name asks the machine's DNS
  -- server, which is not on loopback, so this host runs in a network namespace of its own whose only
  -- interface is loopback: the query cannot leave the machine. The check below fails if the namespace
  -- has any other interface.
  it("a host name that does not resolve: 503 naming bootstrap_servers[1].host", function()
    local prefix = helpers.RUN_DIR .. "/startup-dns"
    assert(helpers.sh("rm -rf " .. prefix .. " && mkdir -p " .. prefix))
    local config = helpers.plugin_config(topic, { timeout = TIMEOUT, error_handling = { return_error_message = true } })
    config.bootstrap_servers[1].host = "kafka-broker.invalid"
    local file = assert(io.open(prefix .. "/kong.json", "w"))
    file:write(cjson.encode({ _format_version = "3.0", routes = {
      { name = "dns", hosts = { "dns.test" }, plugins = { { name = "confluent-consume", config = config } } },
    } }))
    file:close()
    local kong_host = helpers.ROOT .. "/host/bin/kong-host"
    local script = table.concat({
      "set -u",
      "ip link set lo up || exit 90",
      "if ip -o link | grep -v ': lo:' | grep -q .; then echo 'not an isolated namespace'; exit 91; fi",
      string.format("%s start --prefix %s/nginx --config %s/kong.json --workers 1 --proxy-listen 127.0.0.1:8000 " ..
                    "--admin-listen 127.0.0.1:8001 --cpath %s/target/lua >/dev/null || exit 92",
                    kong_host, prefix, prefix, helpers.ROOT),
      string.format("curl -s --max-time 20 -H 'Host: dns.test' -o %s/body -w '%%{http_code} %%{time_total}' " ..
                    "http://127.0.0.1:8000/ >%s/status", prefix, prefix),
      string.format("%s stop --prefix %s/nginx >/dev/null", kong_host, prefix),
    }, "\n")
    local script_file = assert(io.open(prefix .. "/run.sh", "w"))
    script_file:write(script)
    script_file:close()
    local ok, output = helpers.sh("unshare -n bash " .. prefix .. "/run.sh")
    assert(ok, "the isolated host did not run: " .. output)
    local status, elapsed = (read_file(prefix .. "/status") or ""):match("^(%d+) ([%d.]+)")
    assert_failure("dns", 503, tonumber(status), read_file(prefix .. "/body"), tonumber(elapsed),
                   read_file(prefix .. "/nginx/logs/error.log") or "", {
      "a broker's host name does not resolve: check bootstrap_servers[1].host ('kafka-broker.invalid')",
      "Failed to resolve 'kafka-broker.invalid:" .. helpers.BROKER_PORT .. "'",
    })
  end)
end)
