//! The query arguments of both modes, parsed from the raw query string in one place.
//!
//! The string is split on `&`, each `name=value` pair percent-decoded as `ngx.decode_args` does it (`+` is a
//! space, an invalid `%` escape is kept literally), names the mode does not know are ignored, and a known
//! name given twice is refused. A known name without `=` counts as given with an empty value.
//!
//! * http-get: `wait` (ms, 0..=max_wait, default 0), `max_records` (1..=max_records) and `max_bytes`
//!   (1..=max_bytes), each defaulting to the configured bound; and for a read that keeps no state on the
//!   gateway, `cursor` (a stream cursor, as an SSE event id), else `from` (as for server-sent-events).
//!   Without either the GET reads the group's records.
//! * server-sent-events: the `Last-Event-ID` header, else `last_event_id`, else `from` (`earliest`,
//!   `latest` or ms since the epoch), else the configured `auto_offset_reset`.
//! * websocket: as server-sent-events (without the header: browsers cannot set it on a WebSocket), plus
//!   `acks` (`true` or `false`, default `false`); a connection with acknowledgements and neither cursor nor
//!   `from` starts at its group's committed offsets.

use crate::settings::OffsetReset;

/// Longest stream cursor accepted (a cursor names every partition's next offset).
pub const MAX_CURSOR_LENGTH: usize = 4096;
/// Longest `from` timestamp: 15 digits is past the year 30000, and stays exact in a Lua number.
const MAX_TIMESTAMP_DIGITS: usize = 15;

/// Which plugin mode the request is for; each knows its own argument names only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    HttpGet,
    ServerSentEvents,
    WebSocket,
}

impl Mode {
    /// The mode of a plugin config's `mode` field.
    pub fn from_name(name: &str) -> Option<Mode> {
        match name {
            "http-get" => Some(Mode::HttpGet),
            "server-sent-events" => Some(Mode::ServerSentEvents),
            "websocket" => Some(Mode::WebSocket),
            _ => None,
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Mode::HttpGet => &["wait", "max_records", "max_bytes", "cursor", "from"],
            Mode::ServerSentEvents => &["last_event_id", "from"],
            Mode::WebSocket => &["last_event_id", "from", "acks"],
        }
    }
}

/// What the plugin configuration says about query arguments.
#[derive(Clone, Debug)]
pub struct QueryConfig {
    pub mode: Mode,
    /// Upper bound of `wait` in ms.
    pub max_wait: u64,
    /// Upper bound and default of `max_records`.
    pub max_records: u64,
    /// Upper bound and default of `max_bytes`.
    pub max_bytes: u64,
    /// Where a stream without a cursor or `from` starts.
    pub auto_offset_reset: OffsetReset,
}

/// The read limits of one http-get request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetLimits {
    pub wait_ms: u64,
    pub max_records: u64,
    pub max_bytes: u64,
    /// A cursor read: where it starts (`cursor`, else `from`); `None` reads the group's records.
    pub start: Option<StreamStart>,
}

/// Where a stream starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamStart {
    /// An event id to resume after (not parsed here: its layout belongs to the consumer handle).
    Cursor(Vec<u8>),
    Earliest,
    Latest,
    /// The first records at or after this time, in ms since the epoch.
    Timestamp(u64),
    /// The group's committed offsets (a websocket connection with acknowledgements).
    Committed,
}

/// The parsed arguments of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    Get(GetLimits),
    Stream(StreamStart),
    /// A websocket connection: where it starts, and whether the client acknowledges records.
    WebSocket { start: StreamStart, acks: bool },
}

