//! The HTTP client of the consumer thread's side requests (OAuth 2.0 token endpoints, the schema
//! registry): ureq over the system's OpenSSL. These requests run on the consumer or registry threads,
//! never on nginx's event loop.

use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Proxy};

/// How an agent connects.
pub struct AgentOptions {
    /// Verify an https server's certificate (against the system's CA store); false skips it entirely.
    pub tls_verify: bool,
    /// Bound of one request, from connecting to the last byte of the answer.
    pub timeout: Duration,
    pub proxy: Option<Proxy>,
    /// Keep connections open for the next request.
    pub keep_alive: bool,
}

/// An agent for `options`. It follows no redirect (credentials go to the configured server only) and
/// hands an error status back as an answer, so that its body can be reported.
pub fn agent(options: AgentOptions) -> Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::NativeTls)
        // native-tls on Linux is OpenSSL with its default verify paths: the system's CA store, or the
        // CAs SSL_CERT_FILE / SSL_CERT_DIR name
        .root_certs(RootCerts::PlatformVerifier)
        .disable_verification(!options.tls_verify)
        .build();
    Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(options.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(options.proxy)
        .max_idle_connections(if options.keep_alive { 10 } else { 0 })
        .build()
        .new_agent()
}

/// Why a request failed in transport, for a message; ureq's "timeout: global" says less than this.
pub fn transport_failure(error: ureq::Error, timeout: Duration) -> String {
    match error {
        ureq::Error::Timeout(_) => format!("no answer within {} s", timeout.as_secs_f64()),
        other => other.to_string(),
    }
}

/// How much of a server's error answer a message quotes.
pub const QUOTED_ANSWER_CHARS: usize = 200;

/// The start of an answer, for a message.
pub fn quoted(body: &str) -> String {
    body.chars().take(QUOTED_ANSWER_CHARS).collect::<String>().replace(['\n', '\r'], " ")
}
