//! The one bounded buffer between the consumer thread and the requests: per partition, the encoded records
//! read contiguously from some offset on.
//!
//! Reading does not remove records. A request names, per partition, the offset it wants to continue from
//! (its cursor); records below the cursor are dropped then, and a cursor outside what the buffer holds makes
//! the partition seek there. So a delivery that failed can be served again as long as nobody moved past it.

use std::collections::VecDeque;

use crate::encode::write_str;

/// One encoded record.
pub struct Record {
    pub offset: i64,
    pub json: Box<[u8]>,
}

/// What one partition holds.
pub struct PartitionBuffer {
    pub topic: String,
    pub partition: i32,
    /// The offset this handle started at, once known.
    pub start: Option<i64>,
    records: VecDeque<Record>,
    bytes: usize,
    /// The buffer holds every record in `[from, next)`.
    from: i64,
    next: i64,
    pub high_watermark: Option<i64>,
    /// A seek the consumer thread has yet to perform.
    pub seek_request: Option<i64>,
    pub paused: bool,
}

impl PartitionBuffer {
    pub fn new(topic: &str, partition: i32, position: i64) -> Self {
        PartitionBuffer {
            topic: topic.to_owned(),
            partition,
            start: None,
            records: VecDeque::new(),
            bytes: 0,
            from: position,
            next: position,
            high_watermark: None,
            seek_request: None,
            paused: false,
        }
    }

    /// Appends a record read by the consumer thread. Records below what is already held are stale and
    /// dropped; nothing is appended while a seek is pending.
    pub fn append(&mut self, record: Record) -> bool {
        if self.seek_request.is_some() || record.offset < self.next {
            return false;
        }
        self.next = record.offset + 1;
        self.bytes += record.json.len();
        self.records.push_back(record);
        true
    }

    /// Drops the records below `offset`.
    pub fn evict_below(&mut self, offset: i64) {
        while let Some(front) = self.records.front() {
            if front.offset >= offset {
                break;
            }
            self.bytes -= front.json.len();
            self.records.pop_front();
        }
        self.from = self.from.max(offset.min(self.next));
    }

    /// Empties the buffer and continues from `offset` (asking the consumer thread to seek when `seek`).
    pub fn reposition(&mut self, offset: i64, seek: bool) {
        self.records.clear();
        self.bytes = 0;
        self.from = offset;
        self.next = offset;
        if seek {
            self.seek_request = Some(offset);
        }
    }

    /// Raises the floor below which nothing is wanted (used when `latest` is resolved).
    pub fn raise_floor(&mut self, offset: i64) {
        self.evict_below(offset);
        if self.next < offset {
            self.next = offset;
            self.from = offset;
        }
    }

    pub fn covers(&self, offset: i64) -> bool {
        self.from <= offset && offset <= self.next
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
}

/// Limits of one read.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_records: usize,
    /// Bytes of encoded records; a single record larger than this is still delivered alone, so that a
    /// partition never gets stuck behind it.
    pub max_bytes: usize,
}

/// What a read returns: per partition how many records, and the cursor after them.
pub struct Selection {
    pub counts: Vec<usize>,
    pub next: Vec<i64>,
    pub total: usize,
}

/// Picks the records to hand out from `cursors` on, partitions taken round-robin from `first`, and asks
/// for a seek where a cursor lies outside what a partition holds.
pub fn select(partitions: &mut [PartitionBuffer], cursors: &[i64], first: usize, limits: Limits) -> Selection {
    let n = partitions.len();
    let mut counts = vec![0; n];
    let mut next = cursors.to_vec();
    let (mut total, mut bytes) = (0usize, 0usize);
    for k in 0..n {
        let i = (first + k) % n;
        let p = &mut partitions[i];
        let cursor = cursors[i];
        if !p.covers(cursor) {
            p.reposition(cursor, true);
            continue;
        }
        p.evict_below(cursor);
        for record in &p.records {
            let len = record.json.len();
            if total >= limits.max_records || (bytes + len > limits.max_bytes && total > 0) {
                break;
            }
            total += 1;
            bytes += len;
            counts[i] += 1;
            next[i] = record.offset + 1;
        }
    }
    Selection { counts, next, total }
}