/// Parses `raw` (the query string without `?`) for `config.mode`; `last_event_id` is the request's
/// `Last-Event-ID` header, which wins over the `last_event_id` argument.
///
/// # Errors
/// A message for the client naming the argument: given twice, not an integer in its bounds, not a valid
/// start, a cursor longer than [`MAX_CURSOR_LENGTH`].
pub fn parse(raw: &[u8], config: &QueryConfig, last_event_id: Option<&[u8]>) -> Result<Query, String> {
    let names = config.mode.names();
    let mut values: [Option<Vec<u8>>; 5] = Default::default();
    let mut name = Vec::new();
    for pair in raw.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        name.clear();
        percent_decode(raw_name, &mut name);
        let Some(index) = names.iter().position(|n| n.as_bytes() == name.as_slice()) else {
            continue;
        };
        if values[index].is_some() {
            return Err(given_twice(names[index]));
        }
        let mut value = Vec::with_capacity(raw_value.len());
        percent_decode(raw_value, &mut value);
        values[index] = Some(value);
    }
    match config.mode {
        Mode::HttpGet => {
            let [wait, max_records, max_bytes, cursor, from] = values;
            let limits = GetLimits {
                wait_ms: integer("wait", wait.as_deref(), 0, config.max_wait, 0)?,
                max_records: integer("max_records", max_records.as_deref(), 1, config.max_records, config.max_records)?,
                max_bytes: integer("max_bytes", max_bytes.as_deref(), 1, config.max_bytes, config.max_bytes)?,
                start: cursor_start(cursor.as_deref(), from.as_deref())?,
            };
            Ok(Query::Get(limits))
        }
        Mode::ServerSentEvents => {
            let [query_id, from, ..] = values;
            stream_start(last_event_id.or(query_id.as_deref()), from.as_deref(), config.auto_offset_reset)
                .map(Query::Stream)
        }
        Mode::WebSocket => {
            let [query_id, from, acks, ..] = values;
            let acks = match acks.as_deref() {
                None | Some(b"false") => false,
                Some(b"true") => true,
                Some(_) => return Err("acks must be true or false".into()),
            };
            let id = query_id.as_deref().filter(|id| !id.is_empty());
            let start = if acks && id.is_none() && from.is_none() {
                StreamStart::Committed
            } else {
                stream_start(id, from.as_deref(), config.auto_offset_reset)?
            };
            Ok(Query::WebSocket { start, acks })
        }
    }
}

fn given_twice(name: &str) -> String {
    match name {
        "wait" | "max_records" | "max_bytes" => format!("{name} must be given once, as an integer"),
        _ => format!("{name} must be given once"),
    }
}

/// An integer argument in `[min, max]`, `default` when absent.
fn integer(name: &str, value: Option<&[u8]>, min: u64, max: u64, default: u64) -> Result<u64, String> {
    let Some(value) = value else { return Ok(default) };
    let out_of_range = || format!("{name} must be an integer between {min} and {max}");
    let n = digits(value).ok_or_else(out_of_range)?;
    if n < min || n > max {
        return Err(out_of_range());
    }
    Ok(n)
}

/// The value of a non-empty run of ASCII digits; `None` for anything else or above `u64::MAX`.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Where an http-get cursor read starts: `cursor` (never empty: a client that lost its cursor must say
/// where to start), else `from`; `None` when neither is given (a read of the group).
fn cursor_start(cursor: Option<&[u8]>, from: Option<&[u8]>) -> Result<Option<StreamStart>, String> {
    match (cursor, from) {
        (None, None) => Ok(None),
        (Some(b""), _) => Err("cursor must not be empty: give the cursor of the previous answer, or from".into()),
        (Some(id), _) if id.len() > MAX_CURSOR_LENGTH => Err("invalid cursor: cursor is too long".into()),
        (Some(id), _) => Ok(Some(StreamStart::Cursor(id.to_vec()))),
        // the configured auto_offset_reset never applies: `from` is given
        (None, from) => stream_start(None, from, OffsetReset::Latest).map(Some),
    }
}

fn stream_start(id: Option<&[u8]>, from: Option<&[u8]>, reset: OffsetReset) -> Result<StreamStart, String> {
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        if id.len() > MAX_CURSOR_LENGTH {
            return Err("invalid Last-Event-ID: cursor is too long".into());
        }
        return Ok(StreamStart::Cursor(id.to_vec()));
    }
    match from {
        None => Ok(match reset {
            OffsetReset::Earliest => StreamStart::Earliest,
            OffsetReset::Latest => StreamStart::Latest,
        }),
        Some(b"earliest") => Ok(StreamStart::Earliest),
        Some(b"latest") => Ok(StreamStart::Latest),
        Some(ms) => ms
            .len()
            .le(&MAX_TIMESTAMP_DIGITS)
            .then(|| digits(ms))
            .flatten()
            .map(StreamStart::Timestamp)
            .ok_or_else(|| "from must be earliest, latest or a timestamp in milliseconds since the epoch".into()),
    }
}

