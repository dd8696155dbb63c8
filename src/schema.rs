//! The plugin configuration's fields as the native side checks them: the same types, required flags and
//! bounds as `schema.lua`, which stays the one source users see. spec/05-settings_spec.lua compares the two
//! field by field and fails on any difference, so this table cannot drift from it unnoticed.
//!
//! [`check`] runs on the conf as Kong hands it over, before it is read into typed settings: a bad value is
//! an error naming the field (never a panic, never the value itself, which may be a secret).

use serde_json::Value;

use crate::error::Error;

/// A field's type, as schema.lua names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Integer,
    /// Kong's `number`: an integer or a fraction.
    Number,
    Boolean,
    Array,
    Record,
    /// Kong's `map`: string keys to values of one type.
    Map,
}

impl Kind {
    /// The schema.lua name of the type.
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Integer => "integer",
            Kind::Number => "number",
            Kind::Boolean => "boolean",
            Kind::Array => "array",
            Kind::Record => "record",
            Kind::Map => "map",
        }
    }

    fn matches(self, value: &Value) -> bool {
        match self {
            Kind::String => value.is_string(),
            Kind::Integer => value.is_i64() || value.is_u64(),
            Kind::Number => value.is_number(),
            Kind::Boolean => value.is_boolean(),
            // Lua has one table type: an empty table comes over as an empty object.
            Kind::Array => value.is_array() || value.as_object().is_some_and(|o| o.is_empty()),
            Kind::Record | Kind::Map => value.is_object(),
        }
    }
}

/// One constraint of a field, named after the schema.lua key it mirrors.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// `between = { lo, hi }`.
    Between(i64, i64),
    /// `between = { lo, hi }` of a `number` field, whose bounds may be fractions.
    BetweenNumbers(f64, f64),
    /// `one_of = { ... }`.
    OneOf(&'static [&'static str]),
    /// `not_one_of = { ... }`.
    NotOneOf(&'static [&'static str]),
    /// `len_min`: bytes of a string, elements of an array.
    LenMin(usize),
    /// `len_max`.
    LenMax(usize),
    /// `match`: the Lua pattern, and the same test written in Rust (spec/05 runs both on the same values).
    Match(&'static str, fn(&str) -> bool),
    /// `typedefs.host`'s `custom_validator`: a host name, an IPv4 or an IPv6 address.
    Host,
    /// `uuid = true` (`typedefs.uuid`): a UUID in its 8-4-4-4-12 hex form.
    Uuid,
    /// `custom_validator = message_functions.validate`: Lua source that returns a function. Only Lua can
    /// compile it; schema.lua's validator does when the plugin is configured (Kong answers 400), and the
    /// native side, which never runs Lua, lets any string pass.
    LuaFunction,
}

/// The two plugin names Kong 3.15 gives its consume plugins; both run on this module. kafka-consume's
/// schema is confluent-consume's without the Confluent Cloud and keepalive fields (Kong refuses them there
/// as unknown fields), see [`Field::confluent_only`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plugin {
    ConfluentConsume,
    KafkaConsume,
}

impl Plugin {
    /// The plugin of a Kong plugin name.
    pub fn from_name(name: &str) -> Option<Plugin> {
        match name {
            "confluent-consume" => Some(Plugin::ConfluentConsume),
            "kafka-consume" => Some(Plugin::KafkaConsume),
            _ => None,
        }
    }

    /// The fields of this plugin's `config`, in schema.lua's order.
    pub fn fields(self) -> impl Iterator<Item = &'static Field> {
        FIELDS.iter().filter(move |f| self == Plugin::ConfluentConsume || !f.confluent_only)
    }
}

/// A field of the plugin's `config`: `a.b` for a record's field, `a[].b` for a field of each element, `a[]`
/// for each element of an array of scalars, `a{}` for each value of a map (its keys are strings, as JSON's
/// are).
#[derive(Debug)]
pub struct Field {
    pub path: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub rules: &'static [Rule],
    /// A field of confluent-consume only (Kong's kafka-consume has no such field).
    pub confluent_only: bool,
}

const fn field(path: &'static str, kind: Kind, required: bool, rules: &'static [Rule]) -> Field {
    Field { path, kind, required, rules, confluent_only: false }
}

