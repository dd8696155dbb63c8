-- Security of the Kafka connection: SASL/SCRAM, TLS (server verification, a custom CA, mTLS) and
-- Confluent Cloud-style API keys, end to end against tansu; every failure is a JSON 503 within `timeout`
-- whose message, and the error log, name its cause and the setting to check, and no secret ever reaches a
-- response or the error log.
--
-- tansu has one listener and cannot serve TLS, so the TLS cases run tansu behind a socat terminator, and
-- the broker behind it advertises the terminator's port (a client reconnects to the advertised address):
--   BASE      = MEMORY_BROKER_PORT + 10  SASL broker (alice: SCRAM-SHA-256, bob: SCRAM-SHA-512), plaintext
--   BASE + 11 TLS  → BASE + 13           a copy of the SASL broker (same users and topics), advertising BASE + 11
--   BASE + 12 TLS  → BASE + 14           a broker without authentication, advertising BASE + 12
--   BASE + 15 mTLS → BASE + 14           the same broker; bootstrap requires a client certificate
-- The shared test broker (BROKER_PORT, plaintext, no SASL) serves the "TLS to a plaintext port" case.
local helpers = require "spec.helpers.host"
local tls = require "spec.helpers.tls"
local cjson = require "cjson"


local BASE = helpers.MEMORY_BROKER_PORT + 10
local SASL_PORT, SASL_TLS_PORT, PLAIN_TLS_PORT = BASE, BASE + 11, BASE + 12
local SASL_TLS_BROKER, PLAIN_TLS_BROKER, MTLS_PORT = BASE + 13, BASE + 14, BASE + 15
local TIMEOUT = 5000

local USERS = {
  alice = { password = "alice-secret-256", mechanism = "SCRAM-SHA-256", tansu = "scram256" },
  bob = { password = "bob-secret-512", mechanism = "SCRAM-SHA-512", tansu = "scram512" },
}
local WRONG_PASSWORD = "wrong-pass-7f3a"
local GHOST_PASSWORD = "ghost-pass-4d2b"
local CLOUD_KEY = "cloud-key-5e8b"
local CLOUD_SECRET = "cloud-secret-9c1e"


