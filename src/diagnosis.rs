//! What a Kafka failure means for the operator. A failure reaches the handle as librdkafka's error code
//! and reason text; this module maps it to its cause and names the plugin setting to check, so that
//! `503 {"message": "Kafka is unavailable: ..."}` and the error log say what to change, not only what
//! librdkafka saw. librdkafka's own reason always stays at the end of the message.
//!
//! The cause comes from the error code. Where one code covers several causes (librdkafka reports every
//! TLS failure as `_SSL`, and a peer that hangs up during the TLS handshake as `_TRANSPORT`), the
//! reason text refines it; an unrecognised text falls back to the code's general advice, never to a
//! wrong one.

use rdkafka::error::RDKafkaErrorCode as Code;

use crate::settings::{Authentication, Settings};

/// What went wrong, as far as the operator needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A broker's host name does not resolve (`_RESOLVE`).
    Resolve,
    /// No connection to a broker: refused, unreachable, reset (`_TRANSPORT`, `_ALL_BROKERS_DOWN`).
    Connect,
    /// The peer hung up during the TLS handshake, or answered a plaintext Kafka request (see
    /// [`probe`](crate::probe)): a listener without TLS.
    TlsToPlaintext,
    /// The peer hung up on a plaintext client asking for its API versions: a TLS listener, as a rule.
    PlaintextToTls,
    /// The peer accepted the connection but did not answer as a Kafka broker.
    NotKafka,
    /// The broker's certificate failed verification.
    TlsVerify,
    /// Any other TLS failure (`_SSL`), e.g. a client certificate the broker wants.
    Tls,
    /// SASL failed: credentials, or a mechanism the broker does not offer.
    Authentication,
    /// SASL/OAUTHBEARER: no token came from the token endpoint ([`crate::oauth`]).
    TokenEndpoint,
    /// A configured topic does not exist.
    TopicNotFound,
    /// The broker's ACLs deny the topic.
    TopicAuthorization,
    /// The broker's ACLs deny the consumer group.
    GroupAuthorization,
    /// The broker's ACLs deny the cluster operation.
    ClusterAuthorization,
    /// Nothing more specific is known; the message is librdkafka's alone.
    Other,
}

impl Cause {
    /// Every cause, in declaration order (`cause as usize` indexes it).
    pub const ALL: [Cause; 14] = [
        Cause::Resolve,
        Cause::Connect,
        Cause::TlsToPlaintext,
        Cause::PlaintextToTls,
        Cause::NotKafka,
        Cause::TlsVerify,
        Cause::Tls,
        Cause::Authentication,
        Cause::TokenEndpoint,
        Cause::TopicNotFound,
        Cause::TopicAuthorization,
        Cause::GroupAuthorization,
        Cause::ClusterAuthorization,
        Cause::Other,
    ];

    /// Its name as a metric label (`broker_errors{kind=...}`).
    pub fn name(self) -> &'static str {
        match self {
            Cause::Resolve => "resolve",
            Cause::Connect => "connect",
            Cause::TlsToPlaintext => "tls_to_plaintext",
            Cause::PlaintextToTls => "plaintext_to_tls",
            Cause::NotKafka => "not_kafka",
            Cause::TlsVerify => "tls_verify",
            Cause::Tls => "tls",
            Cause::Authentication => "authentication",
            Cause::TokenEndpoint => "token_endpoint",
            Cause::TopicNotFound => "topic_not_found",
            Cause::TopicAuthorization => "topic_authorization",
            Cause::GroupAuthorization => "group_authorization",
            Cause::ClusterAuthorization => "cluster_authorization",
            Cause::Other => "other",
        }
    }
}

