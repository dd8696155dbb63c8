//! Consumer settings from arbitrary bytes, through the same serde `Deserialize` the Lua side's table goes
//! through, then validation and the librdkafka configuration: never a panic; a refusal names the field;
//! no secret shows in `{:?}`.
#![no_main]

use confluent_consume_native::settings::Settings;
use libfuzzer_sys::fuzz_target;

/// Every field validation can name (the text before its `:`), indices stripped.
const FIELDS: [&str; 14] = [
    "bootstrap_servers", "bootstrap_servers[].host", "bootstrap_servers[].port", "topics", "topics[].name",
    "group_id", "authentication.strategy", "authentication.user", "authentication.password",
    "security.ca_certificate", "security.client_certificate", "security.client_key", "fetch_wait_max_ms",
    "buffer_max_bytes",
];

fuzz_target!(|data: &[u8]| {
    let Ok(settings) = serde_json::from_slice::<Settings>(data) else { return };
    // `{:?}` is the same whatever the secrets are
    let mut other = settings.clone();
    if let Some(auth) = other.authentication.as_mut() {
        auth.password.push('x');
    }
    if let Some(key) = other.security.client_key.as_mut() {
        key.push('x');
    }
    assert_eq!(format!("{settings:?}"), format!("{other:?}"), "a secret shows in {{:?}}");
    match settings.validate() {
        Ok(()) => {
            let config = settings.client_config();
            // librdkafka's own checks of every property (no network): an error is fine, a panic is not
            let _ = config.create_native_config();
        }
        Err(err) => {
            let text = err.to_string();
            let detail = text.strip_prefix("invalid configuration: ").expect("a configuration error");
            let field = detail.split(':').next().unwrap_or_default();
            let mut plain = String::new();
            let mut in_index = false;
            for c in field.chars() {
                match c {
                    '[' => in_index = true,
                    ']' => {
                        in_index = false;
                        plain.push_str("[]");
                    }
                    _ if !in_index => plain.push(c),
                    _ => {}
                }
            }
            assert!(FIELDS.contains(&plain.as_str()) || ["start", "start.offsets"].contains(&plain.as_str()),
                    "{text}");
        }
    }
});