/// Appends the percent-decoded `input` to `out`: `%XX` is the byte XX, `+` a space, and a `%` not followed
/// by two hex digits stays as it is.
pub fn percent_decode(input: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => match (input.get(i + 1).and_then(hex), input.get(i + 2).and_then(hex)) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: Mode) -> QueryConfig {
        QueryConfig { mode, max_wait: 3000, max_records: 20, max_bytes: 100_000, auto_offset_reset: OffsetReset::Latest }
    }

    fn get(raw: &str) -> Result<GetLimits, String> {
        match parse(raw.as_bytes(), &config(Mode::HttpGet), None)? {
            Query::Get(limits) => Ok(limits),
            other => panic!("{other:?}"),
        }
    }

    fn start(raw: &str, header: Option<&str>) -> Result<StreamStart, String> {
        match parse(raw.as_bytes(), &config(Mode::ServerSentEvents), header.map(str::as_bytes))? {
            Query::Stream(start) => Ok(start),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_configured_bounds() {
        assert_eq!(get(""), Ok(GetLimits { wait_ms: 0, max_records: 20, max_bytes: 100_000, start: None }));
        assert_eq!(get("&&x=1&last_event_id=a-1"), get(""), "unknown names and empty pairs are ignored");
        assert_eq!(start("", None), Ok(StreamStart::Latest));
        let mut earliest = config(Mode::ServerSentEvents);
        earliest.auto_offset_reset = OffsetReset::Earliest;
        assert_eq!(parse(b"wait=abc", &earliest, None), Ok(Query::Stream(StreamStart::Earliest)));
    }

    #[test]
    fn integers_within_bounds() {
        assert_eq!(get("wait=3000&max_records=1&max_bytes=007"),
                   Ok(GetLimits { wait_ms: 3000, max_records: 1, max_bytes: 7, start: None }));
        assert_eq!(get("w%61it=5&max%5Frecords=2").map(|l| (l.wait_ms, l.max_records)), Ok((5, 2)));
    }

    #[test]
    fn bad_integers_keep_the_messages_of_the_lua_parser() {
        let range = |name: &str, max: u64| {
            let min = if name == "wait" { 0 } else { 1 };
            Err(format!("{name} must be an integer between {min} and {max}"))
        };
        for raw in ["wait=-1", "wait=abc", "wait=3001", "wait=1.5", "wait=1e3", "wait=0x10", "wait=+5", "wait=%205",
                    "wait=5%00", "wait=1;DROP", "wait=", "wait", "wait=99999999999999999999999"] {
            assert_eq!(get(raw), range("wait", 3000), "{raw}");
        }
        assert_eq!(get(&format!("wait={}", "9".repeat(5000))), range("wait", 3000));
        assert_eq!(get("max_records=0"), range("max_records", 20));
        assert_eq!(get("max_records=21"), range("max_records", 20));
        assert_eq!(get("max_bytes=100001"), range("max_bytes", 100_000));
        assert_eq!(get("wait=1&wait=2"), Err("wait must be given once, as an integer".into()));
        assert_eq!(get("max_bytes=1&max%5Fbytes=1"), Err("max_bytes must be given once, as an integer".into()));
        assert_eq!(get("wait=abc&max_records=0"), range("wait", 3000), "checked in a fixed order");
    }

    #[test]
    fn stream_starts() {
        assert_eq!(start("from=earliest", None), Ok(StreamStart::Earliest));
        assert_eq!(start("from=latest", None), Ok(StreamStart::Latest));
        assert_eq!(start("from=1700000000000", None), Ok(StreamStart::Timestamp(1_700_000_000_000)));
        assert_eq!(start("last_event_id=abc-1.2&from=earliest", None), Ok(StreamStart::Cursor(b"abc-1.2".to_vec())));
        assert_eq!(start("last_event_id=q", Some("h")), Ok(StreamStart::Cursor(b"h".to_vec())), "the header wins");
        assert_eq!(start("last_event_id=q", Some("")), Ok(StreamStart::Latest), "an empty header means none");
        assert_eq!(start("last_event_id=&from=earliest", None), Ok(StreamStart::Earliest));
        assert_eq!(start("last_event_id=a%2Bb+c%zz", None), Ok(StreamStart::Cursor(b"a+b c%zz".to_vec())));
        let bad_from = Err("from must be earliest, latest or a timestamp in milliseconds since the epoch".into());
        for raw in ["from=yesterday", "from=-5", "from=", "from", "from=1234567890123456", "from=EARLIEST"] {
            assert_eq!(start(raw, None), bad_from, "{raw}");
        }
        assert_eq!(start("from=1&from=2", None), Err("from must be given once".into()));
        assert_eq!(start("last_event_id=a&last_event_id=b", None), Err("last_event_id must be given once".into()));
        let long = "9".repeat(MAX_CURSOR_LENGTH + 1);
        let too_long = Err("invalid Last-Event-ID: cursor is too long".into());
        assert_eq!(start(&format!("last_event_id={long}"), None), too_long);
        assert_eq!(start("", Some(&long)), too_long);
        assert_eq!(start("", Some(&long[1..])), Ok(StreamStart::Cursor(long[1..].as_bytes().to_vec())));
    }

    #[test]
    fn http_get_cursor_reads() {
        let start = |raw: &str| get(raw).map(|l| l.start);
        assert_eq!(start("cursor=abc-1.2&from=earliest"), Ok(Some(StreamStart::Cursor(b"abc-1.2".to_vec()))));
        assert_eq!(start("from=earliest"), Ok(Some(StreamStart::Earliest)));
        assert_eq!(start("from=latest&wait=5"), Ok(Some(StreamStart::Latest)));
        assert_eq!(start("from=1700000000000"), Ok(Some(StreamStart::Timestamp(1_700_000_000_000))));
        assert_eq!(start("cursor=a%2Db"), Ok(Some(StreamStart::Cursor(b"a-b".to_vec()))));
        let empty = Err("cursor must not be empty: give the cursor of the previous answer, or from".into());
        assert_eq!(start("cursor="), empty);
        assert_eq!(start("cursor&from=earliest"), empty);
        assert_eq!(start(&format!("cursor={}", "9".repeat(MAX_CURSOR_LENGTH + 1))),
                   Err("invalid cursor: cursor is too long".into()));
        assert_eq!(start("from=yesterday"),
                   Err("from must be earliest, latest or a timestamp in milliseconds since the epoch".into()));
        assert_eq!(start("cursor=a-1&cursor=a-1"), Err("cursor must be given once".into()));
        assert_eq!(start("wait=5000&cursor=a-1"), Err("wait must be an integer between 0 and 3000".into()),
                   "limits are checked first");
    }

    #[test]
    fn websocket_starts_and_acks() {
        let ws = |raw: &str| parse(raw.as_bytes(), &config(Mode::WebSocket), None);
        let ok = |start, acks| Ok(Query::WebSocket { start, acks });
        assert_eq!(ws(""), ok(StreamStart::Latest, false));
        assert_eq!(ws("acks=false&from=earliest"), ok(StreamStart::Earliest, false));
        assert_eq!(ws("acks=true"), ok(StreamStart::Committed, true), "acknowledged streams resume from the group");
        assert_eq!(ws("acks=true&from=earliest"), ok(StreamStart::Earliest, true));
        assert_eq!(ws("acks=true&last_event_id=a-1"), ok(StreamStart::Cursor(b"a-1".to_vec()), true));
        assert_eq!(ws("acks=true&last_event_id="), ok(StreamStart::Committed, true));
        assert_eq!(ws("acks=yes"), Err("acks must be true or false".into()));
        assert_eq!(ws("acks=true&acks=true"), Err("acks must be given once".into()));
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        let decode = |s: &str| {
            let mut out = Vec::new();
            percent_decode(s.as_bytes(), &mut out);
            out
        };
        assert_eq!(decode("a%20b+c"), b"a b c");
        assert_eq!(decode("%41%6a%6A"), b"Ajj");
        assert_eq!(decode("%"), b"%");
        assert_eq!(decode("%4"), b"%4");
        assert_eq!(decode("%zz%4g"), b"%zz%4g");
        assert_eq!(decode("%00%ff"), [0, 0xff]);
        assert_eq!(decode("=&é"), "=&é".as_bytes());
    }
}