/// The cause of a failure with error `code` and librdkafka's `reason`.
pub fn classify(code: Code, reason: &str) -> Cause {
    match code {
        Code::Resolve => Cause::Resolve,
        // librdkafka reports a hang-up during the handshake as a transport failure, with this text
        // ("SSL handshake failed: Disconnected: connecting to a PLAINTEXT broker listener?").
        Code::BrokerTransportFailure if reason.contains("connecting to a PLAINTEXT broker listener") => {
            Cause::TlsToPlaintext
        }
        // "Disconnected: requesting ApiVersion: might be caused by incorrect security.protocol
        // configuration (connecting to a SSL listener?) ..."
        Code::BrokerTransportFailure if reason.contains("connecting to a SSL listener") => Cause::PlaintextToTls,
        Code::SSL | Code::BrokerTransportFailure if reason.contains("certificate verify failed") => Cause::TlsVerify,
        Code::SSL => Cause::Tls,
        // A TLS failure after the handshake (e.g. the broker's alert that it wants a client certificate)
        // comes as a transport failure that carries OpenSSL's text.
        Code::BrokerTransportFailure if reason.contains("SSL routines") || reason.contains("SSL alert") => {
            Cause::Tls
        }
        Code::BrokerTransportFailure | Code::AllBrokersDown => Cause::Connect,
        // "Failed to acquire SASL OAUTHBEARER token: <why>", librdkafka's report of oauth::Refresh's failure
        Code::Authentication if reason.contains("Failed to acquire SASL OAUTHBEARER token") => Cause::TokenEndpoint,
        Code::Authentication
        | Code::SaslAuthenticationFailed
        | Code::UnsupportedSASLMechanism
        | Code::IllegalSASLState => Cause::Authentication,
        Code::UnknownTopicOrPartition | Code::UnknownTopic => Cause::TopicNotFound,
        Code::TopicAuthorizationFailed => Cause::TopicAuthorization,
        Code::GroupAuthorizationFailed => Cause::GroupAuthorization,
        Code::ClusterAuthorizationFailed => Cause::ClusterAuthorization,
        _ => Cause::Other,
    }
}

/// Whether a failure of this cause means the cluster cannot serve this configuration now: it becomes the
/// handle's error (and the requests' 503). Others are only logged.
pub fn is_unavailable(cause: Cause) -> bool {
    cause != Cause::Other
}

/// The message for a failure of `cause`: what happened, the setting to check, then librdkafka's reason.
/// `topic` names the configured topic a topic failure is about.
pub fn explain(cause: Cause, settings: &Settings, topic: Option<&str>, reason: &str) -> String {
    match cause {
        Cause::Other => reason.to_owned(),
        cause => format!("{} (librdkafka: {reason})", advice(cause, settings, topic, reason)),
    }
}

/// As [`explain`], for a failure found otherwise than by librdkafka (`detail` says how).
pub fn explain_found(cause: Cause, settings: &Settings, detail: &str) -> String {
    match cause {
        Cause::Other => detail.to_owned(),
        cause => format!("{} ({detail})", advice(cause, settings, None, detail)),
    }
}

