//! Protobuf records rendered as Confluent's own JSON conversion prints them: the proto3 JSON mapping
//! (`JsonFormat.printer().includingDefaultValueFields()`): lowerCamelCase JSON names, fields without presence
//! printed even at their default, 64-bit integers as strings, bytes as base64, enums by name, well-known
//! types in their own JSON forms (a Timestamp as RFC 3339). README.md, "Schema Registry: how records
//! render", has the full table.

use std::collections::HashMap;

use prost_reflect::prost::encoding::decode_varint;
use prost_reflect::{DescriptorPool, DynamicMessage, FileDescriptor, MessageDescriptor, SerializeOptions};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use super::schema::{DecodeError, Schema};

/// The name the schema's own text is compiled under; its references keep their import paths.
const MAIN_FILE: &str = "confluent-consume/registry-schema.proto";

/// A .proto file compiled with its imports, whose messages the records' indexes select.
pub(crate) struct Decoder {
    file: FileDescriptor,
    options: SerializeOptions,
}

impl Decoder {
    /// Compiles the schema's text with its references as the files it imports. `google/protobuf/*.proto`
    /// resolve even when the registry does not send them (Confluent's serializers leave them out).
    pub(crate) fn compile(schema: &Schema) -> Result<Self, DecodeError> {
        let mut sources = InMemory::default();
        for reference in schema.all_references() {
            sources.files.entry(reference.name.clone()).or_insert_with(|| reference.schema.text.clone());
        }
        sources.files.insert(MAIN_FILE.to_owned(), schema.text.clone());
        let mut resolver = ChainFileResolver::new();
        resolver.add(sources);
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler.open_file(MAIN_FILE).map_err(|e| DecodeError::caused("Protobuf schema refused", e))?;
        let pool: DescriptorPool = compiler.descriptor_pool();
        let file = pool.get_file_by_name(MAIN_FILE).ok_or_else(|| DecodeError::new("Protobuf schema refused"))?;
        Ok(Self { file, options: SerializeOptions::new().skip_default_fields(false) })
    }

    /// Reads the message indexes, decodes the message they name and appends its JSON.
    pub(crate) fn render(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let mut body = body;
        let message_type = self.message_type(&mut body)?;
        let message = DynamicMessage::decode(message_type, body)
            .map_err(|e| DecodeError::caused("not a Protobuf message of its schema", e))?;
        let mut serializer = serde_json::Serializer::new(&mut *out);
        message
            .serialize_with_options(&mut serializer, &self.options)
            .map_err(|e| DecodeError::caused("Protobuf message has no JSON form", e))
    }

    /// The message type named by Confluent's message indexes, which it writes after the schema id: a count,
    /// then that many indexes, each a zigzag varint, the first among the file's top-level messages and each
    /// next one among the previous one's nested messages. A count of 0 (a single 0 byte) means `[0]`.
    fn message_type(&self, body: &mut &[u8]) -> Result<MessageDescriptor, DecodeError> {
        let count = read_zigzag(body)?;
        if count == 0 {
            return self.file.messages().next().ok_or_else(unknown_index);
        }
        if count < 0 {
            return Err(DecodeError::new("Protobuf message indexes: negative count"));
        }
        let mut message_type: Option<MessageDescriptor> = None;
        // Every index takes at least one byte: a huge count ends at the body's end.
        for _ in 0..count {
            let index = usize::try_from(read_zigzag(body)?).map_err(|_| unknown_index())?;
            let next = match &message_type {
                None => self.file.messages().nth(index),
                Some(parent) => parent.child_messages().nth(index),
            };
            message_type = Some(next.ok_or_else(unknown_index)?);
        }
        message_type.ok_or_else(unknown_index)
    }
}

#[cfg(test)]
impl Decoder {
    /// The file's first message, for tests that build records.
    pub(crate) fn first_message(&self) -> MessageDescriptor {
        self.file.messages().next().expect("a message")
    }
}

fn unknown_index() -> DecodeError {
    DecodeError::new("Protobuf message indexes name no message of the schema")
}

/// One zigzag varint (Confluent writes the indexes as Java's zigzag-encoded varints).
fn read_zigzag(body: &mut &[u8]) -> Result<i64, DecodeError> {
    let raw = decode_varint(body).map_err(|_| DecodeError::new("Protobuf message indexes truncated"))?;
    #[allow(clippy::cast_possible_wrap)] // zigzag decoding reinterprets the bits
    Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
}

/// The schema's text and its references' texts, by the names `import` uses.
#[derive(Default)]
struct InMemory {
    files: HashMap<String, String>,
}

impl FileResolver for InMemory {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.files.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::prost::Message;
    use prost_reflect::DynamicMessage;

    use super::Decoder;
    use crate::registry::schema::{compile, Compiled, Reference, Schema, SchemaType};

