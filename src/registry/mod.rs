//! Confluent Schema Registry: records in Confluent's wire format decoded to JSON with their writer's schema.

mod avro;
pub mod client;
pub mod config;
pub mod decode;
pub mod fetcher;
mod json_schema;
mod protobuf;
pub mod schema;
pub mod wire;

pub use schema::{compile, Compiled, DecodeError, Reference, Schema, SchemaType};
