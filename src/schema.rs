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
}

const fn field(path: &'static str, kind: Kind, required: bool, rules: &'static [Rule]) -> Field {
    Field { path, kind, required, rules }
}

use Kind::{Array, Boolean, Integer, Map, Record, String as Str};
use Rule::{Between, Host, LenMax, LenMin, Match, NotOneOf, OneOf};

const MIB: i64 = 1024 * 1024;
const PEM: Rule = Match("%-%-%-%-%-BEGIN ", is_pem);
const MODES: &[&str] = &["http-get", "server-sent-events"];
const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];
const TOKEN_ENDPOINT_URL: Rule = Match("^[Hh][Tt][Tt][Pp][Ss]?://[^%s]+$", is_http_url);

/// Every field of schema.lua's `config`, in its order.
pub const FIELDS: &[Field] = &[
    field("bootstrap_servers", Array, true, &[LenMin(1)]),
    field("bootstrap_servers[].host", Str, true, &[Host]),
    field("bootstrap_servers[].port", Integer, true, &[Between(0, 65535)]),
    field("topics", Array, true, &[LenMin(1)]),
    field(
        "topics[].name",
        Str,
        true,
        &[LenMin(1), LenMax(249), Match("^[%w%._%-]+$", is_topic_name), NotOneOf(&[".", ".."])],
    ),
    field("mode", Str, true, &[OneOf(MODES)]),
    field("message_deserializer", Str, true, &[OneOf(&["noop", "json"])]),
    field("auto_offset_reset", Str, true, &[OneOf(&["earliest", "latest"])]),
    field("commit_strategy", Str, true, &[OneOf(&["auto", "off"])]),
    field("timeout", Integer, false, &[Between(0, (1 << 31) - 2)]),
    field("cluster_name", Str, false, &[LenMin(1), LenMax(255)]),
    field("consumer_group", Record, true, &[]),
    field("consumer_group.mode", Str, true, &[OneOf(&["random", "manual"])]),
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
    field("cluster_api_key", Str, false, &[LenMin(1)]),
    field("cluster_api_secret", Str, false, &[LenMin(1)]),
    field("oauthbearer", Record, false, &[]),
    field("oauthbearer.token_endpoint_url", Str, false, &[TOKEN_ENDPOINT_URL]),
    field("oauthbearer.client_id", Str, false, &[LenMin(1)]),
    field("oauthbearer.client_secret", Str, false, &[LenMin(1)]),
    field("oauthbearer.scopes", Array, false, &[]),
    field("oauthbearer.scopes[]", Str, false, &[LenMin(1)]),
    field("oauthbearer.extensions", Map, false, &[]),
    field("oauthbearer.extensions{}", Str, false, &[]),
    field("oauthbearer.token_endpoint_tls_verify", Boolean, true, &[]),
    field("security", Record, true, &[]),
    field("security.ssl", Boolean, false, &[]),
    field("security.ssl_verify", Boolean, true, &[]),
    field("security.ca_certificate", Str, false, &[PEM]),
    field("security.client_certificate", Str, false, &[PEM]),
    field("security.client_key", Str, false, &[PEM]),
    field("max_records", Integer, true, &[Between(1, 100_000)]),
    field("max_bytes", Integer, true, &[Between(1, 64 * MIB)]),
    field("max_wait", Integer, true, &[Between(0, 300_000)]),
    field("heartbeat_interval", Integer, true, &[Between(1000, 300_000)]),
    field("retry_interval", Integer, true, &[Between(0, 300_000)]),
    field("max_catchup_streams", Integer, true, &[Between(1, 10_000)]),
    field("fetch_wait_max_ms", Integer, true, &[Between(1, 10_000)]),
    field("buffer_max_bytes", Integer, true, &[Between(65_536, 1024 * MIB)]),
];

/// Checks `conf` (the plugin's `config`; other keys, such as Kong's `__key__`, are ignored) against
/// [`FIELDS`].
///
/// # Errors
/// [`Error::Config`] naming the first offending field (`topics[2].name: ...`) in Kong's words.
pub fn check(conf: &Value) -> Result<(), Error> {
    if !conf.is_object() {
        return Err(Error::Config("config: expected a record".into()));
    }
    FIELDS.iter().try_for_each(|f| check_at(conf, f.path, "", f))
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
            Rule::OneOf(values) => value.as_str().is_some_and(|v| values.contains(&v)),
            Rule::NotOneOf(values) => value.as_str().is_some_and(|v| !values.contains(&v)),
            Rule::LenMin(n) => length(value) >= n,
            Rule::LenMax(n) => length(value) <= n,
            Rule::Match(_, test) => value.as_str().is_some_and(test),
            Rule::Host => value.as_str().is_some_and(is_host),
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
        Rule::OneOf(values) => format!("expected one of: {}", values.join(", ")),
        Rule::NotOneOf(values) => format!("must not be one of: {}", values.join(", ")),
        Rule::LenMin(n) => format!("length must be at least {n}"),
        Rule::LenMax(n) => format!("length must be at most {n}"),
        Rule::Match(..) | Rule::Host => "invalid value".into(),
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

    /// A conf as Kong hands it over: every default filled in (Kong fills the `oauthbearer` records'
    /// defaults even when they are not configured).
    pub(crate) fn conf() -> Value {
        json!({
            "oauthbearer": { "token_endpoint_tls_verify": true, "extensions": {} },
            "authentication": { "oauthbearer": { "token_endpoint_tls_verify": true, "extensions": {} } },
            "bootstrap_servers": [{ "host": "127.0.0.1", "port": 9092 }],
            "topics": [{ "name": "orders" }],
            "mode": "http-get", "message_deserializer": "noop", "auto_offset_reset": "latest",
            "commit_strategy": "auto", "timeout": 10000,
            "consumer_group": { "mode": "random" },
            "security": { "ssl_verify": true },
            "max_records": 1000, "max_bytes": 1048576, "max_wait": 30000, "heartbeat_interval": 15000,
            "retry_interval": 3000, "max_catchup_streams": 16, "fetch_wait_max_ms": 10,
            "buffer_max_bytes": 8388608, "__key__": "k", "__plugin_id": "p"
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
        match check(&with(path, value.clone())) {
            Ok(()) => panic!("{path} = {value} was accepted"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with(&format!("invalid configuration: {}: ", shown(path))), "{text}");
                text
            }
        }
    }

    fn accepted(path: &str, value: Value) {
        if let Err(e) = check(&with(path, value.clone())) {
            panic!("{path} = {value}: {e}");
        }
    }

    #[test]
    fn a_full_conf_passes() {
        check(&conf()).unwrap();
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
                    Rule::Match(..) | Rule::Host => {
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
        assert!(check(&json!([])).is_err());
        let err = check(&with("topics", json!(["orders"]))).unwrap_err().to_string();
        assert!(err.ends_with("topics[1]: expected a record"), "{err}");
    }

    #[test]
    fn a_refusal_never_shows_the_value() {
        let text = refused("security.client_key", json!("private key material"));
        assert!(!text.contains("material"), "{text}");
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
