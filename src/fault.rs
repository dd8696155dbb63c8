//! Deliberate panics, for the specs that check a panic never crosses into Lua. Compiled only with the
//! `fault-injection` feature: the production module has no such export.

use std::sync::Mutex;

use mlua::{Lua, MultiValue, Result as LuaResult, Value};

/// A panic the next turn of a consumer thread's loop (of any handle in this process) will raise.
static CONSUMER_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// `inject_panic(site, message)`: `"call"` panics in this very call; `"consumer"` makes the next consumer
/// thread to turn its loop panic and returns `true`.
///
/// # Errors
/// `nil, message` for an unknown site.
///
/// # Panics
/// On purpose, with `message`, when `site` is `"call"`.
pub fn inject_panic(lua: &Lua, (site, message): (String, String)) -> LuaResult<MultiValue> {
    match site.as_str() {
        "call" => panic!("{message}"),
        "consumer" => {
            *CONSUMER_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
            Ok(MultiValue::from_vec(vec![Value::Boolean(true)]))
        }
        other => Ok(MultiValue::from_vec(vec![
            Value::Nil,
            Value::String(lua.create_string(format!("unknown panic site '{other}'"))?),
        ])),
    }
}

/// Called by the consumer thread once per turn of its loop.
///
/// # Panics
/// When a consumer panic was requested.
pub fn consumer_turn() {
    let requested = CONSUMER_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(message) = requested {
        panic!("{message}");
    }
}
