-- Configuration of the confluent-consume plugin, in Kong's schema DSL.
-- Names and defaults follow Kong's own kafka-consume / confluent-consume where they exist.
--
-- This is the one source of the bounds users see. The native module hands the conf over once
-- (`native.settings(conf)`) and checks the same types, required flags and bounds again (src/schema.rs);
-- spec/05-settings_spec.lua fails on any difference between the two.
local typedefs = require "kong.db.schema.typedefs"
local message_functions = require "kong.plugins.confluent-consume.message_functions"
local NULL = require("cjson").null -- ngx.null is the same value inside nginx


local ipairs = ipairs
local pairs = pairs


local MIB = 1024 * 1024
local SASL_MECHANISMS = { "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER" }


local function present(value)
  return value ~= nil and value ~= NULL
end


local HTTP_URL = "^[Hh][Tt][Tt][Pp][Ss]?://[^%s]+$"


-- Kong's `schema_registry` record (3.15): the Confluent Schema Registry whose schemas decode records in
-- Confluent's wire format. The same record sits in `config` and in each `topics[]` item, where it wins.
local function schema_registry_record(description)
  return {
    description = description,
    type = "record",
    required = false,
    fields = {
      { confluent = {
          description = "A Confluent Schema Registry (or any registry serving its REST API).",
          type = "record",
          required = false,
          fields = {
            { url = {
                description = "Base URL of the registry (http or https); unset: no registry, records " ..
                              "render as without one.",
                type = "string",
                required = false,
                match = HTTP_URL,
            } },
            { ssl_verify = {
                description = "Verify the registry's TLS certificate (against the system's CA store).",
                type = "boolean",
                required = true,
                default = true,
            } },
            { ttl = {
                description = "Seconds a fetched schema stays cached before it is fetched again; unset: " ..
                              "cached for the life of the worker (a schema id never changes); 0: fetched " ..
                              "for each batch of records that needs it.",
                type = "number",
                required = false,
                between = { 0, 3600 },
            } },
            { authentication = {
                description = "How the plugin authenticates to the registry.",
                type = "record",
                required = true,
                fields = {
                  { mode = {
                      description = "`none`, `basic` (HTTP Basic with `basic`) or `oauth2` (a bearer token " ..
                                    "from `oauth2`'s token endpoint).",
                      type = "string",
                      required = true,
                      default = "none",
                      one_of = { "none", "basic", "oauth2" },
                  } },
                  { basic = {
                      description = "HTTP Basic credentials; required when mode is `basic`.",
                      type = "record",
                      required = false,
                      fields = {
                        { username = {
                            description = "User name (Confluent Cloud: the registry API key).",
                            type = "string",
                            required = true,
                            len_min = 1,
                            encrypted = true,
                            referenceable = true,
                        } },
                        { password = {
                            description = "Password (Confluent Cloud: the registry API secret).",
                            type = "string",
                            required = true,
                            len_min = 1,
                            encrypted = true,
                            referenceable = true,
                        } },
                      },
                  } },
                  { oauth2 = {
                      description = "The OAuth 2.0 token request; required when mode is `oauth2`.",
                      type = "record",
                      required = false,
                      fields = {
                        { token_endpoint = {
                            description = "URL of the token endpoint (http or https).",
                            type = "string",
                            required = true,
                            match = HTTP_URL,
                        } },
                        { grant_type = {
                            description = "`client_credentials` or `password` (with username and password).",
                            type = "string",
                            required = true,
                            default = "client_credentials",
                            one_of = { "client_credentials", "password" },
                        } },
                        { client_id = {
                            description = "Client id at the identity provider.",
                            type = "string",
                            required = false,
                            len_min = 1,
                            encrypted = true,
                            referenceable = true,
                        } },
                        { client_secret = {
                            description = "Client secret at the identity provider.",
                            type = "string",
                            required = false,
                            len_min = 1,
                            encrypted = true,
                            referenceable = true,
                        } },
                        { username = {
                            description = "Resource owner's user name, for the `password` grant.",
                            type = "string",
                            required = false,
                            len_min = 1,
                            encrypted = true,
                            referenceable = true,
                        } },
                        { password = {
                            description = "Resource owner's password, for the `password` grant.",
                            type = "string",
                            required = false,
                            len_min = 1,
                            encrypted = true,
                            referenceable = true,
                        } },
                        { scopes = {
                            description = "Scopes to request (sent joined by spaces).",
                            type = "array",
                            required = true,
                            default = { "openid" },
                            elements = { type = "string", len_min = 1 },
                        } },
                        { audience = {
                            description = "Audiences to request (each sent as an `audience` argument).",
                            type = "array",
                            required = true,
                            default = {},
                            elements = { type = "string", len_min = 1 },
                        } },
                        { token_headers = {
                            description = "Extra headers of the token request.",
                            type = "map",
                            required = false,
                            keys = { type = "string" },
                            values = { type = "string", referenceable = true },
                        } },
                        { token_post_args = {
                            description = "Extra form arguments of the token request.",
                            type = "map",
                            required = false,
                            keys = { type = "string" },
                            values = { type = "string", referenceable = true },
                        } },
                      },
                  } },
                  { oauth2_client = {
                      description = "How the token request is made.",
                      type = "record",
                      required = false,
                      fields = {
                        { auth_method = {
                            description = "How the client authenticates to the token endpoint: " ..
                                          "`client_secret_post` (id and secret in the form), " ..
                                          "`client_secret_basic` (HTTP Basic), `client_secret_jwt` (a JWT " ..
                                          "signed with the secret) or `none` (the id alone in the form).",
                            type = "string",
                            required = true,
                            default = "client_secret_post",
                            one_of = { "client_secret_post", "client_secret_basic", "client_secret_jwt", "none" },
                        } },
                        { client_secret_jwt_alg = {
                            description = "The HMAC of `client_secret_jwt`: HS512 or HS256.",
                            type = "string",
                            required = true,
                            default = "HS512",
                            one_of = { "HS512", "HS256" },
                        } },
                        { http_version = {
                            description = "HTTP version of the token request: 1.1 (1.0 is accepted and sent " ..
                                          "as 1.1).",
                            type = "number",
                            required = true,
                            default = 1.1,
                            between = { 1, 1.1 },
                        } },
                        { http_proxy = {
                            description = "Proxy (http://host:port) for an http token endpoint.",
                            type = "string",
                            required = false,
                            match = HTTP_URL,
                        } },
                        { http_proxy_authorization = {
                            description = "Proxy-Authorization header for http_proxy.",
                            type = "string",
                            required = false,
                            len_min = 1,
                            encrypted = true,
                            referenceable = true,
                        } },
                        { https_proxy = {
                            description = "Proxy (http://host:port) for an https token endpoint.",
                            type = "string",
                            required = false,
                            match = HTTP_URL,
                        } },
                        { https_proxy_authorization = {
                            description = "Proxy-Authorization header for https_proxy.",
                            type = "string",
                            required = false,
                            len_min = 1,
                            encrypted = true,
                            referenceable = true,
                        } },
                        { no_proxy = {
                            description = "Comma-separated hosts reached without the proxy.",
                            type = "string",
                            required = false,
                            len_min = 1,
                        } },
                        { keep_alive = {
                            description = "Reuse the connection to the token endpoint.",
                            type = "boolean",
                            required = true,
                            default = true,
                        } },
                        { ssl_verify = {
                            description = "Verify the token endpoint's TLS certificate.",
                            type = "boolean",
                            required = true,
                            default = true,
                        } },
                        { timeout = {
                            description = "ms a token request may take.",
                            type = "integer",
                            required = true,
                            default = 10000,
                            between = { 0, 2147483646 },
                        } },
                      },
                  } },
                },
            } },
          },
      } },
    },
  }
