//! Panics stop here: a panic in a Lua call becomes `nil, "internal error: …"` for Lua, and one on the
//! consumer thread ends that handle with the same message as its error, instead of unwinding into LuaJIT
//! (undefined behaviour), showing in nginx's log as "unknown reason", or killing the thread unnoticed.
//!
//! While [`catch`] runs its body, this library's panic hook records where the panic happened and prints
//! nothing: the message reaches the log through the caller, once. Elsewhere the previous hook runs as
//! before. (A cdylib has its own copy of std, so the hook is this library's alone.)

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use mlua::{IntoLuaMulti, Lua, MultiValue, Result as LuaResult, Value};

thread_local! {
    /// How many [`catch`] calls are running on this thread.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
    /// Where the last caught panic of this thread happened.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) > 0 {
                let location = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
                LOCATION.with(|slot| *slot.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// Leaves the catching state however `catch`'s body ends.
struct Catching;

impl Catching {
    fn enter() -> Self {
        CATCHING.with(|c| c.set(c.get() + 1));
        Catching
    }
}

impl Drop for Catching {
    fn drop(&mut self) {
        CATCHING.with(|c| c.set(c.get() - 1));
    }
}

/// Runs `body`; a panic in it comes back as `Err("<panic message> (at <file>:<line>)")`.
///
/// # Errors
/// The panic's message and location when `body` panicked.
pub fn catch<T>(body: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let outcome = {
        let _catching = Catching::enter();
        panic::catch_unwind(AssertUnwindSafe(body))
    };
    outcome.map_err(|payload| {
        let location = LOCATION.with(|slot| slot.borrow_mut().take());
        match location {
            Some(at) => format!("{} (at {at})", message(payload.as_ref())),
            None => message(payload.as_ref()),
        }
    })
}

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".to_owned()
    }
}

/// The body of a Lua call: its results, `nil, "internal error: …"` when it panicked. Errors it returns
/// (misuse, such as a wrong argument type) still raise.
///
/// # Errors
/// What `body` returned as an error, or a failure to build the Lua values.
pub fn lua_call<R: IntoLuaMulti>(lua: &Lua, body: impl FnOnce() -> LuaResult<R>) -> LuaResult<MultiValue> {
    match catch(body) {
        Ok(result) => result?.into_lua_multi(lua),
        Err(panic) => Ok(MultiValue::from_vec(vec![
            Value::Nil,
            Value::String(lua.create_string(format!("internal error: {panic}"))?),
        ])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_location() {
        let err = catch(|| -> u8 { panic!("boom {}", 7) }).unwrap_err();
        assert!(err.starts_with("boom 7 (at src/guard.rs:"), "{err}");
        let err = catch(|| std::panic::panic_any(42_u8)).unwrap_err();
        assert!(err.starts_with("panic without a message"), "{err}");
        assert_eq!(catch(|| 5), Ok(5));
        assert_eq!(CATCHING.with(Cell::get), 0, "the catching state is left after a panic");
    }

    #[test]
    fn nested_catches_report_their_own_panic() {
        let outer = catch(|| {
            let inner = catch(|| panic!("inner"));
            assert!(inner.unwrap_err().starts_with("inner"));
            panic!("outer")
        });
        assert!(outer.unwrap_err().starts_with("outer"));
    }

    #[test]
    fn lua_calls_answer_nil_and_a_string() {
        let lua = Lua::new();
        let values = lua_call(&lua, || -> LuaResult<i32> { panic!("deliberate") }).unwrap();
        let values: Vec<Value> = values.into_iter().collect();
        assert!(values[0].is_nil());
        let text = values[1].as_string().unwrap().to_str().unwrap().to_string();
        assert!(text.starts_with("internal error: deliberate (at src/guard.rs:"), "{text}");
        let ok: Vec<Value> = lua_call(&lua, || Ok(3)).unwrap().into_iter().collect();
        assert_eq!(ok[0].as_integer(), Some(3));
        assert!(lua_call(&lua, || -> LuaResult<()> { Err(mlua::Error::runtime("misuse")) }).is_err());
    }
}
