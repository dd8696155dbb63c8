//! What a websocket client may send (README, "WebSocket protocol"): JSON text frames, one message each.
//!
//! * `{"type":"ack","cursor":"<cursor>"}`: every record up to that cursor (a record's or a batch's) is done;
//! * `{"type":"ack","topic":"t","partition":0,"offset":5}`: that one record is done (in any order);
//! * `{"type":"pause"}` and `{"type":"resume"}`: stop and restart sending.
//!
//! Anything else (unknown fields, a missing or extra member, a negative offset, trailing data) is refused
//! with a message for the close frame. Parsed here, in Rust, so the fuzz targets reach it.

use serde::Deserialize;

use crate::query::MAX_CURSOR_LENGTH;

/// Longest client frame accepted: the largest valid one is an ack carrying the longest cursor.
pub const MAX_FRAME_BYTES: usize = MAX_CURSOR_LENGTH + 256;

/// One client frame, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Everything before this cursor (not parsed here: its layout belongs to the consumer handle).
    AckCursor(String),
    /// One record.
    AckRecord { topic: String, partition: i32, offset: i64 },
    Pause,
    Resume,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    cursor: Option<String>,
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
}

/// Parses one client text frame.
///
/// # Errors
/// A message saying what is wrong with it, short enough for a close frame's reason (123 bytes).
pub fn parse(text: &[u8]) -> Result<ClientFrame, String> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(format!("frame longer than {MAX_FRAME_BYTES} bytes"));
    }
    let raw: Raw = serde_json::from_slice(text).map_err(|e| {
        let mut why = format!("not a valid client frame: {e}");
        why.truncate(why.floor_char_boundary(100));
        why
    })?;
    let only_type = raw.cursor.is_none() && raw.topic.is_none() && raw.partition.is_none() && raw.offset.is_none();
    match (raw.kind.as_str(), raw.cursor, raw.topic, raw.partition, raw.offset) {
        ("ack", Some(cursor), None, None, None) => {
            if cursor.is_empty() || cursor.len() > MAX_CURSOR_LENGTH {
                return Err("ack: the cursor is empty or too long".into());
            }
            Ok(ClientFrame::AckCursor(cursor))
        }
        ("ack", None, Some(topic), Some(partition), Some(offset)) => {
            if partition < 0 || offset < 0 {
                return Err("ack: partition and offset must not be negative".into());
            }
            Ok(ClientFrame::AckRecord { topic, partition, offset })
        }
        ("ack", ..) => Err("ack: give either cursor, or topic, partition and offset".into()),
        ("pause", ..) if only_type => Ok(ClientFrame::Pause),
        ("resume", ..) if only_type => Ok(ClientFrame::Resume),
        ("pause" | "resume", ..) => Err(format!("{}: takes no other member", raw.kind)),
        _ => Err("type must be ack, pause or resume".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_and_controls() {
        assert_eq!(parse(br#"{"type":"ack","cursor":"ab-1.2"}"#), Ok(ClientFrame::AckCursor("ab-1.2".into())));
        assert_eq!(
            parse(br#"{"offset":5,"type":"ack","topic":"t","partition":1}"#),
            Ok(ClientFrame::AckRecord { topic: "t".into(), partition: 1, offset: 5 })
        );
        assert_eq!(parse(br#" {"type":"pause"} "#), Ok(ClientFrame::Pause));
        assert_eq!(parse(br#"{"type":"resume"}"#), Ok(ClientFrame::Resume));
    }

    #[test]
    fn refuses_everything_else_with_a_short_reason() {
        for (frame, why) in [
            (&br#"{"type":"ack"}"#[..], "ack: give either cursor, or topic, partition and offset"),
            (br#"{"type":"ack","cursor":"a-1","offset":1}"#, "ack: give either cursor, or topic, partition and offset"),
            (br#"{"type":"ack","topic":"t","partition":0}"#, "ack: give either cursor, or topic, partition and offset"),
            (br#"{"type":"ack","topic":"t","partition":0,"offset":-1}"#, "ack: partition and offset must not be negative"),
            (br#"{"type":"ack","cursor":""}"#, "ack: the cursor is empty or too long"),
            (br#"{"type":"pause","cursor":"a"}"#, "pause: takes no other member"),
            (br#"{"type":"nack"}"#, "type must be ack, pause or resume"),
        ] {
            assert_eq!(parse(frame), Err(why.into()), "{}", String::from_utf8_lossy(frame));
        }
        for frame in [&b""[..], b"ack", b"{}", b"[]", br#"{"type":"ack","x":1}"#, br#"{"type":"pause"} x"#,
                      br#"{"type":"ack","topic":"t","partition":0,"offset":1.5}"#, b"\xff\xfe"] {
            let why = parse(frame).unwrap_err();
            assert!(why.starts_with("not a valid client frame") && why.len() <= 123, "{why}");
        }
        let long = format!(r#"{{"type":"ack","cursor":"{}"}}"#, "1".repeat(MAX_FRAME_BYTES));
        assert_eq!(parse(long.as_bytes()), Err(format!("frame longer than {MAX_FRAME_BYTES} bytes")));
    }
}
