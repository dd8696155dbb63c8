//! JSON Schema records: the body is the JSON document itself, validated against its schema and rendered
//! minified with its members in the order written.

use std::collections::HashMap;

use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde_json::Value;

use super::schema::{DecodeError, Schema};
use crate::encode::minified_json;

/// A compiled validator; references were resolved while compiling, from the schema's references only.
pub(crate) struct Decoder {
    validator: Validator,
}

impl Decoder {
    /// Compiles the schema with its references, each served under its name (the `$ref` URL). Nothing is ever
    /// fetched from the network or the file system. A schema that names no `$schema` is read as draft-07,
    /// the draft Confluent's serializers assume.
    pub(crate) fn compile(schema: &Schema) -> Result<Self, DecodeError> {
        let contents = parse(&schema.text)?;
        let mut documents = HashMap::new();
        for reference in schema.all_references() {
            documents.insert(reference.name.clone(), parse(&reference.schema.text)?);
        }
        let mut options = jsonschema::options().with_retriever(References { documents });
        if contents.get("$schema").is_none() {
            options = options.with_draft(Draft::Draft7);
        }
        let validator = options.build(&contents).map_err(|e| DecodeError::caused("JSON schema refused", e.masked()))?;
        Ok(Self { validator })
    }

    /// Validates the document and appends it minified.
    pub(crate) fn render(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let document: Value =
            serde_json::from_slice(body).map_err(|e| DecodeError::caused("not a JSON document", e))?;
        if let Err(violation) = self.validator.validate(&document) {
            let at = violation.instance_path().as_str();
            let at = if at.is_empty() { "/" } else { at };
            return Err(DecodeError::caused(&format!("does not match its schema at {at}"), violation.masked()));
        }
        // Minified from the text rather than re-serialized from the parsed value: members keep their order and
        // numbers their digits.
        out.extend_from_slice(&minified_json(body).ok_or_else(|| DecodeError::new("not a JSON document"))?);
        Ok(())
    }
}

fn parse(text: &str) -> Result<Value, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::caused("JSON schema is not JSON", e))
}

/// Serves the schema's references to the validator while it compiles.
struct References {
    /// By the reference's name, which is the `$ref` as written: absolute, or relative to its schema.
    documents: HashMap<String, Value>,
}

impl Retrieve for References {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let uri = uri.as_str();
        let found = self.documents.get(uri).or_else(|| {
            // A relative `$ref` reaches here resolved against its schema's base URI.
            self.documents
                .iter()
                .find(|(name, _)| uri.strip_suffix(name.as_str()).is_some_and(|base| base.ends_with('/')))
                .map(|(_, document)| document)
        });
        found.cloned().ok_or_else(|| "no reference of that name".into())
    }
}

#[cfg(test)]
mod tests {
    use crate::registry::schema::{compile, Compiled, Reference, Schema, SchemaType};

    fn json(text: &str, references: Vec<Reference>) -> Schema {
        Schema { schema_type: SchemaType::Json, text: text.into(), references }
    }

    fn render(compiled: &Compiled, body: &str) -> Result<String, String> {
        let mut out = b"kept".to_vec();
        match compiled.render(body.as_bytes(), &mut out) {
            Ok(()) => Ok(String::from_utf8(out[4..].to_vec()).unwrap()),
            Err(e) => {
                assert_eq!(out, b"kept");
                Err(e.to_string())
            }
        }
    }

    const PERSON: &str = r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0},
        "address":{"$ref":"address.json"}},"required":["name"]}"#;
    const ADDRESS: &str = r#"{"type":"object","properties":{"city":{"type":"string"},
        "country":{"$ref":"https://example.com/schemas/country.json"}},"required":["city"]}"#;
    const COUNTRY: &str = r#"{"type":"string","enum":["FR","NZ"]}"#;

    fn person() -> Compiled {
        let country =
            Reference { name: "https://example.com/schemas/country.json".into(), schema: json(COUNTRY, Vec::new()) };
        let address = Reference { name: "address.json".into(), schema: json(ADDRESS, vec![country]) };
        compile(&json(PERSON, vec![address])).unwrap()
    }

    #[test]
    fn a_valid_document_renders_minified_with_its_members_and_digits_as_written() {
        let body = "{ \"name\" : \"Ann\",\n \"age\": 7, \"zeta\": 1.10, \"big\": 123456789012345678901234567890,\n \"address\": {\"city\": \"Paris\", \"country\": \"FR\"} }";
        assert_eq!(
            render(&person(), body).unwrap(),
            r#"{"name":"Ann","age":7,"zeta":1.10,"big":123456789012345678901234567890,"address":{"city":"Paris","country":"FR"}}"#
        );
    }

    #[test]
    fn a_document_that_does_not_validate_names_the_first_violation_and_where() {
        let err = render(&person(), r#"{"name":"Ann","age":-1}"#).unwrap_err();
        assert!(err.starts_with("does not match its schema at /age: "), "{err}");
        let err = render(&person(), r#"{"age":1}"#).unwrap_err();
        assert!(err.starts_with("does not match its schema at /: "), "{err}");
    }

    #[test]
    fn references_and_their_references_are_validated_against() {
        let err = render(&person(), r#"{"name":"Ann","address":{"city":"Paris","country":"XX"}}"#).unwrap_err();
        assert!(err.starts_with("does not match its schema at /address/country: "), "{err}");
        let err = render(&person(), r#"{"name":"Ann","address":{}}"#).unwrap_err();
        assert!(err.starts_with("does not match its schema at /address: "), "{err}");
    }

    #[test]
    fn a_violation_does_not_quote_the_record() {
        let err = render(&person(), r#"{"name":"Ann","age":"secret-value-1234"}"#).unwrap_err();
        assert!(!err.contains("secret-value-1234"), "{err}");
    }

    #[test]
    fn a_body_that_is_not_json_is_an_error() {
        let err = render(&person(), "{\"name\":").unwrap_err();
        assert!(err.starts_with("not a JSON document: "), "{err}");
        assert!(render(&person(), "\u{ff}").is_err());
    }

    #[test]
    fn a_missing_reference_fails_to_compile_without_fetching_it() {
        let err = compile(&json(PERSON, Vec::new())).err().unwrap().to_string();
        assert!(err.starts_with("JSON schema refused: "), "{err}");
        let remote = r#"{"$ref":"http://127.0.0.1:9/schema.json"}"#;
        assert!(compile(&json(remote, Vec::new())).is_err());
    }

    #[test]
    fn a_schema_without_dollar_schema_is_draft_7_and_one_with_it_keeps_its_draft() {
        // draft-07 ignores `dependentRequired` (2019-09); 2020-12 applies it.
        let draft7 = compile(&json(r#"{"dependentRequired":{"a":["b"]}}"#, Vec::new())).unwrap();
        assert!(render(&draft7, r#"{"a":1}"#).is_ok());
        let draft2020 = compile(&json(
            r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","dependentRequired":{"a":["b"]}}"#,
            Vec::new(),
        ))
        .unwrap();
        assert!(render(&draft2020, r#"{"a":1}"#).is_err());
    }
}
