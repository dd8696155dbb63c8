//! The crate's error type. Errors stay typed inside Rust and become plain strings only at the Lua boundary,
//! because an error userdata shows in nginx's log as "unknown reason".

use std::fmt;

/// What can go wrong in a native call.
#[derive(Debug)]
pub enum Error {
    /// The settings are invalid; the message names the field.
    Config(String),
    /// librdkafka refused to create the client.
    Client(String),
    /// A handle was used in another process than the one that created it (nginx forked after creation).
    WrongProcess,
    /// The handle was closed.
    Closed,
    /// An OS-level failure (the doorbell socket, the consumer thread).
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "invalid configuration: {msg}"),
            Error::Client(msg) => write!(f, "cannot create Kafka client: {msg}"),
            Error::WrongProcess => {
                f.write_str("consumer handle used in another process than the one that created it")
            }
            Error::Closed => f.write_str("consumer handle is closed"),
            Error::Io(err) => write!(f, "i/o error: {err}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Io(err)
    }
}
