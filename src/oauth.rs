//! SASL/OAUTHBEARER tokens: the client credentials grant against Kong's `token_endpoint_url`, done here
//! (with ureq over the system's OpenSSL) rather than by librdkafka's OIDC login, which needs libcurl and
//! cannot skip verifying the endpoint's certificate. The consumer thread fetches a token and hands it to
//! its librdkafka client ([`Refresh`]); nginx's event loop never waits on a token.

use std::ffi::{c_char, CString};
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rdkafka::client::{Client, ClientContext};
use serde::Deserialize;

use crate::http;
use crate::settings::{Authentication, OAuthBearer};

/// Bound of one token request, from connecting to the last byte of the answer. The request runs on the
/// consumer thread, which meanwhile reads no records and does not notice a close; an identity provider
/// answers in well under a second, so this is a hung or firewalled endpoint, reported as such.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed request, the next one: librdkafka's own pace for a failed token refresh.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// A token is renewed once this share of its lifetime has passed, as librdkafka renews its own.
const RENEW_AT_SHARE_OF_LIFETIME: f64 = 0.8;

/// A token from a token endpoint.
pub struct Token {
    pub value: String,
    /// The Kafka principal: the JWT's `sub`, else the client id.
    pub principal: String,
    /// When the token expires, in ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// How long it lives from now.
    pub lifetime: Duration,
}

impl fmt::Debug for Token {
    // A bearer token is a credential: it never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[REDACTED]")
            .field("principal", &self.principal)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// The fields of a token endpoint's answer that matter here (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<f64>,
}

/// The claims of a JWT access token that matter here.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<f64>,
}

/// Asks the token endpoint for a token with the client credentials grant, as librdkafka's OIDC login
/// did: a form POST of `grant_type` and the space-joined `scope`, the client id and secret as HTTP Basic.
///
/// # Errors
/// As [`request_token`].
fn fetch(oauth: &OAuthBearer) -> Result<Token, String> {
    let credentials = STANDARD.encode(format!("{}:{}", oauth.client_id, oauth.client_secret));
    let scope = oauth.scopes.join(" ");
    let mut form = vec![("grant_type".to_owned(), "client_credentials".to_owned())];
    if !scope.is_empty() {
        form.push(("scope".to_owned(), scope));
    }
    let agent = http::agent(http::AgentOptions {
        tls_verify: oauth.token_endpoint_tls_verify,
        timeout: REQUEST_TIMEOUT,
        proxy: None,
        keep_alive: true,
    });
    let request = TokenRequest {
        endpoint: &oauth.token_endpoint_url,
        form,
        headers: vec![("Authorization".to_owned(), format!("Basic {credentials}"))],
        timeout: REQUEST_TIMEOUT,
    };
    request_token(&agent, &request, &oauth.client_id)
}

/// A token request: a form POST to an OAuth 2.0 token endpoint.
pub struct TokenRequest<'a> {
    pub endpoint: &'a str,
    pub form: Vec<(String, String)>,
    /// Extra headers (the client's HTTP Basic credentials, the configuration's token headers).
    pub headers: Vec<(String, String)>,
    /// The agent's bound, for the message of a request that took too long.
    pub timeout: Duration,
}

/// Posts `request` with `agent` and reads the token from the answer; `client_id` is the principal of an
/// opaque token.
///
/// # Errors
/// Why no token came, for an error message: the transport's failure (connection, TLS, timeout), or the
/// endpoint's status and the start of its answer, or an answer without a usable token. No credential of
/// the request is part of it.
pub fn request_token(agent: &ureq::Agent, request: &TokenRequest<'_>, client_id: &str) -> Result<Token, String> {
    let mut post = agent.post(request.endpoint).header("Accept", "application/json");
    for (name, value) in &request.headers {
        post = post.header(name, value);
    }
    let form = request.form.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let mut response = post.send_form(form).map_err(|e| http::transport_failure(e, request.timeout))?;
    let status = response.status();
    let body = response.body_mut().read_to_string().map_err(|e| http::transport_failure(e, request.timeout))?;
    if !status.is_success() {
        return Err(format!("the token endpoint answered {status}: {}", http::quoted(&body)));
    }
    token_from_answer(&body, client_id, SystemTime::now())
}

/// The token of a successful answer `body` received at `now`.
fn token_from_answer(body: &str, client_id: &str, now: SystemTime) -> Result<Token, String> {
    let answer: TokenResponse =
        serde_json::from_str(body).map_err(|e| format!("the token endpoint's answer is not a token: {e}"))?;
    // A JWT's payload names the principal and may carry the expiry; an opaque token has neither.
    let claims = answer
        .access_token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok())
        .and_then(|json| serde_json::from_slice::<Claims>(&json).ok());
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let lifetime_s = match (answer.expires_in, claims.as_ref().and_then(|c| c.exp)) {
        (Some(expires_in), _) => expires_in,
        (None, Some(exp)) => exp - now_s,
        (None, None) => return Err("the token endpoint's answer has no expires_in and the token no exp".into()),
    };
    if !lifetime_s.is_finite() || lifetime_s <= 0.0 {
        return Err(format!("the token endpoint's token has expired already (lifetime {lifetime_s} s)"));
    }
    let principal = claims.and_then(|c| c.sub).filter(|s| !s.is_empty()).unwrap_or_else(|| client_id.to_owned());
    Ok(Token {
        value: answer.access_token,
        principal,
        expires_at_ms: ((now_s + lifetime_s) * 1000.0) as i64,
        lifetime: Duration::from_secs_f64(lifetime_s),
    })
}

