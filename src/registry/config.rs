//! Kong's `schema_registry.confluent` record read into typed settings: the registry a topic's records are
//! decoded through (a topic's own record wins over the global one), and how to authenticate to it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::Error;
use crate::schema::bad;

/// A registry as one topic uses it. Equal settings share a client and a schema cache ([`super::client`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Registry {
    /// The base URL, without a trailing `/`.
    pub url: String,
    pub ssl_verify: bool,
    /// How long a fetched schema is used; `None` (ttl unset): for the life of the worker, since the
    /// schema of an id never changes in a registry.
    pub ttl: Option<Duration>,
    pub auth: Auth,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url)
            .field("ssl_verify", &self.ssl_verify)
            .field("ttl", &self.ttl)
            .field("auth", &self.auth)
            .finish()
    }
}

/// `authentication.mode` with its credentials.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Auth {
    None,
    Basic { username: String, password: String },
    OAuth2(OAuth2),
}

impl fmt::Debug for Auth {
    // Credentials never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { .. } => f.write_str("Basic([REDACTED])"),
            Auth::OAuth2(o) => write!(f, "OAuth2({})", o.token_endpoint),
        }
    }
}

/// The grant of an `oauth2` token request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    ClientCredentials,
    Password,
}

/// `oauth2_client.auth_method`: how the client authenticates to the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretPost,
    ClientSecretBasic,
    ClientSecretJwt,
    None,
}

/// `oauth2_client.client_secret_jwt_alg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum JwtAlg {
    HS256,
    HS512,
}

/// `authentication.oauth2` and `authentication.oauth2_client` together: one token request.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OAuth2 {
    pub token_endpoint: String,
    pub grant_type: GrantType,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub scopes: Vec<String>,
    pub audience: Vec<String>,
    pub token_headers: BTreeMap<String, String>,
    pub token_post_args: BTreeMap<String, String>,
    pub auth_method: AuthMethod,
    pub jwt_alg: JwtAlg,
    /// The proxy of an http endpoint and of an https one, each with its Proxy-Authorization.
    pub http_proxy: Option<(String, Option<String>)>,
    pub https_proxy: Option<(String, Option<String>)>,
    /// Hosts reached without a proxy (`no_proxy`, comma-separated).
    pub no_proxy: Vec<String>,
    pub ssl_verify: bool,
    /// Keep the connection to the token endpoint open for the next token request.
    pub keep_alive: bool,
    pub timeout: Duration,
}

#[derive(Deserialize)]
struct RegistryConf {
    #[serde(default)]
    confluent: Option<ConfluentConf>,
}

#[derive(Deserialize)]
struct ConfluentConf {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    ssl_verify: Option<bool>,
    #[serde(default)]
    ttl: Option<f64>,
    #[serde(default)]
    authentication: Option<AuthConf>,
}

#[derive(Deserialize)]
struct AuthConf {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    basic: Option<BasicConf>,
    #[serde(default)]
    oauth2: Option<OAuth2Conf>,
    #[serde(default)]
    oauth2_client: Option<OAuth2ClientConf>,
}