/// What happened and the setting to check.
fn advice(cause: Cause, settings: &Settings, topic: Option<&str>, reason: &str) -> String {
    let brokers = settings.brokers();
    match cause {
        Cause::Resolve => format!("a broker's host name does not resolve: check {}", resolve_field(settings, reason)),
        Cause::Connect => format!(
            "cannot connect to Kafka at {brokers}: check bootstrap_servers (host and port) and that the broker \
             is running and reachable"
        ),
        Cause::TlsToPlaintext => {
            let advice = tls_off_advice(settings);
            format!("the TLS handshake with {brokers} failed: the port does not speak TLS; {advice}")
        }
        Cause::PlaintextToTls => format!(
            "the broker at {brokers} closed the plaintext connection, so the port probably expects TLS: set \
             security.ssl = true (with security.ca_certificate unless a public CA signed the broker's \
             certificate), or check bootstrap_servers' port"
        ),
        Cause::NotKafka => format!(
            "the broker at {brokers} accepts connections but does not answer as a Kafka broker: check that \
             bootstrap_servers (host and port) names a Kafka listener{}",
            implicit_tls_note(settings)
        ),
        Cause::TlsVerify => format!(
            "the TLS certificate of the broker at {brokers} could not be verified: check \
             security.ca_certificate (the PEM of the CA that signed it; unset: the system's CA store), or set \
             security.ssl_verify = false to skip verification{}",
            implicit_tls_note(settings)
        ),
        Cause::Tls => format!(
            "TLS with the broker at {brokers} failed: check security.ca_certificate and security.ssl_verify, \
             and {} if the broker requires a client certificate{}",
            client_certificate_fields(settings),
            implicit_tls_note(settings)
        ),
        Cause::Authentication => match &settings.authentication {
            Some(Authentication::OAuthBearer(oauth)) => format!(
                "SASL OAUTHBEARER authentication failed: check that the broker offers the OAUTHBEARER \
                 mechanism and accepts the token of {url}, and {field}.scopes and {field}.extensions",
                url = oauth.token_endpoint_url,
                field = oauth.field
            ),
            _ => "SASL authentication failed: check authentication.user, authentication.password and \
                  authentication.mechanism (for Confluent Cloud: cluster_api_key and cluster_api_secret)"
                .to_owned(),
        },
        Cause::TokenEndpoint => {
            // OpenSSL's "certificate verify failed": the certificate, not the credentials
            let tls = if reason.contains("certificate verify failed") {
                "; its TLS certificate must verify against the system's CA store (or the CAs that SSL_CERT_FILE \
                 / SSL_CERT_DIR name in the workers' environment)"
            } else {
                ""
            };
            match &settings.authentication {
                Some(Authentication::OAuthBearer(oauth)) => format!(
                    "could not get an OAuth token from the token endpoint {url}: check {field}.token_endpoint_url, \
                     {field}.client_id and {field}.client_secret{tls}",
                    url = oauth.token_endpoint_url,
                    field = oauth.field
                ),
                _ => format!("could not get an OAuth token from the token endpoint{tls}"),
            }
        }
        Cause::TopicNotFound => format!(
            "topic '{}' does not exist: check {} (the plugin does not create topics)",
            topic.unwrap_or("?"),
            topic_field(settings, topic)
        ),
        Cause::TopicAuthorization => format!(
            "not authorized to read topic '{}': check {}, and that the broker's ACLs allow {} to Describe and \
             Read it",
            topic.unwrap_or("?"),
            topic_field(settings, topic),
            principal(settings)
        ),
        Cause::GroupAuthorization => format!(
            "not authorized to use consumer group '{}': the broker's ACLs must allow {} to Read it, or set \
             consumer_group.consumer_group_id to a group it may use",
            settings.group_id,
            principal(settings)
        ),
        Cause::ClusterAuthorization => {
            format!("not authorized by the cluster: check the broker's ACLs for {}", principal(settings))
        }
        Cause::Other => reason.to_owned(),
    }
}

/// Where the client certificate comes from: a Kong certificate entity, or the PEM fields.
fn client_certificate_fields(settings: &Settings) -> &'static str {
    if settings.security.certificate_id.is_some() {
        "the certificate security.certificate_id names (its cert and key)"
    } else {
        "security.client_certificate and security.client_key"
    }
}

/// Whether TLS is on only because SASL is configured and `security.ssl` is unset.
fn tls_is_implicit(settings: &Settings) -> bool {
    settings.security.ssl.is_none() && settings.tls()
}

fn tls_off_advice(settings: &Settings) -> &'static str {
    if tls_is_implicit(settings) {
        "TLS is on because SASL is configured and security.ssl is unset (Confluent Cloud needs TLS): set \
         security.ssl = false for a broker without TLS"
    } else {
        "set security.ssl = false for a broker without TLS, or check bootstrap_servers' port"
    }
}

fn implicit_tls_note(settings: &Settings) -> &'static str {
    if tls_is_implicit(settings) {
        "; TLS is on because SASL is configured and security.ssl is unset: set security.ssl = false if the \
         broker does not speak TLS"
    } else {
        ""
    }
}

