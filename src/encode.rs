//! Record → JSON, done once on the consumer thread so that requests only concatenate ready-made bytes.
//!
//! A record renders as `{"offset":…,"timestamp":…,"key":…,"value":…,"headers":{…}}` with no raw newline in
//! it, so the same bytes serve the http-get body and an SSE `data:` line. Byte strings that are not UTF-8
//! render as `{"base64":"…"}`; under the `json` deserializer a value that is not JSON renders as under `noop`
//! and the record gets `"value_error":"not valid JSON"`. A header name that is not UTF-8 renders with U+FFFD for
//! its invalid bytes (JSON object keys are strings).

use base64::Engine;
use serde_json::value::RawValue;

use crate::settings::Deserializer;

/// The parts of a Kafka record that are rendered, borrowed from librdkafka's message.
pub struct RecordParts<'a> {
    pub offset: i64,
    /// Milliseconds since the epoch, `None` when the broker sent none.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Names as sent: Kafka means them to be UTF-8, but nothing enforces it.
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// How a key or value is rendered besides as `message_deserializer` says.
pub enum Part<'a> {
    /// As the deserializer says (keys: as a string).
    Raw,
    /// Already JSON: a schema registry's decoding.
    Rendered(&'a [u8]),
    /// Its decoding failed: the raw bytes (as a string or base64), and the cause as `key_error` /
    /// `value_error`.
    Failed(String),
}

/// Renders one record as compact JSON.
pub fn encode_record(record: &RecordParts<'_>, deserializer: Deserializer) -> Box<[u8]> {
    encode_record_with(record, deserializer, Part::Raw, Part::Raw)
}

/// Renders one record as compact JSON, its key and value as `key` and `value` say.
pub fn encode_record_with(record: &RecordParts<'_>, deserializer: Deserializer, key: Part<'_>, value: Part<'_>) -> Box<[u8]> {
    // a rendered part's length is known: the record is then written without growing `out`
    let length = |part: &Part<'_>, raw: Option<&[u8]>| match part {
        Part::Rendered(json) => json.len(),
        _ => raw.map_or(0, <[u8]>::len),
    };
    let mut out = Vec::with_capacity(64 + length(&key, record.key) + length(&value, record.value));
    out.extend_from_slice(b"{\"offset\":");
    out.extend_from_slice(record.offset.to_string().as_bytes());
    out.extend_from_slice(b",\"timestamp\":");
    match record.timestamp {
        Some(ts) => out.extend_from_slice(ts.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"key\":");
    let key_error = match key {
        Part::Rendered(json) => {
            out.extend_from_slice(json);
            None
        }
        Part::Raw => {
            write_bytes(&mut out, record.key);
            None
        }
        Part::Failed(why) => {
            write_bytes(&mut out, record.key);
            Some(why)
        }
    };
    out.extend_from_slice(b",\"value\":");
    let value_error = match (value, deserializer, record.value) {
        (Part::Rendered(json), _, _) => {
            out.extend_from_slice(json);
            None
        }
        (Part::Failed(why), _, value) => {
            write_bytes(&mut out, value);
            Some(why)
        }
        (Part::Raw, Deserializer::Json, Some(value)) => match minified_json(value) {
            Some(json) => {
                out.extend_from_slice(&json);
                None
            }
            None => {
                write_bytes(&mut out, Some(value));
                Some("not valid JSON".to_owned())
            }
        },
        (Part::Raw, _, value) => {
            write_bytes(&mut out, value);
            None
        }
    };
    out.extend_from_slice(b",\"headers\":{");
    write_headers(&mut out, &record.headers);
    out.push(b'}');
    if let Some(why) = key_error {
        out.extend_from_slice(b",\"key_error\":");
        write_str(&mut out, &why);
    }
    if let Some(why) = value_error {
        out.extend_from_slice(b",\"value_error\":");
        write_str(&mut out, &why);
    }
    out.push(b'}');
    out.into_boxed_slice()
}

/// Writes the members of the headers object. A name repeated in the record keeps its last value, as a
/// JSON object can hold a name only once (strict parsers reject a repeated one). A name that is not UTF-8
/// gets U+FFFD for its bad bytes, since an object key must be a string.
fn write_headers(out: &mut Vec<u8>, headers: &[(&[u8], Option<&[u8]>)]) {
    let mut names = std::collections::HashSet::with_capacity(headers.len());
    let mut last: Vec<(String, Option<&[u8]>)> = Vec::with_capacity(headers.len());
    for (name, value) in headers.iter().rev() {
        let name = String::from_utf8_lossy(name).into_owned();
        if names.insert(name.clone()) {
            last.push((name, *value));
        }
    }
    for (i, (name, value)) in last.iter().rev().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name);
        out.push(b':');
        write_bytes(out, *value);
    }
}

/// Writes a JSON string literal.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).expect("serializing a str into a Vec");
}

/// Writes bytes as a JSON string when they are UTF-8, as `{"base64":"…"}` otherwise, `null` when absent.
fn write_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.extend_from_slice(b"null"),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => write_str(out, s),
            Err(_) => {
                out.extend_from_slice(b"{\"base64\":\"");
                out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(b).as_bytes());
                out.extend_from_slice(b"\"}");
            }
        },
    }
}