#[derive(Deserialize)]
struct BasicConf {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct OAuth2Conf {
    token_endpoint: String,
    #[serde(default)]
    grant_type: Option<GrantType>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// An empty Lua table comes over as `{}`: a list or an empty object.
    #[serde(default)]
    scopes: Option<Value>,
    #[serde(default)]
    audience: Option<Value>,
    #[serde(default)]
    token_headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    token_post_args: Option<BTreeMap<String, String>>,
}

#[derive(Default, Deserialize)]
struct OAuth2ClientConf {
    #[serde(default)]
    auth_method: Option<AuthMethod>,
    #[serde(default)]
    client_secret_jwt_alg: Option<JwtAlg>,
    #[serde(default)]
    http_proxy: Option<String>,
    #[serde(default)]
    http_proxy_authorization: Option<String>,
    #[serde(default)]
    https_proxy: Option<String>,
    #[serde(default)]
    https_proxy_authorization: Option<String>,
    #[serde(default)]
    no_proxy: Option<String>,
    #[serde(default)]
    ssl_verify: Option<bool>,
    #[serde(default)]
    keep_alive: Option<bool>,
    #[serde(default)]
    timeout: Option<u64>,
}

/// Kong's default `oauth2_client.timeout` (ms).
const DEFAULT_TOKEN_TIMEOUT_MS: u64 = 10_000;

/// The registry of the `schema_registry` record `value` at `field`: `None` without a `confluent.url`
/// (no registry: records render as without one).
///
/// # Errors
/// [`Error::Config`] naming the field for what schema.lua's entity check refuses: a mode without its
/// credentials, a password grant without username and password.
pub fn registry(value: Option<&Value>, field: &str) -> Result<Option<Registry>, Error> {
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(None) };
    let conf = RegistryConf::deserialize(value).map_err(|e| Error::Config(format!("{field}: {e}")))?;
    let Some(confluent) = conf.confluent else { return Ok(None) };
    let Some(url) = confluent.url else { return Ok(None) };
    let auth_conf = confluent.authentication;
    let mode = auth_conf.as_ref().and_then(|a| a.mode.clone()).unwrap_or_else(|| "none".into());
    let auth = match (mode.as_str(), auth_conf) {
        ("basic", Some(AuthConf { basic: Some(basic), .. })) => {
            Auth::Basic { username: basic.username, password: basic.password }
        }
        ("basic", _) => return bad(field, "basic authentication details required when mode is 'basic'"),
        ("oauth2", Some(AuthConf { oauth2: Some(oauth2), oauth2_client, .. })) => {
            Auth::OAuth2(oauth(oauth2, oauth2_client.unwrap_or_default(), field)?)
        }
        ("oauth2", _) => return bad(field, "oauth2 authentication details required when mode is 'oauth2'"),
        _ => Auth::None,
    };
    Ok(Some(Registry {
        url: url.trim_end_matches('/').to_owned(),
        ssl_verify: confluent.ssl_verify.unwrap_or(true),
        ttl: confluent.ttl.map(Duration::from_secs_f64),
        auth,
    }))
}

fn strings(value: Option<Value>, field: &str, default: &[&str]) -> Result<Vec<String>, Error> {
    match value {
        None | Some(Value::Null) => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
        Some(Value::Object(o)) if o.is_empty() => Ok(Vec::new()),
        Some(list) => Vec::<String>::deserialize(list).map_err(|e| Error::Config(format!("{field}: {e}"))),
    }
}

fn oauth(conf: OAuth2Conf, client: OAuth2ClientConf, field: &str) -> Result<OAuth2, Error> {
    let grant_type = conf.grant_type.unwrap_or(GrantType::ClientCredentials);
    if grant_type == GrantType::Password && (conf.username.is_none() || conf.password.is_none()) {
        let at = format!("{field}.confluent.authentication.oauth2");
        return bad(&at, "the password grant needs username and password");
    }
    let at = |name: &str| format!("{field}.confluent.authentication.oauth2.{name}");
    Ok(OAuth2 {
        token_endpoint: conf.token_endpoint,
        grant_type,
        client_id: conf.client_id,
        client_secret: conf.client_secret,
        username: conf.username,
        password: conf.password,
        scopes: strings(conf.scopes, &at("scopes"), &["openid"])?,
        audience: strings(conf.audience, &at("audience"), &[])?,
        token_headers: conf.token_headers.unwrap_or_default(),
        token_post_args: conf.token_post_args.unwrap_or_default(),
        auth_method: client.auth_method.unwrap_or(AuthMethod::ClientSecretPost),
        jwt_alg: client.client_secret_jwt_alg.unwrap_or(JwtAlg::HS512),
        http_proxy: client.http_proxy.map(|p| (p, client.http_proxy_authorization)),
        https_proxy: client.https_proxy.map(|p| (p, client.https_proxy_authorization)),
        no_proxy: client
            .no_proxy
            .iter()
            .flat_map(|list| list.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect(),
        ssl_verify: client.ssl_verify.unwrap_or(true),
        keep_alive: client.keep_alive.unwrap_or(true),
        timeout: Duration::from_millis(client.timeout.unwrap_or(DEFAULT_TOKEN_TIMEOUT_MS)),
    })
}

impl Registry {
    /// The credentials of this registry, which no log line or error may show.
    pub fn secrets(&self) -> Vec<String> {
        match &self.auth {
            Auth::None => Vec::new(),
            Auth::Basic { username, password } => vec![username.clone(), password.clone()],
            Auth::OAuth2(o) => [&o.client_id, &o.client_secret, &o.username, &o.password]
                .into_iter()
                .flatten()
                .cloned()
                .chain(o.http_proxy.iter().chain(&o.https_proxy).filter_map(|(_, auth)| auth.clone()))
                .collect(),
        }
    }
}