-- librdkafka client properties for kafka-tool.
local function client_args(protocol, user, ca)
  local args = { "--config security.protocol=" .. protocol }
  if user then
    local u = USERS[user]
    args[#args + 1] = string.format("--config sasl.mechanism=%s --config sasl.username=%s " ..
                                    "--config sasl.password=%s", u.mechanism, user, u.password)
  end
  if ca then
    args[#args + 1] = "--config ssl.ca.location=" .. ca
  end
  return table.concat(args, " ")
end


local function sasl(user, password, mechanism)
  return { strategy = "sasl", mechanism = mechanism or USERS[user].mechanism, user = user,
           password = password or USERS[user].password }
end


describe("security of the Kafka connection", function()
  local host, pki, dirs, terminators, brokers = nil, nil, {}, {}, {}
  local T = {}
  local bodies = {}        -- every proxy response body of the spec, for the leak check
  local reasons = {}       -- the failure messages, printed at the end for the record

  local function route(name, port, topic, overrides)
    -- the specs read the cause in the body: librdkafka's reason reaches the client only when asked
    return helpers.route(name, topic, { auto_offset_reset = "earliest", timeout = TIMEOUT,
                                        error_handling = { return_error_message = true } }, port, overrides)
  end

  local function get(name, path)
    local status, body, headers, json = host:get(path or "/", { Host = name .. ".test" })
    bodies[#bodies + 1] = body
    return status, body, headers, json
  end

  -- GETs until `count` records arrived (or 15 s passed); returns their values.
  local function collect(name, count)
    local values = {}
    local deadline = helpers.now() + 15
    repeat
      local status, body, _, json = get(name, "/?wait=2000")
      assert.equal(200, status, name .. ": " .. body)
      for _, r in ipairs(helpers.records_of(json)) do
        values[#values + 1] = r.record.value
      end
    until #values >= count or helpers.now() > deadline
    return values
  end

  -- One GET that must fail with `status` and a JSON body within timeout + 1 s, whose message contains
  -- every one of `causes` (plain text: what went wrong and the setting to check); the error log must say
  -- the same. Returns the message.
  local function expect_failure(name, status, causes)
    local t0 = helpers.now()
    local got, body, headers, json = get(name)
    local elapsed = helpers.now() - t0
    reasons[#reasons + 1] = string.format("%-18s %d after %.2f s: %s", name, got, elapsed, body)
    assert.equal(status, got, name .. ": " .. body)
    assert.matches("application/json", headers["content-type"] or "", 1, true)
    assert.is_table(json, body)
    assert.is_string(json.message, body)
    assert.is_true(elapsed < TIMEOUT / 1000 + 1, name .. " answered after " .. elapsed .. " s")
    assert.is_nil(body:find("traceback", 1, true))
    assert.is_true(#causes > 0, "a failure names its cause")
    for _, cause in ipairs(causes) do
      assert.is_truthy(json.message:find(cause, 1, true), name .. ": the message names '" .. cause .. "': " ..
                       json.message)
    end
    -- the error log carries the same reason, word for word
    local reason = json.message:gsub("^Kafka is unavailable: ", "")
    assert.is_truthy(host:error_log():find(reason, 1, true), name .. ": the error log says " .. reason)
    return json.message
  end

  local function broker_sh(args)
    local ok, output = helpers.sh(helpers.ROOT .. "/scripts/broker.sh " .. args)
    assert(ok, "broker.sh " .. args .. ": " .. output)
  end

  local function stream(name, count)
    local conn = host:connect(30)
    local status = conn:send_request("GET", "/?from=earliest",
                                     { Host = name .. ".test", Accept = "text/event-stream" })
    assert.equal(200, status, name)
    local events = conn:read_events(count, 10)
    conn:close()
    local values = {}
    for _, e in ipairs(events) do
      bodies[#bodies + 1] = (e.data or "") .. (e.comment or "")
      if (e.event or "message") == "message" and e.data then
        values[#values + 1] = cjson.decode(e.data).value
      end
    end
    return values, events
  end

  lazy_setup(function()
    local run = helpers.RUN_DIR .. "/security"
    assert(helpers.sh("rm -rf " .. run .. " && mkdir -p " .. run))
    pki = tls.make_pki(run .. "/pki")
    dirs.sasl, dirs.sasl_tls, dirs.plain_tls = run .. "/broker-sasl", run .. "/broker-sasl-tls", run .. "/broker-tls"

    -- Users and topics are made while authentication is off; then the same storage restarts with it,
    -- and a copy of it serves the TLS side.
    broker_sh(string.format("start --dir %s --port %d --storage sqlite", dirs.sasl, SASL_PORT))
    for name, u in pairs(USERS) do
      broker_sh(string.format("user --port %d %s %s %s", SASL_PORT, name, u.password, u.tansu))
    end
    for _, t in ipairs({ "scram256", "scram512", "scram_tls", "cloud" }) do
      T[t] = helpers.create_topic(helpers.unique_name(t), 1, SASL_PORT)
    end
    broker_sh("stop --dir " .. dirs.sasl)
    assert(helpers.sh(string.format("mkdir -p %s && cp %s/tansu.db %s/", dirs.sasl_tls, dirs.sasl, dirs.sasl_tls)))
    broker_sh(string.format("start --dir %s --port %d --storage sqlite -- --authentication", dirs.sasl, SASL_PORT))
    brokers.sasl_tls = tls.start_broker(dirs.sasl_tls, SASL_TLS_BROKER, SASL_TLS_PORT, { authentication = true })
    brokers.plain_tls = tls.start_broker(dirs.plain_tls, PLAIN_TLS_BROKER, PLAIN_TLS_PORT)
    terminators[1] = tls.start_terminator(SASL_TLS_PORT, SASL_TLS_BROKER, pki.dir)
    terminators[2] = tls.start_terminator(PLAIN_TLS_PORT, PLAIN_TLS_BROKER, pki.dir)
    terminators[3] = tls.start_terminator(MTLS_PORT, PLAIN_TLS_BROKER, pki.dir, { verify_client = true })
    T.tls = helpers.create_topic(helpers.unique_name("tls"), 1, PLAIN_TLS_BROKER)

    local plaintext = { ssl = false }
    local with_ca = { ssl = true, ca_certificate = pki.ca_pem }
    host = helpers.start_host({ workers = 1, routes = {
      route("scram256", SASL_PORT, T.scram256, { authentication = sasl("alice"), security = plaintext }),
      route("scram512", SASL_PORT, T.scram512, { authentication = sasl("bob"), security = plaintext }),
      route("scram256-sse", SASL_PORT, T.scram256,
            { mode = "server-sent-events", authentication = sasl("alice"), security = plaintext }),
      route("scram512-sse", SASL_PORT, T.scram512,
            { mode = "server-sent-events", authentication = sasl("bob"), security = plaintext }),
      route("tls-ca", PLAIN_TLS_PORT, T.tls, { security = with_ca }),
      route("tls-other-ca", PLAIN_TLS_PORT, T.tls,
            { security = { ssl = true, ssl_verify = true, ca_certificate = pki.other_ca_pem } }),
      route("tls-noverify", PLAIN_TLS_PORT, T.tls, { security = { ssl = true, ssl_verify = false } }),
      route("mtls", MTLS_PORT, T.tls, { security = { ssl = true, ca_certificate = pki.ca_pem,
            client_certificate = pki.client_pem, client_key = pki.client_key_pem } }),
      route("mtls-nocert", MTLS_PORT, T.tls, { security = with_ca }),
      -- SASL turns TLS on by default: no `ssl` here.
      route("scram-tls", SASL_TLS_PORT, T.scram_tls,
            { authentication = sasl("bob"), security = { ca_certificate = pki.ca_pem } }),
      route("wrong-pass", SASL_PORT, T.scram256,
            { authentication = sasl("alice", WRONG_PASSWORD), security = plaintext }),
      route("unknown-user", SASL_PORT, T.scram256,
            { authentication = sasl("mallory", GHOST_PASSWORD, "SCRAM-SHA-256"), security = plaintext }),
      route("wrong-mech", SASL_PORT, T.scram512,
            { authentication = sasl("bob", nil, "SCRAM-SHA-256"), security = plaintext }),
      route("plain-mech", SASL_PORT, T.scram256,
            { authentication = sasl("alice", nil, "PLAIN"), security = plaintext }),
      route("tls-to-plain", helpers.BROKER_PORT, "nowhere", { security = with_ca }),
      route("plain-to-tls", PLAIN_TLS_PORT, T.tls, { security = plaintext }),
      -- the quick start with SASL and no `security`: TLS comes on by itself
      route("implicit-tls", SASL_PORT, T.scram256, { authentication = sasl("alice", nil, "PLAIN") }),
      route("implicit-tls-verify", SASL_TLS_PORT, T.scram_tls, { authentication = sasl("bob") }),
      { name = "cloud", hosts = { "cloud.test" } },
    } })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    for _, t in ipairs(terminators) do t.stop() end
    for _, b in pairs(brokers) do b.stop() end
    if dirs.sasl then helpers.sh(helpers.ROOT .. "/scripts/broker.sh stop --dir " .. dirs.sasl) end
    if #reasons > 0 then
      io.stderr:write("\nfailure messages:\n  " .. table.concat(reasons, "\n  ") .. "\n")
    end
  end)

  describe("SASL/SCRAM over plaintext", function()
    for _, case in ipairs({ { "scram256", "alice" }, { "scram512", "bob" } }) do
      local name, user = case[1], case[2]
      it(USERS[user].mechanism .. ": http-get returns the records, server-sent-events streams them", function()
        local produced = helpers.kafka_tool("produce", string.format("--topic %s --count 5 --format text %s",
                                            T[name], client_args("SASL_PLAINTEXT", user)), SASL_PORT)
        assert.equal(5, produced.produced)
        assert.same({ "msg-0", "msg-1", "msg-2", "msg-3", "msg-4" }, collect(name, 5))
        local values = stream(name .. "-sse", 5)
        assert.same({ "msg-0", "msg-1", "msg-2", "msg-3", "msg-4" }, values)
      end)
    end
  end)

  describe("TLS", function()
    lazy_setup(function()
      helpers.kafka_tool("produce", string.format("--topic %s --count 3 --format text %s", T.tls,
                         client_args("SSL", nil, pki.ca)), PLAIN_TLS_PORT)
    end)

    it("verifies the broker against ca_certificate", function()
      assert.same({ "msg-0", "msg-1", "msg-2" }, collect("tls-ca", 3))
    end)

    it("refuses a broker whose certificate another CA signed", function()
      expect_failure("tls-other-ca", 503, { "could not be verified", "security.ca_certificate",
                                            "security.ssl_verify = false", "certificate verify failed" })
    end)

    it("connects without verification when ssl_verify is false", function()
      assert.same({ "msg-0", "msg-1", "msg-2" }, collect("tls-noverify", 3))
    end)

    it("presents client_certificate and client_key to a broker that requires them (mTLS)", function()
      assert.same({ "msg-0", "msg-1", "msg-2" }, collect("mtls", 3))
      expect_failure("mtls-nocert", 503, { "security.client_certificate and security.client_key" })
    end)

    it("SCRAM-SHA-512 over TLS (on by default with SASL)", function()
      helpers.kafka_tool("produce", string.format("--topic %s --count 4 --format text %s", T.scram_tls,
                         client_args("SASL_SSL", "bob", pki.ca)), SASL_TLS_PORT)
      assert.same({ "msg-0", "msg-1", "msg-2", "msg-3" }, collect("scram-tls", 4))
    end)
  end)

  describe("failures answer 503 naming the cause and the setting within timeout", function()
    it("wrong password", function()
      expect_failure("wrong-pass", 503, { "SASL authentication failed", "authentication.password",
                                          "invalid-proof" })
    end)

    it("unknown user", function()
      expect_failure("unknown-user", 503, { "SASL authentication failed", "authentication.user" })
    end)

    it("a SCRAM mechanism the user has no credentials for", function()
      expect_failure("wrong-mech", 503, { "SASL authentication failed", "authentication.mechanism" })
    end)

    it("a mechanism the broker does not offer (PLAIN)", function()
      expect_failure("plain-mech", 503, { "SASL authentication failed", "authentication.mechanism",
                                          "SASL PLAIN mechanism handshake failed" })
    end)

    it("TLS to a plaintext port", function()
      expect_failure("tls-to-plain", 503, { "the TLS handshake with 127.0.0.1:" .. helpers.BROKER_PORT ..
                                            " failed: the port does not speak TLS", "set security.ssl = false",
                                            "a plaintext Kafka request to 127.0.0.1:" .. helpers.BROKER_PORT ..
                                            " was answered" })
    end)

    it("SASL without a security block against a broker without TLS: names security.ssl = false", function()
      expect_failure("implicit-tls", 503, { "the port does not speak TLS",
                                            "TLS is on because SASL is configured and security.ssl is unset",
                                            "set security.ssl = false" })
    end)

    it("SASL without a security block against a TLS broker whose CA is not trusted", function()
      expect_failure("implicit-tls-verify", 503, { "could not be verified", "security.ca_certificate",
                                                   "TLS is on because SASL is configured and security.ssl is unset" })
    end)

    it("plaintext to a TLS port", function()
      expect_failure("plain-to-tls", 503, { "the port probably expects TLS", "set security.ssl = true",
                                            "closed the connection on a plaintext Kafka request" })
    end)
  end)

  it("accepts cluster_api_key / cluster_api_secret (SASL PLAIN), and fails cleanly where PLAIN is refused",
     function()
    local status, plugin = host:admin("POST", "/routes/cloud/plugins", { name = "confluent-consume", config = {
      bootstrap_servers = { { host = "127.0.0.1", port = SASL_PORT } },
      topics = { { name = T.cloud } },
      timeout = TIMEOUT,
      cluster_api_key = CLOUD_KEY,
      cluster_api_secret = CLOUD_SECRET,
      security = { ssl = false },
      error_handling = { return_error_message = true },
    } })
    assert.equal(201, status, cjson.encode(plugin))
    -- workers pick the new plugin up within a second
    local deadline = helpers.now() + 5
    repeat
      helpers.sleep(0.2)  -- the poll interval of this wait-with-deadline
      local s, body = host:get("/", { Host = "cloud.test" })
      bodies[#bodies + 1] = body
    until (s >= 500 and body:find("Kafka", 1, true)) or helpers.now() > deadline
    expect_failure("cloud", 503, { "SASL authentication failed", "cluster_api_key and cluster_api_secret",
                                   "SASL PLAIN mechanism handshake failed" })
  end)

  -- Last: every response of this spec and the error log, after all the failures above.
  it("never shows a secret in a response or in the error log", function()
    local log = host:error_log()
    assert.is_true(#bodies > 10, "responses were collected")
    local key_line = pki.client_key_pem:match("\n([A-Za-z0-9+/=]+)\n")
    -- cluster_api_key is a secret too (README, Security): it is the SASL user name, so it must be
    -- redacted wherever it would show.
    for _, secret in ipairs({ USERS.alice.password, USERS.bob.password, WRONG_PASSWORD, GHOST_PASSWORD,
                              CLOUD_KEY, CLOUD_SECRET, key_line }) do
      for i, body in ipairs(bodies) do
        assert.is_nil(body:find(secret, 1, true), "response " .. i .. " shows a secret: " .. body)
      end
      assert.is_nil(log:find(secret, 1, true), "the error log shows " .. secret)
    end
  end)
end)
