//! Consumer settings: read once from the plugin's `config` as Kong hands it over, after it passed
//! [`schema::check`] (the native copy of schema.lua's rules); the identity that decides which plugins share
//! a consumer; and their one mapping onto a librdkafka [`ClientConfig`].

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::BuildHasher;

use once_cell::sync::Lazy;
use rdkafka::ClientConfig;
use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;
use crate::registry::config::{self as registry_config, Registry};
use crate::schema::{self, bad, Plugin};

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    /// What `auto_offset_reset` means given `enforce_latest_offset_reset`: as in Kong, `latest` behaves
    /// like `earliest` unless it is enforced (Kong's backward-compatible default).
    pub fn effective(self, enforce_latest: bool) -> OffsetReset {
        match self {
            OffsetReset::Latest if !enforce_latest => OffsetReset::Earliest,
            other => other,
        }
    }
}

/// Whether delivered offsets are committed to the consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitStrategy {
    Auto,
    Off,
}

/// How a record value is rendered in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deserializer {
    /// The value as a string (base64 object when it is not UTF-8).
    Noop,
    /// The value parsed as JSON and embedded as such.
    Json,
}

/// The plugin's `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Mode {
    #[serde(rename = "http-get")]
    HttpGet,
    #[serde(rename = "server-sent-events")]
    ServerSentEvents,
    #[serde(rename = "websocket")]
    WebSocket,
}

/// Who reads a handle's buffer, which decides how it is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// http-get: the node's requests take records in turn; reading a cursor drops what lies below it,
    /// and a full buffer pauses fetching.
    Queue,
    /// server-sent-events: every stream reads every record from the live edge on; the oldest records are
    /// dropped when the buffer is full, and streams that needed them are cut.
    Broadcast,
    /// One stream catching up from an older position: like `Queue`, for a single reader.
    Replay,
}

/// Where a `Replay` handle starts, overriding committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Start {
    Earliest,
    Latest,
    /// The group's committed offsets, else `auto_offset_reset`: a websocket client that acknowledges
    /// resumes from its group's last acknowledgement.
    Committed,
    /// The first offsets at or after this time (ms since the epoch).
    Timestamp { ms: i64 },
    /// Exact offsets, one per partition in buffer order.
    Offsets { offsets: Vec<i64> },
}

/// SASL mechanisms librdkafka is built with here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl Mechanism {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A broker address as Kong's `bootstrap_servers` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct BootstrapServer {
    pub host: String,
    pub port: u16,
}

/// SASL authentication to the brokers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Authentication {
    /// A user and a password: `config.authentication`, or Confluent Cloud's `cluster_api_key` /
    /// `cluster_api_secret`.
    Password(Password),
    /// SASL/OAUTHBEARER with a token that the consumer thread fetches from an OAuth 2.0 token endpoint
    /// ([`crate::oauth`]).
    OAuthBearer(OAuthBearer),
}

/// PLAIN or SCRAM credentials.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Password {
    pub mechanism: Mechanism,
    pub user: String,
    pub password: String,
    /// The user is a Confluent Cloud API key (`cluster_api_key`), kept as secret as the password.
    pub user_is_secret: bool,
}

impl fmt::Debug for Password {
    // The password (and an API key) never reaches a log line, not even through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Password")
            .field("mechanism", &self.mechanism)
            .field("user", &if self.user_is_secret { "[REDACTED]" } else { self.user.as_str() })
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// Kong's `oauthbearer` record once checked: the client credentials grant of [`crate::oauth::fetch`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OAuthBearer {
    /// Where the record was configured (`oauthbearer` or `authentication.oauthbearer`), for messages.
    pub field: &'static str,
    pub token_endpoint_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    /// Sorted, so equal maps give equal identities.
    pub extensions: BTreeMap<String, String>,
    /// Verify an https endpoint's certificate (against the system's CA store).
    pub token_endpoint_tls_verify: bool,
}

impl fmt::Debug for OAuthBearer {
    // The client secret never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthBearer")
            .field("field", &self.field)
            .field("token_endpoint_url", &self.token_endpoint_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("scopes", &self.scopes)
            .field("extensions", &self.extensions)
            .field("token_endpoint_tls_verify", &self.token_endpoint_tls_verify)
            .finish()
    }
}

/// `config.security` of the plugin: TLS to the brokers.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Security {
    /// TLS on or off; `None` means "on exactly when SASL is configured" (Confluent Cloud needs SASL_SSL).
    #[serde(default)]
    pub ssl: Option<bool>,
    /// Verify the broker's certificate chain and host name.
    pub ssl_verify: bool,
    /// PEM CA bundle to trust instead of the system store.
    #[serde(default)]
    pub ca_certificate: Option<String>,
    /// PEM client certificate and key for mutual TLS.
    #[serde(default)]
    pub client_certificate: Option<String>,
    #[serde(default)]
    pub client_key: Option<String>,
    /// The id of a Kong `certificates` entity whose certificate and key are the client certificate
    /// (Kong's kafka-consume); the plugin reads the entity and hands its PEMs over ([`Handover`]).
    #[serde(default)]
    pub certificate_id: Option<String>,
}

impl fmt::Debug for Security {
    // The client key never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("ssl", &self.ssl)
            .field("ssl_verify", &self.ssl_verify)
            .field("ca_certificate", &self.ca_certificate.as_ref().map(|_| "<PEM>"))
            .field("client_certificate", &self.client_certificate.as_ref().map(|_| "<PEM>"))
            .field("client_key", &self.client_key.as_ref().map(|_| "[REDACTED]"))
            .field("certificate_id", &self.certificate_id)
            .finish()
    }
}

/// `config.consumer_group`.
#[derive(Deserialize)]
struct ConsumerGroup {
    mode: GroupMode,
    #[serde(default)]
    consumer_group_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum GroupMode {
    Random,
    Manual,
    /// The authenticated Kong consumer's name, which only the request knows: see [`Handover`].
    KongConsumer,
}

/// What the plugin knows of a configuration beyond its `config` and hands over with it: the consumer
/// group of the Kong consumer a request authenticated as (`consumer_group.mode = kong_consumer`), and
/// the Kong certificate entity `security.certificate_id` names.
#[derive(Debug, Default, Deserialize)]
pub struct Handover {
    /// The Kong consumer's `username`, else `custom_id`, else `id`; none: the `random` group.
    #[serde(default)]
    pub consumer_group: Option<String>,
    #[serde(default)]
    pub certificate: Option<Certificate>,
}

/// A Kong `certificates` entity's PEM certificate and private key.
#[derive(Deserialize)]
pub struct Certificate {
    pub cert: String,
    pub key: String,
}

impl fmt::Debug for Certificate {
    // The private key never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate").field("cert", &"<PEM>").field("key", &"[REDACTED]").finish()
    }
}

