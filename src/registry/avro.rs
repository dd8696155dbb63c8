//! Avro records rendered as Confluent's own JSON conversion prints them (`kafka-avro-console-consumer`,
//! REST Proxy): Avro's JSON encoding of the writer's schema. A union is `null` or `{"<branch type>":value}`,
//! bytes and fixed are strings of one code point per byte (U+0000–U+00FF), and a logical type prints as its
//! underlying type (a decimal as its bytes, a timestamp as its long). README.md, "Schema Registry: how
//! records render", has the full table.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use apache_avro::headers::HeaderBuilder;
use apache_avro::schema::{Name, Namespace, ResolvedSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::{GenericSingleObjectReader, Schema as AvroSchema};

use super::schema::{DecodeError, Schema};
use crate::encode::write_str;

/// A writer's schema parsed with the named types of its references.
pub(crate) struct Decoder {
    /// The record's schema as parsed, its references' named types left as names.
    main: AvroSchema,
    /// Every named type by its full name, to follow a `Schema::Ref` while rendering.
    names: HashMap<Name, AvroSchema>,
    /// A type contains itself: a record can nest as deep as it is long (see `render`).
    recursive: bool,
    /// The record's schema with its references written in ([`self_contained`]), its names resolved once:
    /// `from_avro_datum_schemata` would resolve every named type again for each record.
    reader: GenericSingleObjectReader,
}

/// Confluent's framing has no Avro single-object header (its own 5 bytes are already gone): the library's
/// single-object reader is given an empty one, and so decodes a bare datum with names resolved in advance.
struct NoHeader;

impl HeaderBuilder for NoHeader {
    fn build_header(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// The library decodes (and drops) a value recursively, a few KiB of stack per level. A recursive type nests
/// at most one level per byte of the record (each level takes a union index or a block count), so a record
/// longer than this may need more stack than the consumer thread has, and is decoded on a thread of its own
/// with a stack sized for its length.
const INLINE_BYTES: usize = 64;
/// Stack reserved per byte of such a record: above the measured use per level (about 4 KiB), with room for
/// unoptimized builds. Only the pages a record really reaches are ever touched.
const STACK_PER_BYTE: usize = 8 << 10;
/// Longest record of a recursive type that is decoded: its stack is reserved, not used, but stays bounded.
const MAX_RECURSIVE_BYTES: usize = 128 << 10;
/// Longest string, bytes, array or map the library allocates for: it reserves a declared length before
/// reading the items, so a 6-byte record declaring 2^29 items would otherwise ask for gigabytes.
const MAX_ITEMS: usize = 16 << 20;

impl Decoder {
    /// Parses the schema together with its references' named types.
    pub(crate) fn compile(schema: &Schema) -> Result<Self, DecodeError> {
        let main = underlying_types(&schema.text)?;
        let references =
            schema.all_references().iter().map(|r| underlying_types(&r.schema.text)).collect::<Result<Vec<_>, _>>()?;
        let (main, referenced) = AvroSchema::parse_str_with_list(&main, &references)
            .map_err(|e| DecodeError::caused("Avro schema refused", e))?;
        let mut schemata = referenced;
        schemata.push(main);
        let resolved = ResolvedSchema::try_from(schemata.iter().collect::<Vec<_>>())
            .map_err(|e| DecodeError::caused("Avro schema refused", e))?;
        let names = resolved.get_names().iter().map(|(name, schema)| (name.clone(), (*schema).clone())).collect();
        apache_avro::util::max_allocation_bytes(MAX_ITEMS);
        let main = schemata.pop().ok_or_else(mismatch)?;
        let standalone = self_contained(&main, &names, &None, &mut HashSet::new())?;
        let reader = GenericSingleObjectReader::new_with_header_builder(standalone, NoHeader)
            .map_err(|e| DecodeError::caused("Avro schema refused", e))?;
        let mut decoder = Self { main, names, recursive: false, reader };
        decoder.recursive = decoder.contains_itself(&decoder.main, &None, &mut Vec::new());
        Ok(decoder)
    }

    /// Decodes one record with the writer's schema and appends its JSON. Bytes after the record are ignored,
    /// as Confluent's deserializer ignores them.
    pub(crate) fn render(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if !self.recursive || body.len() <= INLINE_BYTES {
            return self.render_here(body, out);
        }
        if body.len() > MAX_RECURSIVE_BYTES {
            return Err(DecodeError::new("Avro record of a recursive type longer than 128 KiB"));
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("cc-avro-deep".into())
                .stack_size(body.len() * STACK_PER_BYTE + (1 << 20))
                .spawn_scoped(scope, || self.render_here(body, out))
                .map_err(|_| DecodeError::new("no thread to decode a deep Avro record"))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn render_here(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let mut reader = body;
        let value =
            self.reader.read_value(&mut reader).map_err(|e| DecodeError::caused("not an Avro record of its schema", e))?;
        self.write(out, &value, &self.main, &None)
    }

    /// Writes `value`, decoded with `schema`, in Avro's JSON encoding.
    fn write(
        &self,
        out: &mut Vec<u8>,
        value: &Value,
        schema: &AvroSchema,
        namespace: &Namespace,
    ) -> Result<(), DecodeError> {
        match (value, schema) {
            (_, AvroSchema::Ref { name }) => {
                let name = name.fully_qualified_name(namespace);
                let named =
                    self.names.get(&name).ok_or_else(|| DecodeError::new("Avro schema names an unknown type"))?;
                self.write(out, value, named, &name.namespace)?;
            }
            (Value::Null, _) => out.extend_from_slice(b"null"),
            (Value::Boolean(b), _) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            (Value::Int(i), _) => write_display(out, i),
            (Value::Long(l), _) => write_display(out, l),
            (Value::Float(f), _) => write_f32(out, *f),
            (Value::Double(d), _) => write_f64(out, *d),
            (Value::Bytes(bytes) | Value::Fixed(_, bytes), _) => write_str(out, &latin1(bytes)),
            (Value::String(s) | Value::Enum(_, s), _) => write_str(out, s),
            (Value::Union(_, inner), _) if matches!(**inner, Value::Null) => out.extend_from_slice(b"null"),
            (Value::Union(index, inner), AvroSchema::Union(union)) => {
                let branch = usize::try_from(*index).ok().and_then(|i| union.variants().get(i)).ok_or_else(mismatch)?;
                out.push(b'{');
                write_str(out, &branch_name(branch, namespace));
                out.push(b':');
                self.write(out, inner, branch, namespace)?;
                out.push(b'}');
            }
            (Value::Array(items), AvroSchema::Array(array)) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write(out, item, &array.items, namespace)?;
                }
                out.push(b']');
            }
            (Value::Map(entries), AvroSchema::Map(map)) => {
                // A map decodes into a HashMap: sorted keys make the same record render the same bytes.
                let mut keys: Vec<&String> = entries.keys().collect();
                keys.sort_unstable();
                out.push(b'{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, key);
                    out.push(b':');
                    self.write(out, &entries[key], &map.types, namespace)?;
                }
                out.push(b'}');
            }
            (Value::Record(fields), AvroSchema::Record(record)) => {
                let namespace = &record.name.fully_qualified_name(namespace).namespace;
                if fields.len() != record.fields.len() {
                    return Err(mismatch());
                }
                out.push(b'{');
                for (i, ((name, field), field_schema)) in fields.iter().zip(&record.fields).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, name);
                    out.push(b':');
                    self.write(out, field, &field_schema.schema, namespace)?;
                }
                out.push(b'}');
            }
            _ => return Err(mismatch()),
        }
        Ok(())
    }
}

impl Decoder {
    /// Whether `schema` reaches a named type that `expanding` (the records it sits in) already holds.
    fn contains_itself(&self, schema: &AvroSchema, namespace: &Namespace, expanding: &mut Vec<Name>) -> bool {
        match schema {
            AvroSchema::Ref { name } => {
                let name = name.fully_qualified_name(namespace);
                expanding.contains(&name)
                    || self
                        .names
                        .get(&name)
                        .is_some_and(|named| self.contains_itself(named, &name.namespace, expanding))
            }
            AvroSchema::Record(record) => {
                let name = record.name.fully_qualified_name(namespace);
                if expanding.contains(&name) {
                    return true;
                }
                expanding.push(name.clone());
                let found =
                    record.fields.iter().any(|field| self.contains_itself(&field.schema, &name.namespace, expanding));
                expanding.pop();
                found
            }
            AvroSchema::Array(array) => self.contains_itself(&array.items, namespace, expanding),
            AvroSchema::Map(map) => self.contains_itself(&map.types, namespace, expanding),
            AvroSchema::Union(union) => {
                union.variants().iter().any(|branch| self.contains_itself(branch, namespace, expanding))
            }
            _ => false,
        }
    }
}

/// `schema` with each named type of a reference written out where it is first used and named from then
/// on, as a schema without references would be written: the library then resolves its names once. The
/// decoded values are the same, so `write` still follows the schema as parsed.
fn self_contained(
    schema: &AvroSchema,
    names: &HashMap<Name, AvroSchema>,
    namespace: &Namespace,
    defined: &mut HashSet<Name>,
) -> Result<AvroSchema, DecodeError> {
    Ok(match schema {
        AvroSchema::Ref { name } => {
            let name = name.fully_qualified_name(namespace);
            match names.get(&name) {
                Some(named) if !defined.contains(&name) => self_contained(named, names, &name.namespace, defined)?,
                _ => schema.clone(),
            }
        }
        AvroSchema::Record(record) => {
            let name = record.name.fully_qualified_name(namespace);
            defined.insert(name.clone());
            let mut record = record.clone();
            for field in &mut record.fields {
                field.schema = self_contained(&field.schema, names, &name.namespace, defined)?;
            }
            AvroSchema::Record(record)
        }
        AvroSchema::Enum(enumeration) => {
            defined.insert(enumeration.name.fully_qualified_name(namespace));
            schema.clone()
        }
        AvroSchema::Fixed(fixed) => {
            defined.insert(fixed.name.fully_qualified_name(namespace));
            schema.clone()
        }
        AvroSchema::Array(array) => {
            let mut array = array.clone();
            array.items = Box::new(self_contained(&array.items, names, namespace, defined)?);
            AvroSchema::Array(array)
        }
        AvroSchema::Map(map) => {
            let mut map = map.clone();
            map.types = Box::new(self_contained(&map.types, names, namespace, defined)?);
            AvroSchema::Map(map)
        }
        AvroSchema::Union(union) => {
            let variants = union
                .variants()
                .iter()
                .map(|variant| self_contained(variant, names, namespace, defined))
                .collect::<Result<Vec<_>, _>>()?;
            AvroSchema::Union(UnionSchema::new(variants).map_err(|e| DecodeError::caused("Avro schema refused", e))?)
        }
        _ => schema.clone(),
    })
}

/// The library decoded a value its schema does not describe (a library bug, never a bad record).
fn mismatch() -> DecodeError {
    DecodeError::new("Avro value does not match its schema")
}

/// The schema text with every `logicalType` removed, so that the library decodes each logical type as its
/// underlying type: Confluent's JSON conversion prints that (a decimal's bytes, a date's int), and the raw
/// bytes of a decimal or a duration are kept exactly as written.
fn underlying_types(text: &str) -> Result<String, DecodeError> {
    let mut json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::caused("Avro schema is not JSON", e))?;
    strip_logical_types(&mut json);
    Ok(json.to_string())
}

