//! A record of arbitrary bytes (key, value, header names and values; absent key, value or header value)
//! → its JSON, then through a partition buffer → Kong's http-get body and server-sent events. Every output
//! is valid UTF-8 JSON, and no SSE data line holds a raw line break.
#![no_main]

use confluent_consume_native::buffer::{
    layout_tag, render_kong, render_sse, select, Limits, PartitionBuffer, ReadMode, Record,
};
use confluent_consume_native::encode::{encode_record, RecordParts};
use confluent_consume_native::settings::Deserializer;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    json_deserializer: bool,
    topic: &'a str,
    partition: i32,
    offset: u32,
    timestamp: Option<i64>,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

fuzz_target!(|input: Input<'_>| {
    let offset = i64::from(input.offset);
    let deserializer = if input.json_deserializer { Deserializer::Json } else { Deserializer::Noop };
    let parts = RecordParts {
        offset,
        timestamp: input.timestamp,
        key: input.key,
        value: input.value,
        headers: input.headers.clone(),
    };
    let json = encode_record(&parts, deserializer);
    assert!(!json.contains(&b'\n') && !json.contains(&b'\r'), "raw line break in a record");
    let record: Value = serde_json::from_slice(&json).expect("a record is valid JSON");
    assert_eq!(record["offset"], offset);
    assert_eq!(record["key"].is_null(), input.key.is_none());
    // `null` exactly for a tombstone, or under `json` for a value that is the JSON literal null (with any
    // white space around it); under `noop` the bytes `null` are the string "null".
    let json_null = input.json_deserializer
        && input.value.is_some_and(|v| serde_json::from_slice::<Value>(v).is_ok_and(|v| v.is_null()));
    assert_eq!(record["value"].is_null(), input.value.is_none() || json_null, "{record}");
    if let (false, Some(value)) = (input.json_deserializer, input.value) {
        // noop: the value's text as a JSON string when it is UTF-8, else {"base64": ...}
        match std::str::from_utf8(value) {
            Ok(text) => assert_eq!(record["value"], text),
            Err(_) => assert!(record["value"]["base64"].is_string(), "{record}"),
        }
    }
    assert!(record["headers"].is_object());

    let mut buffer = PartitionBuffer::new(input.topic, input.partition, offset);
    assert!(buffer.append(Record { offset, timestamp: input.timestamp, json }));
    let mut partitions = vec![buffer];
    let all = Limits { max_records: 10, max_bytes: usize::MAX };
    let selection = select(&mut partitions, &[offset], 0, all, ReadMode::Shared);
    assert_eq!(selection.total, 1);

    let body: Value = serde_json::from_slice(&render_kong(&partitions, &[offset], &selection)).expect("Kong body");
    let records = &body[input.topic]["partitions"][input.partition.to_string()]["records"];
    assert_eq!(records[0], record);

    let layout = layout_tag(&partitions);
    let sse = render_sse(&partitions, &[offset], &selection, &layout);
    let text = std::str::from_utf8(&sse).expect("events are UTF-8");
    let frame = text.strip_suffix("\n\n").expect("one frame");
    let lines: Vec<&str> = frame.split('\n').collect();
    assert_eq!(lines.len(), 3, "id, event, data: {frame:?}");
    assert!(!frame.contains('\r'));
    assert_eq!(lines[0], format!("id: {layout}-{}", offset + 1));
    assert_eq!(lines[1], "event: message");
    let data: Value = serde_json::from_str(lines[2].strip_prefix("data: ").expect("data line")).expect("data");
    assert_eq!(data["topic"], input.topic);
    assert_eq!(data["partition"], input.partition);
    assert_eq!(data["value"], record["value"]);
});
