//! Consumer settings as the Lua side hands them over, their validation (the last line of defence after
//! the Kong schema) and their one mapping onto a librdkafka [`ClientConfig`].

use std::fmt;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::error::Error;

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    Earliest,
    Latest,
}

/// Whether delivered offsets are committed to the consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitStrategy {
    Auto,
    Off,
}

/// How a record value is rendered in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deserializer {
    /// The value as a string (base64 object when it is not UTF-8).
    Noop,
    /// The value parsed as JSON and embedded as such.
    Json,
}

/// Who reads a handle's buffer, which decides how it is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// http-get: the node's requests take records in turn; reading a cursor drops what lies below it,
    /// and a full buffer pauses fetching.
    #[default]
    Queue,
    /// server-sent-events: every stream reads every record from the live edge on; the oldest records are
    /// dropped when the buffer is full, and streams that needed them are cut.
    Broadcast,
    /// One stream catching up from an older position: like `Queue`, for a single reader.
    Replay,
}

/// Where a `Replay` handle starts, overriding committed offsets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Start {
    Earliest,
    Latest,
    /// The first offsets at or after this time (ms since the epoch).
    Timestamp { ms: i64 },
    /// Exact offsets, one per partition in buffer order.
    Offsets { offsets: Vec<i64> },
}

/// SASL mechanisms librdkafka is built with here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
pub struct BootstrapServer {
    pub host: String,
    pub port: u16,
}

/// `config.authentication` of the plugin.
#[derive(Clone, Deserialize)]
pub struct Authentication {
    pub strategy: String,
    pub mechanism: Mechanism,
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Authentication {
    // The password never reaches a log line, not even through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authentication")
            .field("strategy", &self.strategy)
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// `config.security` of the plugin: TLS to the brokers.
#[derive(Clone, Deserialize)]
pub struct Security {
    /// TLS on or off; `None` means "on exactly when SASL is configured" (Confluent Cloud needs SASL_SSL).
    #[serde(default)]
    pub ssl: Option<bool>,
    /// Verify the broker's certificate chain and host name.
    #[serde(default = "default_true")]
    pub ssl_verify: bool,
    /// PEM CA bundle to trust instead of the system store.
    #[serde(default)]
    pub ca_certificate: Option<String>,
    /// PEM client certificate and key for mutual TLS.
    #[serde(default)]
    pub client_certificate: Option<String>,
    #[serde(default)]
    pub client_key: Option<String>,
}

fn default_true() -> bool {
    true
}

impl Default for Security {
    fn default() -> Self {
        Security { ssl: None, ssl_verify: true, ca_certificate: None, client_certificate: None, client_key: None }
    }
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
            .finish()
    }
}

/// Everything a native consumer handle needs, as built by the plugin's Lua side from the plugin config.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub bootstrap_servers: Vec<BootstrapServer>,
    pub topics: Vec<String>,
    pub group_id: String,
    pub auto_offset_reset: OffsetReset,
    pub commit_strategy: CommitStrategy,
    pub message_deserializer: Deserializer,
    #[serde(default)]
    pub authentication: Option<Authentication>,
    #[serde(default)]
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub security: Security,
    /// How long the broker may hold an empty fetch (`fetch.wait.max.ms`).
    pub fetch_wait_max_ms: u32,
    /// Bound of one partition's buffer in encoded bytes; fetching pauses above it.
    pub buffer_max_bytes: usize,
    /// Directory for the doorbell socket.
    pub socket_dir: String,
    #[serde(default)]
    pub delivery: Delivery,
    /// Start position of a `Replay` handle.
    #[serde(default)]
    pub start: Option<Start>,
}

/// Largest `buffer_max_bytes` accepted: beyond it one worker could hold gigabytes.
const BUFFER_MAX_BYTES_LIMIT: usize = 1 << 30;