end


-- A registry's authentication names the credentials its mode needs (Kong's messages). `where` is the
-- record's path, for the message.
local function check_schema_registry(registry, where)
  if not present(registry) or not present(registry.confluent) then
    return true
  end
  local auth = registry.confluent.authentication
  if not present(auth) then
    return true
  end
  if auth.mode == "basic" and not present(auth.basic) then
    return nil, "basic authentication details required when mode is 'basic'"
  end
  if auth.mode == "oauth2" then
    if not present(auth.oauth2) then
      return nil, "oauth2 authentication details required when mode is 'oauth2'"
    end
    local oauth2 = auth.oauth2
    if oauth2.grant_type == "password" and not (present(oauth2.username) and present(oauth2.password)) then
      return nil, where .. ".confluent.authentication.oauth2: the password grant needs username and password"
    end
  end
  return true
end


local function check_schema_registries(entity)
  local config = entity.config or {}
  local ok, err = check_schema_registry(config.schema_registry, "schema_registry")
  if not ok then
    return nil, err
  end
  for i, topic in ipairs(present(config.topics) and config.topics or {}) do
    ok, err = check_schema_registry(topic.schema_registry, "topics[" .. i .. "].schema_registry")
    if not ok then
      return nil, err
    end
  end
  if config.enable_dlq == true and not present(config.dlq_topic) then
    return nil, "dlq_topic is required when enable_dlq is true"
  end
  return true
