//! The registry's REST API as the plugin calls it: `GET /schemas/ids/{id}` for a record's schema, and
//! `GET /subjects/{subject}/versions/{version}` for each schema it references (recursively), with HTTP
//! Basic or an OAuth 2.0 bearer token. Runs on a handle's registry thread ([`super::fetcher`]), never on
//! nginx's event loop. Messages name the registry by its URL and never show a credential.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use ureq::{Agent, Proxy};

use super::config::{Auth, AuthMethod, GrantType, JwtAlg, OAuth2, Registry};
use super::{Reference, Schema, SchemaType};
use crate::http::{self, AgentOptions};
use crate::oauth::{self, TokenRequest};

/// Bound of one request to the registry (Kong's registry record has no timeout of its own); a record
/// that needs a schema waits at most this long per request before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Deepest chain of references followed; deeper is refused as a likely cycle through new versions.
const MAX_REFERENCE_DEPTH: usize = 32;
/// A token is used until this long before it expires.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Lifetime of a client_secret_jwt assertion.
const ASSERTION_LIFETIME_S: u64 = 60;

/// Why a schema could not be had, and what that means for the records that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub cause: String,
    pub kind: FailureKind,
}

/// How a failed fetch is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The registry cannot serve this schema (an unknown id, a missing reference, a schema that does not
    /// compile): its records fail.
    Record,
    /// The registry does not answer now (refused, timed out, 5xx): records that need it fail after the
    /// wait, and it is asked again later.
    Unavailable,
    /// The configuration cannot work (a host that does not resolve, TLS refused, credentials refused, no
    /// registry at the URL): records wait for a fixed configuration, and requests are answered 503
    /// naming the registry.
    Configuration,
}

impl FetchError {
    fn new(kind: FailureKind, cause: String) -> Self {
        FetchError { cause, kind }
    }
}

/// A client of one registry, used by one thread.
pub struct Client {
    registry: Registry,
    agent: Agent,
    tokens: Option<Tokens>,
}

/// The OAuth 2.0 tokens of a client: requested when none is valid, cached until shortly before expiry.
struct Tokens {
    oauth: OAuth2,
    agent: Result<Agent, String>,
    cached: Option<(String, Instant)>,
}

/// `GET /schemas/ids/{id}` and `GET /subjects/{s}/versions/{v}` answers (Confluent's API reference).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaAnswer {
    #[serde(default)]
    schema_type: Option<String>,
    schema: String,
    #[serde(default)]
    references: Vec<ReferenceAnswer>,
}

#[derive(Deserialize)]
struct ReferenceAnswer {
    name: String,
    subject: String,
    version: i64,
}

/// Confluent's error body.
#[derive(Deserialize)]
struct ErrorAnswer {
    error_code: i64,
    message: String,
}

impl Client {
    pub fn new(registry: &Registry) -> Client {
        let agent = http::agent(AgentOptions {
            tls_verify: registry.ssl_verify,
            timeout: REQUEST_TIMEOUT,
            proxy: None,
            keep_alive: true,
        });
        let tokens = match &registry.auth {
            Auth::OAuth2(oauth) => Some(Tokens { agent: token_agent(oauth), oauth: oauth.clone(), cached: None }),
            Auth::None | Auth::Basic { .. } => None,
        };
        Client { registry: registry.clone(), agent, tokens }
    }

    /// The registry's URL without credentials, to name it in messages.
    pub fn name(&self) -> String {
        display_url(&self.registry.url)
    }

    /// The schema of `id` with its references resolved.
    ///
    /// # Errors
    /// A short cause naming the registry: no answer, an error answer (Confluent's message and code), an
    /// answer that is not a schema, a reference cycle, no token.
    pub fn schema(&mut self, id: u32) -> Result<Schema, FetchError> {
        let answer: SchemaAnswer = self.get(&format!("/schemas/ids/{id}"))?;
        let mut chain = Vec::new();
        self.resolve(answer, &mut chain)
    }

    fn resolve(&mut self, answer: SchemaAnswer, chain: &mut Vec<(String, i64)>) -> Result<Schema, FetchError> {
        let schema_type = SchemaType::from_registry(answer.schema_type.as_deref())
            .map_err(|e| FetchError::new(FailureKind::Record, format!("the schema registry at {}: {e}", self.name())))?;
        let mut references = Vec::with_capacity(answer.references.len());
        for reference in answer.references {
            let key = (reference.subject.clone(), reference.version);
            if chain.contains(&key) || chain.len() >= MAX_REFERENCE_DEPTH {
                let why = format!(
                    "the schema registry at {}: the references of subject '{}' version {} form a cycle",
                    self.name(),
                    reference.subject,
                    reference.version
                );
                return Err(FetchError::new(FailureKind::Record, why));
            }
            let subject = utf8_percent_encode(&reference.subject, NON_ALPHANUMERIC);
            let referenced: SchemaAnswer = self.get(&format!("/subjects/{subject}/versions/{}", reference.version))?;
            chain.push(key);
            let schema = self.resolve(referenced, chain)?;
            chain.pop();
            references.push(Reference { name: reference.name, schema });
        }
        Ok(Schema { schema_type, text: answer.schema, references })
    }