/// `config.authentication` as the schema allows it: every field optional.
#[derive(Default, Deserialize)]
struct AuthenticationConf {
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    mechanism: Option<MechanismConf>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    tokenauth: Option<bool>,
    #[serde(default)]
    oauthbearer: Option<OAuthBearerConf>,
}

/// `authentication.mechanism`: OAUTHBEARER, or one of the password mechanisms.
#[derive(Deserialize)]
enum MechanismConf {
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
    #[serde(untagged)]
    Password(Mechanism),
}

/// Kong's `oauthbearer` record as the schema allows it. Kong fills an unset record with its defaults
/// (`token_endpoint_tls_verify`, `extensions`), so it counts as configured only once a credential is set.
#[derive(Deserialize)]
struct OAuthBearerConf {
    #[serde(default)]
    token_endpoint_url: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    /// An empty Lua table comes over as `{}`, so this is a list or an empty object.
    #[serde(default)]
    scopes: Option<Value>,
    #[serde(default)]
    extensions: Option<BTreeMap<String, String>>,
    #[serde(default)]
    token_endpoint_tls_verify: Option<bool>,
}

impl OAuthBearerConf {
    fn configured(&self) -> bool {
        self.token_endpoint_url.is_some() || self.client_id.is_some() || self.client_secret.is_some()
    }
}

#[derive(Deserialize)]
struct Topic {
    name: String,
    /// The topic's own `schema_registry`, which wins over the global one.
    #[serde(default)]
    schema_registry: Option<Value>,
}

/// The fields of the plugin's `config` that shape a consumer. The others (request limits, stream timing)
/// are only checked, by [`schema::check`]; unknown keys such as Kong's `__key__` are ignored.
#[derive(Deserialize)]
struct Conf {
    bootstrap_servers: Vec<BootstrapServer>,
    topics: Vec<Topic>,
    mode: Mode,
    message_deserializer: Deserializer,
    auto_offset_reset: OffsetReset,
    enforce_latest_offset_reset: bool,
    commit_strategy: CommitStrategy,
    /// confluent-consume only (kafka-consume has neither, so both are optional here).
    #[serde(default)]
    keepalive: Option<u32>,
    #[serde(default)]
    keepalive_enabled: Option<bool>,
    #[serde(default)]
    cluster_name: Option<String>,
    consumer_group: ConsumerGroup,
    #[serde(default)]
    authentication: Option<AuthenticationConf>,
    #[serde(default)]
    cluster_api_key: Option<String>,
    #[serde(default)]
    cluster_api_secret: Option<String>,
    #[serde(default)]
    oauthbearer: Option<OAuthBearerConf>,
    security: Security,
    fetch_wait_max_ms: u32,
    buffer_max_bytes: usize,
    #[serde(default)]
    schema_registry: Option<Value>,
    #[serde(default)]
    enable_dlq: Option<bool>,
    #[serde(default)]
    dlq_topic: Option<String>,
    /// Kong's id of the plugin instance (a string): a `random` consumer group is named after it. Not a
    /// field of schema.lua, so its type is checked here.
    #[serde(rename = "__plugin_id", default)]
    plugin_id: Option<Value>,
}

/// Everything a native consumer handle is built from. Two plugins whose settings are equal get identical
/// consumers, so they share one per worker ([`Settings::identity`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settings {
    pub bootstrap_servers: Vec<BootstrapServer>,
    pub topics: Vec<String>,
    pub group_id: String,
    /// `auto_offset_reset` as it behaves: `latest` is `earliest` unless `enforce_latest_offset_reset`.
    pub auto_offset_reset: OffsetReset,
    pub commit_strategy: CommitStrategy,
    /// `keepalive` when `keepalive_enabled`: connections idle this long (ms) are closed.
    pub keepalive_idle_ms: Option<u32>,
    pub message_deserializer: Deserializer,
    pub authentication: Option<Authentication>,
    pub cluster_name: Option<String>,
    pub security: Security,
    /// How long the broker may hold an empty fetch (`fetch.wait.max.ms`).
    pub fetch_wait_max_ms: u32,
    /// Bound of one partition's buffer in encoded bytes.
    pub buffer_max_bytes: usize,
    /// Directory for the doorbell socket: `TMPDIR`, else `/tmp`.
    pub socket_dir: String,
    pub delivery: Delivery,
    /// Start position of a `Replay` handle.
    pub start: Option<Start>,
    /// The registry of each topic (in `topics` order): its own `schema_registry`, else the global one;
    /// `None`: its records render as without a registry.
    pub registries: Vec<Option<Registry>>,
    /// `dlq_topic` when `enable_dlq`: where records that fail to decode go instead of the response.
    pub dlq_topic: Option<String>,
}

/// The keys of [`Settings::identity`]'s hash: random per process, so an identity says nothing about the
/// secrets it covers outside the worker that computed it.
static IDENTITY_KEYS: Lazy<[RandomState; 2]> = Lazy::new(|| [RandomState::new(), RandomState::new()]);

impl Settings {
    /// [`Settings::from_plugin_conf`] of a confluent-consume configuration.
    ///
    /// # Errors
    /// As [`Settings::from_plugin_conf`].
    pub fn from_conf(conf: &Value, handover: Handover) -> Result<Settings, Error> {
        Settings::from_plugin_conf(conf, Plugin::ConfluentConsume, handover)
    }