/// Longest run of digits a number can have and still be a finite double.
const MAX_NUMBER_DIGITS: usize = 300;

/// The value as compact JSON (insignificant white space removed), or `None` when it is not valid JSON.
/// A number beyond a double's range (`1e999`) counts as not valid: the grammar allows it, but strict
/// parsers (serde_json, Go's encoding/json) refuse the whole body.
pub(crate) fn minified_json(value: &[u8]) -> Option<Vec<u8>> {
    let raw: &RawValue = serde_json::from_slice(value).ok()?;
    let text = raw.get().as_bytes();
    let mut out = Vec::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    // an exponent or a long run of digits may be out of range: then the slow check below
    let mut digits = 0;
    let mut check_numbers = false;
    for &b in text {
        if !in_string {
            if (b == b'e' || b == b'E') && digits > 0 {
                check_numbers = true;
            }
            digits = if b.is_ascii_digit() || b == b'.' { digits + 1 } else { 0 };
            check_numbers |= digits > MAX_NUMBER_DIGITS;
        }
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    if check_numbers && serde_json::from_slice::<serde_json::Value>(text).is_err() {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> RecordParts<'a> {
        RecordParts { offset: 7, timestamp: Some(1_700_000_000_000), key, value, headers: vec![] }
    }

    fn render(r: &RecordParts<'_>, d: Deserializer) -> serde_json::Value {
        let bytes = encode_record(r, d);
        assert!(!bytes.contains(&b'\n') && !bytes.contains(&b'\r'), "no raw line breaks");
        serde_json::from_slice(&bytes).expect("valid JSON")
    }

    #[test]
    fn noop_renders_strings() {
        let v = render(&record(Some(b"k\n1"), Some(b"line1\nline2")), Deserializer::Noop);
        assert_eq!(v["offset"], 7);
        assert_eq!(v["timestamp"], 1_700_000_000_000_i64);
        assert_eq!(v["key"], "k\n1");
        assert_eq!(v["value"], "line1\nline2");
        assert_eq!(v["headers"], serde_json::json!({}));
        assert!(v.get("value_error").is_none());
    }

    #[test]
    fn json_values_are_embedded_compactly() {
        let raw = b"{ \"a\" : [1, 2,\n 3], \"s\": \"x  y\\\" z\" }";
        let bytes = encode_record(&record(None, Some(raw)), Deserializer::Json);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains(r#""value":{"a":[1,2,3],"s":"x  y\" z"}"#), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["key"], serde_json::Value::Null);
    }

    #[test]
    fn invalid_json_falls_back_to_the_string_and_says_so() {
        let v = render(&record(None, Some(b"{not json")), Deserializer::Json);
        assert_eq!(v["value"], "{not json");
        assert_eq!(v["value_error"], "not valid JSON");
    }

    #[test]
    fn numbers_beyond_a_double_are_not_valid_json() {
        for value in ["1e999", "[1, -2E+400]", &"9".repeat(400)] {
            let v = render(&record(None, Some(value.as_bytes())), Deserializer::Json);
            assert_eq!(v["value"], value, "{value}");
            assert_eq!(v["value_error"], "not valid JSON");
        }
        let v = render(&record(None, Some(b"{\"e\": [1e300, 2.5E-3, true, \"1e999\"]}")), Deserializer::Json);
        assert!(v.get("value_error").is_none());
        assert_eq!(v["value"]["e"][3], "1e999");
    }

    #[test]
    fn non_utf8_bytes_become_base64_objects() {
        let v = render(&record(Some(&[0xff, 0x00]), Some(&[0xc3, 0x28, b'\n'])), Deserializer::Noop);
        assert_eq!(v["key"], serde_json::json!({"base64": "/wA="}));
        assert_eq!(v["value"], serde_json::json!({"base64": "wygK"}));
        let v = render(&record(None, Some(&[0xff])), Deserializer::Json);
        assert_eq!(v["value"], serde_json::json!({"base64": "/w=="}));
        assert_eq!(v["value_error"], "not valid JSON");
    }

    #[test]
    fn tombstones_and_headers() {
        let mut r = record(Some(b"k"), None);
        r.timestamp = None;
        r.headers = vec![(b"trace", Some(b"abc")), (b"bin", Some(&[0x80])), (b"empty", None), (&[b'x', 0xff], None)];
        let v = render(&r, Deserializer::Json);
        assert_eq!(v["value"], serde_json::Value::Null);
        assert_eq!(v["timestamp"], serde_json::Value::Null);
        assert_eq!(
            v["headers"],
            serde_json::json!({"trace": "abc", "bin": {"base64": "gA=="}, "empty": null, "x\u{fffd}": null})
        );
    }

    #[test]
    fn a_repeated_header_name_appears_once_with_its_last_value() {
        let mut r = record(None, None);
        r.headers = vec![
            (b"dup", Some(b"first")),
            (b"a", None),
            (b"dup", Some(b"second")),
            (&[b'x', 0xfe], None),
            (&[b'x', 0xff], Some(b"z")),
        ];
        let text = String::from_utf8(encode_record(&r, Deserializer::Noop).into_vec()).unwrap();
        assert!(text.ends_with("\"headers\":{\"a\":null,\"dup\":\"second\",\"x\u{fffd}\":\"z\"}}"), "{text}");
    }
}
