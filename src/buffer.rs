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
    /// The broker's timestamp (ms since the epoch), when the record has one: for `record_age_seconds`.
    pub timestamp: Option<i64>,
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
    /// The log start offset of the latest fetch response (`None` before one, or from a broker too old
    /// to send it).
    pub log_start_offset: Option<i64>,
    /// The last stable offset from librdkafka's statistics (refreshed each second).
    pub last_stable_offset: Option<i64>,
    /// The group's committed offset as this handle knows it (queue handles: read at the start, then
    /// each commit the broker confirmed).
    pub committed: Option<i64>,
    /// A seek the consumer thread has yet to perform.
    pub seek_request: Option<i64>,
    pub paused: bool,
    /// Many records of this partition wait for a schema from the registry: fetching pauses.
    pub waiting_on_registry: bool,
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
            log_start_offset: None,
            last_stable_offset: None,
            committed: None,
            seek_request: None,
            paused: false,
            waiting_on_registry: false,
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

    /// Whether a cursor that other readers moved a little past this buffer is better reached by reading
    /// on than by seeking: librdkafka has most likely fetched the records up to it already (its queue holds
    /// up to [`READ_THROUGH_MAX_BYTES`]), and a seek would drop that queue and the fetch in flight and fetch
    /// the records after the cursor again (bench scenario 16: a worker of four fetched 7 times a topic's
    /// bytes, seeking after the node's position at each read). Only while the partition fetches (not
    /// paused), no seek is pending, and the gap, at the buffer's mean record size, fits in that queue.
    fn reads_through_to(&self, cursor: i64) -> bool {
        if cursor < self.next || self.paused || self.seek_request.is_some() || self.records.is_empty() {
            return false;
        }
        let mean = self.bytes / self.records.len();
        usize::try_from(cursor - self.next).is_ok_and(|gap| gap.saturating_mul(mean) <= READ_THROUGH_MAX_BYTES)
    }

    pub fn covers(&self, offset: i64) -> bool {
        self.from <= offset && offset <= self.next
    }

    /// Drops the oldest records until the buffer holds at most `limit` bytes (broadcast: the live edge
    /// moves on; readers that still needed them are behind).
    pub fn evict_to_fit(&mut self, limit: usize) {
        while self.bytes > limit {
            let Some(front) = self.records.pop_front() else { break };
            self.bytes -= front.json.len();
            self.from = front.offset + 1;
        }
    }

    /// The offsets the buffer holds every record of: `[from, next)`.
    pub fn bounds(&self) -> (i64, i64) {
        (self.from, self.next)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
}

/// The most bytes of records a queue handle reads on through, rather than seeking past them: librdkafka's
/// own queue for such a handle (`queued.max.messages.kbytes`, settings.rs).
const READ_THROUGH_MAX_BYTES: usize = 16 << 20;

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
    /// Broadcast reads: a cursor lies below what the buffer still holds (the reader fell behind).
    pub behind: bool,
}

/// How a read treats cursors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// The reader owns the cursors: drop what lies below them, seek where the buffer does not hold them.
    Own,
    /// Many readers share the buffer: leave it as it is.
    Shared,
}

/// Picks the records to hand out from `cursors` on, partitions taken round-robin from `first`.
pub fn select(
    partitions: &mut [PartitionBuffer],
    cursors: &[i64],
    first: usize,
    limits: Limits,
    mode: ReadMode,
) -> Selection {
    let n = partitions.len();
    let mut counts = vec![0; n];
    let mut next = cursors.to_vec();
    let (mut total, mut bytes, mut behind) = (0usize, 0usize, false);
    for k in 0..n {
        let i = (first + k) % n;
        let p = &mut partitions[i];
        let cursor = cursors[i];
        if !p.covers(cursor) {
            match mode {
                ReadMode::Own if p.reads_through_to(cursor) => p.raise_floor(cursor),
                ReadMode::Own => p.reposition(cursor, true),
                ReadMode::Shared => behind |= cursor < p.from,
            }
            continue;
        }
        if mode == ReadMode::Own {
            p.evict_below(cursor);
        }
        let skip = p.records.partition_point(|r| r.offset < cursor);
        for record in p.records.iter().skip(skip) {
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
    Selection { counts, next, total, behind }
}

/// The broker timestamps of the records `selection` picked, where they have one.
pub fn selected_timestamps<'a>(
    partitions: &'a [PartitionBuffer],
    cursors: &'a [i64],
    selection: &'a Selection,
) -> impl Iterator<Item = i64> + 'a {
    partitions
        .iter()
        .enumerate()
        .flat_map(move |(i, p)| selected(p, cursors[i], selection.counts[i]))
        .filter_map(|r| r.timestamp)
}