end


-- SASL/OAUTHBEARER with a token from an OAuth 2.0 token endpoint (client credentials grant), as Kong's
-- `oauthbearer` record; the same record sits at the top level and under `authentication`.
local function oauthbearer_record(description)
  return {
    description = description,
    type = "record",
    required = false,
    fields = {
      { token_endpoint_url = {
          description = "URL of the OAuth 2.0 token endpoint (http or https).",
          type = "string",
          required = false,
          match = HTTP_URL,
          referenceable = true,
      } },
      { client_id = {
          description = "OAuth 2.0 client id, sent to the token endpoint with HTTP Basic authentication.",
          type = "string",
          required = false,
          len_min = 1,
          referenceable = true,
      } },
      { client_secret = {
          description = "OAuth 2.0 client secret, sent to the token endpoint with HTTP Basic " ..
                        "authentication.",
          type = "string",
          required = false,
          len_min = 1,
          encrypted = true,
          referenceable = true,
      } },
      { scopes = {
          description = "Scopes to request from the token endpoint (sent joined by spaces).",
          type = "array",
          required = false,
          elements = { type = "string", len_min = 1 },
      } },
      { extensions = {
          description = "SASL extensions sent to the broker with the token (Confluent Cloud: " ..
                        "logicalCluster, identityPoolId). Keys are letters only; values printable " ..
                        "ASCII.",
          type = "map",
          required = false,
          keys = { type = "string" },
          values = { type = "string" },
      } },
      { token_endpoint_tls_verify = {
          description = "Verify the token endpoint's TLS certificate (against the system's CA store).",
          type = "boolean",
          required = true,
          default = true,
      } },
    },
  }
end


-- Kong fills an unset `oauthbearer` record with its defaults, so it counts as configured only when one
-- of its credentials is set; the client credentials grant then needs all three.
local function oauthbearer_configured(oauthbearer)
  return present(oauthbearer) and (present(oauthbearer.token_endpoint_url) or
         present(oauthbearer.client_id) or present(oauthbearer.client_secret))
end


-- `prefix` is where the record sits (`oauthbearer` or `authentication.oauthbearer`).
local function check_oauthbearer(oauthbearer, prefix)
  if not (present(oauthbearer.token_endpoint_url) and present(oauthbearer.client_id) and
          present(oauthbearer.client_secret)) then
    return nil, prefix .. " needs token_endpoint_url, client_id and client_secret"
  end
  local extensions = oauthbearer.extensions
  if present(extensions) then
    for key, value in pairs(extensions) do
      -- RFC 7628 (as librdkafka checks them when it takes the token): a key is letters only and `auth`
      -- is reserved; values are printable ASCII (RFC 7628 also allows tab, CR and LF; nobody needs them).
      if not key:find("^%a+$") or key == "auth" then
        return nil, prefix .. ".extensions: a key must be letters only and not 'auth'"
      end
      if not value:find("^[%w%p ]*$") then
        return nil, prefix .. ".extensions: the value of '" .. key .. "' must be printable ASCII"
      end
    end
  end
  return true