const fn confluent_only(path: &'static str, kind: Kind, required: bool, rules: &'static [Rule]) -> Field {
    Field { path, kind, required, rules, confluent_only: true }
}

use Kind::{Array, Boolean, Integer, Map, Number, Record, String as Str};
use Rule::{Between, BetweenNumbers, Host, LenMax, LenMin, LuaFunction, Match, NotOneOf, OneOf, Uuid};

const MIB: i64 = 1024 * 1024;
const PEM: Rule = Match("%-%-%-%-%-BEGIN ", is_pem);
const MODES: &[&str] = &["http-get", "server-sent-events", "websocket"];
const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];
const TOKEN_ENDPOINT_URL: Rule = Match("^[Hh][Tt][Tt][Pp][Ss]?://[^%s]+$", is_http_url);
const HTTP_URL: Rule = TOKEN_ENDPOINT_URL;
const TOPIC_NAME: &[Rule] =
    &[LenMin(1), LenMax(249), Match("^[%w%._%-]+$", is_topic_name), NotOneOf(&[".", ".."])];

/// The fields of schema.lua's `schema_registry_record`, under `$at` (the global record and each topic's).
macro_rules! schema_registry_fields {
    ($at:literal) => {
        [
            field($at, Record, false, &[]),
            field(concat!($at, ".confluent"), Record, false, &[]),
            field(concat!($at, ".confluent.url"), Str, false, &[HTTP_URL]),
            field(concat!($at, ".confluent.ssl_verify"), Boolean, true, &[]),
            field(concat!($at, ".confluent.ttl"), Number, false, &[BetweenNumbers(0.0, 3600.0)]),
            field(concat!($at, ".confluent.authentication"), Record, true, &[]),
            field(concat!($at, ".confluent.authentication.mode"), Str, true, &[OneOf(&["none", "basic", "oauth2"])]),
            field(concat!($at, ".confluent.authentication.basic"), Record, false, &[]),
            field(concat!($at, ".confluent.authentication.basic.username"), Str, true, &[LenMin(1)]),
            field(concat!($at, ".confluent.authentication.basic.password"), Str, true, &[LenMin(1)]),
            field(concat!($at, ".confluent.authentication.oauth2"), Record, false, &[]),
            field(concat!($at, ".confluent.authentication.oauth2.token_endpoint"), Str, true, &[HTTP_URL]),
            field(
                concat!($at, ".confluent.authentication.oauth2.grant_type"),
                Str,
                true,
                &[OneOf(&["client_credentials", "password"])],
            ),
            field(concat!($at, ".confluent.authentication.oauth2.client_id"), Str, false, &[LenMin(1)]),
            field(concat!($at, ".confluent.authentication.oauth2.client_secret"), Str, false, &[LenMin(1)]),
            field(concat!($at, ".confluent.authentication.oauth2.username"), Str, false, &[LenMin(1)]),
            field(concat!($at, ".confluent.authentication.oauth2.password"), Str, false, &[LenMin(1)]),
            field(concat!($at, ".confluent.authentication.oauth2.scopes"), Array, true, &[]),
            field(concat!($at, ".confluent.authentication.oauth2.scopes[]"), Str, false, &[LenMin(1)]),
            field(concat!($at, ".confluent.authentication.oauth2.audience"), Array, true, &[]),
            field(concat!($at, ".confluent.authentication.oauth2.audience[]"), Str, false, &[LenMin(1)]),
            field(concat!($at, ".confluent.authentication.oauth2.token_headers"), Map, false, &[]),
            field(concat!($at, ".confluent.authentication.oauth2.token_headers{}"), Str, false, &[]),
            field(concat!($at, ".confluent.authentication.oauth2.token_post_args"), Map, false, &[]),
            field(concat!($at, ".confluent.authentication.oauth2.token_post_args{}"), Str, false, &[]),
            field(concat!($at, ".confluent.authentication.oauth2_client"), Record, false, &[]),
            field(
                concat!($at, ".confluent.authentication.oauth2_client.auth_method"),
                Str,
                true,
                &[OneOf(&["client_secret_post", "client_secret_basic", "client_secret_jwt", "none"])],
            ),
            field(
                concat!($at, ".confluent.authentication.oauth2_client.client_secret_jwt_alg"),
                Str,
                true,
                &[OneOf(&["HS512", "HS256"])],
            ),
            field(
                concat!($at, ".confluent.authentication.oauth2_client.http_version"),
                Number,
                true,
                &[BetweenNumbers(1.0, 1.1)],
            ),
            field(concat!($at, ".confluent.authentication.oauth2_client.http_proxy"), Str, false, &[HTTP_URL]),
            field(
                concat!($at, ".confluent.authentication.oauth2_client.http_proxy_authorization"),
                Str,
                false,
                &[LenMin(1)],
            ),
            field(concat!($at, ".confluent.authentication.oauth2_client.https_proxy"), Str, false, &[HTTP_URL]),
            field(
                concat!($at, ".confluent.authentication.oauth2_client.https_proxy_authorization"),
                Str,
                false,
                &[LenMin(1)],
            ),
            field(concat!($at, ".confluent.authentication.oauth2_client.no_proxy"), Str, false, &[LenMin(1)]),
            field(concat!($at, ".confluent.authentication.oauth2_client.keep_alive"), Boolean, true, &[]),
            field(concat!($at, ".confluent.authentication.oauth2_client.ssl_verify"), Boolean, true, &[]),
            field(
                concat!($at, ".confluent.authentication.oauth2_client.timeout"),
                Integer,
                true,
                &[Between(0, (1 << 31) - 2)],
            ),
        ]
    };
}

