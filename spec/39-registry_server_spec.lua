-- The project's Schema Registry (tools/schema-registry/server.py), which the Schema Registry specs, the
-- demo and the bench run, checked against what Confluent's own client does with it: confluent-kafka's
-- serializers (tools/schema-registry/produce.py, through spec/helpers/registry.lua) register and look
-- schemas up over its REST API, authenticate with HTTP basic or an oauth2 token from its token endpoint,
-- and write records to the real broker, which kafka-tool reads back byte for byte. The REST answers are
-- compared with Confluent's API reference: shapes, error codes and messages, content type.
local helpers = require "spec.helpers.host"
local proc = require "spec.helpers.proc"
local registry = require "spec.helpers.registry"
local cjson = require "cjson"
local mime = require "mime"


local FIXTURES = "spec/fixtures/registry"
local CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


local records_on_broker = helpers.records_on_broker


-- Confluent's framing of schema `id`, in hex: magic byte 0, then the id as 4 bytes big-endian.
local function header_hex(id)
  return string.format("00%08x", id)
end


local function read_fixture(name)
  return helpers.read_file(helpers.ROOT .. "/" .. FIXTURES .. "/" .. name)
end


-- The canonical form the registry stores a JSON schema in: the same JSON without insignificant
-- whitespace, keys in their order (what Python's json.dumps with compact separators writes).
local function canonical_json(text)
  local _, out = helpers.sh(string.format("python3 -c 'import json,sys; " ..
    "print(json.dumps(json.load(sys.stdin), separators=(\",\",\":\"), ensure_ascii=False), end=\"\")' < %s",
    helpers.ROOT .. "/" .. FIXTURES .. "/" .. text))
  return out
end


local ORDER = {
  id = 1, customer = "ann", note = "first", status = "PAID", tag = { ["$bytes"] = "AAEC" },
  amount = { ["$decimal"] = "12.34" }, placed_at = 1700000000000, price = { currency = "EUR", units = 5 },
}
local MONEY_REFERENCE = { name = "demo.Money", subject = "demo.Money", schema = FIXTURES .. "/money.avsc" }


describe("The project's Schema Registry with Confluent's client", function()
  local sr

  lazy_setup(function()
    sr = registry.start()
  end)

  lazy_teardown(function()
    sr:stop()
  end)

  it("registers an Avro schema with a reference through Confluent's AvroSerializer, whose records on the " ..
     "broker carry the magic byte and that id; the same schema under a second topic gets the same id", function()
    local first, second = helpers.create_topic(helpers.unique_name("sr-avro")),
                          helpers.create_topic(helpers.unique_name("sr-avro"))
    local produced = {}
    for i, topic in ipairs({ first, second }) do
      produced[i] = sr:produce{ format = "avro", schema = FIXTURES .. "/order.avsc", topic = topic,
                                references = { MONEY_REFERENCE }, key_format = "string",
                                records = { { value = ORDER, key = "order-1" } } }
    end
    local id = produced[1].records[1].value_schema_id
    assert.equal(id, produced[2].records[1].value_schema_id)
    local on_broker = records_on_broker(first, 1)
    assert.equal(header_hex(id), on_broker[1].value_hex:sub(1, 10))
    assert.equal("6f726465722d31", on_broker[1].key_hex)  -- a string key is written as it is

    local status, body, headers = sr:request("GET", "/schemas/ids/" .. id)
    assert.equal(200, status)
    assert.equal(CONTENT_TYPE, headers["content-type"])
    -- Confluent leaves schemaType out for AVRO; the reference names the registered version
    assert.same({ schema = canonical_json("order.avsc"),
                  references = { { name = "demo.Money", subject = "demo.Money", version = 1 } } }, body)
    status, body = sr:request("GET", "/schemas/ids/" .. id .. "/versions")
    assert.equal(200, status)
    local by_subject = function(a, b) return a.subject < b.subject end
    local expected = { { subject = first .. "-value", version = 1 }, { subject = second .. "-value", version = 1 } }
    table.sort(body, by_subject)
    table.sort(expected, by_subject)
    assert.same(expected, body)
    status, body = sr:request("GET", "/subjects/" .. first .. "-value/versions/latest")
    assert.equal(200, status)
    assert.same({ subject = first .. "-value", version = 1, id = id, schema = canonical_json("order.avsc"),
                  references = { { name = "demo.Money", subject = "demo.Money", version = 1 } } }, body)
  end)

  it("serves a Protobuf schema that Confluent's ProtobufSerializer sent as a descriptor as .proto text with " ..
     "its imports, registers the import as a reference but not google/protobuf/*, and writes message " ..
     "indexes after the id", function()
    local topic = helpers.create_topic(helpers.unique_name("sr-protobuf"))
    local report = sr:produce{ format = "protobuf", schema = FIXTURES .. "/order.proto", topic = topic,
                               key_format = "protobuf", key_schema = FIXTURES .. "/order-key.proto",
                               records = {
                                 { value = { id = "1", customer = "ann", status = "PAID", placedAt = "2024-01-01T00:00:00Z",
                                             price = { currency = "EUR", units = "5" }, labels = { a = "b" } },
                                   key = { id = "1" } },
                               } }
    local line = sr:produce{ format = "protobuf", schema = FIXTURES .. "/order.proto", topic = topic,
                             message = "demo.Order.Line", records = { { value = { sku = "s-1", quantity = 2 } } } }
    local id, key_id = report.records[1].value_schema_id, report.records[1].key_schema_id
    assert.is_number(key_id)
    assert.are_not.equal(id, key_id)
    assert.equal(id, line.records[1].value_schema_id)  -- the same file, another of its messages

    local on_broker = records_on_broker(topic, 2)
    -- [0] (the first message) is written as the single byte 0
    assert.equal(header_hex(id) .. "00", on_broker[1].value_hex:sub(1, 12))
    assert.equal(header_hex(key_id) .. "00", on_broker[1].key_hex:sub(1, 12))
    -- [0, 1]: a count of 2 then 0 and 1, zigzag varints (Order's nested types: its map entry, then Line)
    assert.equal(header_hex(id) .. "040002", on_broker[2].value_hex:sub(1, 16))

    local status, body = sr:request("GET", "/schemas/ids/" .. id)
    assert.equal(200, status)
    assert.equal("PROTOBUF", body.schemaType)
    assert.same({ { name = "money.proto", subject = "money.proto", version = 1 } }, body.references)
    assert.matches('import "google/protobuf/timestamp.proto";', body.schema, 1, true)
    assert.matches('import "money.proto";', body.schema, 1, true)
    assert.matches("map<string, string> labels = 8;", body.schema, 1, true)
    local serialized
    status, serialized = sr:request("GET", "/schemas/ids/" .. id .. "?format=serialized")
    assert.equal(200, status)
    assert.is_nil(serialized.schema:find("\n", 1, true))  -- base64 of the descriptor, not text
    assert.are_not.equal(body.schema, serialized.schema)
  end)

  it("registers a JSON Schema with a reference through Confluent's JSONSerializer, which refuses a record " ..
     "breaking the schema unless told not to validate", function()
    local topic = helpers.create_topic(helpers.unique_name("sr-json"))
    local reference = { name = "line.schema.json", subject = "line", schema = FIXTURES .. "/line.schema.json" }
    local report = sr:produce{ format = "json", schema = FIXTURES .. "/order.schema.json", topic = topic,
                               references = { reference },
                               records = { { value = { id = 1, customer = "ann", lines = { { sku = "s", quantity = 2 } } } } } }
    local id = report.records[1].value_schema_id
    local on_broker = records_on_broker(topic, 1)
    assert.equal(header_hex(id) .. "7b", on_broker[1].value_hex:sub(1, 12))  -- then the JSON text, "{"
    local status, body = sr:request("GET", "/schemas/ids/" .. id)
    assert.equal(200, status)
    assert.same({ schemaType = "JSON", schema = canonical_json("order.schema.json"),
                  references = { { name = "line.schema.json", subject = "line", version = 1 } } }, body)

    local bad = { { value = { id = "not a number", customer = "ann" } } }
    local ok, output = sr:try_produce{ format = "json", schema = FIXTURES .. "/order.schema.json", topic = topic,
                                       references = { reference }, records = bad }
    assert.is_false(ok)
    assert.matches("SerializationError", output, 1, true)
    report = sr:produce{ format = "json", schema = FIXTURES .. "/order.schema.json", topic = topic,
                         references = { reference }, records = bad, no_validate = true }
    assert.equal(id, report.records[1].value_schema_id)
  end)

  it("answers the same registration with the same id and version, a second schema with version 2, and " ..
     "a lookup (POST /subjects/{s}) with subject, version, id and schema", function()
    local subject = helpers.unique_name("sr-evolution") .. "-value"
    local v1 = { schema = read_fixture("order-key.avsc") }
    local v2 = { schema = cjson.encode({ type = "record", name = "OrderKey", namespace = "demo",
                                         fields = { { name = "id", type = "long" },
                                                    { name = "region", type = "string", default = "eu" } } }) }
    local status, first = sr:request("POST", "/subjects/" .. subject .. "/versions", v1)
    assert.equal(200, status)
    local again
    status, again = sr:request("POST", "/subjects/" .. subject .. "/versions?normalize=true", v1)
    assert.equal(200, status)
    assert.same(first, again)
    local second
    status, second = sr:request("POST", "/subjects/" .. subject .. "/versions", v2)
    assert.equal(200, status)
    assert.are_not.equal(first.id, second.id)
    local versions
    status, versions = sr:request("GET", "/subjects/" .. subject .. "/versions")
    assert.same({ 1, 2 }, versions)
    local found
    status, found = sr:request("POST", "/subjects/" .. subject, v1)
    assert.equal(200, status)
    assert.same({ subject = subject, version = 1, id = first.id, schema = canonical_json("order-key.avsc") }, found)
    local subjects
    status, subjects = sr:request("GET", "/subjects")
    assert.equal(200, status)
    assert.is_truthy(table.concat(subjects, " "):find(subject, 1, true))
  end)

  it("answers errors with Confluent's codes and messages: 40401, 40402, 40403, 42201, 42202, 40408, 42203",
     function()
    local subject = helpers.unique_name("sr-errors")
    local key = { schema = read_fixture("order-key.avsc") }
    local function call(method, path, body)
      local status, decoded, headers = sr:request(method, path, body)
      assert.equal(CONTENT_TYPE, headers["content-type"])
      return { status, decoded }
    end
    assert.same({ 404, { error_code = 40401, message = "Subject '" .. subject .. "' not found." } },
                call("GET", "/subjects/" .. subject .. "/versions"))
    assert.same({ 404, { error_code = 40401, message = "Subject '" .. subject .. "' not found." } },
                call("POST", "/subjects/" .. subject, key))
    assert.equal(200, call("POST", "/subjects/" .. subject .. "/versions", key)[1])
    assert.same({ 404, { error_code = 40402, message = "Version 7 not found." } },
                call("GET", "/subjects/" .. subject .. "/versions/7"))
    assert.same({ 404, { error_code = 40403, message = "Schema not found" } },
                call("POST", "/subjects/" .. subject, { schema = '"string"' }))
    assert.same({ 404, { error_code = 40403, message = "Schema 99999 not found" } },
                call("GET", "/schemas/ids/99999"))
    local invalid = call("POST", "/subjects/" .. subject .. "/versions", { schema = "{not json" })
    assert.equal(422, invalid[1])
    assert.equal(42201, invalid[2].error_code)
    -- an Avro schema naming a type no reference brings
    invalid = call("POST", "/subjects/" .. subject .. "/versions", { schema = cjson.encode(
      { type = "record", name = "Order", fields = { { name = "price", type = "demo.Nowhere" } } }) })
    assert.same({ 422, { error_code = 42201, message = "Invalid schema: AVRO schema: unknown type demo.Nowhere" } },
                invalid)
    invalid = call("POST", "/subjects/" .. subject .. "/versions", { schema = '"string"', schemaType = "XML" })
    assert.same({ 422, { error_code = 42201, message = "Invalid schema type XML" } }, invalid)
    assert.same({ 422, { error_code = 42202, message = "The specified version 'first' is not a valid version " ..
                         "id. Allowed values are between [1, 2^31-1] and the string \"latest\"" } },
                call("GET", "/subjects/" .. subject .. "/versions/first"))
    assert.same({ 404, { error_code = 40408, message = "Subject '" .. subject ..
                         "' does not have subject-level compatibility configured" } },
                call("GET", "/config/" .. subject))
    assert.same({ 200, { compatibilityLevel = "BACKWARD" } }, call("GET", "/config"))
    assert.same({ 200, { compatibility = "FULL" } }, call("PUT", "/config/" .. subject, { compatibility = "FULL" }))
    assert.same({ 200, { compatibilityLevel = "FULL" } }, call("GET", "/config/" .. subject))
    assert.equal(42203, call("PUT", "/config", { compatibility = "SOMETIMES" })[2].error_code)
  end)

  it("with --no-auto-register Confluent's serializer looks the schema up and uses its registered id, and " ..
     "fails on a schema the subject does not have", function()
    local topic = helpers.create_topic(helpers.unique_name("sr-lookup"))
    local status, registered = sr:request("POST", "/subjects/" .. topic .. "-value/versions",
                                           { schema = read_fixture("order-key.avsc") })
    assert.equal(200, status)
    local report = sr:produce{ format = "avro", schema = FIXTURES .. "/order-key.avsc", topic = topic,
                               no_auto_register = true, records = { { value = { id = 7 } } } }
    assert.equal(registered.id, report.records[1].value_schema_id)
    local ok, output = sr:try_produce{ format = "avro", schema = FIXTURES .. "/money.avsc", topic = topic,
                                       no_auto_register = true,
                                       records = { { value = { currency = "EUR", units = 1 } } } }
    assert.is_false(ok)
    assert.matches("Schema not found", output, 1, true)
  end)

  it("counts GET /schemas/ids/{id} per id, keeps its schemas and ids across a restart on the same port, " ..
     "and counts from zero after it", function()
    local subject = helpers.unique_name("sr-restart")
    local _, registered = sr:request("POST", "/subjects/" .. subject .. "/versions", { schema = '"long"' })
    sr:reset()
    assert.equal(200, (sr:request("GET", "/schemas/ids/" .. registered.id)))
    assert.equal(200, (sr:request("GET", "/schemas/ids/" .. registered.id)))
    assert.equal(200, (sr:request("GET", "/subjects/" .. subject .. "/versions/1")))  -- not a fetch by id
    local counters = sr:counters()
    assert.equal(2, counters.schema_id_requests)
    assert.same({ [tostring(registered.id)] = 2 }, counters.schema_id_requests_by_id)

    sr:stop()
    assert.is_nil((sr:request("GET", "/schemas/ids/" .. registered.id)))  -- down: nothing accepts
    sr:restart()
    local status, body = sr:request("GET", "/schemas/ids/" .. registered.id)
    assert.same({ 200, { schema = '"long"' } }, { status, body })
    assert.equal(1, sr:counters().schema_id_requests)
    local again
    status, again = sr:request("POST", "/subjects/" .. subject .. "/versions", { schema = '"long"' })
    assert.same({ 200, registered }, { status, again })
  end)

  it("answers after the delay a spec sets, and at once again after it is set back to 0", function()
    sr:set_delay(0.5)
    local started = helpers.now()
    assert.equal(200, (sr:request("GET", "/subjects")))
    assert.is_true(helpers.now() - started >= 0.5)
    sr:set_delay(0)
    started = helpers.now()
    assert.equal(200, (sr:request("GET", "/subjects")))
    assert.is_true(helpers.now() - started < 0.5)
  end)
end)


describe("The project's Schema Registry with HTTP basic authentication", function()
  local sr

  lazy_setup(function()
    sr = registry.start{ auth = "basic" }
  end)

  lazy_teardown(function()
    sr:stop()
  end)

  it("lets Confluent's client in with the right user and password, answers any other request 401 " ..
     "{error_code 401, Unauthorized}, and writes no password to its log", function()
    local topic = helpers.create_topic(helpers.unique_name("sr-basic"))
    local report = sr:produce{ format = "avro", schema = FIXTURES .. "/order-key.avsc", topic = topic,
                               records = { { value = { id = 1 } } } }
    assert.is_number(report.records[1].value_schema_id)

    local unauthorized = { error_code = 401, message = "Unauthorized" }
    local status, body, headers = sr:request("GET", "/subjects")
    assert.same({ 401, unauthorized }, { status, body })
    assert.equal('Basic realm="SchemaRegistry"', headers["www-authenticate"])
    local c = sr.credentials.basic
    local function basic(user, password)
      return { Authorization = "Basic " .. mime.b64(user .. ":" .. password) }
    end
    status, body = sr:request("GET", "/subjects", nil, basic(c.username, "wrong-password"))
    assert.same({ 401, unauthorized }, { status, body })
    status, body = sr:request("GET", "/subjects", nil, basic(c.username, c.password))
    assert.same({ 200, { topic .. "-value" } }, { status, body })
    assert.is_nil(helpers.read_file(sr.dir .. "/server.log"):find(c.password, 1, true))
    assert.equal(2, sr:counters().unauthorized)
  end)
end)


describe("The project's Schema Registry with oauth2", function()
  local sr

  lazy_setup(function()
    sr = registry.start{ auth = "oauth2" }
  end)

  lazy_teardown(function()
    sr:stop()
  end)

  local function token_request(form, headers)
    headers = headers or {}
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    local parts = {}
    for name, value in pairs(form) do
      parts[#parts + 1] = name .. "=" .. value
    end
    return sr:request("POST", "/oauth2/token", table.concat(parts, "&"), headers)
  end

  local function bearer(token)
    return { Authorization = "Bearer " .. token }
  end

  it("gives Confluent's client a token (client_credentials, client_secret_basic) with which it produces, " ..
     "and counts the token requests", function()
    local topic = helpers.create_topic(helpers.unique_name("sr-oauth2"))
    sr:reset()
    local report = sr:produce{ format = "avro", schema = FIXTURES .. "/order-key.avsc", topic = topic,
                               records = { { value = { id = 1 } } } }
    assert.is_number(report.records[1].value_schema_id)
    local requests = sr:token_requests()
    assert.equal(1, #requests)
    assert.same({ grant_type = "client_credentials", client_auth_method = "client_secret_basic",
                  client_id = sr.credentials.oauth2.client_id, client_authenticated = true, status = 200 },
                { grant_type = requests[1].grant_type, client_auth_method = requests[1].client_auth_method,
                  client_id = requests[1].client_id, client_authenticated = requests[1].client_authenticated,
                  status = requests[1].status })
    assert.equal("schema_registry", requests[1].fields.scope)
    local counters = sr:counters()
    assert.same({ 1, 1 }, { counters.token_requests, counters.token_requests_granted })
  end)

  it("grants the password grant with client_secret_post, refuses a wrong client secret (401 invalid_client) " ..
     "and a wrong password (400 invalid_grant), and answers the registry 401 without a valid token", function()
    local c = sr.credentials.oauth2
    local status, body = token_request{ grant_type = "password", client_id = c.client_id,
                                        client_secret = c.client_secret, username = c.username,
                                        password = c.password, scope = "openid" }
    assert.equal(200, status)
    assert.same({ "Bearer", 3600 }, { body.token_type, body.expires_in })
    assert.equal(200, (sr:request("GET", "/subjects", nil, bearer(body.access_token))))

    status, body = token_request{ grant_type = "client_credentials", client_id = c.client_id,
                                  client_secret = "wrong-secret" }
    assert.same({ 401, { error = "invalid_client" } }, { status, body })
    status, body = token_request{ grant_type = "password", client_id = c.client_id, client_secret = c.client_secret,
                                  username = c.username, password = "wrong-password" }
    assert.same({ 400, { error = "invalid_grant" } }, { status, body })
    local recorded = sr:token_requests()
    local last = recorded[#recorded]  -- the wrong password's: recorded by name only
    assert.same({ "password", cjson.null, cjson.null }, { last.grant_type, last.fields.client_secret, last.fields.password })
    assert.is_nil(cjson.encode(recorded):find(c.client_secret, 1, true))

    local unauthorized = { error_code = 401, message = "Unauthorized" }
    status, body = sr:request("GET", "/subjects")
    assert.same({ 401, unauthorized }, { status, body })
    status, body = sr:request("GET", "/subjects", nil, bearer("not-a-token-it-issued"))
    assert.same({ 401, unauthorized }, { status, body })
    assert.is_nil(helpers.read_file(sr.dir .. "/server.log"):find(c.client_secret, 1, true))
  end)

  it("issues tokens that expire after token_lifetime, then refuses them", function()
    local short = registry.start{ auth = "oauth2", token_lifetime = 1 }
    finally(function() short:stop() end)
    local c = short.credentials.oauth2
    local status, body = short:request("POST", "/oauth2/token", "grant_type=client_credentials",
                                       { ["Content-Type"] = "application/x-www-form-urlencoded",
                                         Authorization = "Basic " .. mime.b64(c.client_id .. ":" .. c.client_secret) })
    assert.same({ 200, 1 }, { status, body.expires_in })
    local token = body.access_token
    assert.equal(200, (short:request("GET", "/subjects", nil, bearer(token))))
    assert.is_truthy(proc.wait_until(function()
      return short:request("GET", "/subjects", nil, bearer(token)) == 401
    end, 5, 0.2))
  end)

  it("grants client_credentials to a client_secret_jwt assertion signed with the client secret, and refuses " ..
     "one signed with another key", function()
    local c = sr.credentials.oauth2
    -- an HS256 JWT (RFC 7523) made by Python's hmac, the key read from the registry's credentials file
    local script = sr.dir .. "/client_assertion.py"
    local file = assert(io.open(script, "w"))
    file:write([[
import base64, hashlib, hmac, json, sys, time
c = json.load(open(sys.argv[1]))["oauth2"]
b = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
signing = b({"alg": "HS256", "typ": "JWT"}) + "." + b({"iss": c["client_id"], "sub": c["client_id"],
                                                     "aud": "token", "exp": int(time.time()) + 60})
key = c["client_secret"] if sys.argv[2] == "client_secret" else sys.argv[2]
mac = base64.urlsafe_b64encode(hmac.new(key.encode(), signing.encode(), hashlib.sha256).digest()).rstrip(b"=")
print(signing + "." + mac.decode(), end="")
]])
    file:close()
    local function assertion(key)
      return helpers.sh_ok(string.format("python3 %s %s/credentials.json %s", script, sr.dir, key))
    end
    local jwt_type = "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
    local status, body = token_request{ grant_type = "client_credentials", client_assertion_type = jwt_type,
                                        client_assertion = assertion("client_secret") }
    assert.equal(200, status)
    assert.equal(200, (sr:request("GET", "/subjects", nil, bearer(body.access_token))))
    status, body = token_request{ grant_type = "client_credentials", client_assertion_type = jwt_type,
                                  client_assertion = assertion("another-key") }
    assert.same({ 401, { error = "invalid_client" } }, { status, body })
    assert.equal(c.client_id, sr:token_requests()[#sr:token_requests()].client_id)
  end)
end)
