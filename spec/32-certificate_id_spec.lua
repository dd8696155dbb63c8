-- security.certificate_id: the client certificate for mutual TLS comes from a Kong `certificates` entity,
-- read through the PDK (kong.db.certificates:select) once per configuration revision. End to end against
-- a tansu broker behind a socat terminator that requires a client certificate signed by the test CA (the
-- broker advertises the terminator's port, so every connection is mutual TLS):
--   BASE     = MEMORY_BROKER_PORT + 30   mTLS terminator → BASE + 1
--   BASE + 1                             tansu, plaintext, advertising BASE
local helpers = require "spec.helpers.host"
local tls = require "spec.helpers.tls"
local cjson = require "cjson"


local BASE = helpers.MEMORY_BROKER_PORT + 30
local MTLS_PORT, BROKER_PORT = BASE, BASE + 1
local TIMEOUT = 5000
local IDS = {
  client = "5f4034c2-0000-4000-8000-00000000c11e",   -- the client certificate the broker's CA signed
  untrusted = "5f4034c2-0000-4000-8000-00000000bad0", -- a certificate of another CA
  missing = "5f4034c2-0000-4000-8000-00000000f00d",   -- no such certificate (created by a test)
}


describe("security.certificate_id", function()
  local host, pki, terminator, broker, topic

  local function route(name, certificate_id, overrides)
    return helpers.route(name, topic, {
      auto_offset_reset = "earliest",
      timeout = TIMEOUT,
      security = { ssl = true, ca_certificate = pki.ca_pem, certificate_id = certificate_id },
      -- the specs read the reasons in the bodies
      error_handling = { return_error_message = true },
    }, MTLS_PORT, overrides)
  end

  -- GETs until `count` records arrived (or 15 s passed); returns their values.
  local function collect(name, count)
    local values = {}
    local deadline = helpers.now() + 15
    repeat
      local status, body, _, json = host:get("/?wait=2000", { Host = name .. ".test" })
      assert.equal(200, status, body)
      for _, r in ipairs(helpers.records_of(json)) do
        values[#values + 1] = r.record.value
      end
    until #values >= count or helpers.now() > deadline
    return values
  end

  lazy_setup(function()
    local run = helpers.RUN_DIR .. "/certificate-id"
    assert(helpers.sh("rm -rf " .. run .. " && mkdir -p " .. run))
    pki = tls.make_pki(run .. "/pki")
    broker = tls.start_broker(run .. "/broker", BROKER_PORT, MTLS_PORT)
    terminator = tls.start_terminator(MTLS_PORT, BROKER_PORT, pki.dir, { verify_client = true })
    topic = helpers.create_topic(helpers.unique_name("mtls"), 1, BROKER_PORT)
    local produced = helpers.kafka_tool("produce", string.format(
      "--topic %s --count 3 --format text --config security.protocol=SSL --config ssl.ca.location=%s " ..
      "--config ssl.certificate.location=%s --config ssl.key.location=%s",
      topic, pki.ca, pki.client, pki.client_key), MTLS_PORT)
    assert.equal(3, produced.produced)
    local other_ca_key = helpers.read_file(pki.dir .. "/other-ca.key")
    host = helpers.start_host({
      workers = 1,
      certificates = {
        { id = IDS.client, cert = pki.client_pem, key = pki.client_key_pem },
        { id = IDS.untrusted, cert = pki.other_ca_pem, key = other_ca_key },
      },
      routes = {
        route("by-id", IDS.client),
        route("by-id-sse", IDS.client, { mode = "server-sent-events" }),
        route("untrusted", IDS.untrusted),
        route("missing", IDS.missing),
      },
    })
  end)

  lazy_teardown(function()
    if host then host:stop() end
    if terminator then terminator.stop() end
    if broker then broker.stop() end
  end)

  it("presents the certificate entity's cert and key to a broker that requires a client certificate", function()
    assert.same({ "msg-0", "msg-1", "msg-2" }, collect("by-id", 3))
    -- a stream catching up from the earliest record reads a consumer of its own, with the same certificate
    local conn = host:connect(30)
    local status = conn:send_request("GET", "/?from=earliest",
                                     { Host = "by-id-sse.test", Accept = "text/event-stream" })
    assert.equal(200, status)
    local events = conn:read_events(3, 10)
    conn:close()
    assert.same({ "msg-0", "msg-1", "msg-2" }, helpers.message_values(events))
  end)

  it("fails with 503 when the broker refuses the certificate", function()
    local status, body = host:get("/", { Host = "untrusted.test" })
    assert.equal(503, status, body)
    local message = cjson.decode(body).message
    assert.matches("^Kafka is unavailable: TLS with the broker", message)
    assert.truthy(message:find("the certificate security.certificate_id names", 1, true), message)
  end)

  it("answers 500 naming the field for an id no certificate has, and works once the certificate exists", function()
    local status, body = host:get("/", { Host = "missing.test" })
    assert.equal(500, status, body)
    assert.same({ message = "cannot create the Kafka consumer: security.certificate_id: no certificate with id " ..
                            IDS.missing }, cjson.decode(body))
    local created
    status, created = host:admin("POST", "/certificates", { id = IDS.missing, cert = pki.client_pem,
                                                            key = pki.client_key_pem })
    assert.equal(201, status)
    assert.equal(IDS.missing, created.id)
    assert.same({ "msg-0", "msg-1", "msg-2" }, collect("missing", 3))
  end)

  it("refuses certificate_id together with client_certificate (400)", function()
    local status, body = host:admin("POST", "/plugins", { name = "confluent-consume", config = {
      bootstrap_servers = { { host = "127.0.0.1", port = MTLS_PORT } }, topics = { { name = topic } },
      security = { certificate_id = IDS.client, client_certificate = pki.client_pem, client_key = pki.client_key_pem },
    } })
    assert.equal(400, status)
    assert.same({ "only one or none of these fields must be set: 'config.security.certificate_id', " ..
                  "'config.security.client_certificate'" }, body.fields["@entity"])
  end)

  it("never writes the certificate's private key to the error log", function()
    local key_body = pki.client_key_pem:match("%-%-%-%-%-\n(.-)\n")
    assert.is_string(key_body)
    assert.is_nil(host:error_log():find(key_body, 1, true))
  end)
end)
