//! The schemas the registry serves, and the decoder compiled from one.

use std::fmt;

use super::{avro, json_schema, protobuf};

/// The registry's `schemaType` ("AVRO" when absent, "PROTOBUF", "JSON").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaType {
    Avro,
    Protobuf,
    Json,
}

impl SchemaType {
    /// The type named by the registry's `schemaType` member, which it leaves out for Avro.
    ///
    /// # Errors
    /// A name the registry does not define.
    pub fn from_registry(name: Option<&str>) -> Result<Self, DecodeError> {
        match name {
            None | Some("AVRO") => Ok(Self::Avro),
            Some("PROTOBUF") => Ok(Self::Protobuf),
            Some("JSON") => Ok(Self::Json),
            Some(_) => Err(DecodeError::new("unknown schemaType")),
        }
    }
}

/// A schema as the registry returns it, with its references already fetched and resolved (recursively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub schema_type: SchemaType,
    pub text: String,
    pub references: Vec<Reference>,
}

/// `name` is the reference's name as the registry gives it (for Protobuf the import path, for Avro the full
/// type name, for JSON Schema the $ref URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub schema: Schema,
}

impl Schema {
    /// Every schema this one references, directly or through another reference, each name once (the
    /// registry gives one schema per name within a tree of references), a reference's own references
    /// before it: the order in which a library that resolves names as it goes can take them.
    pub(crate) fn all_references(&self) -> Vec<&Reference> {
        fn visit<'s>(references: &'s [Reference], all: &mut Vec<&'s Reference>, entered: &mut Vec<&'s str>) {
            for reference in references {
                if entered.contains(&reference.name.as_str()) {
                    continue;
                }
                entered.push(&reference.name);
                visit(&reference.schema.references, all, entered);
                all.push(reference);
            }
        }
        let mut all = Vec::new();
        visit(&self.references, &mut all, &mut Vec::new());
        all
    }
}

/// Why a schema did not compile or a record did not decode: short, with no schema text and no secret,
/// fit for `value_error` / `key_error` and the dead-letter topic's error header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    message: String,
}

/// Longest cause a library's error message contributes: some quote a part of the schema or the record.
const MAX_CAUSE_CHARS: usize = 120;

impl DecodeError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    /// `what: cause`, the library's cause cut to a short line.
    pub(crate) fn caused(what: &str, cause: impl fmt::Display) -> Self {
        let cause = cause.to_string();
        let mut message = format!("{what}: ");
        match cause.char_indices().nth(MAX_CAUSE_CHARS) {
            Some((end, _)) => {
                message.push_str(&cause[..end]);
                message.push('…');
            }
            None => message.push_str(&cause),
        }
        message = message.replace(['\n', '\r'], " ");
        Self { message }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

/// A schema compiled once (per node per id), used for every record with that id.
pub struct Compiled {
    decoder: Decoder,
}

enum Decoder {
    /// Boxed: it holds its schema twice (as parsed, and self-contained for the library's reader).
    Avro(Box<avro::Decoder>),
    Protobuf(protobuf::Decoder),
    Json(json_schema::Decoder),
}

/// Compiles a schema and its references.
///
/// # Errors
/// A schema (or a reference) its format's library refuses, a reference missing, an unknown type.
pub fn compile(schema: &Schema) -> Result<Compiled, DecodeError> {
    let decoder = without_panics(|| {
        Ok(match schema.schema_type {
            SchemaType::Avro => Decoder::Avro(Box::new(avro::Decoder::compile(schema)?)),
            SchemaType::Protobuf => Decoder::Protobuf(protobuf::Decoder::compile(schema)?),
            SchemaType::Json => Decoder::Json(json_schema::Decoder::compile(schema)?),
        })
    })?;
    Ok(Compiled { decoder })
}

/// Runs a library on registry or record bytes, with a panic of the library (a bug the fuzz target hunts)
/// turned into an error for this one schema or record rather than ending the consumer thread.
fn without_panics<T>(f: impl FnOnce() -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(DecodeError::new("the decoding library failed on this input")))
}

impl Compiled {
    /// Appends the body (the bytes after the 5-byte header; for Protobuf this starts with the message
    /// indexes, which the protobuf decoder parses itself) rendered as compact JSON to `out`. On error `out`
    /// is left as it was.
    ///
    /// # Errors
    /// A body that is not a record of this schema (truncated, trailing garbage the format notices, an
    /// unknown message index, a JSON document that does not validate).
    pub fn render(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let start = out.len();
        let rendered = without_panics(|| match &self.decoder {
            Decoder::Avro(decoder) => decoder.render(body, out),
            Decoder::Protobuf(decoder) => decoder.render(body, out),
            Decoder::Json(decoder) => decoder.render(body, out),
        });
        if rendered.is_err() {
            out.truncate(start);
        }
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str) -> Reference {
        Reference {
            name: name.into(),
            schema: Schema { schema_type: SchemaType::Avro, text: name.into(), references: Vec::new() },
        }
    }

