//! The query parser of every mode: any raw query string and Last-Event-ID header either parse to values
//! within the configured bounds or give a message naming the argument; nothing panics.
#![no_main]

use confluent_consume_native::query::{parse, Mode, Query, QueryConfig, StreamStart, MAX_CURSOR_LENGTH};
use confluent_consume_native::settings::OffsetReset;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    mode: u8,
    earliest: bool,
    max_wait: u16,
    max_records: u16,
    max_bytes: u32,
    header: Option<&'a [u8]>,
    raw: &'a [u8],
}

const NAMES: [&str; 9] = [
    "wait ",
    "max_records ",
    "max_bytes ",
    "from ",
    "last_event_id ",
    "invalid Last-Event-ID: ",
    "acks ",
    "cursor ",
    "invalid cursor: ",
];

/// A stream's start: a cursor within bounds, a plausible timestamp, or one of the named positions
/// (`Committed` only for a websocket that acknowledges).
fn check_start(start: &StreamStart, acks: bool) {
    match start {
        StreamStart::Cursor(id) => assert!(!id.is_empty() && id.len() <= MAX_CURSOR_LENGTH),
        StreamStart::Timestamp(ms) => assert!(*ms < 1_000_000_000_000_000),
        StreamStart::Committed => assert!(acks),
        StreamStart::Earliest | StreamStart::Latest => {}
    }
}

fuzz_target!(|input: Input<'_>| {
    let mode = match input.mode % 3 {
        0 => Mode::HttpGet,
        1 => Mode::ServerSentEvents,
        _ => Mode::WebSocket,
    };
    let config = QueryConfig {
        mode,
        // the plugin schema's lower bounds
        max_wait: u64::from(input.max_wait),
        max_records: u64::from(input.max_records).max(1),
        max_bytes: u64::from(input.max_bytes).max(1),
        auto_offset_reset: if input.earliest { OffsetReset::Earliest } else { OffsetReset::Latest },
    };
    match parse(input.raw, &config, input.header) {
        Ok(Query::Get(limits)) => {
            assert!(mode == Mode::HttpGet);
            assert!(limits.wait_ms <= config.max_wait);
            assert!((1..=config.max_records).contains(&limits.max_records));
            assert!((1..=config.max_bytes).contains(&limits.max_bytes));
            if let Some(start) = &limits.start {
                check_start(start, false);
            }
        }
        Ok(Query::Stream(start)) => {
            assert!(mode == Mode::ServerSentEvents);
            check_start(&start, false);
        }
        Ok(Query::WebSocket { start, acks }) => {
            assert!(mode == Mode::WebSocket);
            check_start(&start, acks);
        }
        Err(message) => assert!(NAMES.iter().any(|n| message.starts_with(n)), "{message}"),
    }
});
