//! The query parser of both modes: any raw query string and Last-Event-ID header either parse to values
//! within the configured bounds or give a message naming the argument; nothing panics.
#![no_main]

use confluent_consume_native::query::{parse, Mode, Query, QueryConfig, StreamStart, MAX_CURSOR_LENGTH};
use confluent_consume_native::settings::OffsetReset;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    stream: bool,
    earliest: bool,
    max_wait: u16,
    max_records: u16,
    max_bytes: u32,
    header: Option<&'a [u8]>,
    raw: &'a [u8],
}

const NAMES: [&str; 6] = ["wait ", "max_records ", "max_bytes ", "from ", "last_event_id ", "invalid Last-Event-ID: "];

fuzz_target!(|input: Input<'_>| {
    let config = QueryConfig {
        mode: if input.stream { Mode::ServerSentEvents } else { Mode::HttpGet },
        // the plugin schema's lower bounds
        max_wait: u64::from(input.max_wait),
        max_records: u64::from(input.max_records).max(1),
        max_bytes: u64::from(input.max_bytes).max(1),
        auto_offset_reset: if input.earliest { OffsetReset::Earliest } else { OffsetReset::Latest },
    };
    match parse(input.raw, &config, input.header) {
        Ok(Query::Get(limits)) => {
            assert!(!input.stream);
            assert!(limits.wait_ms <= config.max_wait);
            assert!((1..=config.max_records).contains(&limits.max_records));
            assert!((1..=config.max_bytes).contains(&limits.max_bytes));
        }
        Ok(Query::Stream(start)) => {
            assert!(input.stream);
            match start {
                StreamStart::Cursor(id) => assert!(!id.is_empty() && id.len() <= MAX_CURSOR_LENGTH),
                StreamStart::Timestamp(ms) => assert!(ms < 1_000_000_000_000_000),
                StreamStart::Earliest | StreamStart::Latest => {}
            }
        }
        Err(message) => assert!(NAMES.iter().any(|n| message.starts_with(n)), "{message}"),
    }
});