/// Every field of schema.lua's `config`, in its order.
pub const FIELDS: &[Field] = &concat_fields();

const TOPIC_REGISTRY: [Field; 37] = schema_registry_fields!("topics[].schema_registry");
const GLOBAL_REGISTRY: [Field; 37] = schema_registry_fields!("schema_registry");

/// The fields of schema.lua's `config` around the registry records, in its order: up to the topics'
/// registry, then up to the global registry, then the rest.
const BEFORE_TOPIC_REGISTRY: &[Field] = &[
    field("bootstrap_servers", Array, true, &[LenMin(1)]),
    field("bootstrap_servers[].host", Str, true, &[Host]),
    field("bootstrap_servers[].port", Integer, true, &[Between(0, 65535)]),
    field("topics", Array, true, &[LenMin(1)]),
    field("topics[].name", Str, true, TOPIC_NAME),
];
const BEFORE_GLOBAL_REGISTRY: &[Field] = &[
    field("mode", Str, true, &[OneOf(MODES)]),
    field("message_deserializer", Str, true, &[OneOf(&["noop", "json"])]),
    field("auto_offset_reset", Str, true, &[OneOf(&["earliest", "latest"])]),
    field("commit_strategy", Str, true, &[OneOf(&["auto", "off"])]),
    field("timeout", Integer, false, &[Between(0, (1 << 31) - 2)]),
    confluent_only("keepalive", Integer, true, &[Between(0, (1 << 31) - 2)]),
    confluent_only("keepalive_enabled", Boolean, true, &[]),
    field("enforce_latest_offset_reset", Boolean, true, &[]),
    field("cluster_name", Str, false, &[LenMin(1), LenMax(255)]),
    field("consumer_group", Record, true, &[]),
    field("consumer_group.mode", Str, true, &[OneOf(&["random", "manual", "kong_consumer"])]),
    field("consumer_group.consumer_group_id", Str, false, &[LenMin(1), LenMax(255)]),
    field("authentication", Record, false, &[]),
    field("authentication.strategy", Str, false, &[OneOf(&["sasl"])]),
    field("authentication.mechanism", Str, false, &[OneOf(SASL_MECHANISMS)]),
    field("authentication.user", Str, false, &[LenMin(1)]),
    field("authentication.password", Str, false, &[LenMin(1)]),
    field("authentication.tokenauth", Boolean, false, &[]),
    // schema.lua builds both `oauthbearer` records with one function; keep these two blocks alike
    field("authentication.oauthbearer", Record, false, &[]),
    field("authentication.oauthbearer.token_endpoint_url", Str, false, &[TOKEN_ENDPOINT_URL]),
    field("authentication.oauthbearer.client_id", Str, false, &[LenMin(1)]),
    field("authentication.oauthbearer.client_secret", Str, false, &[LenMin(1)]),
    field("authentication.oauthbearer.scopes", Array, false, &[]),
    field("authentication.oauthbearer.scopes[]", Str, false, &[LenMin(1)]),
    field("authentication.oauthbearer.extensions", Map, false, &[]),
    field("authentication.oauthbearer.extensions{}", Str, false, &[]),
    field("authentication.oauthbearer.token_endpoint_tls_verify", Boolean, true, &[]),
    confluent_only("cluster_api_key", Str, false, &[LenMin(1)]),
    confluent_only("cluster_api_secret", Str, false, &[LenMin(1)]),
    confluent_only("confluent_cloud_api_key", Str, false, &[LenMin(1)]),
    confluent_only("confluent_cloud_api_secret", Str, false, &[LenMin(1)]),
    confluent_only("oauthbearer", Record, false, &[]),
    confluent_only("oauthbearer.token_endpoint_url", Str, false, &[TOKEN_ENDPOINT_URL]),
    confluent_only("oauthbearer.client_id", Str, false, &[LenMin(1)]),
    confluent_only("oauthbearer.client_secret", Str, false, &[LenMin(1)]),
    confluent_only("oauthbearer.scopes", Array, false, &[]),
    confluent_only("oauthbearer.scopes[]", Str, false, &[LenMin(1)]),
    confluent_only("oauthbearer.extensions", Map, false, &[]),
    confluent_only("oauthbearer.extensions{}", Str, false, &[]),
    confluent_only("oauthbearer.token_endpoint_tls_verify", Boolean, true, &[]),
    field("security", Record, true, &[]),
    field("security.ssl", Boolean, false, &[]),
    field("security.ssl_verify", Boolean, true, &[]),
    field("security.ca_certificate", Str, false, &[PEM]),
    field("security.client_certificate", Str, false, &[PEM]),
    field("security.client_key", Str, false, &[PEM]),
    field("security.certificate_id", Str, false, &[Uuid]),
    field("error_handling", Record, true, &[]),
    field("error_handling.return_error_message", Boolean, true, &[]),
    field("max_records", Integer, true, &[Between(1, 100_000)]),
    field("max_bytes", Integer, true, &[Between(1, 64 * MIB)]),
    field("max_wait", Integer, true, &[Between(0, 300_000)]),
    field("heartbeat_interval", Integer, true, &[Between(1000, 300_000)]),
    field("retry_interval", Integer, true, &[Between(0, 300_000)]),
    field("max_unacked_records", Integer, true, &[Between(1, 100_000)]),
    field("ack_timeout", Integer, true, &[Between(1000, 3_600_000)]),
    field("max_catchup_streams", Integer, true, &[Between(1, 10_000)]),
    field("fetch_wait_max_ms", Integer, true, &[Between(1, 10_000)]),
    field("buffer_max_bytes", Integer, true, &[Between(65_536, 1024 * MIB)]),
    // Lua source: schema.lua's validator compiles each element, and message_functions.lua again when a
    // configuration is first served; nothing here runs Lua or needs the functions.
    field("message_by_lua_functions", Array, false, &[]),
    field("message_by_lua_functions[]", Str, false, &[LenMin(1), LuaFunction]),
];
const AFTER_GLOBAL_REGISTRY: &[Field] = &[
    field("enable_dlq", Boolean, false, &[]),
    field("dlq_topic", Str, false, TOPIC_NAME),
    field("max_consumer_groups", Integer, true, &[Between(1, 1000)]),
];

