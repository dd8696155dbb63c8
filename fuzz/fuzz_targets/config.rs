//! A plugin conf from arbitrary bytes (JSON), through the path the Lua side's conf table takes
//! (`Settings::from_conf`: schema.lua's rules as `schema::FIELDS`, the typed read, the entity checks), then
//! the consumer identity and the librdkafka configuration: never a panic; a refusal names a field; no
//! secret shows in `{:?}`.
#![no_main]

use confluent_consume_native::schema::FIELDS;
use confluent_consume_native::settings::{Authentication, Settings};
use libfuzzer_sys::fuzz_target;

/// What a refusal may name besides the fields of the table: the conf itself, and Kong's plugin id.
const OTHER_NAMES: [&str; 2] = ["config", "__plugin_id"];

fuzz_target!(|data: &[u8]| {
    let Ok(conf) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    match Settings::from_conf(&conf, Default::default()) {
        Ok(settings) => {
            // `{:?}` is the same whatever the secrets are
            let mut other = settings.clone();
            match other.authentication.as_mut() {
                Some(Authentication::Password(auth)) => {
                    auth.password.push('x');
                    if auth.user_is_secret {
                        auth.user.push('x');
                    }
                }
                Some(Authentication::OAuthBearer(oauth)) => oauth.client_secret.push('x'),
                None => {}
            }
            if let Some(key) = other.security.client_key.as_mut() {
                key.push('x');
            }
            assert_eq!(format!("{settings:?}"), format!("{other:?}"), "a secret shows in {{:?}}");
            assert_eq!(settings.identity(), Settings::from_conf(&conf, Default::default()).unwrap().identity());
            // librdkafka's own checks of every property (no network): an error is fine, a panic is not
            let _ = settings.client_config().create_native_config();
        }
        Err(err) => {
            let text = err.to_string();
            let detail = text.strip_prefix("invalid configuration: ").expect("a configuration error");
            let field = detail.split(": ").next().unwrap_or_default();
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
            // `a[2]` names an element of the array field `a`
            let named = plain.strip_suffix("[]").unwrap_or(&plain);
            assert!(FIELDS.iter().any(|f| f.path == named) || OTHER_NAMES.contains(&named), "{text}");
        }
    }
});