/// Removes `logicalType` from every type object (one with a `type` name), leaving field defaults alone.
fn strip_logical_types(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::Object(members) => {
            if members.get("type").is_some_and(serde_json::Value::is_string) {
                members.remove("logicalType");
            }
            for (key, member) in members.iter_mut() {
                if key != "default" {
                    strip_logical_types(member);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_logical_types),
        _ => {}
    }
}

/// The name Avro's JSON encoding gives a union branch: a named type's full name, otherwise the type's name.
fn branch_name(branch: &AvroSchema, namespace: &Namespace) -> String {
    let name = match branch {
        AvroSchema::Record(r) => return r.name.fully_qualified_name(namespace).fullname(None),
        AvroSchema::Enum(e) => return e.name.fully_qualified_name(namespace).fullname(None),
        AvroSchema::Fixed(f) => return f.name.fully_qualified_name(namespace).fullname(None),
        AvroSchema::Ref { name } => return name.fully_qualified_name(namespace).fullname(None),
        AvroSchema::Null => "null",
        AvroSchema::Boolean => "boolean",
        AvroSchema::Int => "int",
        AvroSchema::Long => "long",
        AvroSchema::Float => "float",
        AvroSchema::Double => "double",
        AvroSchema::Bytes => "bytes",
        AvroSchema::String => "string",
        AvroSchema::Array(_) => "array",
        AvroSchema::Map(_) => "map",
        // Logical types are removed before parsing (`underlying_types`); a union cannot hold a union.
        _ => "unknown",
    };
    name.to_owned()
}

/// Bytes as Avro's JSON encoding writes them: each byte the code point of the same value.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

fn write_display(out: &mut Vec<u8>, value: impl std::fmt::Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// A float: the shortest text that reads back the same float.
fn write_f32(out: &mut Vec<u8>, value: f32) {
    if value.is_finite() {
        // Writing a finite float into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &value);
    } else {
        write_non_finite(out, f64::from(value));
    }
}

/// A double: the shortest text that reads back the same double.
fn write_f64(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        // Writing a finite double into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &value);
    } else {
        write_non_finite(out, value);
    }
}

/// NaN and the infinities, which JSON has no number for, as the strings Jackson (Confluent's JSON writer)
/// prints by default.
fn write_non_finite(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(if value.is_nan() {
        b"\"NaN\""
    } else if value > 0.0 {
        b"\"Infinity\""
    } else {
        b"\"-Infinity\""
    });
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;
    use apache_avro::{to_avro_datum, Schema as AvroSchema};

    use crate::registry::schema::{compile, Reference, Schema, SchemaType};

    fn avro(text: &str, references: Vec<Reference>) -> Schema {
        Schema { schema_type: SchemaType::Avro, text: text.into(), references }
    }

    /// The record encoded with `writer` (a self-contained schema), rendered with `schema`.
    fn render_with(schema: &Schema, writer: &str, value: Value) -> String {
        let body = to_avro_datum(&AvroSchema::parse_str(writer).unwrap(), value).unwrap();
        let mut out = Vec::new();
        compile(schema).unwrap().render(&body, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn render(text: &str, value: Value) -> String {
        render_with(&avro(text, Vec::new()), text, value)
    }

    fn record(fields: &[(&str, Value)]) -> Value {
        Value::Record(fields.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect())
    }

    #[test]
    fn primitives_render_as_avro_json_encoding() {
        let schema = r#"{"type":"record","name":"P","fields":[
            {"name":"n","type":"null"},{"name":"b","type":"boolean"},{"name":"i","type":"int"},
            {"name":"l","type":"long"},{"name":"big","type":"long"},{"name":"s","type":"string"}]}"#;
        let value = record(&[
            ("n", Value::Null),
            ("b", Value::Boolean(true)),
            ("i", Value::Int(-7)),
            ("l", Value::Long(1_700_000_000_000)),
            ("big", Value::Long(9_007_199_254_740_993)),
            ("s", Value::String("é\n\"".into())),
        ]);
        assert_eq!(
            render(schema, value),
            r#"{"n":null,"b":true,"i":-7,"l":1700000000000,"big":9007199254740993,"s":"é\n\""}"#
        );
    }

    #[test]
    fn floats_render_shortest_and_non_finite_as_jackson_strings() {
        let schema = r#"{"type":"record","name":"F","fields":[{"name":"f","type":"float"},
            {"name":"d","type":"double"},{"name":"nan","type":"double"},{"name":"inf","type":"float"},
            {"name":"ninf","type":"double"}]}"#;
        let value = record(&[
            ("f", Value::Float(0.1)),
            ("d", Value::Double(1e21)),
            ("nan", Value::Double(f64::NAN)),
            ("inf", Value::Float(f32::INFINITY)),
            ("ninf", Value::Double(f64::NEG_INFINITY)),
        ]);
        assert_eq!(render(schema, value), r#"{"f":0.1,"d":1e+21,"nan":"NaN","inf":"Infinity","ninf":"-Infinity"}"#);
    }

    #[test]
    fn bytes_and_fixed_render_one_code_point_per_byte() {
        let schema = r#"{"type":"record","name":"B","fields":[{"name":"b","type":"bytes"},
            {"name":"x","type":{"type":"fixed","name":"Two","size":2}}]}"#;
        let value = record(&[("b", Value::Bytes(vec![0, 0x41, 0xff])), ("x", Value::Fixed(2, vec![1, 0xe9]))]);
        assert_eq!(render(schema, value), r#"{"b":"\u0000Aÿ","x":"\u0001é"}"#);
    }

    #[test]
    fn enums_arrays_maps_and_nested_records_render_as_json() {
        let schema = r#"{"type":"record","name":"C","fields":[
            {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
            {"name":"a","type":{"type":"array","items":"int"}},
            {"name":"m","type":{"type":"map","values":"string"}},
            {"name":"r","type":{"type":"record","name":"In","fields":[{"name":"x","type":"int"}]}}]}"#;
        let value = record(&[
            ("e", Value::Enum(1, "B".into())),
            ("a", Value::Array(vec![Value::Int(1), Value::Int(2)])),
            (
                "m",
                Value::Map(
                    [("z".to_owned(), Value::String("1".into())), ("a".into(), Value::String("2".into()))].into(),
                ),
            ),
            ("r", record(&[("x", Value::Int(3))])),
        ]);
        assert_eq!(render(schema, value), r#"{"e":"B","a":[1,2],"m":{"a":"2","z":"1"},"r":{"x":3}}"#);
    }

    #[test]
    fn a_union_renders_null_bare_and_any_other_branch_under_its_type_name() {
        let schema = r#"{"type":"record","name":"U","namespace":"com.example","fields":[
            {"name":"opt","type":["null","string"]},{"name":"none","type":["null","string"]},
            {"name":"many","type":["null","int",{"type":"record","name":"R","fields":[{"name":"x","type":"long"}]}]},
            {"name":"again","type":["null","int","R"]},
            {"name":"list","type":["null",{"type":"array","items":"int"}]}]}"#;
        let value = record(&[
            ("opt", Value::Union(1, Box::new(Value::String("x".into())))),
            ("none", Value::Union(0, Box::new(Value::Null))),
            ("many", Value::Union(2, Box::new(record(&[("x", Value::Long(5))])))),
            ("again", Value::Union(1, Box::new(Value::Int(4)))),
            ("list", Value::Union(1, Box::new(Value::Array(vec![Value::Int(1)])))),
        ]);
        assert_eq!(
            render(schema, value),
            r#"{"opt":{"string":"x"},"none":null,"many":{"com.example.R":{"x":5}},"again":{"int":4},"list":{"array":[1]}}"#
        );
    }

    #[test]
    fn logical_types_render_as_their_underlying_types() {
        let schema = r#"{"type":"record","name":"L","fields":[
            {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":6,"scale":2}},
            {"name":"fdec","type":{"type":"fixed","name":"D3","size":3,"logicalType":"decimal","precision":6,"scale":2}},
            {"name":"id","type":{"type":"string","logicalType":"uuid"}},
            {"name":"day","type":{"type":"int","logicalType":"date"}},
            {"name":"tm","type":{"type":"int","logicalType":"time-millis"}},
            {"name":"tu","type":{"type":"long","logicalType":"time-micros"}},
            {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"tsu","type":{"type":"long","logicalType":"timestamp-micros"}},
            {"name":"lts","type":{"type":"long","logicalType":"local-timestamp-millis"}},
            {"name":"ltsu","type":{"type":"long","logicalType":"local-timestamp-micros"}},
            {"name":"dur","type":{"type":"fixed","name":"Dur","size":12,"logicalType":"duration"}},
            {"name":"optts","type":["null",{"type":"long","logicalType":"timestamp-millis"}]}]}"#;
        let uuid = "4f2c7d1e-0b8a-4c3e-9d5f-6a7b8c9d0e1f";
        let value = record(&[
            ("dec", Value::Decimal(vec![0x04, 0xd2].into())),
            ("fdec", Value::Decimal(vec![0xff, 0xfb, 0x2e].into())),
            ("id", Value::Uuid(uuid.parse().unwrap())),
            ("day", Value::Date(19_000)),
            ("tm", Value::TimeMillis(3_600_000)),
            ("tu", Value::TimeMicros(1)),
            ("ts", Value::TimestampMillis(1_700_000_000_123)),
            ("tsu", Value::TimestampMicros(1_700_000_000_123_456)),
            ("lts", Value::LocalTimestampMillis(5)),
            ("ltsu", Value::LocalTimestampMicros(6)),
            (
                "dur",
                Value::Duration(apache_avro::Duration::new(
                    apache_avro::Months::new(1),
                    apache_avro::Days::new(2),
                    apache_avro::Millis::new(3),
                )),
            ),
            ("optts", Value::Union(1, Box::new(Value::TimestampMillis(7)))),
        ]);
        assert_eq!(
            render(schema, value),
            format!(
                r#"{{"dec":"\u0004Ò","fdec":"ÿû.","id":"{uuid}","day":19000,"tm":3600000,"tu":1,"ts":1700000000123,"tsu":1700000000123456,"lts":5,"ltsu":6,"dur":"\u0001\u0000\u0000\u0000\u0002\u0000\u0000\u0000\u0003\u0000\u0000\u0000","optts":{{"long":7}}}}"#
            )
        );
    }

    #[test]
    fn named_types_come_from_references_and_their_own_references() {
        let country = r#"{"type":"enum","name":"Country","namespace":"geo","symbols":["FR","NZ"]}"#;
        let address = r#"{"type":"record","name":"Address","namespace":"geo","fields":[
            {"name":"city","type":"string"},{"name":"country","type":"Country"}]}"#;
        let main = r#"{"type":"record","name":"Person","fields":[{"name":"home","type":"geo.Address"},
            {"name":"work","type":["null","geo.Address"]}]}"#;
        let inline = r#"{"type":"record","name":"Person","fields":[{"name":"home","type":{"type":"record",
            "name":"Address","namespace":"geo","fields":[{"name":"city","type":"string"},{"name":"country",
            "type":{"type":"enum","name":"Country","symbols":["FR","NZ"]}}]}},{"name":"work","type":["null","geo.Address"]}]}"#;
        let country = Reference { name: "geo.Country".into(), schema: avro(country, Vec::new()) };
        let address = Reference { name: "geo.Address".into(), schema: avro(address, vec![country]) };
        let home = record(&[("city", Value::String("Paris".into())), ("country", Value::Enum(0, "FR".into()))]);
        let work = record(&[("city", Value::String("Wellington".into())), ("country", Value::Enum(1, "NZ".into()))]);
        let value = record(&[("home", home), ("work", Value::Union(1, Box::new(work)))]);
        assert_eq!(
            render_with(&avro(main, vec![address]), inline, value),
            r#"{"home":{"city":"Paris","country":"FR"},"work":{"geo.Address":{"city":"Wellington","country":"NZ"}}}"#
        );
    }

    #[test]
    fn a_missing_reference_fails_to_compile_with_a_short_cause() {
        let main = r#"{"type":"record","name":"Person","fields":[{"name":"home","type":"geo.Address"}]}"#;
        let err = compile(&avro(main, Vec::new())).err().unwrap().to_string();
        assert!(err.starts_with("Avro schema refused: "), "{err}");
        assert!(err.chars().count() < 200, "{err}");
    }

    #[test]
    fn a_schema_that_is_not_json_fails_to_compile() {
        let err = compile(&avro("{\"type\":", Vec::new())).err().unwrap().to_string();
        assert!(err.starts_with("Avro schema is not JSON: "), "{err}");
    }

    #[test]
    fn a_truncated_body_is_an_error_and_leaves_the_output_as_it_was() {
        let schema =
            r#"{"type":"record","name":"T","fields":[{"name":"s","type":"string"},{"name":"l","type":"long"}]}"#;
        let compiled = compile(&avro(schema, Vec::new())).unwrap();
        let body = to_avro_datum(
            &AvroSchema::parse_str(schema).unwrap(),
            record(&[("s", Value::String("hello".into())), ("l", Value::Long(1 << 40))]),
        )
        .unwrap();
        let mut out = b"before".to_vec();
        for end in 0..body.len() {
            let err = compiled.render(&body[..end], &mut out).unwrap_err().to_string();
            assert!(err.starts_with("not an Avro record of its schema: "), "{err}");
            assert_eq!(out, b"before");
        }
        compiled.render(&body, &mut out).unwrap();
        assert_eq!(out, br#"before{"s":"hello","l":1099511627776}"#);
    }

    const NODE: &str = r#"{"type":"record","name":"Node","namespace":"t","fields":[{"name":"v","type":"int"},
        {"name":"next","type":["null","Node"]}]}"#;

    /// A list of `depth` nodes: each node's int 0 and union branch 1, then a last node's branch 0 (null).
    fn nested(depth: usize) -> Vec<u8> {
        let mut body = [0u8, 2].repeat(depth);
        body.extend([0, 0]);
        body
    }

    #[test]
    fn a_recursive_type_renders_nested_values() {
        assert_eq!(
            render(NODE, record(&[("v", Value::Int(1)), ("next", Value::Union(0, Box::new(Value::Null)))])),
            r#"{"v":1,"next":null}"#
        );
        let compiled = compile(&avro(NODE, Vec::new())).unwrap();
        let mut out = Vec::new();
        compiled.render(&nested(2), &mut out).unwrap();
        assert_eq!(out, br#"{"v":0,"next":{"t.Node":{"v":0,"next":{"t.Node":{"v":0,"next":null}}}}}"#);
    }

    #[test]
    fn a_record_of_a_recursive_type_nested_deeper_than_a_thread_stack_renders() {
        // 20 000 levels need about 80 MiB of stack, forty times a thread's default.
        let compiled = compile(&avro(NODE, Vec::new())).unwrap();
        let mut out = Vec::new();
        compiled.render(&nested(20_000), &mut out).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'{').count(), 2 * 20_000 + 1);
    }

    #[test]
    fn a_record_of_a_recursive_type_longer_than_the_bound_is_an_error() {
        let compiled = compile(&avro(NODE, Vec::new())).unwrap();
        let mut out = Vec::new();
        let err = compiled.render(&nested(70_000), &mut out).unwrap_err();
        assert_eq!(err.to_string(), "Avro record of a recursive type longer than 128 KiB");
    }

    #[test]
    fn a_declared_length_beyond_the_allocation_bound_is_an_error_not_an_allocation() {
        // 2^26 items or bytes (a zigzag varint), then nothing: above MAX_ITEMS, below the library's default
        let huge = [0x80, 0x80, 0x80, 0x40];
        for schema in [r#"{"type":"array","items":"long"}"#, r#""bytes""#] {
            let compiled = compile(&avro(schema, Vec::new())).unwrap();
            let err = compiled.render(&huge, &mut Vec::new()).unwrap_err().to_string();
            assert!(err.contains(&super::MAX_ITEMS.to_string()), "{err}");
        }
    }

    #[test]
    fn a_union_index_out_of_range_is_an_error() {
        let schema = r#"["null","string"]"#;
        let compiled = compile(&avro(schema, Vec::new())).unwrap();
        let mut out = Vec::new();
        assert!(compiled.render(&[4], &mut out).is_err());
        assert!(out.is_empty());
    }
}
