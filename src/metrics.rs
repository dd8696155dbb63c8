//! Prometheus metrics: what the native side counts, and the exposition of a node's metrics.
//!
//! nginx runs each worker as a process with its own copy of this module, so no process sees a node's
//! numbers. Each worker hands its own to Lua ([`snapshot`], once a second and before a scrape):
//! counters as what they grew by since the last snapshot, which Lua adds up node-wide in the shared
//! dict (a worker that dies loses at most its last second), and gauges as they are now, which Lua keeps
//! per worker for a few seconds. The worker that answers a scrape passes the node's series to
//! [`render`], which merges the workers' gauges, derives the lags, and encodes everything with
//! prometheus-client in Prometheus' text format.
//!
//! A series travels as a key: the family's name, then its label values in the family's order, joined by
//! [`SEP`]. Counting is lock-free: a handle holds its group's [`GroupCounters`] and only adds to
//! atomics; the registries below are locked when a handle starts and when a snapshot is taken.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::consumer::{Phase, Shared};
use crate::diagnosis::Cause;
use crate::settings::Delivery;

/// Separates a key's parts; a label value containing it has it replaced (consumer group ids are free text).
pub const SEP: char = '\u{1f}';
/// Every family's name starts with this (as Kong's own start with `kong_`).
const PREFIX: &str = "confluent_consume";

/// Seconds from a record's broker timestamp to the read that hands it to a client.
const AGE_BOUNDS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0];
/// Seconds from an asynchronous commit's request to the broker's answer.
const COMMIT_BOUNDS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// How a family's series from several workers (or handles) become one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Merge {
    /// Each worker holds a part: streams, buffers.
    Sum,
    /// Each worker sees the same fact, some later than others: offsets.
    Max,
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Counter,
    Gauge(Merge),
    Histogram(&'static [f64]),
}

/// A metric family: its name without the prefix (and without `_total`), help, type and label names.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
}

const PARTITION: &[&str] = &["group", "topic", "partition"];

/// Every family either side reports. The Lua side counts requests (`metrics.lua`); the native side
/// Kafka; the lags are derived at the scrape.
pub static FAMILIES: &[Family] = &[
    Family { name: "requests", help: "Requests answered, by route, mode and HTTP status", kind: Kind::Counter,
             labels: &["route", "mode", "status"] },
    Family { name: "records_served", help: "Records written to clients", kind: Kind::Counter,
             labels: &["route", "mode"] },
    Family { name: "bytes_served", help: "Bytes of record bodies written to clients", kind: Kind::Counter,
             labels: &["route", "mode"] },
    Family { name: "streams_open", help: "Open streams", kind: Kind::Gauge(Merge::Sum),
             labels: &["route", "mode"] },
    Family { name: "catchup_streams", help: "Streams reading a consumer of their own to catch up with the live records",
             kind: Kind::Gauge(Merge::Sum), labels: &["route", "mode"] },
    Family { name: "long_polls_waiting", help: "http-get requests waiting for records", kind: Kind::Gauge(Merge::Sum),
             labels: &["route"] },
    Family { name: "high_watermark", help: "The partition's high watermark (the offset of its next record)",
             kind: Kind::Gauge(Merge::Max), labels: PARTITION },
    Family { name: "committed_offset", help: "The group's committed offset, as this node's commits left it",
             kind: Kind::Gauge(Merge::Max), labels: PARTITION },
    Family { name: "delivery_position", help: "The next offset this node hands out to the group's clients",
             kind: Kind::Gauge(Merge::Max), labels: PARTITION },
    Family { name: "consumer_lag", help: "Records behind: high watermark minus the group's committed offset",
             kind: Kind::Gauge(Merge::Max), labels: PARTITION },
    Family { name: "delivery_lag", help: "Records behind: high watermark minus this node's delivery position",
             kind: Kind::Gauge(Merge::Max), labels: PARTITION },
    Family { name: "buffer_bytes", help: "Bytes of records buffered per partition",
             kind: Kind::Gauge(Merge::Sum), labels: &["group", "delivery", "topic", "partition"] },
    Family { name: "broker_errors", help: "Errors librdkafka reported, by cause", kind: Kind::Counter,
             labels: &["group", "kind"] },
    Family { name: "commits", help: "Offset commits answered by the broker, by result", kind: Kind::Counter,
             labels: &["group", "result"] },
    Family { name: "commit_latency_seconds", help: "Time from an offset commit to the broker's answer",
             kind: Kind::Histogram(&COMMIT_BOUNDS), labels: &["group"] },
    Family { name: "record_age_seconds", help: "Time from a record's broker timestamp to its read for a client",
             kind: Kind::Histogram(&AGE_BOUNDS), labels: &["group", "delivery"] },
];

fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// A histogram of fixed bounds kept in atomics: per bucket the observations up to its bound (not
/// cumulative; the last bucket is above every bound), and the sum in microseconds.
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_micros: AtomicU64::new(0) }
    }

    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        let i = self.bounds.partition_point(|&b| b < seconds);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// What it grew by since the last take, as counter series `<key>SEP<bucket index>` and `<key>SEPsum`.
    fn take(&self, key: &str, out: &mut Vec<(String, f64)>) {
        for (i, bucket) in self.buckets.iter().enumerate() {
            let n = bucket.swap(0, Ordering::Relaxed);
            if n > 0 {
                out.push((format!("{key}{SEP}{i}"), n as f64));
            }
        }
        let sum = self.sum_micros.swap(0, Ordering::Relaxed);
        if sum > 0 {
            out.push((format!("{key}{SEP}sum"), sum as f64 / 1e6));
        }
    }
}

/// The counters of one consumer group and kind of handle, shared by its handles in this process.
pub struct GroupCounters {
    group: String,
    delivery: Delivery,
    errors: [AtomicU64; Cause::ALL.len()],
    commits_ok: AtomicU64,
    commits_failed: AtomicU64,
    pub commit_latency: Histogram,
    pub record_age: Histogram,
}

impl GroupCounters {
    pub fn broker_error(&self, cause: Cause) {
        self.errors[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn commit(&self, ok: bool) {
        let counter = if ok { &self.commits_ok } else { &self.commits_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self, out: &mut Vec<(String, f64)>) {
        let group = label(&self.group);
        for (cause, n) in Cause::ALL.iter().zip(&self.errors) {
            let n = n.swap(0, Ordering::Relaxed);
            if n > 0 {
                out.push((key(&["broker_errors", &group, cause.name()]), n as f64));
            }
        }
        for (result, n) in [("ok", &self.commits_ok), ("failed", &self.commits_failed)] {
            let n = n.swap(0, Ordering::Relaxed);
            if n > 0 {
                out.push((key(&["commits", &group, result]), n as f64));
            }
        }
        self.commit_latency.take(&key(&["commit_latency_seconds", &group]), out);
        self.record_age.take(&key(&["record_age_seconds", &group, delivery_name(self.delivery)]), out);
    }
}

/// Whether reads observe `record_age_seconds` (the one per-record cost; off with metrics off, metrics.lua).
static RECORD_AGES: AtomicBool = AtomicBool::new(true);

pub fn count_record_ages(on: bool) {
    RECORD_AGES.store(on, Ordering::Relaxed);
}

pub fn counting_record_ages() -> bool {
    RECORD_AGES.load(Ordering::Relaxed)
}

static COUNTERS: Lazy<Mutex<Vec<Arc<GroupCounters>>>> = Lazy::new(|| Mutex::new(Vec::new()));
static HANDLES: Lazy<Mutex<Vec<Weak<Shared>>>> = Lazy::new(|| Mutex::new(Vec::new()));

/// The counters of `group`'s handles of kind `delivery` in this process. They outlive the handles, so
/// what a closed handle counted still reaches the next snapshot.
pub fn counters(group: &str, delivery: Delivery) -> Arc<GroupCounters> {
    let mut all = COUNTERS.lock();
    if let Some(c) = all.iter().find(|c| c.group == group && c.delivery == delivery) {
        return Arc::clone(c);
    }
    let c = Arc::new(GroupCounters {
        group: group.to_owned(),
        delivery,
        errors: Default::default(),
        commits_ok: AtomicU64::new(0),
        commits_failed: AtomicU64::new(0),
        commit_latency: Histogram::new(&COMMIT_BOUNDS),
        record_age: Histogram::new(&AGE_BOUNDS),
    });
    all.push(Arc::clone(&c));
    c
}

/// Makes a handle's partitions part of the snapshots for as long as it is open.
pub fn watch(shared: &Arc<Shared>) {
    let mut handles = HANDLES.lock();
    handles.retain(|h| h.strong_count() > 0);
    handles.push(Arc::downgrade(shared));
}

pub fn delivery_name(delivery: Delivery) -> &'static str {
    match delivery {
        Delivery::Queue => "queue",
        Delivery::Broadcast => "broadcast",
        Delivery::Replay => "replay",
    }
}

fn label(value: &str) -> String {
    value.replace(SEP, "?")
}

fn key(parts: &[&str]) -> String {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.push_str(part);
    }
    out
}

/// This process's counters (what they grew by since the last snapshot) and gauges (as they are now).
pub fn snapshot() -> (Vec<(String, f64)>, BTreeMap<String, f64>) {
    let mut counters = Vec::new();
    for c in COUNTERS.lock().iter() {
        c.take(&mut counters);
    }
    let handles: Vec<Arc<Shared>> = HANDLES.lock().iter().filter_map(Weak::upgrade).collect();
    let mut gauges = BTreeMap::new();
    for shared in handles {
        let settings = &shared.settings;
        let group = label(&settings.group_id);
        let delivery = delivery_name(settings.delivery);
        let state = shared.state.lock();
        if state.phase == Phase::Closed {
            continue;
        }
        for p in &state.partitions {
            let partition = p.partition.to_string();
            let topic = label(&p.topic);
            let mut set = |name: &str, value: Option<i64>| {
                if let Some(v) = value {
                    let parts: &[&str] = if name == "buffer_bytes" {
                        &[name, &group, delivery, &topic, &partition]
                    } else {
                        &[name, &group, &topic, &partition]
                    };
                    merge_into(&mut gauges, key(parts), v as f64);
                }
            };
            set("high_watermark", p.high_watermark);
            if settings.delivery == Delivery::Queue {
                set("committed_offset", p.committed);
            }
            set("buffer_bytes", Some(p.bytes() as i64));
        }
    }
    (counters, gauges)
}

/// Adds a gauge's value to `gauges` by its family's merge rule; unknown families are dropped.
fn merge_into(gauges: &mut BTreeMap<String, f64>, key: String, value: f64) {
    let name = key.split(SEP).next().unwrap_or_default();
    let Some(Family { kind: Kind::Gauge(merge), .. }) = family(name) else {
        return;
    };
    gauges
        .entry(key)
        .and_modify(|v| {
            *v = match merge {
                Merge::Sum => *v + value,
                Merge::Max => v.max(value),
            }
        })
        .or_insert(value);
}

/// A node's metrics in Prometheus' text format: `counters` summed over the node (keys as [`snapshot`]
/// makes them, histograms as their buckets and sums), `gauges` every worker's (merged here, by family).
///
/// # Errors
/// Only when the encoder fails to write (it writes to a `String`, so never in practice).
pub fn render(counters: &[(String, f64)], gauges: &[(String, f64)]) -> Result<String, std::fmt::Error> {
    let merged = merge_gauges(gauges);
    let mut series: BTreeMap<&'static str, Vec<(Vec<String>, f64)>> = BTreeMap::new();
    for (k, v) in counters.iter().map(|(k, v)| (k, v)).chain(merged.iter()) {
        let mut parts = k.split(SEP);
        let Some(f) = parts.next().and_then(family) else { continue };
        series.entry(f.name).or_default().push((parts.map(str::to_owned).collect(), *v));
    }
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Node { series }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// Every worker's gauges as the node's: merged by family, with the lags derived.
pub fn merge_gauges(gauges: &[(String, f64)]) -> BTreeMap<String, f64> {
    let mut merged = BTreeMap::new();
    for (k, v) in gauges {
        merge_into(&mut merged, k.clone(), *v);
    }
    derive_lags(&mut merged);
    merged
}

/// `consumer_lag` and `delivery_lag` of every partition whose high watermark is known, from the merged
/// gauges.
fn derive_lags(gauges: &mut BTreeMap<String, f64>) {
    let mut lags = Vec::new();
    for (k, &high) in gauges.range("high_watermark".to_owned()..) {
        let Some(rest) = k.strip_prefix("high_watermark") else { break };
        for (from, to) in [("committed_offset", "consumer_lag"), ("delivery_position", "delivery_lag")] {
            if let Some(&at) = gauges.get(&format!("{from}{rest}")) {
                lags.push((format!("{to}{rest}"), (high - at).max(0.0)));
            }
        }
    }
    gauges.extend(lags);
}

/// The merged series of a node, by family, for prometheus-client to encode.
#[derive(Debug)]
struct Node {
    series: BTreeMap<&'static str, Vec<(Vec<String>, f64)>>,
}

impl prometheus_client::collector::Collector for Node {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in FAMILIES {
            let Some(list) = self.series.get(f.name) else { continue };
            let kind = match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge(_) => MetricType::Gauge,
                Kind::Histogram(_) => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(f.name, f.help, None, kind)?;
            match f.kind {
                Kind::Histogram(bounds) => encode_histograms(&mut metric, f, bounds, list)?,
                _ => {
                    for (values, v) in list {
                        if values.len() != f.labels.len() {
                            continue;
                        }
                        let labels: Vec<(&str, &str)> =
                            f.labels.iter().copied().zip(values.iter().map(String::as_str)).collect();
                        let mut m = metric.encode_family(&labels)?;
                        match f.kind {
                            Kind::Counter => Counter(*v).encode(m)?,
                            _ => m.encode_gauge(v)?,
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A counter's value for the encoder (prometheus-client's own counters are live atomics; these are
/// numbers read from the shared dict).
#[derive(Debug)]
struct Counter(f64);

impl prometheus_client::encoding::EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(&self.0, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Puts each histogram's buckets (`<labels>SEP<index>`) and sum (`<labels>SEPsum`) back together.
fn encode_histograms(
    metric: &mut MetricEncoder,
    f: &Family,
    bounds: &[f64],
    list: &[(Vec<String>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut histograms: BTreeMap<&[String], (Vec<u64>, f64)> = BTreeMap::new();
    for (values, v) in list {
        let Some((part, labels)) = values.split_last() else { continue };
        if labels.len() != f.labels.len() {
            continue;
        }
        let h = histograms.entry(labels).or_insert_with(|| (vec![0; bounds.len() + 1], 0.0));
        match part.as_str() {
            "sum" => h.1 += v,
            index => {
                if let Some(bucket) = index.parse::<usize>().ok().and_then(|i| h.0.get_mut(i)) {
                    *bucket += *v as u64;
                }
            }
        }
    }
    for (labels, (buckets, sum)) in histograms {
        // per bucket, as the encoder wants them (it writes them cumulative)
        let encoded: Vec<(f64, u64)> =
            buckets.iter().enumerate().map(|(i, &n)| (bounds.get(i).copied().unwrap_or(f64::INFINITY), n)).collect();
        let count = buckets.iter().sum();
        let labels: Vec<(&str, &str)> = f.labels.iter().copied().zip(labels.iter().map(String::as_str)).collect();
        metric.encode_family(&labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sum, count, &encoded, None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(parts: &[&str]) -> String {
        key(parts)
    }

    #[test]
    fn gauges_merge_by_family_and_lags_are_derived() {
        let gauges = vec![
            (k(&["high_watermark", "g", "t", "0"]), 10.0),
            (k(&["high_watermark", "g", "t", "0"]), 12.0),
            (k(&["committed_offset", "g", "t", "0"]), 7.0),
            (k(&["delivery_position", "g", "t", "0"]), 9.0),
            (k(&["buffer_bytes", "g", "queue", "t", "0"]), 100.0),
            (k(&["buffer_bytes", "g", "queue", "t", "0"]), 50.0),
        ];
        let text = render(&[], &gauges).unwrap();
        assert!(text.contains("confluent_consume_high_watermark{group=\"g\",topic=\"t\",partition=\"0\"} 12"), "{text}");
        assert!(text.contains("confluent_consume_consumer_lag{group=\"g\",topic=\"t\",partition=\"0\"} 5"), "{text}");
        assert!(text.contains("confluent_consume_delivery_lag{group=\"g\",topic=\"t\",partition=\"0\"} 3"), "{text}");
        assert!(text.contains("confluent_consume_buffer_bytes{group=\"g\",delivery=\"queue\",topic=\"t\",partition=\"0\"} 150"),
                "{text}");
        assert!(text.contains("# TYPE confluent_consume_consumer_lag gauge"), "{text}");
    }

    #[test]
    fn counters_and_histograms_render_with_their_types() {
        let h = Histogram::new(&COMMIT_BOUNDS);
        h.observe(0.003);
        h.observe(0.003);
        h.observe(7.0);
        let mut counters = vec![(k(&["requests", "r", "http-get", "200"]), 3.0)];
        h.take(&k(&["commit_latency_seconds", "g"]), &mut counters);
        let text = render(&counters, &[]).unwrap();
        assert!(text.contains("# TYPE confluent_consume_requests_total counter"), "{text}");
        assert!(text.contains("confluent_consume_requests_total{route=\"r\",mode=\"http-get\",status=\"200\"} 3"), "{text}");
        assert!(text.contains("confluent_consume_commit_latency_seconds_bucket{le=\"0.0025\",group=\"g\"} 0")
            || text.contains("confluent_consume_commit_latency_seconds_bucket{group=\"g\",le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("confluent_consume_commit_latency_seconds_count{group=\"g\"} 3"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3"), "{text}");
        // taken: the next take has nothing
        let mut again = Vec::new();
        h.take("x", &mut again);
        assert!(again.is_empty());
    }

    #[test]
    fn label_values_are_escaped_by_the_library_and_unknown_series_are_dropped() {
        let counters = vec![
            (k(&["requests", "a\"b\\c", "http-get", "200"]), 1.0),
            (k(&["no_such_family", "x"]), 1.0),
            (k(&["requests", "too", "few"]), 1.0),
        ];
        let text = render(&counters, &[]).unwrap();
        assert!(text.contains("route=\"a\\\"b\\\\c\""), "{text}");
        assert!(!text.contains("no_such_family"), "{text}");
        assert_eq!(text.matches("confluent_consume_requests_total{").count(), 1, "{text}");
    }
}