    /// The settings of the shared consumer of the configuration `conf` of `plugin` (`config` as Kong
    /// hands it to the plugin, defaults filled in) with what the plugin hands over beside it: a queue for
    /// `http-get`, a broadcast for `server-sent-events`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first offending field: a value outside schema.lua's rules (a field
    /// of the other plugin only is an unknown field), or a combination its entity checks refuse; or
    /// `security.certificate_id` without its certificate.
    pub fn from_plugin_conf(conf: &Value, plugin: Plugin, handover: Handover) -> Result<Settings, Error> {
        schema::check(conf, plugin)?;
        let mut conf = Conf::deserialize(conf).map_err(|e| Error::Config(e.to_string()))?;
        let group = conf.consumer_group;
        let group_id = match (group.mode, group.consumer_group_id, handover.consumer_group) {
            (GroupMode::Manual, Some(id), _) => id,
            (GroupMode::Manual, None, _) => return bad("consumer_group.consumer_group_id", "required field missing"),
            (GroupMode::KongConsumer, _, Some(name)) => name,
            // without an authenticated consumer, Kong's kong_consumer mode falls back to random
            (GroupMode::Random | GroupMode::KongConsumer, _, _) => match conf.plugin_id {
                Some(Value::String(id)) if !id.is_empty() => format!("kong-confluent-consume-{id}"),
                _ => return bad("__plugin_id", "a string is required for a random consumer group"),
            },
        };
        if group_id.is_empty() {
            return bad("consumer_group", "the Kong consumer's group must not be empty");
        }
        let authentication =
            authentication(conf.authentication, conf.cluster_api_key, conf.cluster_api_secret, conf.oauthbearer)?;
        let security = &mut conf.security;
        if security.client_certificate.is_some() != security.client_key.is_some() {
            return bad("security.client_key", "client_certificate and client_key go together");
        }
        match (&security.certificate_id, handover.certificate) {
            (Some(_), _) if security.client_certificate.is_some() => {
                let why = "set either certificate_id or client_certificate/client_key, not both";
                return bad("security.certificate_id", why);
            }
            (Some(_), Some(certificate)) => {
                security.client_certificate = Some(certificate.cert);
                security.client_key = Some(certificate.key);
            }
            (Some(_), None) => return bad("security.certificate_id", "the certificate was not handed over"),
            (None, _) => {}
        }
        let global = registry_config::registry(conf.schema_registry.as_ref(), "schema_registry")?;
        let registries = conf
            .topics
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let own = registry_config::registry(t.schema_registry.as_ref(), &format!("topics[{}].schema_registry", i + 1))?;
                Ok(own.or_else(|| global.clone()))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let dlq_topic = match (conf.enable_dlq, conf.dlq_topic) {
            (Some(true), Some(topic)) => Some(topic),
            (Some(true), None) => return bad("dlq_topic", "dlq_topic is required when enable_dlq is true"),
            _ => None,
        };
        Ok(Settings {
            registries,
            dlq_topic,
            bootstrap_servers: conf.bootstrap_servers,
            topics: conf.topics.into_iter().map(|t| t.name).collect(),
            group_id,
            auto_offset_reset: conf.auto_offset_reset.effective(conf.enforce_latest_offset_reset),
            commit_strategy: conf.commit_strategy,
            keepalive_idle_ms: conf.keepalive.filter(|_| conf.keepalive_enabled == Some(true)),
            message_deserializer: conf.message_deserializer,
            authentication,
            cluster_name: conf.cluster_name,
            security: conf.security,
            fetch_wait_max_ms: conf.fetch_wait_max_ms,
            buffer_max_bytes: conf.buffer_max_bytes,
            socket_dir: std::env::temp_dir().to_string_lossy().into_owned(),
            delivery: match conf.mode {
                Mode::HttpGet => Delivery::Queue,
                Mode::ServerSentEvents | Mode::WebSocket => Delivery::Broadcast,
            },
            start: None,
        })
    }

    /// The settings of a private consumer for one stream catching up from `start`.
    ///
    /// # Errors
    /// [`Error::Config`] for a negative start offset.
    pub fn replay(&self, start: Start) -> Result<Settings, Error> {
        if let Start::Offsets { offsets } = &start {
            if offsets.iter().any(|&o| o < 0) {
                return bad("start.offsets", "offsets must not be negative");
            }
        }
        Ok(Settings { delivery: Delivery::Replay, start: Some(start), ..self.clone() })
    }

    /// The settings of a shared consumer from the live edge whose reads change nothing (a broadcast
    /// handle), whatever the mode: an http-get route's cursor reads go through one.
    pub fn live(&self) -> Settings {
        Settings { delivery: Delivery::Broadcast, start: None, ..self.clone() }
    }

    /// Who shares a consumer: equal for equal settings, different (but for a 2^-128 chance) otherwise.
    /// Stable within a process only.
    pub fn identity(&self) -> String {
        let [a, b] = &*IDENTITY_KEYS;
        format!("{:016x}{:016x}", a.hash_one(self), b.hash_one(self))
    }