    /// GETs `path` and reads the answer; with OAuth 2.0 a 401 drops the token and tries once more with a
    /// new one.
    fn get<T: for<'de> Deserialize<'de>>(&mut self, path: &str) -> Result<T, FetchError> {
        let url = format!("{}{path}", self.registry.url);
        let name = self.name();
        let transport = |e: ureq::Error| {
            use std::io::ErrorKind as Io;
            let kind = match &e {
                // a server that is down or overloaded
                ureq::Error::Io(io)
                    if matches!(
                        io.kind(),
                        Io::ConnectionRefused
                            | Io::ConnectionReset
                            | Io::ConnectionAborted
                            | Io::TimedOut
                            | Io::BrokenPipe
                            | Io::UnexpectedEof
                            | Io::NotConnected
                    ) =>
                {
                    FailureKind::Unavailable
                }
                ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_) => {
                    FailureKind::Unavailable
                }
                // a host that does not resolve, TLS refused, a URL that is none
                _ => FailureKind::Configuration,
            };
            FetchError::new(kind, format!("the schema registry at {name}: {}", http::transport_failure(e, REQUEST_TIMEOUT)))
        };
        for attempt in 0..2 {
            let mut request = self
                .agent
                .get(&url)
                .header("Accept", "application/vnd.schemaregistry.v1+json, application/json");
            match &self.registry.auth {
                Auth::None => {}
                Auth::Basic { username, password } => {
                    let credentials = STANDARD.encode(format!("{username}:{password}"));
                    request = request.header("Authorization", &format!("Basic {credentials}"));
                }
                Auth::OAuth2(_) => {
                    let token = self.token().map_err(|why| FetchError::new(FailureKind::Configuration, why))?;
                    request = request.header("Authorization", &format!("Bearer {token}"));
                }
            }
            let mut response = request.call().map_err(transport)?;
            let status = response.status().as_u16();
            let body = response.body_mut().read_to_string().map_err(transport)?;
            if status == 401 && attempt == 0 {
                if let Some(tokens) = self.tokens.as_mut() {
                    tokens.cached = None;
                    continue;
                }
            }
            if !(200..300).contains(&status) {
                let confluent = serde_json::from_str::<ErrorAnswer>(&body).ok();
                let kind = match (status, &confluent) {
                    // Confluent's "schema / subject / version not found"
                    (404, Some(e)) if (40401..=40403).contains(&e.error_code) => FailureKind::Record,
                    (500.., _) => FailureKind::Unavailable,
                    _ => FailureKind::Configuration,
                };
                let why = match (confluent, status) {
                    (Some(e), _) => format!("{} (error code {})", http::quoted(&e.message), e.error_code),
                    (None, 404) => "not found, and no Confluent error: is the URL a schema registry's?".to_owned(),
                    (None, _) => http::quoted(&body),
                };
                return Err(FetchError::new(kind, format!("the schema registry at {name} answered {status}: {why}")));
            }
            return serde_json::from_str(&body).map_err(|e| {
                let why = format!("the schema registry at {name} answered with no schema: {}", http::quoted(&e.to_string()));
                FetchError::new(FailureKind::Configuration, why)
            });
        }
        Err(FetchError::new(FailureKind::Configuration, format!("the schema registry at {name} refused a fresh token (401)")))
    }

    /// A valid token: the cached one, else a new one from the token endpoint.
    fn token(&mut self) -> Result<String, String> {
        let name = self.name();
        let Some(tokens) = self.tokens.as_mut() else { return Err("no token source".into()) };
        if let Some((token, until)) = &tokens.cached {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let agent = tokens.agent.as_ref().map_err(|e| format!("the schema registry at {name}: {e}"))?;
        let request = token_request(&tokens.oauth)?;
        let client_id = tokens.oauth.client_id.clone().unwrap_or_default();
        let token = oauth::request_token(agent, &request, &client_id)
            .map_err(|e| format!("no token for the schema registry at {name}: {e}"))?;
        let usable = token.lifetime.saturating_sub(TOKEN_EXPIRY_MARGIN.min(token.lifetime / 2));
        tokens.cached = Some((token.value.clone(), Instant::now() + usable));
        Ok(token.value)
    }
}