/// When a client's token is fetched next: at once, then at 80 % of each token's lifetime, and 10 s after
/// a failure. Driven by the consumer thread, which owns the client.
pub struct Refresh {
    oauth: OAuthBearer,
    due: Instant,
}

impl Refresh {
    /// The token refresh of a client authenticating with `authentication`: none unless OAUTHBEARER.
    pub fn of(authentication: Option<&Authentication>) -> Option<Refresh> {
        match authentication {
            Some(Authentication::OAuthBearer(oauth)) => Some(Refresh { oauth: oauth.clone(), due: Instant::now() }),
            _ => None,
        }
    }

    /// Fetches a token when one is due and sets it, with the configured SASL extensions, on `client`; a
    /// failure is set as the client's token failure, which librdkafka reports as an error event
    /// ("Failed to acquire SASL OAUTHBEARER token: ...").
    ///
    /// rust-rdkafka's own hook (`ClientContext::generate_oauth_token`) hands librdkafka no extensions,
    /// which Confluent Cloud needs (`logicalCluster`, `identityPoolId`), hence the C API here.
    ///
    /// # Panics
    /// Never: the texts handed to librdkafka are cleaned of NUL bytes first.
    pub fn run_if_due<C: ClientContext>(&mut self, client: &Client<C>) {
        if Instant::now() < self.due {
            return;
        }
        let client = client.native_ptr();
        let oauth = &self.oauth;
        let failure = match fetch(oauth) {
            Ok(token) => match set_token(client, &token, oauth) {
                Ok(()) => {
                    self.due = Instant::now() + token.lifetime.mul_f64(RENEW_AT_SHARE_OF_LIFETIME);
                    return;
                }
                Err(why) => why,
            },
            Err(why) => why,
        };
        self.due = Instant::now() + RETRY_AFTER_FAILURE;
        let why = c_string(&failure);
        // SAFETY: `client` comes from a borrowed, so live, `Client`, and `why` outlives the call, which
        // copies it.
        unsafe { rdkafka::bindings::rd_kafka_oauthbearer_set_token_failure(client, why.as_ptr()) };
    }
}

/// Sets `token` on `client`, the pointer of a live client.
fn set_token(client: *mut rdkafka::bindings::rd_kafka_t, token: &Token, oauth: &OAuthBearer) -> Result<(), String> {
    let value = c_string(&token.value);
    let principal = c_string(&token.principal);
    // key, value, key, value, ...: librdkafka's layout of the extensions
    let extensions: Vec<CString> = oauth.extensions.iter().flat_map(|(k, v)| [c_string(k), c_string(v)]).collect();
    let pointers: Vec<*const c_char> = extensions.iter().map(|s| s.as_ptr()).collect();
    let mut why = [0 as c_char; 512];
    // SAFETY: `client` is live (the caller borrows its `Client`); every pointer is to a
    // NUL-terminated string alive until the call returns (librdkafka copies them), `pointers` holds
    // `pointers.len()` of them, and `why` is writable for its length.
    let code = unsafe {
        rdkafka::bindings::rd_kafka_oauthbearer_set_token(
            client,
            value.as_ptr(),
            token.expires_at_ms,
            principal.as_ptr(),
            pointers.as_ptr().cast_mut(),
            pointers.len(),
            why.as_mut_ptr(),
            why.len(),
        )
    };
    if code == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Ok(());
    }
    // SAFETY: librdkafka wrote a NUL-terminated message into `why`, whose last byte stays 0 (snprintf).
    let why = unsafe { std::ffi::CStr::from_ptr(why.as_ptr()) };
    Err(format!("librdkafka refused the token: {}", why.to_string_lossy()))
}

/// `text` for C, with any NUL byte (which no token, principal or extension has) dropped.
fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(claims))
    }

    #[test]
    fn a_jwts_subject_is_the_principal_and_expires_in_its_lifetime() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let body = format!(r#"{{"access_token":"{}","token_type":"Bearer","expires_in":3600}}"#,
                           jwt(r#"{"sub":"svc-orders","exp":1009999}"#));
        let token = token_from_answer(&body, "client", now).unwrap();
        assert_eq!((token.principal.as_str(), token.expires_at_ms), ("svc-orders", 1_003_600_000));
        assert_eq!(token.lifetime, Duration::from_secs(3600));
        // without expires_in, the JWT's exp; an opaque token is the client id's
        let body = format!(r#"{{"access_token":"{}"}}"#, jwt(r#"{"sub":"s","exp":1000060}"#));
        assert_eq!(token_from_answer(&body, "client", now).unwrap().lifetime, Duration::from_secs(60));
        let opaque = token_from_answer(r#"{"access_token":"opaque-1","expires_in":60}"#, "client", now).unwrap();
        assert_eq!(opaque.principal, "client");
        assert!(!format!("{opaque:?}").contains("opaque-1"));
    }

    #[test]
    fn answers_without_a_usable_token_are_refused_with_the_reason() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for (body, why) in [
            (r#"{"token_type":"Bearer"}"#.to_owned(), "not a token: missing field `access_token`"),
            (r#"{"access_token":"opaque"}"#.to_owned(), "has no expires_in and the token no exp"),
            (r#"{"access_token":"opaque","expires_in":0}"#.to_owned(), "has expired already"),
            (format!(r#"{{"access_token":"{}"}}"#, jwt(r#"{"exp":999999}"#)), "has expired already"),
        ] {
            let err = token_from_answer(&body, "client", now).unwrap_err();
            assert!(err.contains(why), "{body}: {err}");
        }
    }
}