const FIELD_COUNT: usize = BEFORE_TOPIC_REGISTRY.len()
    + TOPIC_REGISTRY.len()
    + BEFORE_GLOBAL_REGISTRY.len()
    + GLOBAL_REGISTRY.len()
    + AFTER_GLOBAL_REGISTRY.len();

/// [`FIELDS`], put together at compile time (a const slice cannot be concatenated otherwise).
const fn concat_fields() -> [Field; FIELD_COUNT] {
    const PARTS: [&[Field]; 5] =
        [BEFORE_TOPIC_REGISTRY, &TOPIC_REGISTRY, BEFORE_GLOBAL_REGISTRY, &GLOBAL_REGISTRY, AFTER_GLOBAL_REGISTRY];
    let mut out = [const { field("", Boolean, false, &[]) }; FIELD_COUNT];
    let (mut part, mut at) = (0, 0);
    while part < PARTS.len() {
        let mut i = 0;
        while i < PARTS[part].len() {
            let f = &PARTS[part][i];
            out[at] = Field { path: f.path, kind: f.kind, required: f.required, rules: f.rules, confluent_only: f.confluent_only };
            at += 1;
            i += 1;
        }
        part += 1;
    }
    out
}

/// Checks `conf` (the `config` of a `plugin`; other keys, such as Kong's `__key__`, are ignored) against
/// [`FIELDS`]. A value under a field of the other plugin only (kafka-consume given `cluster_api_key`) is
/// refused as Kong refuses it: an unknown field.
///
/// # Errors
/// [`Error::Config`] naming the first offending field (`topics[2].name: ...`) in Kong's words.
pub fn check(conf: &Value, plugin: Plugin) -> Result<(), Error> {
    if !conf.is_object() {
        return Err(Error::Config("config: expected a record".into()));
    }
    let foreign = FIELDS.iter().filter(|f| !plugin.fields().any(|own| own.path == f.path));
    if let Some(f) = foreign.into_iter().find(|f| conf.get(f.path).is_some_and(|v| !v.is_null())) {
        return bad(f.path, "unknown field");
    }
    plugin.fields().try_for_each(|f| check_at(conf, f.path, "", f))
}

