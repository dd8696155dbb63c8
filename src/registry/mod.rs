//! Confluent Schema Registry: records in Confluent's wire format decoded to JSON on the consumer thread.

pub mod config;