/// `bootstrap_servers[i].host ('name')` for the configured host librdkafka's reason names.
fn resolve_field(settings: &Settings, reason: &str) -> String {
    let named = settings.bootstrap_servers.iter().enumerate().find(|(_, s)| {
        reason.contains(&format!("'{}:{}'", s.host, s.port)) || reason.contains(&format!("{}:{}/", s.host, s.port))
    });
    match named {
        Some((i, server)) => format!("bootstrap_servers[{}].host ('{}')", i + 1, server.host),
        None => "the host names in bootstrap_servers (and the names the brokers advertise)".to_owned(),
    }
}

/// `topics[i].name` of `topic`.
fn topic_field(settings: &Settings, topic: Option<&str>) -> String {
    match topic.and_then(|t| settings.topics.iter().position(|name| name == t)) {
        Some(i) => format!("topics[{}].name", i + 1),
        None => "topics[].name".to_owned(),
    }
}

/// Who the broker sees, in the plugin's terms.
fn principal(settings: &Settings) -> &'static str {
    if let Some(Authentication::OAuthBearer(_)) = settings.authentication {
        "the token's principal"
    } else if settings.authentication.is_some() {
        "authentication.user (or cluster_api_key)"
    } else {
        "this client (no authentication is configured, so the broker sees an anonymous user)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The settings of a plugin on two brokers, two topics and group `g1`, with SASL PLAIN or not, and
    /// `security.ssl`.
    fn settings(sasl: bool, ssl: Option<bool>) -> Settings {
        let mut conf = crate::schema::tests::conf();
        conf["bootstrap_servers"] = json!([
            { "host": "kafka-1.example", "port": 9092 },
            { "host": "kafka-2.example", "port": 9093 },
        ]);
        conf["topics"] = json!([{ "name": "orders" }, { "name": "payments" }]);
        conf["consumer_group"] = json!({ "mode": "manual", "consumer_group_id": "g1" });
        if sasl {
            conf["authentication"] = json!({ "strategy": "sasl", "mechanism": "PLAIN", "user": "u", "password": "p" });
        }
        if let Some(ssl) = ssl {
            conf["security"]["ssl"] = json!(ssl);
        }
        Settings::from_conf(&conf, Default::default()).unwrap()
    }

    #[test]
    fn codes_map_to_causes() {
        let cases = [
            (Code::Resolve, "Failed to resolve 'x:1': Name or service not known", Cause::Resolve),
            (Code::BrokerTransportFailure, "Connect to ipv4#127.0.0.1:1 failed: Connection refused", Cause::Connect),
            (Code::AllBrokersDown, "1/1 brokers are down", Cause::Connect),
            (
                Code::BrokerTransportFailure,
                "SSL handshake failed: Disconnected: connecting to a PLAINTEXT broker listener?",
                Cause::TlsToPlaintext,
            ),
            (
                Code::BrokerTransportFailure,
                "Disconnected while requesting ApiVersion: might be caused by incorrect security.protocol \
                 configuration (connecting to a SSL listener?)",
                Cause::PlaintextToTls,
            ),
            (
                Code::SSL,
                "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed",
                Cause::TlsVerify,
            ),
            (Code::SSL, "SSL handshake failed: tlsv13 alert certificate required", Cause::Tls),
            (
                Code::BrokerTransportFailure,
                "Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required: SSL alert number 116",
                Cause::Tls,
            ),
            (
                Code::BrokerTransportFailure,
                "ssl://127.0.0.1:1/bootstrap: error:0A000086:SSL routines::certificate verify failed",
                Cause::TlsVerify,
            ),
            (Code::Authentication, "SASL SCRAM authentication failed: invalid-proof", Cause::Authentication),
            (Code::SaslAuthenticationFailed, "Authentication failed", Cause::Authentication),
            (Code::UnsupportedSASLMechanism, "PLAIN", Cause::Authentication),
            (Code::UnknownTopicOrPartition, "Broker: Unknown topic or partition", Cause::TopicNotFound),
            (Code::UnknownTopic, "Local: Unknown topic", Cause::TopicNotFound),
            (Code::TopicAuthorizationFailed, "Broker: Topic authorization failed", Cause::TopicAuthorization),
            (Code::GroupAuthorizationFailed, "Broker: Group authorization failed", Cause::GroupAuthorization),
            (Code::ClusterAuthorizationFailed, "Broker: Cluster authorization failed", Cause::ClusterAuthorization),
            (Code::MessageSizeTooLarge, "too large", Cause::Other),
        ];
        for (code, reason, cause) in cases {
            assert_eq!(classify(code, reason), cause, "{code:?}: {reason}");
            assert_eq!(is_unavailable(cause), cause != Cause::Other);
        }
    }

    #[test]
    fn oauthbearer_failures_name_the_token_endpoint_and_the_fields() {
        let mut conf = crate::schema::tests::conf();
        conf["authentication"] = json!({ "strategy": "sasl", "mechanism": "OAUTHBEARER", "oauthbearer": {
            "token_endpoint_url": "https://idp.example/token", "client_id": "c", "client_secret": "s",
            "token_endpoint_tls_verify": true
        } });
        let s = Settings::from_conf(&conf, crate::settings::Handover::default()).unwrap();
        let reason = "Failed to acquire SASL OAUTHBEARER token: {\"error\":\"invalid_client\"}";
        assert_eq!(classify(Code::Authentication, reason), Cause::TokenEndpoint);
        assert_eq!(
            explain(Cause::TokenEndpoint, &s, None, reason),
            format!(
                "could not get an OAuth token from the token endpoint https://idp.example/token: check \
                 authentication.oauthbearer.token_endpoint_url, authentication.oauthbearer.client_id and \
                 authentication.oauthbearer.client_secret (librdkafka: {reason})"
            )
        );
        let untrusted = "Failed to acquire SASL OAUTHBEARER token: native-tls: error:0A000086:SSL routines:\
                         tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:\
                         2124: (unable to get local issuer certificate)";
        let m = explain(classify(Code::Authentication, untrusted), &s, None, untrusted);
        assert!(m.contains("client_secret; its TLS certificate must verify against the system's CA store"), "{m}");
        let refused = "Unsupported SASL mechanism: broker's supported mechanisms: SCRAM-SHA-256,SCRAM-SHA-512";
        let m = explain(classify(Code::Authentication, refused), &s, None, refused);
        assert!(m.starts_with("SASL OAUTHBEARER authentication failed: check that the broker offers"), "{m}");
        assert!(m.contains("authentication.oauthbearer.scopes"), "{m}");
    }

    /// The authorization errors cannot be produced live (tansu 0.6.0 has no ACLs), so their mapping from
    /// librdkafka's codes and the advice are checked here.
    #[test]
    fn authorization_failures_name_the_topic_group_and_principal() {
        let s = settings(true, None);
        let reason = "Broker: Topic authorization failed";
        let m = explain(classify(Code::TopicAuthorizationFailed, reason), &s, Some("payments"), reason);
        assert_eq!(
            m,
            "not authorized to read topic 'payments': check topics[2].name, and that the broker's ACLs allow \
             authentication.user (or cluster_api_key) to Describe and Read it (librdkafka: Broker: Topic \
             authorization failed)"
        );
        let reason = "Broker: Group authorization failed";
        let m = explain(classify(Code::GroupAuthorizationFailed, reason), &s, None, reason);
        assert!(m.starts_with("not authorized to use consumer group 'g1': the broker's ACLs must allow"), "{m}");
        assert!(m.contains("consumer_group.consumer_group_id"), "{m}");
        let anonymous = settings(false, None);
        let reason = "Broker: Cluster authorization failed";
        let m = explain(classify(Code::ClusterAuthorizationFailed, reason), &anonymous, None, reason);
        assert!(m.contains("no authentication is configured"), "{m}");
    }

    #[test]
    fn implicit_tls_names_security_ssl() {
        let reason = "127.0.0.1:9092/bootstrap: SSL handshake failed: Disconnected: connecting to a PLAINTEXT \
                      broker listener? (after 1ms in state SSL_HANDSHAKE)";
        let implicit = explain(classify(Code::BrokerTransportFailure, reason), &settings(true, None), None, reason);
        assert!(implicit.contains("TLS is on because SASL is configured and security.ssl is unset"), "{implicit}");
        assert!(implicit.contains("set security.ssl = false"), "{implicit}");
        assert!(implicit.ends_with(&format!("(librdkafka: {reason})")), "{implicit}");
        let explicit_tls = settings(true, Some(true));
        let explicit = explain(classify(Code::BrokerTransportFailure, reason), &explicit_tls, None, reason);
        assert!(!explicit.contains("because SASL"), "{explicit}");
        assert!(explicit.contains("set security.ssl = false"), "{explicit}");
        let verify = "SSL handshake failed: certificate verify failed";
        let m = explain(classify(Code::SSL, verify), &settings(true, None), None, verify);
        assert!(m.contains("security.ca_certificate") && m.contains("security.ssl_verify = false"), "{m}");
        assert!(m.contains("security.ssl is unset"), "{m}");
        let m = explain(classify(Code::SSL, verify), &settings(false, Some(true)), None, verify);
        assert!(!m.contains("security.ssl is unset"), "{m}");
        let required = "SSL handshake failed: tlsv13 alert certificate required";
        let m = explain(classify(Code::SSL, required), &settings(false, Some(true)), None, required);
        assert!(m.contains("and security.client_certificate and security.client_key if the broker"), "{m}");
        let mut by_id = settings(false, Some(true));
        by_id.security.certificate_id = Some("5f4034c2-0000-4000-8000-000000000000".into());
        let m = explain(classify(Code::SSL, required), &by_id, None, required);
        assert!(m.contains("and the certificate security.certificate_id names (its cert and key) if"), "{m}");
    }

    #[test]
    fn resolve_names_the_server() {
        let reason = "kafka-2.example:9093/bootstrap: Failed to resolve 'kafka-2.example:9093': Name or service \
                      not known (after 2ms in state CONNECT)";
        let m = explain(classify(Code::Resolve, reason), &settings(false, None), None, reason);
        assert!(m.starts_with("a broker's host name does not resolve: check bootstrap_servers[2].host \
                               ('kafka-2.example') (librdkafka: "), "{m}");
        let advertised = "other:1/1: Failed to resolve 'other:1': Name or service not known";
        let m = explain(Cause::Resolve, &settings(false, None), None, advertised);
        assert!(m.contains("the names the brokers advertise"), "{m}");
    }

    #[test]
    fn topics_are_named_by_their_field() {
        let reason = "Broker: Unknown topic or partition";
        let m = explain(Cause::TopicNotFound, &settings(false, None), Some("payments"), reason);
        assert_eq!(
            m,
            "topic 'payments' does not exist: check topics[2].name (the plugin does not create topics) \
             (librdkafka: Broker: Unknown topic or partition)"
        );
        assert_eq!(explain(Cause::Other, &settings(false, None), None, "as is"), "as is");
    }

    #[test]
    fn failures_found_by_the_probe_carry_their_own_detail() {
        let detail = "no answer to the TLS handshake; a plaintext Kafka request to kafka-1.example:9092 was answered";
        let m = explain_found(Cause::TlsToPlaintext, &settings(true, None), detail);
        assert_eq!(
            m,
            format!(
                "the TLS handshake with kafka-1.example:9092,kafka-2.example:9093 failed: the port does not speak \
                 TLS; TLS is on because SASL is configured and security.ssl is unset (Confluent Cloud needs TLS): \
                 set security.ssl = false for a broker without TLS ({detail})"
            )
        );
        let m = explain_found(Cause::NotKafka, &settings(false, None), "no answer within 1 s");
        let start = "the broker at kafka-1.example:9092,kafka-2.example:9093 accepts connections but";
        assert!(m.starts_with(start), "{m}");
        assert!(m.ends_with("names a Kafka listener (no answer within 1 s)"), "{m}");
    }
}