end


-- strategy and mechanism go together, and a mechanism needs a user and a password; the Confluent-style
-- cluster_api_key / cluster_api_secret are an alternative to `authentication`, not an addition.
local function check_authentication(entity)
  local config = entity.config or {}
  local auth = config.authentication
  local key, secret = config.cluster_api_key, config.cluster_api_secret
  if present(key) ~= present(secret) then
    return nil, "cluster_api_key and cluster_api_secret go together"
  end
  -- as in Kong, `oauthbearer` takes precedence over cluster_api_key / cluster_api_secret
  if oauthbearer_configured(config.oauthbearer) then
    if present(auth) and present(auth.mechanism) then
      return nil, "set either authentication or oauthbearer, not both"
    end
    return check_oauthbearer(config.oauthbearer, "oauthbearer")
  end
  if not present(auth) then
    return true
  end
  if present(key) and present(auth.mechanism) then
    return nil, "set either authentication or cluster_api_key/cluster_api_secret, not both"
  end
  local strategy, mechanism = auth.strategy, auth.mechanism
  if strategy == NULL then strategy = nil end
  if mechanism == NULL then mechanism = nil end
  if strategy and not mechanism then
    return nil, "authentication.mechanism is required when authentication.strategy is set"
  end
  if mechanism and not strategy then
    return nil, "authentication.strategy is required when authentication.mechanism is set"
  end
  if auth.tokenauth == true then
    -- Kong's DelegationToken authentication is SCRAM with the `tokenauth=true` extension (KIP-48);
    -- librdkafka (2.12.1) sends no SCRAM extensions
    return nil, "authentication.tokenauth = true is not supported: librdkafka cannot send the SCRAM " ..
                "extension tokenauth=true that delegation tokens need"
  end
  if mechanism == "OAUTHBEARER" then
    if not oauthbearer_configured(auth.oauthbearer) then
      return nil, "authentication.oauthbearer is required when authentication.mechanism is OAUTHBEARER"
    end
    return check_oauthbearer(auth.oauthbearer, "authentication.oauthbearer")
  end
  if mechanism then
    local user, password = auth.user, auth.password
    if user == nil or user == NULL or password == nil or password == NULL then
      return nil, "if authentication strategy is SASL and mechanism is PLAIN, SCRAM-SHA-256 or " ..
                  "SCRAM-SHA-512, you have to set user and password"
    end
  end
  return true
end