/// Checks the values `path` leads to from the record `parent`; `shown` is the path so far, with indices.
fn check_at(parent: &Value, path: &str, shown: &str, field: &Field) -> Result<(), Error> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let (name, each, values) = match (head.strip_suffix("[]"), head.strip_suffix("{}")) {
        (Some(name), _) => (name, true, false),
        (_, Some(name)) => (name, false, true),
        (None, None) => (head, false, false),
    };
    let shown = if shown.is_empty() { name.to_string() } else { format!("{shown}.{name}") };
    let value = match parent.get(name) {
        // the parent's own entry reports a missing required record or array
        None | Some(Value::Null) if rest.is_some() => return Ok(()),
        None | Some(Value::Null) if field.required => return bad(&shown, "required field missing"),
        None | Some(Value::Null) => return Ok(()),
        Some(value) => value,
    };
    let Some(rest) = rest else {
        if values {
            // each value of a map, named by the map: keys are the user's text, not a field
            for item in value.as_object().into_iter().flat_map(|o| o.values()) {
                match item {
                    Value::Null if !field.required => {}
                    Value::Null => return bad(&shown, "required field missing"),
                    item => check_value(item, &shown, field)?,
                }
            }
            return Ok(());
        }
        if !each {
            return check_value(value, &shown, field);
        }
        // each element of an array of scalars (the array's own entry checks that it is one)
        for (i, item) in value.as_array().into_iter().flatten().enumerate() {
            match item {
                // as Kong judges a null element: missing, which only a required one may not be
                Value::Null if !field.required => {}
                Value::Null => return bad(&format!("{shown}[{}]", i + 1), "required field missing"),
                item => check_value(item, &format!("{shown}[{}]", i + 1), field)?,
            }
        }
        return Ok(());
    };
    if !each {
        return if value.is_object() { check_at(value, rest, &shown, field) } else { Ok(()) };
    }
    // the fields of an array's elements make them records
    for (i, item) in value.as_array().into_iter().flatten().enumerate() {
        let shown = format!("{shown}[{}]", i + 1);
        if !item.is_object() {
            return bad(&shown, "expected a record");
        }
        check_at(item, rest, &shown, field)?;
    }
    Ok(())
}

fn check_value(value: &Value, shown: &str, field: &Field) -> Result<(), Error> {
    if !field.kind.matches(value) {
        let article = if field.kind == Kind::Integer || field.kind == Kind::Array { "an" } else { "a" };
        return bad(shown, &format!("expected {article} {}", field.kind.name()));
    }
    for rule in field.rules {
        let ok = match *rule {
            Rule::Between(lo, hi) => value.as_i64().is_some_and(|v| (lo..=hi).contains(&v)),
            Rule::BetweenNumbers(lo, hi) => value.as_f64().is_some_and(|v| (lo..=hi).contains(&v)),
            Rule::OneOf(values) => value.as_str().is_some_and(|v| values.contains(&v)),
            Rule::NotOneOf(values) => value.as_str().is_some_and(|v| !values.contains(&v)),
            Rule::LenMin(n) => length(value) >= n,
            Rule::LenMax(n) => length(value) <= n,
            Rule::Match(_, test) => value.as_str().is_some_and(test),
            Rule::Host => value.as_str().is_some_and(is_host),
            Rule::Uuid => value.as_str().is_some_and(is_uuid),
            Rule::LuaFunction => value.is_string(),
        };
        if !ok {
            return bad(shown, &message(rule));
        }
    }
    Ok(())
}

