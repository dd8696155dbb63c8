//! websocket client frames (acks, pause/resume): parsing arbitrary bytes never panics, a refusal has a
//! reason that fits a close frame, and every valid frame, written back as JSON, parses to the same frame.
#![no_main]

use confluent_consume_native::client_frame::{parse, ClientFrame, MAX_FRAME_BYTES};
use libfuzzer_sys::fuzz_target;

fn written(frame: &ClientFrame) -> String {
    match frame {
        ClientFrame::AckCursor(cursor) => serde_json::json!({ "type": "ack", "cursor": cursor }).to_string(),
        ClientFrame::AckRecord { topic, partition, offset } => {
            serde_json::json!({ "type": "ack", "topic": topic, "partition": partition, "offset": offset }).to_string()
        }
        ClientFrame::Pause => r#"{"type":"pause"}"#.to_string(),
        ClientFrame::Resume => r#"{"type":"resume"}"#.to_string(),
    }
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(frame) => {
            assert!(data.len() <= MAX_FRAME_BYTES);
            if let ClientFrame::AckRecord { partition, offset, .. } = &frame {
                assert!(*partition >= 0 && *offset >= 0);
            }
            let text = written(&frame);
            if text.len() <= MAX_FRAME_BYTES {
                assert_eq!(parse(text.as_bytes()), Ok(frame), "{text}");
            }
        }
        Err(reason) => assert!(!reason.is_empty() && reason.len() <= 123, "{reason}"),
    }
});