    const MONEY: &str = r#"syntax = "proto3"; package common;
        message Money { string currency_code = 1; int64 units = 2; }"#;

    const ORDER: &str = r#"syntax = "proto3"; package shop;
        import "google/protobuf/timestamp.proto";
        import "common/money.proto";
        message Order {
          message Item { message Detail { bool fragile = 1; } string sku = 1; Detail detail = 2; }
          enum Status { UNKNOWN = 0; SHIPPED = 1; }
          string order_id = 1;
          int64 quantity = 2;
          bytes blob = 3;
          Status status = 4;
          google.protobuf.Timestamp created_at = 5;
          common.Money price = 6;
          repeated string tags = 7;
          map<string, int32> counts = 8;
          Item item = 9;
          double ratio = 10;
          optional string note = 11;
        }
        message Other { sint32 x = 1; }"#;

    fn schema() -> Schema {
        let money = Reference {
            name: "common/money.proto".into(),
            schema: Schema { schema_type: SchemaType::Protobuf, text: MONEY.into(), references: Vec::new() },
        };
        Schema { schema_type: SchemaType::Protobuf, text: ORDER.into(), references: vec![money] }
    }

    /// A message of the type at `path` (dotted, in package `shop`), from JSON, encoded after `indexes`.
    fn body(indexes: &[u8], path: &str, json: &str) -> Vec<u8> {
        let decoder = Decoder::compile(&schema()).unwrap();
        let descriptor = decoder.file.parent_pool().get_message_by_name(&format!("shop.{path}")).unwrap();
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let message = DynamicMessage::deserialize(descriptor, &mut deserializer).unwrap();
        let mut body = indexes.to_vec();
        body.extend(message.encode_to_vec());
        body
    }

