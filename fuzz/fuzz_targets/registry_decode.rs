//! Arbitrary bytes as a record value in Confluent's wire format → `wire::split` → the schema its id selects
//! (Avro with a reference, unions and logical types; a recursive Avro type; Protobuf with nested messages, an
//! import and a well-known type; JSON Schema with a reference) → `Compiled::render`. A rendered record is
//! valid JSON with no raw line break; a refused one leaves the output as it was and names a short cause.
#![no_main]

use std::sync::OnceLock;

use confluent_consume_native::registry::{compile, wire, Compiled, Reference, Schema, SchemaType};
use libfuzzer_sys::fuzz_target;

const AVRO_ADDRESS: &str = r#"{"type":"record","name":"Address","namespace":"geo","fields":[
    {"name":"city","type":"string"},{"name":"zip","type":["null","int"]}]}"#;
const AVRO_EVENT: &str = r#"{"type":"record","name":"Event","namespace":"fz","fields":[
    {"name":"id","type":"long"},
    {"name":"name","type":["null","string"]},
    {"name":"home","type":"geo.Address"},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"attrs","type":{"type":"map","values":["null","double"]}},
    {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B","C"]}},
    {"name":"hash","type":{"type":"fixed","name":"Hash","size":4}},
    {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
    {"name":"ratio","type":"float"},
    {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"extra","type":["null","int","boolean","bytes","Kind","geo.Address",{"type":"array","items":"Kind"}]}]}"#;
const AVRO_NODE: &str = r#"{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},
    {"name":"children","type":{"type":"array","items":"Node"}},{"name":"next","type":["null","Node"]}]}"#;
const PROTO_MONEY: &str = r#"syntax = "proto3"; package common;
    message Money { string currency_code = 1; int64 units = 2; }"#;
const PROTO_ORDER: &str = r#"syntax = "proto3"; package shop;
    import "google/protobuf/timestamp.proto";
    import "google/protobuf/struct.proto";
    import "common/money.proto";
    message Order {
      message Item { message Detail { bool fragile = 1; bytes raw = 2; } string sku = 1; Detail detail = 2; }
      enum Status { UNKNOWN = 0; SHIPPED = 1; }
      string order_id = 1;
      int64 quantity = 2;
      bytes blob = 3;
      Status status = 4;
      google.protobuf.Timestamp created_at = 5;
      common.Money price = 6;
      repeated Item items = 7;
      map<string, sint64> counts = 8;
      oneof choice { double ratio = 9; float share = 10; }
      google.protobuf.Struct extra = 11;
      Order parent = 12;
    }
    message Other { fixed64 x = 1; sfixed32 y = 2; uint32 z = 3; }"#;
const JSON_ADDRESS: &str = r#"{"type":"object","properties":{"city":{"type":"string","maxLength":20}},"required":["city"]}"#;
const JSON_PERSON: &str = r#"{"type":"object","properties":{"name":{"type":"string","pattern":"^[a-z]+$"},
    "age":{"type":"integer","minimum":0},"address":{"$ref":"address.json"},
    "tags":{"type":"array","items":{"type":"string"},"uniqueItems":true}},"required":["name"]}"#;

fn schema(schema_type: SchemaType, text: &str, references: Vec<Reference>) -> Schema {
    Schema { schema_type, text: text.into(), references }
}

fn reference(name: &str, schema: Schema) -> Reference {
    Reference { name: name.into(), schema }
}

/// The schemas, by schema id modulo their count.
fn compiled() -> &'static [Compiled] {
    static COMPILED: OnceLock<Vec<Compiled>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        use SchemaType::{Avro, Json, Protobuf};
        [
            schema(Avro, AVRO_EVENT, vec![reference("geo.Address", schema(Avro, AVRO_ADDRESS, Vec::new()))]),
            schema(Avro, AVRO_NODE, Vec::new()),
            schema(Protobuf, PROTO_ORDER, vec![reference("common/money.proto", schema(Protobuf, PROTO_MONEY, Vec::new()))]),
            schema(Json, JSON_PERSON, vec![reference("address.json", schema(Json, JSON_ADDRESS, Vec::new()))]),
        ]
        .iter()
        .map(|s| compile(s).expect("the fuzz schemas compile"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((id, body)) = wire::split(data) else { return };
    let schemas = compiled();
    let compiled = &schemas[id as usize % schemas.len()];
    let mut out = b"[".to_vec();
    match compiled.render(body, &mut out) {
        Ok(()) => {
            assert!(!out[1..].contains(&b'\n') && !out[1..].contains(&b'\r'), "raw line break in a rendered record");
            out.push(b']');
            serde_json::from_slice::<serde_json::Value>(&out).expect("a rendered record is one JSON value");
        }
        Err(err) => {
            assert_eq!(out, b"[", "a refused record left output behind");
            let cause = err.to_string();
            assert!(!cause.is_empty() && cause.chars().count() < 200 && !cause.contains('\n'), "cause: {cause}");
        }
    }
});