    /// The comma-separated `bootstrap.servers` list.
    pub fn brokers(&self) -> String {
        self.bootstrap_servers
            .iter()
            .map(|s| {
                if s.host.contains(':') && !s.host.starts_with('[') {
                    format!("[{}]:{}", s.host, s.port)
                } else {
                    format!("{}:{}", s.host, s.port)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The secrets that must never appear in a log line or an error message.
    pub fn secrets(&self) -> Vec<String> {
        let auth = self.authentication.iter().flat_map(|a| match a {
            Authentication::Password(p) => {
                let user = p.user_is_secret.then(|| p.user.clone());
                user.into_iter().chain([p.password.clone()]).collect::<Vec<_>>()
            }
            Authentication::OAuthBearer(o) => vec![o.client_secret.clone()],
        });
        let key = self.security.client_key.iter().cloned();
        let registries = self.registries.iter().flatten().flat_map(Registry::secrets);
        auth.chain(key).chain(registries).filter(|p| !p.is_empty()).collect()
    }

    /// Whether the connection to the brokers uses TLS.
    pub fn tls(&self) -> bool {
        self.security.ssl.unwrap_or(self.authentication.is_some())
    }

    /// The one librdkafka configuration of a consumer built from these settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.brokers())
            .set("group.id", &self.group_id)
            .set("client.id", self.cluster_name.as_deref().unwrap_or("kong-confluent-consume"))
            // Partitions are assigned explicitly and offsets committed only after delivery.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", match self.auto_offset_reset {
                OffsetReset::Earliest => "earliest",
                OffsetReset::Latest => "latest",
            })
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set("socket.keepalive.enable", "true")
            // librdkafka opens a client's first connection to a bootstrap server on one trigger and
            // suppresses another for half of this back-off; a start whose metadata request came second
            // waited out that half (50 ms of the default 100) in about a third of the catch-up streams'
            // starts (docs/performance.md, "Stream start"). 20 ms keeps the suppression at librdkafka's
            // floor (11 ms) and still backs a lost connection off exponentially, up to
            // reconnect.backoff.max.ms (10 s).
            .set("reconnect.backoff.ms", "20")
            // Kong's `keepalive` is how long an idle pooled connection stays open; librdkafka's
            // connections are its pool (0, librdkafka's default, never closes an idle one).
            .set("connections.max.idle.ms", self.keepalive_idle_ms.unwrap_or(0).to_string())
            // The buffer of this crate is the bound that matters; keep librdkafka's own queue modest, and
            // small for a stream's private catch-up consumer, of which a worker may run many at once.
            .set("queued.max.messages.kbytes", match self.delivery {
                Delivery::Replay => "2048",
                Delivery::Queue | Delivery::Broadcast => "16384",
            })
            // A full queue postpones the next fetch by this much (librdkafka's default is a whole second,
            // which would throttle a small queue to a few MB/s). A catch-up consumer's 2 MB queue is drained
            // in a few ms by a stream reading from the earliest record, and then sat empty for the rest of
            // the backoff: with 10 ms, a raw consumer with that queue reads about 0.65 of its rate with
            // librdkafka's defaults (docs/performance.md), with 1 ms about as fast as with them.
            .set("fetch.queue.backoff.ms", match self.delivery {
                Delivery::Replay => "1".to_owned(),
                Delivery::Queue | Delivery::Broadcast => self.fetch_wait_max_ms.to_string(),
            });
        if self.delivery == Delivery::Queue {
            // The statistics are the only source of each partition's last stable offset, which http-get
            // answers carry; other consumers need none (librdkafka's default: no statistics).
            config.set("statistics.interval.ms", "1000");
        }
        let tls = self.tls();
        let protocol = match (self.authentication.is_some(), tls) {
            (true, true) => "SASL_SSL",
            (true, false) => "SASL_PLAINTEXT",
            (false, true) => "SSL",
            (false, false) => "PLAINTEXT",
        };
        config.set("security.protocol", protocol);
        match &self.authentication {
            Some(Authentication::Password(auth)) => {
                config
                    .set("sasl.mechanism", auth.mechanism.as_librdkafka())
                    .set("sasl.username", &auth.user)
                    .set("sasl.password", &auth.password);
            }
            Some(Authentication::OAuthBearer(_)) => {
                // The consumer thread fetches the tokens and sets them with their extensions
                // ([`crate::oauth::Refresh`]); librdkafka's default method expects exactly that.
                config.set("sasl.mechanism", "OAUTHBEARER");
            }
            None => {}
        }
        if tls {
            let security = &self.security;
            config
                .set("enable.ssl.certificate.verification", security.ssl_verify.to_string())
                .set("ssl.endpoint.identification.algorithm", if security.ssl_verify { "https" } else { "none" });
            if let Some(ca) = &security.ca_certificate {
                config.set("ssl.ca.pem", ca);
            }
            if let (Some(cert), Some(key)) = (&security.client_certificate, &security.client_key) {
                config.set("ssl.certificate.pem", cert).set("ssl.key.pem", key);
            }
        }
        config
    }
}


/// The SASL credentials of a conf, checked as schema.lua's entity check does: `authentication` with a
/// strategy and a mechanism needs a user and a password, or with OAUTHBEARER `authentication.oauthbearer`;
/// `cluster_api_key` and `cluster_api_secret` go together, mean SASL PLAIN, and do not go with
/// `authentication`; a configured top-level `oauthbearer` takes precedence over them (as in Kong) and
/// does not go with an `authentication` mechanism.
fn authentication(
    conf: Option<AuthenticationConf>,
    api_key: Option<String>,
    api_secret: Option<String>,
    oauthbearer: Option<OAuthBearerConf>,
) -> Result<Option<Authentication>, Error> {
    let conf = conf.unwrap_or_default();
    if api_key.is_some() != api_secret.is_some() {
        return bad("cluster_api_secret", "cluster_api_key and cluster_api_secret go together");
    }
    if let Some(oauthbearer) = oauthbearer.filter(OAuthBearerConf::configured) {
        if conf.mechanism.is_some() {
            return bad("oauthbearer", "set either authentication or oauthbearer, not both");
        }
        return Ok(Some(Authentication::OAuthBearer(oauth_bearer(oauthbearer, "oauthbearer")?)));
    }
    let api_credentials = api_key.zip(api_secret);
    let mechanism = match (conf.strategy, conf.mechanism, &api_credentials) {
        (_, Some(_), Some(_)) => {
            return bad("cluster_api_key", "set either authentication or cluster_api_key/cluster_api_secret, not both")
        }
        (Some(_), None, _) => return bad("authentication.mechanism", "required when authentication.strategy is set"),
        (None, Some(_), _) => return bad("authentication.strategy", "required when authentication.mechanism is set"),
        (_, mechanism, _) => mechanism,
    };
    if conf.tokenauth == Some(true) {
        // Kong's DelegationToken authentication is SCRAM with the `tokenauth=true` extension (KIP-48)
        return bad(
            "authentication.tokenauth",
            "true is not supported: librdkafka cannot send the SCRAM extension tokenauth=true that \
             delegation tokens need",
        );
    }
    match (mechanism, api_credentials) {
        (Some(MechanismConf::OAuthBearer), _) => match conf.oauthbearer.filter(OAuthBearerConf::configured) {
            Some(o) => Ok(Some(Authentication::OAuthBearer(oauth_bearer(o, "authentication.oauthbearer")?))),
            None => bad("authentication.mechanism", "OAUTHBEARER requires authentication.oauthbearer"),
        },
        (Some(MechanismConf::Password(mechanism)), _) => match (conf.user, conf.password) {
            (Some(user), Some(password)) => {
                Ok(Some(Authentication::Password(Password { mechanism, user, password, user_is_secret: false })))
            }
            (None, _) => bad("authentication.user", "required with a SASL mechanism"),
            (_, None) => bad("authentication.password", "required with a SASL mechanism"),
        },
        (None, Some((user, password))) => Ok(Some(Authentication::Password(Password {
            mechanism: Mechanism::Plain,
            user,
            password,
            user_is_secret: true,
        }))),
        (None, None) => Ok(None),
    }
}

/// A configured `oauthbearer` record at `field`, checked as schema.lua's `check_oauthbearer` does.
fn oauth_bearer(conf: OAuthBearerConf, field: &'static str) -> Result<OAuthBearer, Error> {
    let (Some(token_endpoint_url), Some(client_id), Some(client_secret)) =
        (conf.token_endpoint_url, conf.client_id, conf.client_secret)
    else {
        return bad(field, "needs token_endpoint_url, client_id and client_secret");
    };
    let scopes = match conf.scopes {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(o)) if o.is_empty() => Vec::new(),
        Some(list) => Vec::<String>::deserialize(list).map_err(|e| Error::Config(format!("{field}.scopes: {e}")))?,
    };
    let extensions = conf.extensions.unwrap_or_default();
    for (key, value) in &extensions {
        // RFC 7628 (as librdkafka checks them when it takes the token): a key is letters only and `auth`
        // is reserved; values are printable ASCII (RFC 7628 also allows tab, CR and LF; nobody needs them).
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) || key == "auth" {
            return bad(&format!("{field}.extensions"), "a key must be letters only and not 'auth'");
        }
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            let why = format!("the value of '{key}' must be printable ASCII");
            return bad(&format!("{field}.extensions"), &why);
        }
    }
    // Kong's default: verify
    let token_endpoint_tls_verify = conf.token_endpoint_tls_verify.unwrap_or(true);
    Ok(OAuthBearer { field, token_endpoint_url, client_id, client_secret, scopes, extensions, token_endpoint_tls_verify })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings {
            bootstrap_servers: vec![
                BootstrapServer { host: "127.0.0.1".into(), port: 9092 },
                BootstrapServer { host: "::1".into(), port: 9093 },
            ],
            topics: vec!["orders".into()],
            group_id: "g".into(),
            auto_offset_reset: OffsetReset::Latest,
            commit_strategy: CommitStrategy::Auto,
            keepalive_idle_ms: None,
            message_deserializer: Deserializer::Noop,
            authentication: None,
            cluster_name: None,
            security: Security {
                ssl: None,
                ssl_verify: true,
                ca_certificate: None,
                client_certificate: None,
                client_key: None,
                certificate_id: None,
            },
            fetch_wait_max_ms: 10,
            buffer_max_bytes: 1 << 20,
            socket_dir: "/tmp".into(),
            delivery: Delivery::Queue,
            start: None,
            registries: vec![None],
            dlq_topic: None,
        }
    }

    fn get<'a>(config: &'a ClientConfig, key: &str) -> Option<&'a str> {
        config.get(key)
    }

    #[test]
    fn plaintext_without_authentication() {
        let config = settings().client_config();
        assert_eq!(get(&config, "bootstrap.servers"), Some("127.0.0.1:9092,[::1]:9093"));
        assert_eq!(get(&config, "security.protocol"), Some("PLAINTEXT"));
        assert_eq!(get(&config, "enable.ssl.certificate.verification"), None);
        assert_eq!(get(&config, "sasl.mechanism"), None);
        assert_eq!(get(&config, "enable.auto.commit"), Some("false"));
        assert_eq!(get(&config, "fetch.wait.max.ms"), Some("10"));
        assert_eq!(get(&config, "client.id"), Some("kong-confluent-consume"));
        assert_eq!(get(&config, "queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(get(&config, "fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(get(&config, "connections.max.idle.ms"), Some("0"));
        assert_eq!(get(&config, "reconnect.backoff.ms"), Some("20"));
    }

    #[test]
    fn keepalive_closes_idle_connections_only_when_enabled() {
        let keepalive = |changes| Settings::from_conf(&conf(changes), Handover::default()).unwrap().client_config();
        let enabled = keepalive(json!({ "keepalive_enabled": true, "keepalive": 5000 }));
        assert_eq!(get(&enabled, "connections.max.idle.ms"), Some("5000"));
        let disabled = keepalive(json!({ "keepalive_enabled": false, "keepalive": 5000 }));
        assert_eq!(get(&disabled, "connections.max.idle.ms"), Some("0"));
    }

    #[test]
    fn latest_behaves_like_earliest_unless_enforced() {
        let reset = |changes| Settings::from_conf(&conf(changes), Handover::default()).unwrap().auto_offset_reset;
        assert_eq!(reset(json!({ "auto_offset_reset": "latest" })), OffsetReset::Earliest);
        let enforced = json!({ "auto_offset_reset": "latest", "enforce_latest_offset_reset": true });
        assert_eq!(reset(enforced), OffsetReset::Latest);
        assert_eq!(reset(json!({ "auto_offset_reset": "earliest" })), OffsetReset::Earliest);
        let earliest = json!({ "auto_offset_reset": "earliest", "enforce_latest_offset_reset": true });
        assert_eq!(reset(earliest), OffsetReset::Earliest);
    }

    #[test]
    fn a_kafka_consume_conf_has_no_confluent_fields() {
        let kafka = crate::schema::tests::kafka_conf();
        let s = Settings::from_plugin_conf(&kafka, Plugin::KafkaConsume, Handover::default()).unwrap();
        assert_eq!((s.authentication, s.keepalive_idle_ms), (None, None));
        let mut with_key = kafka.clone();
        with_key["cluster_api_key"] = json!("k");
        let err = Settings::from_plugin_conf(&with_key, Plugin::KafkaConsume, Handover::default()).unwrap_err().to_string();
        assert_eq!(err, "invalid configuration: cluster_api_key: unknown field");
        // the same consumer whichever plugin configures it
        let confluent = Settings::from_conf(&conf(json!({})), Handover::default()).unwrap();
        assert_eq!(confluent.identity(), Settings::from_plugin_conf(&kafka, Plugin::KafkaConsume, Handover::default()).unwrap().identity());
    }

    #[test]
    fn a_catch_up_consumer_prefetches_less_and_refills_sooner() {
        let mut s = settings();
        s.delivery = Delivery::Replay;
        assert_eq!(get(&s.client_config(), "queued.max.messages.kbytes"), Some("2048"));
        assert_eq!(get(&s.client_config(), "fetch.queue.backoff.ms"), Some("1"));
    }

    #[test]
    fn only_http_get_consumers_gather_statistics() {
        let mut s = settings();
        assert_eq!(get(&s.client_config(), "statistics.interval.ms"), Some("1000"));
        for delivery in [Delivery::Broadcast, Delivery::Replay] {
            s.delivery = delivery;
            assert_eq!(get(&s.client_config(), "statistics.interval.ms"), None);
        }
    }

    #[test]
    fn sasl_mechanisms_map_to_librdkafka() {
        for (mechanism, expected) in [
            (Mechanism::Plain, "PLAIN"),
            (Mechanism::ScramSha256, "SCRAM-SHA-256"),
            (Mechanism::ScramSha512, "SCRAM-SHA-512"),
        ] {
            let mut s = settings();
            s.authentication = Some(Authentication::Password(Password {
                mechanism,
                user: "alice".into(),
                password: "s3cret".into(),
                user_is_secret: false,
            }));
            s.security.ssl = Some(false);
            let config = s.client_config();
            assert_eq!(get(&config, "security.protocol"), Some("SASL_PLAINTEXT"));
            assert_eq!(get(&config, "sasl.mechanism"), Some(expected));
            assert_eq!(get(&config, "sasl.username"), Some("alice"));
            assert_eq!(get(&config, "sasl.password"), Some("s3cret"));
        }
    }

    #[test]
    fn confluent_cloud_is_sasl_plain_over_verified_tls_by_default() {
        let mut s = settings();
        s.authentication = Some(Authentication::Password(Password {
            mechanism: Mechanism::Plain,
            user: "API_KEY".into(),
            password: "API_SECRET".into(),
            user_is_secret: true,
        }));
        let config = s.client_config();
        assert_eq!(get(&config, "security.protocol"), Some("SASL_SSL"));
        assert_eq!(get(&config, "sasl.mechanism"), Some("PLAIN"));
        assert_eq!(get(&config, "sasl.username"), Some("API_KEY"));
        assert_eq!(get(&config, "sasl.password"), Some("API_SECRET"));
        assert_eq!(get(&config, "enable.ssl.certificate.verification"), Some("true"));
        assert_eq!(get(&config, "ssl.endpoint.identification.algorithm"), Some("https"));
        assert_eq!(get(&config, "ssl.ca.pem"), None, "the system CA store, as Confluent Cloud's chain is public");
    }

    #[test]
    fn tls_options_map_to_librdkafka() {
        let mut s = settings();
        s.security = Security {
            ssl: Some(true),
            ssl_verify: false,
            ca_certificate: Some("-----BEGIN CERTIFICATE-----\nCA\n".into()),
            client_certificate: Some("-----BEGIN CERTIFICATE-----\nC\n".into()),
            client_key: Some("-----BEGIN PRIVATE KEY-----\nK\n".into()),
            certificate_id: None,
        };
        let config = s.client_config();
        assert_eq!(get(&config, "security.protocol"), Some("SSL"));
        assert_eq!(get(&config, "enable.ssl.certificate.verification"), Some("false"));
        assert_eq!(get(&config, "ssl.endpoint.identification.algorithm"), Some("none"));
        assert_eq!(get(&config, "ssl.ca.pem"), Some("-----BEGIN CERTIFICATE-----\nCA\n"));
        assert_eq!(get(&config, "ssl.certificate.pem"), Some("-----BEGIN CERTIFICATE-----\nC\n"));
        assert_eq!(get(&config, "ssl.key.pem"), Some("-----BEGIN PRIVATE KEY-----\nK\n"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(s.secrets().iter().any(|x| x.contains("PRIVATE KEY")));
        s.security.ssl = Some(false);
        assert_eq!(get(&s.client_config(), "security.protocol"), Some("PLAINTEXT"));
    }

    #[test]
    fn cluster_name_becomes_client_id() {
        let mut s = settings();
        s.cluster_name = Some("payments".into());
        assert_eq!(get(&s.client_config(), "client.id"), Some("payments"));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut s = settings();
        s.authentication = Some(Authentication::Password(Password {
            mechanism: Mechanism::Plain,
            user: "alice".into(),
            password: "hunter2-very-secret".into(),
            user_is_secret: false,
        }));
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2-very-secret"), "{shown}");
        assert!(shown.contains("[REDACTED]"));
        assert_eq!(s.secrets(), vec!["hunter2-very-secret".to_string()]);
    }

    /// `schema::tests::conf()` with `changes` merged in at the top level.
    fn conf(changes: serde_json::Value) -> Value {
        let mut conf = crate::schema::tests::conf();
        for (k, v) in changes.as_object().unwrap() {
            conf[k] = v.clone();
        }
        conf
    }

    fn refusal(changes: serde_json::Value) -> String {
        Settings::from_conf(&conf(changes), Handover::default()).unwrap_err().to_string()
    }

    #[test]
    fn a_conf_becomes_the_settings_of_its_consumer() {
        let s = Settings::from_conf(&conf(json!({
            "topics": [{ "name": "a" }, { "name": "b" }], "bootstrap_servers": [{ "host": "[::1]", "port": 9093 }],
            "cluster_name": null, "authentication": null, "protocols": ["http"], "route_id": "r"
        })), Handover::default())
        .unwrap();
        assert_eq!(s.topics, ["a", "b"]);
        assert_eq!(s.brokers(), "[::1]:9093");
        assert_eq!(s.group_id, "kong-confluent-consume-p");
        assert_eq!((s.delivery, s.start.clone(), s.authentication.clone()), (Delivery::Queue, None, None));
        assert_eq!((s.fetch_wait_max_ms, s.buffer_max_bytes), (10, 8 << 20));
        let sse = Settings::from_conf(&conf(json!({ "mode": "server-sent-events" })), Handover::default()).unwrap();
        assert_eq!(sse.delivery, Delivery::Broadcast);
        let manual = json!({ "consumer_group": { "mode": "manual", "consumer_group_id": "billing" } });
        assert_eq!(Settings::from_conf(&conf(manual), Handover::default()).unwrap().group_id, "billing");
        let replay = s.replay(Start::Offsets { offsets: vec![3] }).unwrap();
        assert_eq!((replay.delivery, replay.start), (Delivery::Replay, Some(Start::Offsets { offsets: vec![3] })));
        assert!(s.replay(Start::Offsets { offsets: vec![-1] }).unwrap_err().to_string().contains("start.offsets:"));
        let live = s.replay(Start::Earliest).unwrap().live();
        assert_eq!((live.delivery, live.start), (Delivery::Broadcast, None), "the live edge, shared");
    }

    #[test]
    fn the_identity_covers_what_shapes_the_consumer_and_nothing_else() {
        let identity = |changes| Settings::from_conf(&conf(changes), Handover::default()).unwrap().identity();
        let base = identity(json!({}));
        assert_eq!(base.len(), 32);
        assert_eq!(base, identity(json!({})));
        for request_side in [
            json!({ "max_records": 5 }),
            json!({ "max_bytes": 10 }),
            json!({ "max_wait": 0 }),
            json!({ "timeout": 1 }),
            json!({ "keepalive": 1 }),
            json!({ "error_handling": { "return_error_message": true } }),
            json!({ "confluent_cloud_api_key": "k", "confluent_cloud_api_secret": "s" }),
            json!({ "heartbeat_interval": 1000 }),
            json!({ "retry_interval": 0 }),
            json!({ "max_catchup_streams": 1 }),
            json!({ "__key__": "other revision" }),
        ] {
            assert_eq!(base, identity(request_side.clone()), "{request_side}");
        }
        for consumer_side in [
            json!({ "fetch_wait_max_ms": 11 }),
            json!({ "buffer_max_bytes": 65536 }),
            json!({ "topics": [{ "name": "other" }] }),
            json!({ "bootstrap_servers": [{ "host": "127.0.0.1", "port": 9093 }] }),
            json!({ "mode": "server-sent-events" }),
            json!({ "message_deserializer": "json" }),
            json!({ "auto_offset_reset": "latest", "enforce_latest_offset_reset": true }),
            json!({ "keepalive_enabled": true }),
            json!({ "commit_strategy": "off" }),
            json!({ "cluster_name": "c" }),
            json!({ "__plugin_id": "another plugin" }),
            json!({ "security": { "ssl_verify": false } }),
            json!({ "cluster_api_key": "k", "cluster_api_secret": "s" }),
        ] {
            assert_ne!(base, identity(consumer_side.clone()), "{consumer_side}");
        }
    }

    #[test]
    fn kong_consumer_groups_come_from_the_request_else_the_plugin() {
        let mode = json!({ "consumer_group": { "mode": "kong_consumer" } });
        let handover = |group: &str| Handover { consumer_group: Some(group.into()), certificate: None };
        let alice = Settings::from_conf(&conf(mode.clone()), handover("alice")).unwrap();
        assert_eq!(alice.group_id, "alice");
        let bob = Settings::from_conf(&conf(mode.clone()), handover("bob")).unwrap();
        assert_ne!(alice.identity(), bob.identity(), "each Kong consumer reads a consumer of its own");
        let nobody = Settings::from_conf(&conf(mode.clone()), Handover::default()).unwrap();
        assert_eq!(nobody.group_id, "kong-confluent-consume-p", "no consumer: the random group");
        let random = Settings::from_conf(&conf(json!({})), handover("alice")).unwrap();
        assert_eq!(random.group_id, "kong-confluent-consume-p", "other modes ignore the request's consumer");
        let empty = Settings::from_conf(&conf(mode), handover("")).unwrap_err().to_string();
        assert!(empty.starts_with("invalid configuration: consumer_group:"), "{empty}");
    }

    #[test]
    fn certificate_id_is_the_client_certificate_handed_over() {
        let uuid = "5f4034c2-0000-4000-8000-000000000000";
        let id = json!({ "security": { "ssl_verify": true, "certificate_id": uuid } });
        let certificate = Certificate {
            cert: "-----BEGIN CERTIFICATE-----\nC\n".into(),
            key: "-----BEGIN PRIVATE KEY-----\nK-7d1e\n".into(),
        };
        assert!(!format!("{certificate:?}").contains("K-7d1e"));
        let mut s =
            Settings::from_conf(&conf(id.clone()), Handover { consumer_group: None, certificate: Some(certificate) })
                .unwrap();
        s.security.ssl = Some(true);
        let config = s.client_config();
        assert_eq!(get(&config, "ssl.certificate.pem"), Some("-----BEGIN CERTIFICATE-----\nC\n"));
        assert_eq!(get(&config, "ssl.key.pem"), Some("-----BEGIN PRIVATE KEY-----\nK-7d1e\n"));
        assert_eq!(s.secrets(), ["-----BEGIN PRIVATE KEY-----\nK-7d1e\n"]);
        assert!(!format!("{s:?}").contains("K-7d1e"));
        let missing = refusal(id);
        assert!(missing.starts_with("invalid configuration: security.certificate_id:"), "{missing}");
        let both = refusal(json!({ "security": { "ssl_verify": true,
            "certificate_id": uuid,
            "client_certificate": "-----BEGIN CERTIFICATE-----", "client_key": "-----BEGIN PRIVATE KEY-----" } }));
        assert!(both.starts_with("invalid configuration: security.certificate_id: set either"), "{both}");
    }

    #[test]
    fn cluster_api_key_is_sasl_plain_and_as_secret_as_the_password() {
        let s = Settings::from_conf(&conf(json!({
            "cluster_api_key": "KEY-4b1d9a", "cluster_api_secret": "SECRET-77c0e2"
        })), Handover::default())
        .unwrap();
        let Some(Authentication::Password(auth)) = s.authentication.clone() else { panic!("{s:?}") };
        assert_eq!(
            (auth.mechanism, auth.user.as_str(), auth.password.as_str()),
            (Mechanism::Plain, "KEY-4b1d9a", "SECRET-77c0e2")
        );
        assert_eq!(get(&s.client_config(), "security.protocol"), Some("SASL_SSL"));
        let shown = format!("{s:?}");
        assert!(!shown.contains("KEY-4b1d9a") && !shown.contains("SECRET-77c0e2"), "{shown}");
        assert!(shown.contains("user: \"[REDACTED]\""), "{shown}");
        // every log line and error message of the handle is scrubbed of these
        assert_eq!(s.secrets(), ["KEY-4b1d9a", "SECRET-77c0e2"]);
        // a SASL user given as `authentication.user` is not a secret
        let plain = Settings::from_conf(&conf(json!({ "authentication": {
            "strategy": "sasl", "mechanism": "PLAIN", "user": "alice", "password": "pw-31f0"
        } })), Handover::default())
        .unwrap();
        assert_eq!(plain.secrets(), ["pw-31f0"]);
        assert!(format!("{plain:?}").contains("alice"));
    }

    fn oauthbearer(changes: serde_json::Value) -> Value {
        let mut record = json!({
            "token_endpoint_url": "https://idp.example/oauth2/token", "client_id": "kong-gw",
            "client_secret": "cs-5e1f0b77", "token_endpoint_tls_verify": true
        });
        for (k, v) in changes.as_object().unwrap() {
            record[k] = v.clone();
        }
        record
    }

    #[test]
    fn oauthbearer_is_the_sasl_mechanism_with_the_token_fetched_here() {
        let s = Settings::from_conf(&conf(json!({ "oauthbearer": oauthbearer(json!({
            "scopes": ["kafka", "read:orders"],
            "extensions": { "logicalCluster": "lkc-12ab", "identityPoolId": "pool-Xy9" }
        })) })), Handover::default())
        .unwrap();
        let Some(Authentication::OAuthBearer(oauth)) = &s.authentication else { panic!("{s:?}") };
        assert_eq!(oauth.scopes, ["kafka", "read:orders"]);
        assert_eq!(oauth.extensions.keys().collect::<Vec<_>>(), ["identityPoolId", "logicalCluster"]);
        assert!(oauth.token_endpoint_tls_verify);
        let config = s.client_config();
        assert_eq!(get(&config, "security.protocol"), Some("SASL_SSL"));
        assert_eq!(get(&config, "sasl.mechanism"), Some("OAUTHBEARER"));
        // no librdkafka token login (OIDC needs libcurl), and no credential handed to librdkafka at all
        for key in ["sasl.oauthbearer.method", "sasl.oauthbearer.client.secret", "sasl.username", "sasl.password"] {
            assert_eq!(get(&config, key), None, "{key}");
        }
        config.create_native_config().unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("cs-5e1f0b77") && shown.contains("kong-gw"), "{shown}");
        assert_eq!(s.secrets(), ["cs-5e1f0b77"]);
        // Kong's token_endpoint_tls_verify = false is taken, for an https endpoint too
        let unverified = Settings::from_conf(&conf(json!({ "oauthbearer": oauthbearer(json!({
            "token_endpoint_tls_verify": false
        })) })), Handover::default())
        .unwrap();
        let Some(Authentication::OAuthBearer(oauth)) = unverified.authentication else { panic!() };
        assert!(!oauth.token_endpoint_tls_verify);
    }

    #[test]
    fn oauthbearer_is_read_from_either_place_kong_puts_it() {
        let nested = Settings::from_conf(&conf(json!({ "authentication": {
            "strategy": "sasl", "mechanism": "OAUTHBEARER", "oauthbearer": oauthbearer(json!({}))
        } })), Handover::default())
        .unwrap();
        let top = Settings::from_conf(&conf(json!({ "oauthbearer": oauthbearer(json!({})) })), Handover::default()).unwrap();
        let (Some(Authentication::OAuthBearer(a)), Some(Authentication::OAuthBearer(b))) =
            (&nested.authentication, &top.authentication)
        else {
            panic!("{nested:?} {top:?}")
        };
        assert_eq!((a.field, b.field), ("authentication.oauthbearer", "oauthbearer"));
        assert_eq!(OAuthBearer { field: "", ..a.clone() }, OAuthBearer { field: "", ..b.clone() });
        assert_eq!(nested.client_config().config_map(), top.client_config().config_map());
        // as in Kong, oauthbearer takes precedence over cluster_api_key / cluster_api_secret
        let both = Settings::from_conf(&conf(json!({
            "oauthbearer": oauthbearer(json!({})), "cluster_api_key": "k", "cluster_api_secret": "s"
        })), Handover::default())
        .unwrap();
        assert_eq!(get(&both.client_config(), "sasl.mechanism"), Some("OAUTHBEARER"));
        // Kong fills an unset record with its defaults: that is no OAUTHBEARER
        let filled = json!({ "token_endpoint_tls_verify": true, "extensions": {} });
        let unset = Settings::from_conf(&conf(json!({ "oauthbearer": filled.clone(), "cluster_api_key": "k",
                                                      "cluster_api_secret": "s" })), Handover::default())
        .unwrap();
        assert_eq!(get(&unset.client_config(), "sasl.mechanism"), Some("PLAIN"));
        let scram = Settings::from_conf(&conf(json!({ "authentication": {
            "strategy": "sasl", "mechanism": "SCRAM-SHA-256", "user": "u", "password": "p",
            "tokenauth": false, "oauthbearer": filled
        } })), Handover::default())
        .unwrap();
        assert_eq!(get(&scram.client_config(), "sasl.mechanism"), Some("SCRAM-SHA-256"));
    }

    #[test]
    fn the_identity_covers_the_oauthbearer_credentials() {
        let identity =
            |changes| Settings::from_conf(&conf(json!({ "oauthbearer": oauthbearer(changes) })), Handover::default()).unwrap().identity();
        let base = identity(json!({}));
        for change in [
            json!({ "client_secret": "another" }),
            json!({ "client_id": "another" }),
            json!({ "token_endpoint_url": "https://idp.example/other" }),
            json!({ "scopes": ["kafka"] }),
            json!({ "extensions": { "logicalCluster": "lkc-1" } }),
            json!({ "token_endpoint_tls_verify": false }),
        ] {
            assert_ne!(base, identity(change.clone()), "{change}");
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let auth = |fields: serde_json::Value| json!({ "authentication": fields });
        for (changes, field) in [
            (json!({ "fetch_wait_max_ms": 10001 }), "fetch_wait_max_ms: value should be between 1 and 10000"),
            (json!({ "buffer_max_bytes": 65535 }), "buffer_max_bytes: value should be between 65536 and 1073741824"),
            (json!({ "topics": [{ "name": "ok" }, { "name": "bad topic" }] }), "topics[2].name:"),
            (json!({ "bootstrap_servers": [{ "host": "a,b", "port": 1 }] }), "bootstrap_servers[1].host:"),
            (json!({ "consumer_group": { "mode": "manual" } }), "consumer_group.consumer_group_id:"),
            (json!({ "__plugin_id": null }), "__plugin_id:"),
            (json!({ "__plugin_id": 1048576 }), "__plugin_id:"),
            (json!({ "cluster_api_key": "k" }), "cluster_api_secret:"),
            (
                json!({ "cluster_api_key": "k", "cluster_api_secret": "s",
                        "authentication": { "strategy": "sasl", "mechanism": "PLAIN", "user": "u", "password": "p" } }),
                "cluster_api_key:",
            ),
            (auth(json!({ "strategy": "sasl" })), "authentication.mechanism:"),
            (auth(json!({ "mechanism": "PLAIN", "user": "u", "password": "p" })), "authentication.strategy:"),
            (auth(json!({ "strategy": "sasl", "mechanism": "PLAIN", "user": "u" })), "authentication.password:"),
            (auth(json!({ "strategy": "sasl", "mechanism": "PLAIN", "password": "p" })), "authentication.user:"),
            (
                json!({ "security": { "ssl_verify": true, "client_certificate": "-----BEGIN CERTIFICATE-----" } }),
                "security.client_key:",
            ),
            (json!({ "mode": null }), "mode: required field missing"),
            (auth(json!({ "strategy": "sasl", "mechanism": "OAUTHBEARER" })), "authentication.mechanism: OAUTH"),
            (
                auth(json!({ "strategy": "sasl", "mechanism": "OAUTHBEARER",
                             "oauthbearer": { "client_id": "c", "token_endpoint_tls_verify": true } })),
                "authentication.oauthbearer: needs token_endpoint_url, client_id and client_secret",
            ),
            (
                auth(json!({ "strategy": "sasl", "mechanism": "SCRAM-SHA-256", "user": "u", "password": "p",
                             "tokenauth": true })),
                "authentication.tokenauth: true is not supported",
            ),
            (
                json!({ "oauthbearer": oauthbearer(json!({})),
                        "authentication": { "strategy": "sasl", "mechanism": "PLAIN", "user": "u", "password": "p" } }),
                "oauthbearer: set either authentication or oauthbearer",
            ),
            (json!({ "oauthbearer": oauthbearer(json!({ "extensions": { "auth": "x" } })) }), "oauthbearer.extensions"),
            (json!({ "oauthbearer": oauthbearer(json!({ "extensions": { "k1": "x" } })) }), "oauthbearer.extensions:"),
            (
                json!({ "oauthbearer": oauthbearer(json!({ "extensions": { "k": "caf\u{e9}" } })) }),
                "oauthbearer.extensions: the value of 'k' must be printable ASCII",
            ),
            (json!({ "oauthbearer": oauthbearer(json!({ "scopes": ["a", ""] })) }), "oauthbearer.scopes[2]: length"),
            (json!({ "oauthbearer": oauthbearer(json!({ "token_endpoint_url": "ftp://x" })) }), "oauthbearer.token_"),
        ] {
            let err = refusal(changes.clone());
            assert!(err.starts_with(&format!("invalid configuration: {field}")), "{changes}: {err}");
        }
    }
}