/// Kong's message for a value that breaks `rule`, without the value.
fn message(rule: &Rule) -> String {
    match rule {
        Rule::Between(lo, hi) => format!("value should be between {lo} and {hi}"),
        Rule::BetweenNumbers(lo, hi) => format!("value should be between {lo} and {hi}"),
        Rule::OneOf(values) => format!("expected one of: {}", values.join(", ")),
        Rule::NotOneOf(values) => format!("must not be one of: {}", values.join(", ")),
        Rule::LenMin(n) => format!("length must be at least {n}"),
        Rule::LenMax(n) => format!("length must be at most {n}"),
        Rule::Match(..) | Rule::Host | Rule::LuaFunction => "invalid value".into(),
        Rule::Uuid => "expected a valid UUID".into(),
    }
}

/// The refusal of a conf because of `field`.
pub(crate) fn bad<T>(field: &str, why: &str) -> Result<T, Error> {
    Err(Error::Config(format!("{field}: {why}")))
}

fn length(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    }
}

/// `^[%w%._%-]+$`
fn is_topic_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `^[Hh][Tt][Tt][Pp][Ss]?://[^%s]+$`: the schemes librdkafka's token fetch allows.
fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = match (lower.strip_prefix("http://"), lower.strip_prefix("https://")) {
        (_, Some(_)) => &url[8..],
        (Some(_), None) => &url[7..],
        (None, None) => return false,
    };
    // Lua's %s: space, \t, \n, \v, \f, \r
    !rest.is_empty() && !rest.bytes().any(|b| b.is_ascii_whitespace() || b == 0x0b)
}

/// `%-%-%-%-%-BEGIN ` (unanchored)
fn is_pem(text: &str) -> bool {
    text.contains("-----BEGIN ")
}

/// Kong's UUID check: 8-4-4-4-12 hex digits, any case, any version.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Kong's `typedefs.host`: an IPv4 address, an IPv6 address (bracketed or not) or a host name. Besides
/// agreeing with the schema, this keeps `,` and spaces out of librdkafka's `bootstrap.servers` list.
fn is_host(host: &str) -> bool {
    is_ipv4(host) || is_ipv6(host) || is_hostname(host)
}

fn is_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u64>().is_ok_and(|n| n <= 255)
        })
}

/// `^%[?[%x:%.]+%]?$` with a `:` in it.
fn is_ipv6(host: &str) -> bool {
    let inner = host.strip_prefix('[').unwrap_or(host);
    let inner = inner.strip_suffix(']').unwrap_or(inner);
    !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') && host.contains(':')
}

