//! Stream cursors (SSE event ids): parsing arbitrary text never panics, what it accepts formats back to
//! an equal cursor, and any offsets format to a cursor that parses back to them.
#![no_main]

use confluent_consume_native::buffer::{format_cursor, layout_tag, parse_cursor, PartitionBuffer};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    topic: &'a str,
    partitions: u8,
    text: &'a str,
    offsets: Vec<u64>,
}

fn format(layout: &str, offsets: &[i64]) -> String {
    let mut out = Vec::new();
    format_cursor(layout, offsets, &mut out);
    String::from_utf8(out).expect("a cursor is ASCII")
}

fuzz_target!(|input: Input<'_>| {
    let n = usize::from(input.partitions % 16) + 1;
    let buffers: Vec<PartitionBuffer> = (0..n as i32).map(|p| PartitionBuffer::new(input.topic, p, 0)).collect();
    let layout = layout_tag(&buffers);

    match parse_cursor(&layout, n, input.text) {
        Ok(offsets) => {
            assert_eq!(offsets.len(), n);
            assert!(offsets.iter().all(|&o| o >= 0));
            let again = format(&layout, &offsets);
            assert!(again.len() <= input.text.len(), "only leading zeros can make a cursor longer");
            assert_eq!(parse_cursor(&layout, n, &again), Ok(offsets));
        }
        Err(message) => assert!(!message.is_empty()),
    }

    // every position a stream can reach has a cursor that parses back to it
    let offsets: Vec<i64> = (0..n).map(|i| (input.offsets.get(i).copied().unwrap_or(0) >> 1) as i64).collect();
    let text = format(&layout, &offsets);
    assert_eq!(parse_cursor(&layout, n, &text), Ok(offsets), "{text}");
});