/// The agent of `oauth`'s token endpoint, through the proxy its `oauth2_client` names for the endpoint's
/// scheme unless `no_proxy` lists the endpoint's host.
fn token_agent(oauth: &OAuth2) -> Result<Agent, String> {
    let https = oauth.token_endpoint.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let proxy = if https { &oauth.https_proxy } else { &oauth.http_proxy };
    let host = oauth
        .token_endpoint
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .map(|authority| authority.rsplit('@').next().unwrap_or(authority))
        .map(|hostport| hostport.trim_start_matches('[').split([']']).next().unwrap_or(hostport))
        .map(|h| h.rsplit_once(':').filter(|_| !h.contains('[')).map_or(h, |(h, _)| h).to_ascii_lowercase())
        .unwrap_or_default();
    let bypass = oauth.no_proxy.iter().any(|n| n == "*" || host == *n || host.ends_with(&format!(".{}", n.trim_start_matches('.'))));
    let proxy = match proxy {
        Some((url, authorization)) if !bypass => Some(proxy_of(url, authorization.as_deref())?),
        _ => None,
    };
    Ok(http::agent(AgentOptions {
        tls_verify: oauth.ssl_verify,
        timeout: oauth.timeout,
        proxy,
        keep_alive: oauth.keep_alive,
    }))
}

/// The proxy at `url`, with the credentials of a `Basic` Proxy-Authorization value (ureq sends a proxy's
/// credentials itself, for http requests and for the CONNECT of https ones).
fn proxy_of(url: &str, authorization: Option<&str>) -> Result<Proxy, String> {
    let proxy = Proxy::new(url).map_err(|e| format!("the token endpoint's proxy: {e}"))?;
    let Some(authorization) = authorization else { return Ok(proxy) };
    let credentials = authorization
        .strip_prefix("Basic ")
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("the proxy authorization must be `Basic <base64 of user:password>`")?;
    let (user, password) = credentials.split_once(':').unwrap_or((&credentials, ""));
    Proxy::builder(proxy.protocol())
        .host(proxy.host())
        .port(proxy.port())
        .username(user)
        .password(password)
        .build()
        .map_err(|e| format!("the token endpoint's proxy: {e}"))
}

/// The form and headers of `oauth`'s token request.
fn token_request(oauth: &OAuth2) -> Result<TokenRequest<'_>, String> {
    let mut form: Vec<(String, String)> = Vec::new();
    let mut headers: Vec<(String, String)> = oauth.token_headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    match oauth.grant_type {
        GrantType::ClientCredentials => form.push(("grant_type".into(), "client_credentials".into())),
        GrantType::Password => {
            form.push(("grant_type".into(), "password".into()));
            form.push(("username".into(), oauth.username.clone().unwrap_or_default()));
            form.push(("password".into(), oauth.password.clone().unwrap_or_default()));
        }
    }
    if !oauth.scopes.is_empty() {
        form.push(("scope".into(), oauth.scopes.join(" ")));
    }
    for audience in &oauth.audience {
        form.push(("audience".into(), audience.clone()));
    }
    let id = oauth.client_id.clone().unwrap_or_default();
    let secret = oauth.client_secret.clone().unwrap_or_default();
    match oauth.auth_method {
        AuthMethod::ClientSecretPost => {
            form.push(("client_id".into(), id));
            form.push(("client_secret".into(), secret));
        }
        AuthMethod::ClientSecretBasic => {
            // RFC 6749 §2.3.1: each form-encoded, then joined and base64'd
            let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
            let credentials = STANDARD.encode(format!("{}:{}", encode(&id), encode(&secret)));
            headers.push(("Authorization".into(), format!("Basic {credentials}")));
        }
        AuthMethod::ClientSecretJwt => {
            let assertion = client_assertion(&id, &secret, &oauth.token_endpoint, oauth.jwt_alg)?;
            form.push(("client_id".into(), id));
            form.push(("client_assertion_type".into(), "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
            form.push(("client_assertion".into(), assertion));
        }
        AuthMethod::None => form.push(("client_id".into(), id)),
    }
    form.extend(oauth.token_post_args.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(TokenRequest { endpoint: &oauth.token_endpoint, form, headers, timeout: oauth.timeout })
}

/// RFC 7523's client assertion for `client_secret_jwt`: a JWT about the client, for the endpoint,
/// signed with HMAC under the client secret.
fn client_assertion(client_id: &str, secret: &str, endpoint: &str, alg: JwtAlg) -> Result<String, String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut jti = [0u8; 16];
    openssl::rand::rand_bytes(&mut jti).map_err(|e| format!("client assertion: {e}"))?;
    let (name, digest) = match alg {
        JwtAlg::HS256 => ("HS256", openssl::hash::MessageDigest::sha256()),
        JwtAlg::HS512 => ("HS512", openssl::hash::MessageDigest::sha512()),
    };
    let header = URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": name, "typ": "JWT" }).to_string());
    let claims = serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": endpoint, "iat": now, "exp": now + ASSERTION_LIFETIME_S,
        "jti": URL_SAFE_NO_PAD.encode(jti),
    });
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sign = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let key = openssl::pkey::PKey::hmac(secret.as_bytes())?;
        let mut signer = openssl::sign::Signer::new(digest, &key)?;
        signer.update(signing_input.as_bytes())?;
        signer.sign_to_vec()
    };
    let signature = sign().map_err(|e| format!("client assertion: {e}"))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// `url` without the `user:password@` a URL may carry.