    fn render(compiled: &Compiled, body: &[u8]) -> String {
        let mut out = Vec::new();
        compiled.render(body, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn error(compiled: &Compiled, body: &[u8]) -> String {
        let mut out = b"kept".to_vec();
        let err = compiled.render(body, &mut out).unwrap_err().to_string();
        assert_eq!(out, b"kept");
        err
    }

    #[test]
    fn the_first_message_renders_in_the_proto3_json_mapping_with_default_fields() {
        let compiled = compile(&schema()).unwrap();
        let json = r#"{"orderId":"o-1","quantity":"9007199254740993","blob":"AAEC/w==","status":"SHIPPED",
            "createdAt":"2023-11-14T22:13:20.5Z","price":{"currencyCode":"EUR","units":"12"},"tags":["a"],
            "counts":{"k":1}}"#;
        assert_eq!(
            render(&compiled, &body(&[0], "Order", json)),
            r#"{"orderId":"o-1","quantity":"9007199254740993","blob":"AAEC/w==","status":"SHIPPED","createdAt":"2023-11-14T22:13:20.500Z","price":{"currencyCode":"EUR","units":"12"},"tags":["a"],"counts":{"k":1},"ratio":0.0}"#
        );
    }

    #[test]
    fn an_empty_message_renders_every_field_without_presence_at_its_default() {
        let compiled = compile(&schema()).unwrap();
        assert_eq!(
            render(&compiled, &[0]),
            r#"{"orderId":"","quantity":"0","blob":"","status":"UNKNOWN","tags":[],"counts":{},"ratio":0.0}"#
        );
    }

    #[test]
    fn an_unknown_enum_number_renders_as_the_number_and_non_finite_doubles_as_strings() {
        let compiled = compile(&schema()).unwrap();
        let rendered = render(&compiled, &body(&[0], "Order", r#"{"status":7,"ratio":"NaN","note":"n"}"#));
        assert!(rendered.contains(r#""status":7"#), "{rendered}");
        assert!(rendered.contains(r#""ratio":"NaN""#), "{rendered}");
        assert!(rendered.contains(r#""note":"n""#), "{rendered}");
    }

    #[test]
    fn the_indexes_select_a_second_top_level_message() {
        let compiled = compile(&schema()).unwrap();
        // count 1, index 1, each a zigzag varint
        assert_eq!(render(&compiled, &body(&[2, 2], "Other", r#"{"x":-3}"#)), r#"{"x":-3}"#);
    }

    #[test]
    fn the_indexes_select_a_nested_message() {
        let compiled = compile(&schema()).unwrap();
        // [0, 0, 0]: Order, its first nested message Item, Item's first nested message Detail
        assert_eq!(
            render(&compiled, &body(&[6, 0, 0, 0], "Order.Item.Detail", r#"{"fragile":true}"#)),
            r#"{"fragile":true}"#
        );
        // [0, 0]: Item, whose unset message field is left out as Confluent's printer leaves it out
        assert_eq!(render(&compiled, &body(&[4, 0, 0], "Order.Item", r#"{"sku":"s"}"#)), r#"{"sku":"s"}"#);
    }

    #[test]
    fn an_explicit_single_zero_index_is_the_first_message_too() {
        let compiled = compile(&schema()).unwrap();
        assert_eq!(
            render(&compiled, &body(&[2, 0], "Order", r#"{"orderId":"x"}"#)),
            render(&compiled, &body(&[0], "Order", r#"{"orderId":"x"}"#))
        );
    }

    #[test]
    fn indexes_naming_no_message_are_errors() {
        let compiled = compile(&schema()).unwrap();
        let unknown = "Protobuf message indexes name no message of the schema";
        assert_eq!(error(&compiled, &[2, 4]), unknown); // [2]: there are two top-level messages
        assert_eq!(error(&compiled, &[4, 0, 8]), unknown); // [0, 4]: Order has two nested messages
        assert_eq!(error(&compiled, &[2, 1]), unknown); // [-1]
        assert_eq!(error(&compiled, &[1]), "Protobuf message indexes: negative count");
    }

    #[test]
    fn truncated_indexes_or_messages_are_errors() {
        let compiled = compile(&schema()).unwrap();
        assert_eq!(error(&compiled, &[]), "Protobuf message indexes truncated");
        assert_eq!(error(&compiled, &[0x80]), "Protobuf message indexes truncated");
        assert_eq!(error(&compiled, &[4, 0]), "Protobuf message indexes truncated");
        let full = body(&[0], "Order", r#"{"orderId":"order-1"}"#);
        let err = error(&compiled, &full[..full.len() - 1]);
        assert!(err.starts_with("not a Protobuf message of its schema: "), "{err}");
    }

    #[test]
    fn a_missing_import_or_bad_syntax_fails_to_compile() {
        let mut missing = schema();
        missing.references.clear();
        let err = compile(&missing).err().unwrap().to_string();
        assert!(err.starts_with("Protobuf schema refused: "), "{err}");
        let bad = Schema { schema_type: SchemaType::Protobuf, text: "message {".into(), references: Vec::new() };
        assert!(compile(&bad).err().unwrap().to_string().starts_with("Protobuf schema refused: "));
    }

    #[test]
    fn well_known_types_render_in_their_own_json_forms_without_being_referenced() {
        let text = r#"syntax = "proto3";
            import "google/protobuf/duration.proto"; import "google/protobuf/wrappers.proto";
            import "google/protobuf/struct.proto"; import "google/protobuf/empty.proto";
            import "google/protobuf/field_mask.proto";
            message W { google.protobuf.Duration d = 1; google.protobuf.Int64Value n = 2;
              google.protobuf.StringValue s = 3; google.protobuf.Struct st = 4; google.protobuf.Empty e = 5;
              google.protobuf.FieldMask m = 6; }"#;
        let schema = Schema { schema_type: SchemaType::Protobuf, text: text.into(), references: Vec::new() };
        let decoder = Decoder::compile(&schema).unwrap();
        let descriptor = decoder.file.messages().next().unwrap();
        let json = r#"{"d":"1.500s","n":"5","s":"x","st":{"a":[1,"b",null,true]},"e":{},"m":"a.b,cD"}"#;
        let message = DynamicMessage::deserialize(descriptor, &mut serde_json::Deserializer::from_str(json)).unwrap();
        let mut body = vec![0];
        body.extend(message.encode_to_vec());
        assert_eq!(
            render(&compile(&schema).unwrap(), &body),
            r#"{"d":"1.500s","n":"5","s":"x","st":{"a":[1.0,"b",null,true]},"e":{},"m":"a.b,cD"}"#
        );
    }

    #[test]
    fn a_reference_of_a_reference_is_imported() {
        let inner = Reference {
            name: "a/inner.proto".into(),
            schema: Schema {
                schema_type: SchemaType::Protobuf,
                text: r#"syntax = "proto3"; package a; message Inner { int32 v = 1; }"#.into(),
                references: Vec::new(),
            },
        };
        let outer = Reference {
            name: "a/outer.proto".into(),
            schema: Schema {
                schema_type: SchemaType::Protobuf,
                text: r#"syntax = "proto3"; package a; import "a/inner.proto"; message Outer { Inner inner = 1; }"#
                    .into(),
                references: vec![inner],
            },
        };
        let main = Schema {
            schema_type: SchemaType::Protobuf,
            text: r#"syntax = "proto3"; import "a/outer.proto"; message Top { a.Outer outer = 1; }"#.into(),
            references: vec![outer],
        };
        let compiled = compile(&main).unwrap();
        // Top{outer: Outer{inner: Inner{v: 5}}}: field 1 (len 4) { field 1 (len 2) { field 1 varint 5 } }
        assert_eq!(render(&compiled, &[0, 0x0a, 4, 0x0a, 2, 0x08, 5]), r#"{"outer":{"inner":{"v":5}}}"#);
    }
}