return {
  name = "confluent-consume",
  fields = {
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          { bootstrap_servers = {
              description = "Kafka brokers to bootstrap from: an array of {host, port}.",
              type = "array",
              required = true,
              len_min = 1,
              elements = {
                type = "record",
                fields = {
                  { host = typedefs.host { required = true } },
                  { port = typedefs.port { required = true } },
                },
              },
          } },
          { topics = {
              description = "Topics to consume: an array of {name}; every partition of each is served.",
              type = "array",
              required = true,
              len_min = 1,
              elements = {
                type = "record",
                fields = {
                  { name = {
                      description = "Kafka topic name.",
                      type = "string",
                      required = true,
                      len_min = 1,
                      len_max = 249,
                      match = "^[%w%._%-]+$",
                      not_one_of = { ".", ".." }, -- Kafka refuses these two
                  } },
                  { schema_registry = schema_registry_record(
                      "This topic's registry; wins over the global `schema_registry`.") },
                },
              },
          } },
          { mode = {
              description = "How records are served: `http-get` (each GET returns the next records as " ..
                            "JSON), `server-sent-events` (a live stream) or `websocket` (a live stream " ..
                            "the client may acknowledge).",
              type = "string",
              required = true,
              default = "http-get",
              one_of = { "http-get", "server-sent-events", "websocket" },
          } },
          { message_deserializer = {
              description = "How record values are rendered: `noop` (as a string) or `json` (parsed " ..
                            "and embedded as JSON).",
              type = "string",
              required = true,
              default = "noop",
              one_of = { "noop", "json" },
          } },
          { auto_offset_reset = {
              description = "Where to start when the consumer group has no committed offset: " ..
                            "`earliest` (the oldest record) or `latest` (only records produced after " ..
                            "the group first had no offset; as in Kong, only with " ..
                            "enforce_latest_offset_reset, else it behaves like `earliest`).",
              type = "string",
              required = true,
              default = "earliest", -- Kong's confluent-consume default; kafka-consume's is `latest`
              one_of = { "earliest", "latest" },
          } },
          { enforce_latest_offset_reset = {
              description = "Whether `auto_offset_reset = latest` really starts at the latest record. " ..
                            "False (Kong's default, for backward compatibility): `latest` behaves like " ..
                            "`earliest`.",
              type = "boolean",
              required = true,
              default = false,
          } },
          { commit_strategy = {
              description = "`auto`: commit the consumer group's offsets after each response was " ..
                            "handed to nginx successfully (at-least-once); `off`: never commit.",
              type = "string",
              required = true,
              default = "auto",
              one_of = { "auto", "off" },
          } },
          { timeout = typedefs.timeout {
              description = "How long (ms) a request may wait on Kafka (start-up, an unreachable " ..
                            "broker) before it is answered with an error.",
              default = 10000,
          } },
          { keepalive = {
              description = "With keepalive_enabled: ms a connection to a broker may stay idle before " ..
                            "it is closed (librdkafka `connections.max.idle.ms`).",
              type = "integer",
              required = true,
              default = 60000,
              between = { 0, 2147483646 },
          } },
          { keepalive_enabled = {
              description = "Close connections to brokers that stay idle for `keepalive` ms. Off: " ..
                            "connections stay open, as the consumer is persistent.",
              type = "boolean",
              required = true,
              default = false,
          } },
          { cluster_name = {
              description = "Name of the Kafka client (librdkafka `client.id`). Plugins whose " ..
                            "resulting consumers are identical share one per worker.",
              type = "string",
              required = false,
              len_min = 1,
              len_max = 255,
          } },
          { consumer_group = {
              description = "The Kafka consumer group whose offsets are read and committed (http-get, " ..
                            "websocket acknowledgements; server-sent-events never reads or commits them).",
              type = "record",
              required = true,
              fields = {
                { mode = {
                    description = "`random`: a group derived from the plugin's id " ..
                                  "(`kong-confluent-consume-<plugin id>`); `manual`: `consumer_group_id`; " ..
                                  "`kong_consumer`: the authenticated Kong consumer's username, else " ..
                                  "custom_id, else id (`random` for a request without one).",
                    type = "string",
                    required = true,
                    default = "random",
                    one_of = { "random", "manual", "kong_consumer" },
                } },
                { consumer_group_id = {
                    description = "The group id when `mode` is `manual`.",
                    type = "string",
                    required = false,
                    len_min = 1,
                    len_max = 255,
                } },
              },
          } },
          { authentication = {
              description = "SASL authentication to the brokers.",
              type = "record",
              required = false,
              fields = {
                { strategy = {
                    description = "Authentication strategy; `sasl` is the only one.",
                    type = "string",
                    required = false,
                    one_of = { "sasl" },
                } },
                { mechanism = {
                    description = "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.",
                    type = "string",
                    required = false,
                    one_of = SASL_MECHANISMS,
                } },
                { user = {
                    description = "SASL user name (Confluent Cloud: the API key).",
                    type = "string",
                    required = false,
                    len_min = 1,
                    referenceable = true,
                } },
                { password = {
                    description = "SASL password (Confluent Cloud: the API secret).",
                    type = "string",
                    required = false,
                    len_min = 1,
                    encrypted = true,
                    referenceable = true,
                } },
                { tokenauth = {
                    description = "Kong's DelegationToken authentication (SCRAM with the " ..
                                  "tokenauth extension). Only `false` is supported.",
                    type = "boolean",
                    required = false,
                } },
                { oauthbearer = oauthbearer_record(
                    "SASL/OAUTHBEARER token endpoint and credentials; required when mechanism " ..
                    "is OAUTHBEARER.") },
              },
          } },
          { cluster_api_key = {
              description = "Confluent Cloud API key: an alias of authentication.user with " ..
                            "mechanism PLAIN, so configs of Kong's own plugin work.",
              type = "string",
              required = false,
              len_min = 1,
              encrypted = true,
              referenceable = true,
          } },
          { cluster_api_secret = {
              description = "Confluent Cloud API secret: an alias of authentication.password.",
              type = "string",
              required = false,
              len_min = 1,
              encrypted = true,
              referenceable = true,
          } },
          { confluent_cloud_api_key = {
              description = "Confluent Cloud management API key (Kong's, for creating topics and " ..
                            "ACLs). Accepted for compatibility; this plugin never calls that API.",
              type = "string",
              required = false,
              len_min = 1,
              encrypted = true,
              referenceable = true,
          } },
          { confluent_cloud_api_secret = {
              description = "Confluent Cloud management API secret. Accepted for compatibility; " ..
                            "this plugin never calls that API.",
              type = "string",
              required = false,
              len_min = 1,
              encrypted = true,
              referenceable = true,
          } },
          { oauthbearer = oauthbearer_record(
              "SASL/OAUTHBEARER authentication with a token from an OAuth 2.0 token endpoint " ..
              "(client credentials grant). When set, takes precedence over " ..
              "cluster_api_key/cluster_api_secret.") },
          { security = {
              description = "TLS to the brokers.",
              type = "record",
              required = true,
              fields = {
                { ssl = {
                    description = "TLS on or off. Unset: on when SASL is configured (Confluent Cloud " ..
                                  "accepts only SASL_SSL), off otherwise.",
                    type = "boolean",
                    required = false,
                } },
                { ssl_verify = {
                    description = "Verify the broker's certificate chain and host name.",
                    type = "boolean",
                    required = true,
                    default = true,
                } },
                { ca_certificate = {
                    description = "PEM CA bundle to trust; unset: the system's CA store.",
                    type = "string",
                    required = false,
                    match = "%-%-%-%-%-BEGIN ",
                    referenceable = true,
                } },
                { client_certificate = {
                    description = "PEM client certificate for mutual TLS (with client_key).",
                    type = "string",
                    required = false,
                    match = "%-%-%-%-%-BEGIN ",
                    referenceable = true,
                } },
                { client_key = {
                    description = "PEM private key of client_certificate.",
                    type = "string",
                    required = false,
                    match = "%-%-%-%-%-BEGIN ",
                    encrypted = true,
                    referenceable = true,
                } },
                -- not typedefs.uuid: Kong's is `auto`, which would invent an id for an unset field
                { certificate_id = {
                    description = "The id of a Kong `certificates` entity whose `cert` and `key` are the " ..
                                  "client certificate for mutual TLS (instead of client_certificate and " ..
                                  "client_key).",
                    type = "string",
                    required = false,
                    uuid = true,
                } },
              },
          } },
          { error_handling = {
              description = "What error answers tell the client.",
              type = "record",
              required = true,
              fields = {
                { return_error_message = {
                    description = "Put the reason of a Kafka failure (librdkafka's, never a secret) in " ..
                                  "the error body. False: a generic message; the reason goes to the " ..
                                  "error log.",
                    type = "boolean",
                    required = true,
                    default = false,
                } },
              },
          } },
          { max_records = {
              description = "Most records one GET returns; the `max_records` query argument may ask " ..
                            "for fewer.",
              type = "integer",
              required = true,
              default = 1000,
              between = { 1, 100000 },
          } },
          { max_bytes = {
              description = "Most bytes of records one GET returns (one larger record is still " ..
                            "returned alone); the `max_bytes` query argument may ask for fewer.",
              type = "integer",
              required = true,
              default = MIB,
              between = { 1, 64 * MIB },
          } },
          { max_wait = {
              description = "Longest long-poll (ms) the `wait` query argument may ask for.",
              type = "integer",
              required = true,
              default = 30000,
              between = { 0, 300000 },
          } },
          { heartbeat_interval = {
              description = "server-sent-events and websocket: ms between heartbeats (a comment, a ping) " ..
                            "on an idle stream, so proxies keep it open and dead clients are noticed.",
              type = "integer",
              required = true,
              default = 15000,
              between = { 1000, 300000 },
          } },
          { retry_interval = {
              description = "server-sent-events: the `retry:` hint, ms a browser waits before it " ..
                            "reconnects.",
              type = "integer",
              required = true,
              default = 3000,
              between = { 0, 300000 },
          } },
          { max_unacked_records = {
              description = "websocket with acknowledgements: most records a connection has been sent and " ..
                            "not acknowledged; at this many, sending pauses until acknowledgements come.",
              type = "integer",
              required = true,
              default = 1000,
              between = { 1, 100000 },
          } },
          { ack_timeout = {
              description = "websocket with acknowledgements: ms a connection whose window is full may go " ..
                            "without acknowledging anything before it is closed (code 4008).",
              type = "integer",
              required = true,
              default = 60000,
              between = { 1000, 3600000 },
          } },
          { max_catchup_streams = {
              description = "server-sent-events and websocket: most streams of one worker reading behind the live " ..
                            "records at once (each on a consumer of its own, holding up to " ..
                            "buffer_max_bytes per partition); more wait for a free slot up to `timeout`, " ..
                            "then get a 503.",
              type = "integer",
              required = true,
              default = 16,
              between = { 1, 10000 },
          } },
          { fetch_wait_max_ms = {
              description = "How long the broker may hold a fetch that has no data (librdkafka " ..
                            "`fetch.wait.max.ms`); lower means lower latency and more idle requests.",
              type = "integer",
              required = true,
              default = 10,
              between = { 1, 10000 },
          } },
          { buffer_max_bytes = {
              description = "Bound of each worker's buffer per partition, in bytes of encoded records; " ..
                            "fetching pauses above it.",
              type = "integer",
              required = true,
              default = 8 * MIB,
              between = { 65536, 1024 * MIB },
          } },
          { message_by_lua_functions = {
              description = "Lua functions applied in order to every record before it is served: each " ..
                            "string is Lua source returning `function(message)`, which returns the " ..
                            "message (changed or not) or nil to drop the record. They run sandboxed " ..
                            "(see README, Message functions).",
              type = "array",
              required = false,
              elements = {
                type = "string",
                len_min = 1,
                custom_validator = message_functions.validate,
              },
          } },
          { schema_registry = schema_registry_record(
              "The registry that decodes records in Confluent's wire format (a magic byte, a schema id, " ..
              "then Avro, Protobuf or JSON Schema bytes), for every topic without a registry of its own.") },
          { enable_dlq = {
              description = "Send a record whose decoding fails to `dlq_topic` (unchanged, with headers " ..
                            "naming its source and the error) instead of serving it.",
              type = "boolean",
              required = false,
          } },
          { dlq_topic = {
              description = "The dead-letter topic of `enable_dlq`.",
              type = "string",
              required = false,
              len_min = 1,
              len_max = 249,
              match = "^[%w%._%-]+$",
              not_one_of = { ".", ".." },
          } },
          { max_consumer_groups = {
              description = "http-get and websocket with consumer_group.mode `kong_consumer`: most Kong " ..
                            "consumers one worker keeps a Kafka consumer open for, per plugin; a new one " ..
                            "closes the least recently used that no request uses, else gets a 503.",
              type = "integer",
              required = true,
              default = 16,
              between = { 1, 1000 },
          } },
        },
    } },
  },
  entity_checks = {
    { conditional = {
        if_field = "config.consumer_group.mode", if_match = { eq = "manual" },
        then_field = "config.consumer_group.consumer_group_id", then_match = { required = true },
    } },
    { custom_entity_check = {
        field_sources = { "config" },
        fn = check_authentication,
    } },
    { custom_entity_check = {
        field_sources = { "config" },
        fn = check_schema_registries,
    } },
    { mutually_required = { "config.security.client_certificate", "config.security.client_key" } },
    { mutually_exclusive = { "config.security.certificate_id", "config.security.client_certificate" } },
  },
}