/// Renders a selection in Kong's shape:
/// `{"<topic>":{"partitions":{"<n>":{"records":[…],"high_watermark":H}}}}`.
/// Partitions must be grouped by topic.
pub fn render_kong(partitions: &[PartitionBuffer], selection: &Selection) -> Vec<u8> {
    let payload: usize = partitions
        .iter()
        .zip(&selection.counts)
        .map(|(p, &c)| p.records.iter().take(c).map(|r| r.json.len() + 1).sum::<usize>())
        .sum();
    let mut out = Vec::with_capacity(payload + 64 * partitions.len() + 16);
    out.push(b'{');
    let mut current_topic: Option<&str> = None;
    for (p, &count) in partitions.iter().zip(&selection.counts) {
        if current_topic != Some(p.topic.as_str()) {
            if current_topic.is_some() {
                out.extend_from_slice(b"}},");
            }
            write_str(&mut out, &p.topic);
            out.extend_from_slice(b":{\"partitions\":{");
            current_topic = Some(&p.topic);
        } else {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(p.partition.to_string().as_bytes());
        out.extend_from_slice(b"\":{\"records\":[");
        for (j, record) in p.records.iter().take(count).enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&record.json);
        }
        out.extend_from_slice(b"],\"high_watermark\":");
        match p.high_watermark {
            Some(hw) => out.extend_from_slice(hw.to_string().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
    if current_topic.is_some() {
        out.extend_from_slice(b"}}");
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, size: usize) -> Record {
        let json = format!("{{\"offset\":{offset},\"v\":\"{}\"}}", "x".repeat(size));
        Record { offset, json: json.into_bytes().into_boxed_slice() }
    }

    fn filled(topic: &str, partition: i32, offsets: std::ops::Range<i64>) -> PartitionBuffer {
        let mut p = PartitionBuffer::new(topic, partition, offsets.start);
        for o in offsets {
            assert!(p.append(record(o, 10)));
        }
        p
    }

    const ALL: Limits = Limits { max_records: usize::MAX, max_bytes: usize::MAX };

    #[test]
    fn selects_from_the_cursor_and_evicts_below_it() {
        let mut parts = vec![filled("t", 0, 0..5)];
        let s = select(&mut parts, &[2], 0, ALL);
        assert_eq!(s.counts, vec![3]);
        assert_eq!(s.next, vec![5]);
        assert_eq!(parts[0].len(), 3, "records below the cursor are gone, the selected ones stay");
        // The same cursor again (a failed delivery) returns the same records.
        let again = select(&mut parts, &[2], 0, ALL);
        assert_eq!(again.counts, vec![3]);
    }

    #[test]
    fn a_cursor_outside_the_buffer_asks_for_a_seek() {
        let mut parts = vec![filled("t", 0, 10..20)];
        let s = select(&mut parts, &[3], 0, ALL);
        assert_eq!(s.total, 0);
        assert_eq!(parts[0].seek_request, Some(3));
        assert!(!parts[0].append(record(15, 1)), "nothing is appended while the seek is pending");
        parts[0].seek_request = None;
        assert!(parts[0].append(record(3, 1)));
        let mut ahead = vec![filled("t", 0, 10..20)];
        select(&mut ahead, &[25], 0, ALL);
        assert_eq!(ahead[0].seek_request, Some(25));
    }

    #[test]
    fn limits_are_shared_across_partitions_round_robin() {
        let mut parts = vec![filled("t", 0, 0..10), filled("t", 1, 0..10)];
        let limits = Limits { max_records: 4, max_bytes: usize::MAX };
        let s = select(&mut parts, &[0, 0], 1, limits);
        assert_eq!(s.counts, vec![0, 4], "starts with the partition named first");
        let s = select(&mut parts, &[0, 4], 0, limits);
        assert_eq!(s.counts, vec![4, 0]);
    }

    #[test]
    fn byte_limit_but_always_one_record() {
        let mut parts = vec![filled("t", 0, 0..10)];
        let one = parts[0].records[0].json.len();
        let s = select(&mut parts, &[0], 0, Limits { max_records: 100, max_bytes: one * 3 });
        assert_eq!(s.total, 3);
        let s = select(&mut parts, &[0], 0, Limits { max_records: 100, max_bytes: 1 });
        assert_eq!(s.total, 1, "a record larger than max_bytes is delivered alone");
    }

    #[test]
    fn latest_floor_drops_older_records() {
        let mut p = filled("t", 0, 5..8);
        p.raise_floor(10);
        assert_eq!(p.len(), 0);
        assert!(!p.append(record(9, 1)));
        assert!(p.append(record(10, 1)));
        assert!(p.covers(10));
    }

    #[test]
    fn renders_kong_shape_with_arrays() {
        let mut parts = vec![filled("a", 0, 0..2), PartitionBuffer::new("a", 1, 0), filled("b\"x", 0, 4..5)];
        parts[0].high_watermark = Some(2);
        let s = select(&mut parts, &[0, 0, 4], 0, ALL);
        let body = render_kong(&parts, &s);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["a"]["partitions"]["0"]["records"].as_array().unwrap().len(), 2);
        assert_eq!(v["a"]["partitions"]["0"]["high_watermark"], 2);
        assert_eq!(v["a"]["partitions"]["1"]["records"], serde_json::json!([]));
        assert_eq!(v["a"]["partitions"]["1"]["high_watermark"], serde_json::Value::Null);
        assert_eq!(v["b\"x"]["partitions"]["0"]["records"][0]["offset"], 4);
    }
}