    #[test]
    fn all_references_lists_a_reference_after_its_own_and_each_name_once() {
        let mut middle = leaf("b");
        middle.schema.references = vec![leaf("c"), leaf("a")];
        let schema = Schema {
            schema_type: SchemaType::Avro,
            text: String::new(),
            references: vec![leaf("a"), middle, leaf("c")],
        };
        let names: Vec<&str> = schema.all_references().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "b"]);
    }

    #[test]
    fn schema_type_follows_the_registry_names_with_avro_when_absent() {
        assert_eq!(SchemaType::from_registry(None), Ok(SchemaType::Avro));
        assert_eq!(SchemaType::from_registry(Some("AVRO")), Ok(SchemaType::Avro));
        assert_eq!(SchemaType::from_registry(Some("PROTOBUF")), Ok(SchemaType::Protobuf));
        assert_eq!(SchemaType::from_registry(Some("JSON")), Ok(SchemaType::Json));
        assert_eq!(SchemaType::from_registry(Some("XML")).unwrap_err().to_string(), "unknown schemaType");
    }

    #[test]
    fn a_cause_is_cut_to_one_short_line() {
        let long = format!("line\n{}", "x".repeat(500));
        let message = DecodeError::caused("bad", long).to_string();
        assert!(message.starts_with("bad: line x"), "{message}");
        assert_eq!(message.chars().count(), "bad: ".len() + MAX_CAUSE_CHARS + 1);
    }

    #[test]
    fn compiled_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Compiled>();
    }

    /// Records per second rendering a typical record of about 200 bytes, Avro then Protobuf, on one core:
    /// `cargo test --release -p confluent-consume-native render_rate -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing, not a check: run by hand for the figure in the README's rendering section"]
    fn render_rate() {
        use apache_avro::types::Value;
        use prost_reflect::prost::Message;

        let avro_text = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
            {"name":"id","type":"string"},{"name":"customer","type":"string"},{"name":"quantity","type":"long"},
            {"name":"price","type":"double"},{"name":"status","type":{"type":"enum","name":"S","symbols":["NEW","PAID"]}},
            {"name":"note","type":["null","string"]},{"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"tags","type":{"type":"array","items":"string"}},{"name":"city","type":"string"},
            {"name":"street","type":"string"}]}"#;
        let s = |v: &str| Value::String(v.into());
        let avro_value = Value::Record(vec![
            ("id".into(), s("8f14e45f-ceea-467f-a0e6-7b9d3c2a1b00")),
            ("customer".into(), s("customer-000123456@example.com")),
            ("quantity".into(), Value::Long(12)),
            ("price".into(), Value::Double(1234.5)),
            ("status".into(), Value::Enum(1, "PAID".into())),
            ("note".into(), Value::Union(1, Box::new(s("leave the parcel at the front door, please")))),
            ("at".into(), Value::TimestampMillis(1_700_000_000_123)),
            ("tags".into(), Value::Array(vec![s("express"), s("gift"), s("fragile")])),
            ("city".into(), s("Wellington")),
            ("street".into(), s("221B Lambton Quay, Level 3")),
        ]);
        let avro_body =
            apache_avro::to_avro_datum(&apache_avro::Schema::parse_str(avro_text).unwrap(), avro_value).unwrap();
        let proto_text = r#"syntax = "proto3"; package shop; import "google/protobuf/timestamp.proto";
            message Order { string id = 1; string customer = 2; int64 quantity = 3; double price = 4;
              enum S { NEW = 0; PAID = 1; } S status = 5; optional string note = 6;
              google.protobuf.Timestamp at = 7; repeated string tags = 8; string city = 9; string street = 10; }"#;
        let proto = Schema { schema_type: SchemaType::Protobuf, text: proto_text.into(), references: Vec::new() };
        let descriptor = protobuf::Decoder::compile(&proto).unwrap().first_message();
        let json = r#"{"id":"8f14e45f-ceea-467f-a0e6-7b9d3c2a1b00","customer":"customer-000123456@example.com",
            "quantity":"12","price":1234.5,"status":"PAID","note":"leave the parcel at the front door, please",
            "at":"2023-11-14T22:13:20.123Z","tags":["express","gift","fragile"],"city":"Wellington",
            "street":"221B Lambton Quay, Level 3"}"#;
        let message =
            prost_reflect::DynamicMessage::deserialize(descriptor, &mut serde_json::Deserializer::from_str(json))
                .unwrap();
        let mut proto_body = vec![0];
        proto_body.extend(message.encode_to_vec());

        let avro = Schema { schema_type: SchemaType::Avro, text: avro_text.into(), references: Vec::new() };
        for (name, schema, body) in [("Avro", avro, avro_body), ("Protobuf", proto, proto_body)] {
            let compiled = compile(&schema).unwrap();
            let mut out = Vec::with_capacity(1024);
            let records = 200_000;
            let start = std::time::Instant::now();
            for _ in 0..records {
                out.clear();
                compiled.render(&body, &mut out).unwrap();
            }
            let seconds = start.elapsed().as_secs_f64();
            eprintln!(
                "{name}: {} body bytes -> {} JSON bytes, {:.0} records/s ({:.2} µs each)",
                body.len(),
                out.len(),
                f64::from(records) / seconds,
                seconds * 1e6 / f64::from(records)
            );
        }
    }
}