/// At most 253 bytes of `[%w_%-%.]`, no `..`; each label at most 63 bytes, `^[%w_][%w%-_]*$`, not ending in `-`.
fn is_hostname(host: &str) -> bool {
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        label.len() <= 63
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.ends_with('-')
    };
    !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        && !host.contains("..")
        && host.split('.').filter(|l| !l.is_empty()).all(label_ok)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A schema registry record with every sub-record set, as Kong hands a configured one over (defaults
    /// filled), so that a test changing one field judges that field alone.
    pub(crate) fn registry() -> Value {
        json!({ "confluent": {
            "url": "http://127.0.0.1:8081", "ssl_verify": true, "ttl": 300,
            "authentication": {
                "mode": "none",
                "basic": { "username": "u", "password": "p" },
                "oauth2": { "token_endpoint": "https://idp.example/token", "grant_type": "client_credentials",
                            "scopes": ["openid"], "audience": [] },
                "oauth2_client": { "auth_method": "client_secret_post", "client_secret_jwt_alg": "HS512",
                                   "http_version": 1.1, "keep_alive": true, "ssl_verify": true, "timeout": 10000 },
            },
        } })
    }

    /// A conf as Kong hands it over: every default filled in (Kong fills the `oauthbearer` records'
    /// defaults even when they are not configured), with a registry globally and for its topic.
    pub(crate) fn conf() -> Value {
        json!({
            "schema_registry": registry(),
            "oauthbearer": { "token_endpoint_tls_verify": true, "extensions": {} },
            "authentication": { "oauthbearer": { "token_endpoint_tls_verify": true, "extensions": {} } },
            "bootstrap_servers": [{ "host": "127.0.0.1", "port": 9092 }],
            "topics": [{ "name": "orders", "schema_registry": registry() }],
            "mode": "http-get", "message_deserializer": "noop", "auto_offset_reset": "latest",
            "commit_strategy": "auto", "timeout": 10000, "keepalive": 60000, "keepalive_enabled": false,
            "enforce_latest_offset_reset": false,
            "consumer_group": { "mode": "random" },
            "security": { "ssl_verify": true }, "error_handling": { "return_error_message": false },
            "max_records": 1000, "max_bytes": 1048576, "max_wait": 30000, "heartbeat_interval": 15000,
            "retry_interval": 3000, "max_unacked_records": 1000, "ack_timeout": 60000, "max_catchup_streams": 16,
            "fetch_wait_max_ms": 10, "buffer_max_bytes": 8388608, "max_consumer_groups": 16, "__key__": "k", "__plugin_id": "p"
        })
    }

    /// `conf()` with the value at `path` (`[]` meaning the first element, `{}` the value of key `k`) replaced.
    fn with(path: &str, value: Value) -> Value {
        let mut conf = conf();
        let mut at = &mut conf;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let (name, each) = match part.strip_suffix("[]") {
                Some(name) => (name, true),
                None => (*part, false),
            };
            if i + 1 == parts.len() {
                match (each, name.strip_suffix("{}")) {
                    (true, _) => at[name] = json!([value]),
                    (false, Some(map)) => at[map] = json!({ "k": value }),
                    (false, None) => at[name] = value,
                }
                break;
            }
            if at.get(name).is_none_or(Value::is_null) {
                at[name] = json!({});
            }
            at = if each { &mut at[name][0] } else { &mut at[name] };
        }
        conf
    }

    fn shown(path: &str) -> String {
        path.replace("[]", "[1]").replace("{}", "")
    }

    fn refused(path: &str, value: Value) -> String {
        match check(&with(path, value.clone()), Plugin::ConfluentConsume) {
            Ok(()) => panic!("{path} = {value} was accepted"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with(&format!("invalid configuration: {}: ", shown(path))), "{text}");
                text
            }
        }
    }

    fn accepted(path: &str, value: Value) {
        if let Err(e) = check(&with(path, value.clone()), Plugin::ConfluentConsume) {
            panic!("{path} = {value}: {e}");
        }
    }

    #[test]
    fn a_full_conf_passes() {
        check(&conf(), Plugin::ConfluentConsume).unwrap();
    }

    // Every rule of the table is enforced: its edges pass and the values just beyond fail.
    #[test]
    fn every_rule_is_enforced_at_its_edges() {
        for f in FIELDS {
            for rule in f.rules {
                match *rule {
                    Rule::Between(lo, hi) => {
                        accepted(f.path, json!(lo));
                        accepted(f.path, json!(hi));
                        assert!(refused(f.path, json!(lo - 1)).ends_with(&message(rule)));
                        assert!(refused(f.path, json!(hi + 1)).ends_with(&message(rule)));
                    }
                    Rule::BetweenNumbers(lo, hi) => {
                        accepted(f.path, json!(lo));
                        accepted(f.path, json!(hi));
                        assert!(refused(f.path, json!(lo - 0.5)).ends_with(&message(rule)));
                        assert!(refused(f.path, json!(hi + 0.5)).ends_with(&message(rule)));
                    }
                    Rule::OneOf(values) => {
                        for v in values {
                            accepted(f.path, json!(v));
                        }
                        assert!(refused(f.path, json!("bogus")).ends_with(&message(rule)));
                    }
                    Rule::NotOneOf(values) => {
                        for v in values {
                            assert!(refused(f.path, json!(v)).ends_with(&message(rule)));
                        }
                    }
                    Rule::LenMin(n) if f.kind == Kind::String => {
                        refused(f.path, json!("a".repeat(n - 1)));
                    }
                    Rule::LenMin(n) => {
                        assert_eq!(n, 1);
                        refused(f.path, json!([]));
                        refused(f.path, json!({}));
                    }
                    Rule::LenMax(n) => {
                        accepted(f.path, json!("a".repeat(n)));
                        refused(f.path, json!("a".repeat(n + 1)));
                    }
                    Rule::LuaFunction => accepted(f.path, json!("return function(m) return m end")),
                    Rule::Match(..) | Rule::Host | Rule::Uuid => {
                        refused(f.path, json!("not valid, !"));
                    }
                }
            }
        }
    }

    #[test]
    fn types_and_required_fields_are_checked() {
        for f in FIELDS {
            let wrong = if f.kind == Kind::String { json!(1) } else { json!("x") };
            assert!(refused(f.path, wrong).contains("expected a"), "{}", f.path);
            if f.required {
                assert!(refused(f.path, Value::Null).ends_with("required field missing"));
            } else {
                accepted(f.path, Value::Null);
            }
        }
        assert!(check(&json!([]), Plugin::ConfluentConsume).is_err());
        let err = check(&with("topics", json!(["orders"])), Plugin::ConfluentConsume).unwrap_err().to_string();
        assert!(err.ends_with("topics[1]: expected a record"), "{err}");
    }

    /// `conf()` as Kong hands a kafka-consume config over: without confluent-consume's own fields.
    pub(crate) fn kafka_conf() -> Value {
        let mut conf = conf();
        for f in FIELDS.iter().filter(|f| f.confluent_only) {
            conf.as_object_mut().unwrap().remove(f.path);
        }
        conf
    }

    #[test]
    fn kafka_consume_refuses_confluent_consume_fields_as_unknown() {
        check(&kafka_conf(), Plugin::KafkaConsume).unwrap();
        // six fields, and the top-level oauthbearer record with its eight
        assert_eq!(Plugin::KafkaConsume.fields().count() + 15, Plugin::ConfluentConsume.fields().count());
        for (path, value) in [
            ("cluster_api_key", json!("k")),
            ("cluster_api_secret", json!("s")),
            ("confluent_cloud_api_key", json!("k")),
            ("confluent_cloud_api_secret", json!("s")),
            ("keepalive", json!(60000)),
            ("keepalive_enabled", json!(false)),
            ("oauthbearer", json!({ "client_id": "c", "token_endpoint_tls_verify": true })),
        ] {
            let mut conf = kafka_conf();
            conf[path] = value;
            let err = check(&conf, Plugin::KafkaConsume).unwrap_err().to_string();
            assert_eq!(err, format!("invalid configuration: {path}: unknown field"));
            check(&with(path, conf[path].clone()), Plugin::ConfluentConsume).unwrap();
        }
        // a null is what Kong hands over for an unset optional field of the other schema: not a value
        let mut conf = kafka_conf();
        conf["cluster_api_key"] = Value::Null;
        check(&conf, Plugin::KafkaConsume).unwrap();
        assert_eq!(Plugin::from_name("kafka-consume"), Some(Plugin::KafkaConsume));
        assert_eq!(Plugin::from_name("confluent-consume"), Some(Plugin::ConfluentConsume));
        assert_eq!(Plugin::from_name("kafka-upstream"), None);
    }

    #[test]
    fn a_refusal_never_shows_the_value() {
        let text = refused("security.client_key", json!("private key material"));
        assert!(!text.contains("material"), "{text}");
    }

    #[test]
    fn uuids_as_kong_reads_them() {
        for id in ["5f4034c2-0000-4000-8000-000000000000", "5F4034C2-AAAA-bbbb-CCCC-0123456789ab"] {
            assert!(is_uuid(id), "{id}");
        }
        for id in [
            "",
            "5f4034c2000040008000000000000000",
            "5f4034c2-0000-4000-8000-00000000000",
            "g0000000-0000-4000-8000-000000000000",
            "5f4034c2-0000-4000-8000-000000000000-",
        ] {
            assert!(!is_uuid(id), "{id}");
        }
    }

    #[test]
    fn hosts_as_kong_reads_them() {
        for host in ["127.0.0.1", "::1", "[::1]", "broker-1.example.com", "kafka_1", "localhost"] {
            assert!(is_host(host), "{host}");
        }
        for host in ["", "a,b", "a b", "a..b", "-a", "a-", "a/b", "[a]", &"a".repeat(64)] {
            assert!(!is_host(host), "{host}");
        }
    }
}