impl Settings {
    /// Checks what the Kong schema already checks, so that a handle built from any other caller still gets a
    /// clear message naming the field.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first offending field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("{field}: {why}")));
        if self.bootstrap_servers.is_empty() {
            return bad("bootstrap_servers", "at least one server is required");
        }
        for (i, server) in self.bootstrap_servers.iter().enumerate() {
            if server.host.is_empty() || server.host.contains([',', ' ']) {
                return bad(&format!("bootstrap_servers[{}].host", i + 1), "invalid host");
            }
            if server.port == 0 {
                return bad(&format!("bootstrap_servers[{}].port", i + 1), "port must be 1-65535");
            }
        }
        if self.topics.is_empty() {
            return bad("topics", "at least one topic is required");
        }
        for (i, topic) in self.topics.iter().enumerate() {
            if !valid_topic_name(topic) {
                return bad(&format!("topics[{}].name", i + 1), "invalid Kafka topic name");
            }
        }
        if self.group_id.is_empty() {
            return bad("group_id", "must not be empty");
        }
        if let Some(auth) = &self.authentication {
            if auth.strategy != "sasl" {
                return bad("authentication.strategy", "expected one of: sasl");
            }
            if auth.user.is_empty() {
                return bad("authentication.user", "required with a SASL mechanism");
            }
            if auth.password.is_empty() {
                return bad("authentication.password", "required with a SASL mechanism");
            }
        }
        let pem = |field: &str, value: &Option<String>| match value {
            Some(v) if !v.contains("-----BEGIN ") => bad(field, "expected a PEM block (-----BEGIN ...)"),
            _ => Ok(()),
        };
        pem("security.ca_certificate", &self.security.ca_certificate)?;
        pem("security.client_certificate", &self.security.client_certificate)?;
        pem("security.client_key", &self.security.client_key)?;
        if self.security.client_certificate.is_some() != self.security.client_key.is_some() {
            return bad("security.client_key", "client_certificate and client_key go together");
        }
        if self.fetch_wait_max_ms == 0 || self.fetch_wait_max_ms > 60_000 {
            return bad("fetch_wait_max_ms", "value should be between 1 and 60000");
        }
        if self.buffer_max_bytes < 1024 || self.buffer_max_bytes > BUFFER_MAX_BYTES_LIMIT {
            return bad("buffer_max_bytes", "value should be between 1024 and 1073741824");
        }
        match (&self.delivery, &self.start) {
            (Delivery::Replay, None) => return bad("start", "required for a replay handle"),
            (Delivery::Replay, Some(Start::Offsets { offsets })) if offsets.iter().any(|&o| o < 0) => {
                return bad("start.offsets", "offsets must not be negative");
            }
            (Delivery::Queue | Delivery::Broadcast, Some(_)) => {
                return bad("start", "only a replay handle has a start position");
            }
            _ => {}
        }
        Ok(())
    }

    /// The comma-separated `bootstrap.servers` list.
    pub fn brokers(&self) -> String {
        self.bootstrap_servers
            .iter()
            .map(|s| {
                if s.host.contains(':') {
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
        let password = self.authentication.iter().map(|a| a.password.clone());
        let key = self.security.client_key.iter().cloned();
        password.chain(key).filter(|p| !p.is_empty()).collect()
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
            // The buffer of this crate is the bound that matters; keep librdkafka's own queue modest, and
            // small for a stream's private catch-up consumer, of which a worker may run many at once.
            .set("queued.max.messages.kbytes", match self.delivery {
                Delivery::Replay => "2048",
                Delivery::Queue | Delivery::Broadcast => "16384",
            })
            // A full queue postpones the next fetch by this much (librdkafka's default is a whole second,
            // which would throttle a small queue to a few MB/s).
            .set("fetch.queue.backoff.ms", self.fetch_wait_max_ms.to_string());
        let tls = self.tls();
        let protocol = match (self.authentication.is_some(), tls) {
            (true, true) => "SASL_SSL",
            (true, false) => "SASL_PLAINTEXT",
            (false, true) => "SSL",
            (false, false) => "PLAINTEXT",
        };
        config.set("security.protocol", protocol);
        if let Some(auth) = &self.authentication {
            config
                .set("sasl.mechanism", auth.mechanism.as_librdkafka())
                .set("sasl.username", &auth.user)
                .set("sasl.password", &auth.password);
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

/// Kafka's rule for topic names: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

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
            message_deserializer: Deserializer::Noop,
            authentication: None,
            cluster_name: None,
            security: Security::default(),
            fetch_wait_max_ms: 10,
            buffer_max_bytes: 1 << 20,
            socket_dir: "/tmp".into(),
            delivery: Delivery::Queue,
            start: None,
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
    }

    #[test]
    fn a_catch_up_consumer_prefetches_less() {
        let mut s = settings();
        s.delivery = Delivery::Replay;
        assert_eq!(get(&s.client_config(), "queued.max.messages.kbytes"), Some("2048"));
    }

    #[test]
    fn sasl_mechanisms_map_to_librdkafka() {
        for (mechanism, expected) in [
            (Mechanism::Plain, "PLAIN"),
            (Mechanism::ScramSha256, "SCRAM-SHA-256"),
            (Mechanism::ScramSha512, "SCRAM-SHA-512"),
        ] {
            let mut s = settings();
            s.authentication = Some(Authentication {
                strategy: "sasl".into(),
                mechanism,
                user: "alice".into(),
                password: "s3cret".into(),
            });
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
        s.authentication = Some(Authentication {
            strategy: "sasl".into(),
            mechanism: Mechanism::Plain,
            user: "API_KEY".into(),
            password: "API_SECRET".into(),
        });
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
        s.authentication = Some(Authentication {
            strategy: "sasl".into(),
            mechanism: Mechanism::Plain,
            user: "alice".into(),
            password: "hunter2-very-secret".into(),
        });
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2-very-secret"), "{shown}");
        assert!(shown.contains("[REDACTED]"));
        assert_eq!(s.secrets(), vec!["hunter2-very-secret".to_string()]);
    }

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(Box<dyn Fn(&mut Settings)>, &str)> = vec![
            (Box::new(|s| s.bootstrap_servers.clear()), "bootstrap_servers:"),
            (Box::new(|s| s.bootstrap_servers[1].port = 0), "bootstrap_servers[2].port:"),
            (Box::new(|s| s.topics.clear()), "topics:"),
            (Box::new(|s| s.topics[0] = "bad topic".into()), "topics[1].name:"),
            (Box::new(|s| s.group_id.clear()), "group_id:"),
            (Box::new(|s| s.fetch_wait_max_ms = 0), "fetch_wait_max_ms:"),
            (Box::new(|s| s.buffer_max_bytes = 10), "buffer_max_bytes:"),
            (Box::new(|s| s.delivery = Delivery::Replay), "start:"),
            (
                Box::new(|s| {
                    s.delivery = Delivery::Replay;
                    s.start = Some(Start::Offsets { offsets: vec![-1] });
                }),
                "start.offsets:",
            ),
            (Box::new(|s| s.start = Some(Start::Earliest)), "start:"),
            (Box::new(|s| s.security.ca_certificate = Some("not a pem".into())), "security.ca_certificate:"),
            (
                Box::new(|s| s.security.client_certificate = Some("-----BEGIN CERTIFICATE-----".into())),
                "security.client_key:",
            ),
            (
                Box::new(|s| {
                    s.authentication = Some(Authentication {
                        strategy: "sasl".into(),
                        mechanism: Mechanism::Plain,
                        user: "u".into(),
                        password: String::new(),
                    })
                }),
                "authentication.password:",
            ),
        ];
        assert!(settings().validate().is_ok());
        for (mutate, field) in cases {
            let mut s = settings();
            mutate(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }
}