/// The selected records of partition `p`: `count` of them from `cursor` on.
pub fn selected(p: &PartitionBuffer, cursor: i64, count: usize) -> impl Iterator<Item = &Record> {
    let skip = p.records.partition_point(|r| r.offset < cursor);
    p.records.iter().skip(skip).take(count)
}

/// Renders a selection in Kong's shape: `{"<topic>":{"partitions":{"<n>":{"records":[…],
/// "high_watermark":H,"last_stable_offset":L,"log_start_offset":S,"errcode":0}}}}` (offsets `null` while
/// unknown; `errcode` is always 0, as a failure is an HTTP error, never a partition's).
/// Partitions must be grouped by topic.
pub fn render_kong(partitions: &[PartitionBuffer], cursors: &[i64], selection: &Selection) -> Vec<u8> {
    let payload: usize = partitions
        .iter()
        .zip(cursors)
        .zip(&selection.counts)
        .map(|((p, &cursor), &c)| selected(p, cursor, c).map(|r| r.json.len() + 1).sum::<usize>())
        .sum();
    let mut out = Vec::with_capacity(payload + 64 * partitions.len() + 16);
    out.push(b'{');
    let mut current_topic: Option<&str> = None;
    for ((p, &cursor), &count) in partitions.iter().zip(cursors).zip(&selection.counts) {
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
        for (j, record) in selected(p, cursor, count).enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&record.json);
        }
        for (name, value) in [
            (&b"],\"high_watermark\":"[..], p.high_watermark),
            (b",\"last_stable_offset\":", p.last_stable_offset),
            (b",\"log_start_offset\":", p.log_start_offset),
        ] {
            out.extend_from_slice(name);
            match value {
                Some(offset) => out.extend_from_slice(offset.to_string().as_bytes()),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b",\"errcode\":0}");
    }
    if current_topic.is_some() {
        out.extend_from_slice(b"}}");
    }
    out.push(b'}');
    out
}

/// The selected records one by one: their JSON back to back in `json`, and per partition each record's
/// offset and the range of its JSON there.
pub struct Pieces {
    pub json: Vec<u8>,
    pub partitions: Vec<PartitionPieces>,
}

/// One partition's part of [`Pieces`].
pub struct PartitionPieces {
    pub records: Vec<(i64, std::ops::Range<usize>)>,
    pub high_watermark: Option<i64>,
}

/// Copies a selection out record by record, partitions in order, for message functions to change
/// before the records are rendered.
pub fn collect_pieces(partitions: &[PartitionBuffer], cursors: &[i64], selection: &Selection) -> Pieces {
    let mut json = Vec::new();
    let mut out = Vec::with_capacity(partitions.len());
    for ((p, &cursor), &count) in partitions.iter().zip(cursors).zip(&selection.counts) {
        let mut records = Vec::with_capacity(count);
        for record in selected(p, cursor, count) {
            let start = json.len();
            json.extend_from_slice(&record.json);
            records.push((record.offset, start..json.len()));
        }
        out.push(PartitionPieces { records, high_watermark: p.high_watermark });
    }
    Pieces { json, partitions: out }
}