pub fn display_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn oauth(method: AuthMethod) -> OAuth2 {
        OAuth2 {
            token_endpoint: "https://idp.example/token".into(),
            grant_type: GrantType::ClientCredentials,
            client_id: Some("client".into()),
            client_secret: Some("s3cret".into()),
            username: None,
            password: None,
            scopes: vec!["openid".into(), "registry".into()],
            audience: vec!["sr".into()],
            token_headers: BTreeMap::from([("X-Tenant".into(), "t1".into())]),
            token_post_args: BTreeMap::from([("resource".into(), "r".into())]),
            auth_method: method,
            jwt_alg: JwtAlg::HS256,
            http_proxy: None,
            https_proxy: None,
            no_proxy: Vec::new(),
            ssl_verify: true,
            keep_alive: true,
            timeout: Duration::from_secs(1),
        }
    }

    fn form(request: &TokenRequest<'_>, key: &str) -> Vec<String> {
        request.form.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }

    #[test]
    fn token_requests_follow_the_auth_method() {
        let o = oauth(AuthMethod::ClientSecretPost);
        let post = token_request(&o).unwrap();
        assert_eq!(form(&post, "client_secret"), ["s3cret"]);
        assert_eq!(form(&post, "scope"), ["openid registry"]);
        assert_eq!(form(&post, "audience"), ["sr"]);
        assert_eq!(form(&post, "resource"), ["r"]);
        assert_eq!(post.headers, [("X-Tenant".to_owned(), "t1".to_owned())]);

        let o = oauth(AuthMethod::ClientSecretBasic);
        let basic = token_request(&o).unwrap();
        assert!(form(&basic, "client_secret").is_empty() && form(&basic, "client_id").is_empty());
        assert!(basic.headers.contains(&("Authorization".into(), format!("Basic {}", STANDARD.encode("client:s3cret")))));

        let o = oauth(AuthMethod::ClientSecretJwt);
        let jwt = token_request(&o).unwrap();
        let assertion = &form(&jwt, "client_assertion")[0];
        let parts: Vec<&str> = assertion.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!((claims["iss"].as_str(), claims["aud"].as_str()), (Some("client"), Some("https://idp.example/token")));
        // the signature is HMAC-SHA256 of the first two parts under the secret
        let key = openssl::pkey::PKey::hmac(b"s3cret").unwrap();
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        signer.update(format!("{}.{}", parts[0], parts[1]).as_bytes()).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(signer.sign_to_vec().unwrap()), parts[2]);
        assert!(!assertion.contains("s3cret"));

        let mut o = oauth(AuthMethod::None);
        o.grant_type = GrantType::Password;
        o.username = Some("owner".into());
        o.password = Some("pw".into());
        let none = token_request(&o).unwrap();
        assert_eq!(form(&none, "grant_type"), ["password"]);
        assert_eq!((form(&none, "username"), form(&none, "password")), (vec!["owner".to_owned()], vec!["pw".to_owned()]));
        assert!(form(&none, "client_secret").is_empty());
    }

    #[test]
    fn a_basic_proxy_authorization_becomes_the_proxys_credentials() {
        let auth = format!("Basic {}", STANDARD.encode("puser:ppass"));
        let proxy = proxy_of("http://127.0.0.1:3128", Some(&auth)).unwrap();
        assert_eq!((proxy.username(), proxy.password()), (Some("puser"), Some("ppass")));
        assert!(proxy_of("http://127.0.0.1:3128", Some("Bearer x")).is_err());
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(display_url("https://key:secret@sr.example:8081/ctx?x=1"), "https://sr.example:8081/ctx?x=1");
        assert_eq!(display_url("http://127.0.0.1:8081"), "http://127.0.0.1:8081");
    }
}
