-- SASL/OAUTHBEARER: the plugin gets its token from an OAuth 2.0 token endpoint with the client credentials
-- grant (the consumer thread's own request, src/oauth.rs), against a token endpoint the spec runs
-- (spec/helpers/token_endpoint.py,
-- real HTTP on 127.0.0.1, recording every request) and a real broker. tansu authenticates SCRAM only: it
-- takes the OAUTHBEARER handshake and refuses every token. So the spec checks what reaches the token
-- endpoint and the broker, that every failure (a refused secret, an endpoint down, busy or with an unknown
-- certificate, a refused token) is a 503 naming the cause within `timeout`, that what librdkafka cannot
-- do is refused at configuration time, and that the client secret shows nowhere. An
-- https token endpoint is the same server behind a socat TLS terminator: its certificate is verified
-- against the system's CA store, which the workers' SSL_CERT_FILE points at the spec's test CA, unless
-- token_endpoint_tls_verify = false.
--   BASE     = MEMORY_BROKER_PORT + 20   a broker with SASL on (--authentication; SCRAM only)
--   BASE + 1 → BASE                       socat -v in front of it, logging the bytes of the SASL exchange
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local tls = require "spec.helpers.tls"
local cjson = require "cjson"
local ffi = require "ffi"


ffi.cdef [[
int setenv(const char *name, const char *value, int overwrite);
int unsetenv(const char *name);
]]


local SASL_PORT = helpers.MEMORY_BROKER_PORT + 20
local TAP_PORT = SASL_PORT + 1
local TIMEOUT = 5000
local CLIENT_ID = "kong-gateway-7d1"
local CLIENT_SECRET = "oauth-secret-3b9e5c"
local WRONG_SECRET = "oauth-wrong-4f02aa"
local BUSY_CLIENT_ID = "busy-client"  -- the token endpoint answers 503 to this one
local SLOW_CLIENT_ID = "slow-client"  -- and this one only after the token request gave up (10 s)
local TOKEN_REQUEST_TIMEOUT = 10      -- src/oauth.rs REQUEST_TIMEOUT, in seconds
local SHORT_CLIENT_ID = "short-lived-client"  -- gets tokens valid for SHORT_LIFETIME seconds
local SHORT_LIFETIME = 3
-- `+` reaches the endpoint intact only if the scope is form-encoded
local SCOPES = { "api://kafka/.default", "read+write" }
-- Confluent Cloud takes a comma-separated list of identity pools
local EXTENSIONS = { logicalCluster = "lkc-test1", identityPoolId = "pool-Ab1,pool-Cd2" }


describe("SASL/OAUTHBEARER", function()
  local host, run, endpoint, tap, token_url, requests_file, https_url, untrusted_url, closed_url
  local terminators = {}
  local bodies = {}        -- every proxy and Admin API response body of the spec, for the leak check

  -- An oauthbearer record for the token endpoint at `url` (default: the plain HTTP one).
  local function oauthbearer(url, client_id, secret, tls_verify)
    return { token_endpoint_url = url or token_url, client_id = client_id or CLIENT_ID,
             client_secret = secret or CLIENT_SECRET, scopes = SCOPES, extensions = EXTENSIONS,
             token_endpoint_tls_verify = tls_verify }
  end

  local function route(name, port, overrides)
    -- the spec reads the causes in the bodies
    return helpers.route(name, "orders", { auto_offset_reset = "earliest", timeout = TIMEOUT,
                                           security = { ssl = false },
                                           error_handling = { return_error_message = true } }, port, overrides)
  end

  -- The token endpoint's requests so far (decoded JSON lines).
  local function token_requests()
    local list = {}
    for line in (helpers.read_file(requests_file) or ""):gmatch("[^\n]+") do
      list[#list + 1] = cjson.decode(line)
    end
    return list
  end

  -- One GET that must answer `status` with a JSON body within timeout + 1 s, whose message contains each
  -- of `causes`, as the error log does. Returns the message.
  local function expect_failure(name, status, causes)
    local t0 = helpers.now()
    local got, body, headers, json = host:get("/", { Host = name .. ".test" })
    local elapsed = helpers.now() - t0
    bodies[#bodies + 1] = body
    io.stderr:write(string.format("\n%s: %d after %.2f s: %s\n", name, got, elapsed, body))
    assert.equal(status, got, name .. ": " .. body)
    assert.matches("application/json", headers["content-type"] or "", 1, true)
    assert.is_true(elapsed < TIMEOUT / 1000 + 1, name .. " answered after " .. elapsed .. " s")
    for _, cause in ipairs(causes) do
      assert.is_truthy(json.message:find(cause, 1, true), name .. ": the message names '" .. cause .. "'")
    end
    local reason = json.message:gsub("^Kafka is unavailable: ", "")
    assert.is_truthy(host:error_log():find(reason, 1, true), name .. ": the error log says " .. reason)
    return json.message
  end

  lazy_setup(function()
    run = helpers.RUN_DIR .. "/oauthbearer"
    helpers.sh_ok("rm -rf " .. run .. " && mkdir -p " .. run)
    local token_port = helpers.next_ports()
    token_url = string.format("http://127.0.0.1:%d/oauth2/token", token_port)
    requests_file = run .. "/token-requests.jsonl"
    -- the secret reaches the endpoint through its environment, not its arguments
    endpoint = proc.spawn(string.format("TOKEN_ENDPOINT_SECRET=%s exec python3 %s/spec/helpers/token_endpoint.py " ..
                                        "--port %d --client-id %s --busy-client-id %s --slow-client-id %s " ..
                                        "--slow-seconds %d --short-client-id %s --short-lifetime %d " ..
                                        "--secret-env TOKEN_ENDPOINT_SECRET --requests %s",
                                        CLIENT_SECRET, helpers.ROOT, token_port, CLIENT_ID, BUSY_CLIENT_ID,
                                        SLOW_CLIENT_ID, TOKEN_REQUEST_TIMEOUT + 5, SHORT_CLIENT_ID,
                                        SHORT_LIFETIME, requests_file),
                          run .. "/token-endpoint.log")
    tls.wait_port(token_port)
    -- https: one terminator with a certificate of the CA the workers trust, one of a CA they do not know
    local trusted_pki, unknown_pki = tls.make_pki(run .. "/pki"), tls.make_pki(run .. "/pki-unknown")
    local trusted_port, unknown_port = helpers.next_ports()
    terminators[1] = tls.start_terminator(trusted_port, token_port, trusted_pki.dir)
    terminators[2] = tls.start_terminator(unknown_port, token_port, unknown_pki.dir)
    https_url = string.format("https://127.0.0.1:%d/oauth2/token", trusted_port)
    untrusted_url = string.format("https://localhost:%d/oauth2/token", unknown_port)
    closed_url = string.format("http://127.0.0.1:%d/oauth2/token", (helpers.next_ports()))  -- nothing listens
    helpers.broker(run .. "/broker", "start", string.format("--port %d --storage sqlite -- --authentication",
                                                            SASL_PORT))
    -- the client authenticates on its bootstrap connection, so the tap sees the SASL exchange
    tap = proc.spawn(string.format("exec socat -v tcp-listen:%d,bind=127.0.0.1,fork,reuseaddr " ..
                                   "tcp:127.0.0.1:%d", TAP_PORT, SASL_PORT), run .. "/tap.log")
    tls.wait_port(TAP_PORT)
    -- OpenSSL's default verify paths honour SSL_CERT_FILE; nginx passes it to the workers (`env`)
    ffi.C.setenv("SSL_CERT_FILE", trusted_pki.ca, 1)
    host = helpers.start_host({ workers = 1, env = { "SSL_CERT_FILE" }, routes = {
      -- Kong's confluent-consume spelling: a top-level record (here beside an API key, which it overrides)
      route("oauth-refused-token", TAP_PORT, { oauthbearer = oauthbearer(),
                                               cluster_api_key = "unused-key", cluster_api_secret = "unused-secret" }),
      -- Kong's kafka-consume spelling: authentication.mechanism OAUTHBEARER
      route("oauth-wrong-secret", SASL_PORT, { authentication = {
        strategy = "sasl", mechanism = "OAUTHBEARER", oauthbearer = oauthbearer(nil, nil, WRONG_SECRET) } }),
      route("oauth-https", SASL_PORT, { oauthbearer = oauthbearer(https_url) }),
      route("oauth-https-untrusted", SASL_PORT, { oauthbearer = oauthbearer(untrusted_url, nil, nil, true) }),
      route("oauth-https-unverified", SASL_PORT, { oauthbearer = oauthbearer(untrusted_url, nil, nil, false) }),
      route("oauth-endpoint-down", SASL_PORT, { oauthbearer = oauthbearer(closed_url) }),
      route("oauth-endpoint-busy", SASL_PORT, { oauthbearer = oauthbearer(nil, BUSY_CLIENT_ID) }),
      route("oauth-endpoint-slow", SASL_PORT, { oauthbearer = oauthbearer(nil, SLOW_CLIENT_ID) }),
      route("oauth-short-token", SASL_PORT, { oauthbearer = oauthbearer(nil, SHORT_CLIENT_ID) }),
      { name = "admin", hosts = { "admin.test" } },
    } })
    ffi.C.unsetenv("SSL_CERT_FILE")
  end)

  lazy_teardown(function()
    if host then host:stop() end
    if endpoint then proc.kill(endpoint) end
    if tap then proc.kill(tap) end
    for _, t in ipairs(terminators) do t.stop() end
    if run then helpers.sh(helpers.ROOT .. "/scripts/broker.sh stop --dir " .. run .. "/broker") end
  end)

  it("fetches a token with the client credentials grant and sends it with the extensions; a broker that " ..
     "refuses it is a 503 naming OAUTHBEARER", function()
    expect_failure("oauth-refused-token", 503, { "SASL OAUTHBEARER authentication failed",
                                                 "offers the OAUTHBEARER mechanism", token_url,
                                                 "oauthbearer.scopes", "oauthbearer.extensions" })
    local granted
    for _, r in ipairs(token_requests()) do
      if r.basic_user == CLIENT_ID and r.basic_password_ok then
        granted = r
      end
    end
    assert.is_table(granted, "the token endpoint saw the client id with its secret")
    assert.same({ method = "POST", path = "/oauth2/token", content_type = "application/x-www-form-urlencoded",
                  accept = "application/json",
                  form = { grant_type = "client_credentials", scope = "api://kafka/.default read+write" },
                  basic_user = CLIENT_ID, basic_password_ok = true, status = 200 }, granted)
    -- RFC 7628's client first message: the token as `auth=Bearer <JWT>`, then each extension
    local exchange = helpers.read_file(run .. "/tap.log") or ""
    assert.is_truthy(exchange:find("OAUTHBEARER", 1, true), "the SASL handshake names the mechanism")
    assert.is_truthy(exchange:find("auth=Bearer eyJ", 1, true), "the token endpoint's JWT is sent")
    for key, value in pairs(EXTENSIONS) do
      assert.is_truthy(exchange:find(key .. "=" .. value, 1, true), "the extension " .. key .. " is sent")
    end
  end)

  it("a secret the token endpoint refuses (401) is a 503 naming the token endpoint", function()
    local message = expect_failure("oauth-wrong-secret", 503, {
      "could not get an OAuth token from the token endpoint " .. token_url,
      "authentication.oauthbearer.client_id and authentication.oauthbearer.client_secret",
      "invalid_client" })
    assert.is_nil(message:find("OAUTHBEARER mechanism", 1, true), message)
    local refused = 0
    for _, r in ipairs(token_requests()) do
      if r.basic_user == CLIENT_ID and not r.basic_password_ok then
        assert.equal(401, r.status)
        assert.equal("client_credentials", r.form.grant_type)
        refused = refused + 1
      end
    end
    assert.is_true(refused >= 1, "the token endpoint refused the wrong secret")
  end)

  it("a token endpoint that cannot be reached is a 503 naming it", function()
    expect_failure("oauth-endpoint-down", 503, { "could not get an OAuth token from the token endpoint " ..
                                                 closed_url, "oauthbearer.token_endpoint_url",
                                                 "Connection refused" })
  end)

  it("a token endpoint answering 503 is a 503 that names it and its answer", function()
    expect_failure("oauth-endpoint-busy", 503, { "could not get an OAuth token from the token endpoint " ..
                                                 token_url, "the token endpoint answered 503",
                                                 "temporarily_unavailable" })
    local busy = 0
    for _, r in ipairs(token_requests()) do
      busy = busy + ((r.basic_user == BUSY_CLIENT_ID and r.status == 503) and 1 or 0)
    end
    assert.is_true(busy >= 1, "the token endpoint answered 503")
  end)

  it("renews a token once 80 % of its lifetime has passed, not before", function()
    local function grants()
      local n = 0
      for _, r in ipairs(token_requests()) do
        n = n + ((r.basic_user == SHORT_CLIENT_ID and r.status == 200) and 1 or 0)
      end
      return n
    end
    expect_failure("oauth-short-token", 503, { "SASL OAUTHBEARER authentication failed" })
    local first = helpers.now()
    assert.equal(1, grants(), "one token so far")
    assert.truthy(proc.wait_until(function() return grants() >= 2 end, SHORT_LIFETIME * 2),
                  "a second token within twice the lifetime")
    local renewed_after = helpers.now() - first
    -- 80 % of the lifetime, less the time the first request took after its token came
    assert.is_true(renewed_after >= SHORT_LIFETIME * 0.8 - 0.5, "renewed after " .. renewed_after .. " s")
    assert.equal(2, grants(), "one renewal")
  end)

  it("a token endpoint that does not answer is a 504 while the token request waits, then a 503 naming it",
     function()
    local t0 = helpers.now()
    local status, body = host:get("/", { Host = "oauth-endpoint-slow.test" })
    bodies[#bodies + 1] = body
    assert.equal(504, status, body)
    assert.is_true(helpers.now() - t0 < TIMEOUT / 1000 + 1, "answered within timeout")
    -- the token request gives up after TOKEN_REQUEST_TIMEOUT; the requests from then on name the endpoint
    local message
    assert.truthy(proc.wait_until(function()
      local got, answer, _, json = host:get("/", { Host = "oauth-endpoint-slow.test" })
      bodies[#bodies + 1] = answer
      message = json and json.message
      return got == 503
    end, TOKEN_REQUEST_TIMEOUT + TIMEOUT / 1000), "a 503 came once the token request gave up")
    for _, cause in ipairs({ "could not get an OAuth token from the token endpoint " .. token_url,
                             "no answer within " .. TOKEN_REQUEST_TIMEOUT .. " s" }) do
      assert.is_truthy(message:find(cause, 1, true), "the message names '" .. cause .. "': " .. message)
    end
    assert.is_true(helpers.now() - t0 < TOKEN_REQUEST_TIMEOUT + TIMEOUT / 1000 + 1, "no later than the first " ..
                   "request after the token request gave up")
  end)

  -- Tokens the endpoint granted so far (over http or through a terminator).
  local function granted_over_tls()
    local n = 0
    for _, r in ipairs(token_requests()) do
      n = n + ((r.basic_password_ok and r.status == 200) and 1 or 0)
    end
    return n
  end

  it("verifies an https token endpoint's certificate: a trusted one gives a token, an unknown CA a 503", function()
    local before = granted_over_tls()
    -- the token came over TLS: the failure is the broker's, not the endpoint's
    expect_failure("oauth-https", 503, { "SASL OAUTHBEARER authentication failed", https_url })
    assert.is_true(granted_over_tls() > before, "the token endpoint granted a token through the terminator")
    before = granted_over_tls()
    expect_failure("oauth-https-untrusted", 503, { "could not get an OAuth token from the token endpoint " ..
                                                   untrusted_url, "its TLS certificate must verify against " ..
                                                   "the system's CA store", "certificate verify failed" })
    assert.equal(before, granted_over_tls(), "no request passed the failed TLS handshake")
  end)

  it("with token_endpoint_tls_verify = false an https endpoint whose CA is unknown gives a token, which " ..
     "reaches the broker", function()
    local before = granted_over_tls()
    -- the token came over the unverified TLS: the failure is the broker's refusal of it
    expect_failure("oauth-https-unverified", 503, { "SASL OAUTHBEARER authentication failed", untrusted_url })
    assert.is_true(granted_over_tls() > before, "the token endpoint granted a token through the terminator")
  end)

  it("refuses at configuration time what librdkafka cannot do (tokenauth), with 400 naming the reason", function()
    local cases = {
      { { authentication = { strategy = "sasl", mechanism = "SCRAM-SHA-256", user = "u", password = "p",
                             tokenauth = true } },
        "schema violation (authentication.tokenauth = true is not supported: librdkafka cannot send the " ..
        "SCRAM extension tokenauth=true that delegation tokens need)" },
      { { authentication = { strategy = "sasl", mechanism = "OAUTHBEARER" } },
        "schema violation (authentication.oauthbearer is required when authentication.mechanism is OAUTHBEARER)" },
    }
    for _, case in ipairs(cases) do
      local config = helpers.plugin_config("orders")
      for k, v in pairs(case[1]) do
        config[k] = v
      end
      local status, body = host:admin("POST", "/routes/admin/plugins", { name = "confluent-consume", config = config })
      bodies[#bodies + 1] = cjson.encode(body)
      assert.equal(400, status, cjson.encode(body))
      assert.equal(case[2], body.message)
    end
    -- tokenauth = false is plain SCRAM
    local config = helpers.plugin_config("orders")
    config.authentication = { strategy = "sasl", mechanism = "SCRAM-SHA-256", user = "u", password = "p",
                              tokenauth = false }
    local status, body = host:admin("POST", "/routes/admin/plugins", { name = "confluent-consume", config = config })
    bodies[#bodies + 1] = cjson.encode(body)
    assert.equal(201, status, cjson.encode(body))
  end)

  -- Last: after both failures and the refusals above.
  it("never shows the client secret in a response, the error log or the token endpoint's log", function()
    assert.is_true(#bodies >= 6, "responses were collected")
    local logs = { host:error_log(), helpers.read_file(run .. "/token-endpoint.log") or "",
                   helpers.read_file(requests_file) or "", helpers.read_file(run .. "/tap.log") or "" }
    assert.is_true(#logs[1] > 0 and #logs[3] > 0)
    for _, secret in ipairs({ CLIENT_SECRET, WRONG_SECRET }) do
      for i, body in ipairs(bodies) do
        assert.is_nil(body:find(secret, 1, true), "response " .. i .. " shows a client secret")
      end
      for i, log in ipairs(logs) do
        assert.is_nil(log:find(secret, 1, true), "log " .. i .. " shows a client secret")
      end
    end
  end)
end)