/// The partition layout a stream cursor belongs to: 8 hex digits of an FNV-1a hash over the topics and
/// their partition counts, so a cursor of another route or of a repartitioned topic is refused.
pub fn layout_tag(partitions: &[PartitionBuffer]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for p in partitions {
        for b in p.topic.bytes().chain([0]).chain(p.partition.to_le_bytes()) {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    format!("{hash:08x}")
}

/// A stream cursor: `<layout>-<o1>.<o2>...`, the next offset of every partition in order.
pub fn format_cursor(layout: &str, cursors: &[i64], out: &mut Vec<u8>) {
    out.extend_from_slice(layout.as_bytes());
    for (i, c) in cursors.iter().enumerate() {
        out.push(if i == 0 { b'-' } else { b'.' });
        out.extend_from_slice(c.to_string().as_bytes());
    }
}

/// Parses a stream cursor made by [`format_cursor`] for the same layout.
///
/// # Errors
/// A message saying what is wrong with it.
pub fn parse_cursor(layout: &str, partitions: usize, text: &str) -> Result<Vec<i64>, String> {
    const MAX_LEN: usize = 4096;
    if text.len() > MAX_LEN {
        return Err("cursor is too long".into());
    }
    let (tag, offsets) = text.split_once('-').ok_or("cursor is malformed")?;
    if tag != layout {
        return Err("cursor belongs to another route or partition layout".into());
    }
    let parsed: Vec<i64> = offsets
        .split('.')
        .map(|o| {
            if o.is_empty() || o.len() > 19 || !o.bytes().all(|b| b.is_ascii_digit()) {
                return Err("cursor offsets must be non-negative integers".to_string());
            }
            o.parse::<i64>().map_err(|_| "cursor offsets must be non-negative integers".to_string())
        })
        .collect::<Result<_, _>>()?;
    if parsed.len() != partitions {
        return Err(format!("cursor has {} offsets, the route has {partitions} partitions", parsed.len()));
    }
    Ok(parsed)
}

/// Calls `emit(out, cursor, record)` for every selected record in partition order, `cursor` being the
/// stream cursor after it and `record` its JSON with `"topic"` and `"partition"` in front.
fn each_record(
    partitions: &[PartitionBuffer],
    cursors: &[i64],
    selection: &Selection,
    layout: &str,
    out: &mut Vec<u8>,
    mut emit: impl FnMut(&mut Vec<u8>, &[u8], &[u8]),
) {
    let mut position = cursors.to_vec();
    let mut cursor = Vec::with_capacity(layout.len() + 20 * cursors.len());
    let mut record_json = Vec::new();
    for (i, p) in partitions.iter().enumerate() {
        let count = selection.counts[i];
        if count == 0 {
            continue;
        }
        let mut prefix = Vec::with_capacity(p.topic.len() + 32);
        prefix.extend_from_slice(b"{\"topic\":");
        write_str(&mut prefix, &p.topic);
        prefix.extend_from_slice(b",\"partition\":");
        prefix.extend_from_slice(p.partition.to_string().as_bytes());
        prefix.push(b',');
        for record in selected(p, cursors[i], count) {
            position[i] = record.offset + 1;
            cursor.clear();
            format_cursor(layout, &position, &mut cursor);
            record_json.clear();
            record_json.extend_from_slice(&prefix);
            record_json.extend_from_slice(&record.json[1..]);
            emit(out, &cursor, &record_json);
        }
    }
}

/// Renders a selection as server-sent events, one per record, each `id:` the cursor after it.
pub fn render_sse(
    partitions: &[PartitionBuffer],
    cursors: &[i64],
    selection: &Selection,
    layout: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    each_record(partitions, cursors, selection, layout, &mut out, |out, cursor, record| {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(cursor);
        out.extend_from_slice(b"\nevent: message\ndata: ");
        out.extend_from_slice(record);
        out.extend_from_slice(b"\n\n");
    });
    out
}

/// `offsets` (ascending) as runs of consecutive offsets, flat: `[first, last, first, last, …]`, each run
/// inclusive. A partition's records are consecutive but for compaction and transaction markers, so a read
/// is one run: what a websocket read hands Lua for acknowledgement windows costs two numbers, not one per
/// record (each a protected call through the C API: with a list, the worker spent 1.2 times server-sent-
/// events' CPU per record on a websocket stream; docs/performance.md).
pub fn offset_runs(offsets: impl Iterator<Item = i64>) -> Vec<i64> {
    let mut runs: Vec<i64> = Vec::new();
    for offset in offsets {
        match runs.last_mut() {
            Some(last) if *last + 1 == offset => *last = offset,
            _ => runs.extend_from_slice(&[offset, offset]),
        }
    }
    runs
}

/// Renders a selection as one websocket text frame's payload: `{"type":"records","records":[{"cursor":
/// "<cursor after it>","topic":…,"partition":…,"offset":…,…},…],"cursor":"<cursor after the last>"}`.
/// One frame per read rather than per record: a frame costs a header and a write, and a client reads a
/// batch as cheaply as one record.
pub fn render_websocket(
    partitions: &[PartitionBuffer],
    cursors: &[i64],
    selection: &Selection,
    layout: &str,
) -> Vec<u8> {
    let mut out = b"{\"type\":\"records\",\"records\":[".to_vec();
    let mut last = Vec::new();
    each_record(partitions, cursors, selection, layout, &mut out, |out, cursor, record| {
        if !last.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"cursor\":\"");
        out.extend_from_slice(cursor);
        out.extend_from_slice(b"\",");
        out.extend_from_slice(&record[1..]);
        last.clear();
        last.extend_from_slice(cursor);
    });
    if last.is_empty() {
        format_cursor(layout, cursors, &mut last);
    }
    out.extend_from_slice(b"],\"cursor\":\"");
    out.extend_from_slice(&last);
    out.extend_from_slice(b"\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64, size: usize) -> Record {
        let json = format!("{{\"offset\":{offset},\"v\":\"{}\"}}", "x".repeat(size));
        Record { offset, timestamp: None, json: json.into_bytes().into_boxed_slice() }
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
        let s = select(&mut parts, &[2], 0, ALL, ReadMode::Own);
        assert_eq!(s.counts, vec![3]);
        assert_eq!(s.next, vec![5]);
        assert_eq!(parts[0].len(), 3, "records below the cursor are gone, the selected ones stay");
        // The same cursor again (a failed delivery) returns the same records.
        let again = select(&mut parts, &[2], 0, ALL, ReadMode::Own);
        assert_eq!(again.counts, vec![3]);
    }

    #[test]
    fn a_cursor_outside_the_buffer_asks_for_a_seek() {
        let mut parts = vec![filled("t", 0, 10..20)];
        let s = select(&mut parts, &[3], 0, ALL, ReadMode::Own);
        assert_eq!(s.total, 0);
        assert_eq!(parts[0].seek_request, Some(3));
        assert!(!parts[0].append(record(15, 1)), "nothing is appended while the seek is pending");
        parts[0].seek_request = None;
        assert!(parts[0].append(record(3, 1)));
        // far past the buffer (more than librdkafka's queue holds at its mean record size): a seek
        let mut far = vec![filled("t", 0, 10..20)];
        let beyond = 20 + (READ_THROUGH_MAX_BYTES / far[0].bytes() * far[0].len()) as i64 + 10;
        select(&mut far, &[beyond], 0, ALL, ReadMode::Own);
        assert!(far[0].seek_request.is_some());
    }

    #[test]
    fn a_cursor_a_little_past_the_buffer_reads_on_without_a_seek() {
        let mut ahead = vec![filled("t", 0, 10..20)];
        let s = select(&mut ahead, &[25], 0, ALL, ReadMode::Own);
        assert_eq!(s.total, 0);
        assert_eq!(ahead[0].seek_request, None, "the records up to the cursor are most likely fetched already");
        assert_eq!(ahead[0].len(), 0, "what lies below the cursor is gone");
        assert!(!ahead[0].append(record(20, 1)), "records below the cursor are dropped as they arrive");
        assert!(!ahead[0].append(record(24, 1)));
        assert!(ahead[0].append(record(25, 1)));
        let s = select(&mut ahead, &[25], 0, ALL, ReadMode::Own);
        assert_eq!((s.counts.clone(), s.next.clone()), (vec![1], vec![26]));
        // a paused partition fetches nothing: a seek
        let mut paused = vec![filled("t", 0, 10..20)];
        paused[0].paused = true;
        select(&mut paused, &[25], 0, ALL, ReadMode::Own);
        assert_eq!(paused[0].seek_request, Some(25));
    }

    #[test]
    fn limits_are_shared_across_partitions_round_robin() {
        let mut parts = vec![filled("t", 0, 0..10), filled("t", 1, 0..10)];
        let limits = Limits { max_records: 4, max_bytes: usize::MAX };
        let s = select(&mut parts, &[0, 0], 1, limits, ReadMode::Own);
        assert_eq!(s.counts, vec![0, 4], "starts with the partition named first");
        let s = select(&mut parts, &[0, 4], 0, limits, ReadMode::Own);
        assert_eq!(s.counts, vec![4, 0]);
    }

    #[test]
    fn byte_limit_but_always_one_record() {
        let mut parts = vec![filled("t", 0, 0..10)];
        let one = parts[0].records[0].json.len();
        let s = select(&mut parts, &[0], 0, Limits { max_records: 100, max_bytes: one * 3 }, ReadMode::Own);
        assert_eq!(s.total, 3);
        let s = select(&mut parts, &[0], 0, Limits { max_records: 100, max_bytes: 1 }, ReadMode::Own);
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
        parts[0].log_start_offset = Some(0);
        parts[0].last_stable_offset = Some(2);
        let s = select(&mut parts, &[0, 0, 4], 0, ALL, ReadMode::Own);
        let body = render_kong(&parts, &[0, 0, 4], &s);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["a"]["partitions"]["0"]["records"].as_array().unwrap().len(), 2);
        assert_eq!(v["a"]["partitions"]["0"]["high_watermark"], 2);
        assert_eq!(v["a"]["partitions"]["1"]["records"], serde_json::json!([]));
        assert_eq!(v["a"]["partitions"]["1"]["high_watermark"], serde_json::Value::Null);
        assert_eq!(v["a"]["partitions"]["0"]["log_start_offset"], 0);
        assert_eq!(v["a"]["partitions"]["0"]["last_stable_offset"], 2);
        assert_eq!(v["a"]["partitions"]["1"]["last_stable_offset"], serde_json::Value::Null);
        assert_eq!(v["a"]["partitions"]["1"]["errcode"], 0);
        assert_eq!(v["b\"x"]["partitions"]["0"]["records"][0]["offset"], 4);
    }

    #[test]
    fn shared_reads_leave_the_buffer_and_report_readers_behind() {
        let mut parts = vec![filled("t", 0, 0..10)];
        let s = select(&mut parts, &[4], 0, ALL, ReadMode::Shared);
        assert_eq!((s.counts[0], s.next[0], s.behind), (6, 10, false));
        assert_eq!(parts[0].len(), 10, "nothing evicted by a shared read");
        let half = parts[0].bytes() / 2;
        parts[0].evict_to_fit(half);
        let (from, next) = parts[0].bounds();
        assert_eq!((from, next), (5, 10));
        let s = select(&mut parts, &[4], 0, ALL, ReadMode::Shared);
        assert!(s.behind, "offset 4 was dropped");
        assert_eq!(parts[0].seek_request, None, "shared reads never seek");
        let s = select(&mut parts, &[12], 0, ALL, ReadMode::Shared);
        assert_eq!((s.total, s.behind), (0, false), "a cursor at the future waits");
    }

    #[test]
    fn sse_frames_carry_a_cursor_per_event_and_never_break_lines() {
        let mut parts = vec![filled("t", 0, 0..2), filled("t", 1, 5..6)];
        let layout = layout_tag(&parts);
        let s = select(&mut parts, &[0, 5], 0, ALL, ReadMode::Shared);
        let text = String::from_utf8(render_sse(&parts, &[0, 5], &s, &layout)).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 3);
        assert!(events[0].starts_with(&format!("id: {layout}-1.5\nevent: message\ndata: {{\"topic\":\"t\",\"partition\":0,\"offset\":0")));
        assert!(events[2].starts_with(&format!("id: {layout}-2.6\n")));
        for event in events {
            assert_eq!(event.lines().count(), 3);
            let data = event.lines().nth(2).unwrap().strip_prefix("data: ").unwrap();
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["topic"], "t");
        }
    }

    #[test]
    fn offsets_come_as_runs_of_consecutive_offsets() {
        assert_eq!(offset_runs([7, 8, 9].into_iter()), [7, 9]);
        assert_eq!(offset_runs([3, 5, 6, 9].into_iter()), [3, 3, 5, 6, 9, 9]);
        assert_eq!(offset_runs(std::iter::empty()), Vec::<i64>::new());
    }

    #[test]
    fn a_websocket_frame_is_one_json_document_with_a_cursor_per_record_and_after_the_last() {
        let mut parts = vec![filled("t", 0, 0..2), filled("t", 1, 5..6)];
        let layout = layout_tag(&parts);
        let s = select(&mut parts, &[0, 5], 0, ALL, ReadMode::Shared);
        let frame: serde_json::Value = serde_json::from_slice(&render_websocket(&parts, &[0, 5], &s, &layout)).unwrap();
        assert_eq!(frame["type"], "records");
        let records = frame["records"].as_array().unwrap();
        let seen: Vec<(i64, i64, String)> = records
            .iter()
            .map(|r| (r["partition"].as_i64().unwrap(), r["offset"].as_i64().unwrap(), r["cursor"].to_string()))
            .collect();
        assert_eq!(seen, [
            (0, 0, format!("\"{layout}-1.5\"")),
            (0, 1, format!("\"{layout}-2.5\"")),
            (1, 5, format!("\"{layout}-2.6\"")),
        ]);
        assert_eq!(frame["cursor"], format!("{layout}-2.6"));
        let none = select(&mut parts, &[2, 6], 0, ALL, ReadMode::Shared);
        let empty: serde_json::Value = serde_json::from_slice(&render_websocket(&parts, &[2, 6], &none, &layout)).unwrap();
        assert_eq!(empty, serde_json::json!({"type": "records", "records": [], "cursor": format!("{layout}-2.6")}));
    }

    #[test]
    fn pieces_are_the_selected_records_one_by_one() {
        let mut parts = vec![filled("t", 0, 0..3), filled("t", 1, 7..9)];
        parts[1].high_watermark = Some(9);
        let s = select(&mut parts, &[1, 7], 0, Limits { max_records: 3, max_bytes: usize::MAX }, ReadMode::Own);
        let pieces = collect_pieces(&parts, &[1, 7], &s);
        let offsets: Vec<Vec<i64>> =
            pieces.partitions.iter().map(|p| p.records.iter().map(|r| r.0).collect()).collect();
        assert_eq!(offsets, vec![vec![1, 2], vec![7]]);
        assert_eq!(pieces.partitions[1].high_watermark, Some(9));
        let (offset, range) = &pieces.partitions[1].records[0];
        let v: serde_json::Value = serde_json::from_slice(&pieces.json[range.clone()]).unwrap();
        assert_eq!(v["offset"], *offset);
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let parts = vec![PartitionBuffer::new("t", 0, 0), PartitionBuffer::new("t", 1, 0)];
        let layout = layout_tag(&parts);
        let mut text = Vec::new();
        format_cursor(&layout, &[17, 0], &mut text);
        let text = String::from_utf8(text).unwrap();
        assert_eq!(parse_cursor(&layout, 2, &text), Ok(vec![17, 0]));
        let mut max = Vec::new();
        format_cursor(&layout, &[i64::MAX, 0], &mut max);
        assert_eq!(parse_cursor(&layout, 2, std::str::from_utf8(&max).unwrap()), Ok(vec![i64::MAX, 0]));
        assert!(parse_cursor(&layout, 2, &format!("{layout}-9223372036854775808.0")).is_err());
        let other = layout_tag(&[PartitionBuffer::new("u", 0, 0)]);
        assert_ne!(layout, other);
        for bad in ["", "garbage", &format!("{layout}-1"), &format!("{layout}-1.x"), &format!("{layout}--1.2"),
                    &format!("{other}-1.2"), &format!("{layout}-1.2.3"), &format!("{layout}-99999999999999999999.1")] {
            assert!(parse_cursor(&layout, 2, bad).is_err(), "{bad}");
        }
    }
}
