//! `kafka-tool` against a real broker: every subcommand the specs and the benchmark rely on, with exact
//! counts, offsets, partitions, keys, headers, watermarks and committed offsets.
//!
//! The tests share one tansu of their own (sqlite storage, started through `scripts/broker.sh` on a free
//! loopback port, stopped when the last test using it ends), so they run beside any other broker on the
//! machine. tansu must be installed (`make broker`; `scripts/broker.sh install` builds it otherwise).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

const TOOL: &str = env!("CARGO_BIN_EXE_kafka-tool");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tools/ has a parent").to_path_buf()
}

/// A tansu broker of these tests; stopped (by its pid file, through broker.sh) when dropped.
struct Broker {
    dir: PathBuf,
    port: u16,
}

static SHARED: Mutex<Weak<Broker>> = Mutex::new(Weak::new());
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// The broker the running tests share, started when none runs.
fn broker() -> Arc<Broker> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(broker) = shared.upgrade() {
        return broker;
    }
    let broker = Arc::new(Broker::start());
    *shared = Arc::downgrade(&broker);
    broker
}

impl Broker {
    fn start() -> Broker {
        let script = repo_root().join("scripts/broker.sh");
        let install = Command::new(&script).arg("install").output().expect("run scripts/broker.sh install");
        assert!(install.status.success(), "tansu is not installed: {}", String::from_utf8_lossy(&install.stderr));
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kafka-tool-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A free port may be taken between the probe and tansu's bind: then another one.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
            let out = Command::new(&script)
                .args(["start", "--dir"])
                .arg(&dir)
                .args(["--port", &port.to_string(), "--storage", "sqlite"])
                .env("KAFKA_TOOL", TOOL)
                .output()
                .expect("run scripts/broker.sh start");
            if out.status.success() {
                return Broker { dir, port };
            }
            last_error = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("cannot start tansu: {last_error}");
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic with a name no other test uses.
    fn topic(&self, prefix: &str, partitions: u32) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let out = Command::new(repo_root().join("scripts/broker.sh"))
            .args(["topic", "--port", &self.port.to_string(), &name, &partitions.to_string()])
            .output()
            .expect("run scripts/broker.sh topic");
        assert!(out.status.success(), "cannot create {name}: {}", String::from_utf8_lossy(&out.stderr));
        name
    }

    fn run(&self, command: &str, args: &[&str]) -> Output {
        Command::new(TOOL)
            .arg(command)
            .args(["--brokers", &self.brokers()])
            .args(args)
            .output()
            .expect("run kafka-tool")
    }

    /// Every stdout line of a successful run, as JSON.
    fn lines(&self, command: &str, args: &[&str]) -> Vec<Value> {
        let out = self.run(command, args);
        assert!(
            out.status.success(),
            "kafka-tool {command} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("UTF-8 output")
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
            .collect()
    }

    /// The one JSON result line of a successful run.
    fn json(&self, command: &str, args: &[&str]) -> Value {
        let mut lines = self.lines(command, args);
        assert_eq!(lines.len(), 1, "one result line: {lines:?}");
        lines.pop().expect("a line")
    }

    /// The stderr of a run that must fail with status 1.
    fn fails(&self, command: &str, args: &[&str]) -> String {
        let out = self.run(command, args);
        assert_eq!(out.status.code(), Some(1), "kafka-tool {command} {args:?} should fail");
        assert!(out.stdout.is_empty(), "no result on failure");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `consume --print` from the earliest offset: the records (the summary line is checked and dropped).
    fn records(&self, topic: &str, count: usize, extra: &[&str]) -> Vec<Value> {
        let count_arg = count.to_string();
        let mut args = vec!["--topic", topic, "--count", &count_arg, "--print", "--timeout-ms", "30000"];
        args.extend_from_slice(extra);
        let mut lines = self.lines("consume", &args);
        let summary = lines.pop().expect("a summary line");
        assert_eq!(summary["records"], json!(count), "{summary}");
        assert_eq!(lines.len(), count);
        lines
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/broker.sh")).args(["stop", "--dir"]).arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

/// (partition, offset, key, value) of printed records, sorted by partition and offset.
fn summary(records: &[Value]) -> Vec<(i64, i64, Option<String>, Option<String>)> {
    let text = |v: &Value| v.as_str().map(|h| String::from_utf8(unhex(h)).expect("UTF-8"));
    let mut list: Vec<_> = records
        .iter()
        .map(|r| {
            let (partition, offset) = (r["partition"].as_i64().unwrap(), r["offset"].as_i64().unwrap());
            (partition, offset, text(&r["key_hex"]), text(&r["value_hex"]))
        })
        .collect();
    list.sort();
    list
}

#[test]
fn produce_spreads_records_round_robin_with_keys_and_watermarks_follow() {
    let broker = broker();
    let topic = broker.topic("round-robin", 3);
    let empty = broker.json("watermarks", &["--topic", &topic]);
    assert_eq!(empty, json!({"0": {"low": 0, "high": 0}, "1": {"low": 0, "high": 0}, "2": {"low": 0, "high": 0}}));

    let produced = broker.json(
        "produce",
        &["--topic", &topic, "--count", "10", "--partitions", "3", "--key-prefix", "k-", "--format", "text"],
    );
    assert_eq!(produced["produced"], 10);
    assert_eq!(produced["first_offsets"], json!({"0": 0, "1": 0, "2": 0}));

    // record i goes to partition i % 3, keyed k-i, valued msg-i, in order
    let mut expected: Vec<_> =
        (0..10).map(|i| (i % 3, i / 3, Some(format!("k-{i}")), Some(format!("msg-{i}")))).collect();
    expected.sort();
    assert_eq!(summary(&broker.records(&topic, 10, &[])), expected);
    assert_eq!(
        broker.json("watermarks", &["--topic", &topic]),
        json!({"0": {"low": 0, "high": 4}, "1": {"low": 0, "high": 3}, "2": {"low": 0, "high": 3}})
    );

    // a second run continues each partition's offsets
    let again = broker.json("produce", &["--topic", &topic, "--count", "6", "--partitions", "3", "--format", "text"]);
    assert_eq!(again["first_offsets"], json!({"0": 4, "1": 3, "2": 3}));
    assert_eq!(
        broker.json("watermarks", &["--topic", &topic]),
        json!({"0": {"low": 0, "high": 6}, "1": {"low": 0, "high": 5}, "2": {"low": 0, "high": 5}})
    );
}

#[test]
fn produce_to_one_partition_json_values_of_a_size_and_compression() {
    let broker = broker();
    let topic = broker.topic("one-partition", 3);
    let produced = broker.json("produce", &["--topic", &topic, "--count", "5", "--partition", "1", "--size", "300"]);
    assert_eq!(produced["first_offsets"], json!({"1": 0}));
    assert_eq!(
        broker.json("watermarks", &["--topic", &topic]),
        json!({"0": {"low": 0, "high": 0}, "1": {"low": 0, "high": 5}, "2": {"low": 0, "high": 0}})
    );
    let records = broker.records(&topic, 5, &[]);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["partition"], 1);
        assert_eq!(record["offset"], i);
        assert_eq!(record["key_hex"], Value::Null, "no --key-prefix: no key");
        let value = unhex(record["value_hex"].as_str().unwrap());
        assert_eq!(value.len(), 300, "--size pads the JSON value");
        let value: Value = serde_json::from_slice(&value).expect("a JSON value");
        assert_eq!(value["seq"], i);
        assert!(value["ts_us"].as_i64().unwrap() > 1_700_000_000_000_000, "{value}");
    }

    for codec in ["gzip", "lz4", "zstd"] {
        let topic = broker.topic(codec, 1);
        broker.json("produce", &["--topic", &topic, "--count", "50", "--compression", codec, "--format", "text"]);
        let expected: Vec<_> = (0..50).map(|i| (0, i, None, Some(format!("msg-{i}")))).collect();
        assert_eq!(summary(&broker.records(&topic, 50, &[])), expected, "{codec}");
    }
}

#[test]
fn produce_at_a_rate_takes_its_time() {
    let broker = broker();
    let topic = broker.topic("rate", 1);
    let started = Instant::now();
    let produced = broker.json("produce", &["--topic", &topic, "--count", "20", "--rate", "40", "--format", "text"]);
    let took = started.elapsed();
    assert_eq!(produced["produced"], 20);
    // record i is due i/40 s after the start, the run ends after the 20th: at least half a second
    assert!(produced["seconds"].as_f64().unwrap() >= 0.5, "{produced}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert_eq!(broker.json("watermarks", &["--topic", &topic]), json!({"0": {"low": 0, "high": 20}}));
    for bad in [&["--rate", "0"][..], &["--rate", "10", "--interval-ms", "5"][..]] {
        let mut args = vec!["--topic", &topic, "--count", "1"];
        args.extend_from_slice(bad);
        assert!(broker.fails("produce", &args).contains("--rate wants records per second"), "{bad:?}");
    }
}

#[test]
fn produce_one_writes_exact_keys_values_headers_and_partitions() {
    let broker = broker();
    let topic = broker.topic("exact", 3);
    let first = broker.json(
        "produce-one",
        &[
            "--topic", &topic, "--partition", "2", "--key", "k1", "--value", "line\nbreak",
            "--header", "trace=abc", "--header-hex", "bin=ff00", "--header-null", "empty",
            "--header-raw", "ff6e616d65=76",
        ],
    );
    assert_eq!(first, json!({"partition": 2, "offset": 0}));
    let second =
        broker.json("produce-one", &["--topic", &topic, "--partition", "2", "--key-hex", "00ff", "--null-value"]);
    assert_eq!(second, json!({"partition": 2, "offset": 1}));
    let third = broker.json(
        "produce-one",
        &["--topic", &topic, "--partition", "0", "--value-hex", "c328", "--compression", "gzip"],
    );
    assert_eq!(third, json!({"partition": 0, "offset": 0}));

    let mut records = broker.records(&topic, 3, &[]);
    records.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
    assert_eq!(
        records,
        vec![
            json!({"partition": 0, "offset": 0, "key_hex": null, "value_hex": "c328", "headers": []}),
            json!({"partition": 2, "offset": 0, "key_hex": hex(b"k1"), "value_hex": hex(b"line\nbreak"),
                   "headers": [["trace", hex(b"abc")], ["bin", "ff00"], ["empty", null], ["\u{fffd}name", "76"]]}),
            json!({"partition": 2, "offset": 1, "key_hex": "00ff", "value_hex": null, "headers": []}),
        ]
    );
    assert!(broker.fails("produce-one", &["--topic", &topic, "--value", "v", "--null-value"]).contains("--null-value"));
    assert!(broker.fails("produce-one", &["--topic", &topic, "--key", "a", "--key-hex", "62"]).contains("exclude"));
    assert!(broker.fails("produce-one", &["--topic", &topic, "--value-hex", "abc"]).contains("odd-length hex"));
}

/// Commits `offsets` (partition, next offset) for `group` as another client would: an rdkafka consumer of
/// this test, not kafka-tool.
fn commit_as_another_client(broker: &Broker, topic: &str, group: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut tpl = TopicPartitionList::new();
    for &(partition, offset) in offsets {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset)).expect("an offset");
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
}

#[test]
fn committed_and_consume_from_committed_offsets_and_exact_positions() {
    let broker = broker();
    let topic = broker.topic("committed", 2);
    broker.json("produce", &["--topic", &topic, "--count", "20", "--partitions", "2", "--format", "text"]);
    let group = format!("group-{topic}");
    assert_eq!(broker.json("committed", &["--topic", &topic, "--group", &group]), json!({"0": null, "1": null}));

    commit_as_another_client(&broker, &topic, &group, &[(0, 7), (1, 2)]);
    assert_eq!(broker.json("committed", &["--topic", &topic, "--group", &group]), json!({"0": 7, "1": 2}));

    // from the committed offsets: partition 0 holds 3 more (7..9), partition 1 holds 8 more (2..9)
    let records = broker.records(&topic, 11, &["--from", "committed", "--group", &group]);
    let positions: Vec<(i64, i64)> = summary(&records).into_iter().map(|(p, o, _, _)| (p, o)).collect();
    let expected: Vec<(i64, i64)> = (7..10).map(|o| (0, o)).chain((2..10).map(|o| (1, o))).collect();
    assert_eq!(positions, expected);

    // from an exact offset, on every partition; then --commit stores the positions reached
    let group2 = format!("group2-{topic}");
    let records = broker.records(&topic, 4, &["--from", "8", "--group", &group2, "--commit"]);
    let positions: Vec<(i64, i64)> = summary(&records).into_iter().map(|(p, o, _, _)| (p, o)).collect();
    assert_eq!(positions, vec![(0, 8), (0, 9), (1, 8), (1, 9)]);
    assert_eq!(broker.json("committed", &["--topic", &topic, "--group", &group2]), json!({"0": 10, "1": 10}));
    // the other group's offsets are untouched
    assert_eq!(broker.json("committed", &["--topic", &topic, "--group", &group]), json!({"0": 7, "1": 2}));
}

#[test]
fn consume_counts_exactly_and_fails_when_records_are_missing() {
    let broker = broker();
    let topic = broker.topic("count", 1);
    broker.json("produce", &["--topic", &topic, "--count", "10", "--format", "text"]);
    let summary = broker.json("consume", &["--topic", &topic, "--count", "10", "--timeout-ms", "30000"]);
    assert_eq!(summary["records"], 10);
    // "msg-0".."msg-9": 5 bytes each, no keys
    assert_eq!(summary["bytes"], 50);
    let err = broker.fails("consume", &["--topic", &topic, "--count", "11", "--timeout-ms", "1500"]);
    assert!(err.contains("timed out after 10 of 11 records"), "{err}");
    let err = broker.fails("consume", &["--topic", &topic, "--count", "1", "--from", "soon"]);
    assert!(err.contains("--from must be earliest, latest, committed or an offset"), "{err}");
    let err = broker.fails("watermarks", &["--topic", "no-such-topic-here"]);
    assert!(err.contains("no-such-topic-here"), "{err}");
}

/// Stops a child process of this test when dropped (also when the test fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn latency_measures_records_produced_after_it_started() {
    let broker = broker();
    let topic = broker.topic("latency", 2);
    let latency = Command::new(TOOL)
        .args(["latency", "--brokers", &broker.brokers(), "--topic", &topic, "--count", "5", "--timeout-ms", "60000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kafka-tool latency");
    // A producer that writes until the measurement is done (latency skips records stamped before it started).
    let _producer = Running(
        Command::new(TOOL)
            .args(["produce", "--brokers", &broker.brokers(), "--topic", &topic, "--partitions", "2"])
            .args(["--interval-ms", "20", "--forever"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kafka-tool produce"),
    );
    let out = latency.wait_with_output().expect("latency ends");
    assert!(out.status.success(), "latency failed: {}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(result["count"], 5);
    let (p50, p99, max) =
        (result["p50_ms"].as_f64().unwrap(), result["p99_ms"].as_f64().unwrap(), result["max_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{result}");
}

#[test]
fn wait_ready_answers_for_a_broker_and_fails_for_a_closed_port() {
    let broker = broker();
    let ready = broker.json("wait-ready", &["--timeout-ms", "10000"]);
    assert_eq!(ready["ready"], true);
    let closed = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let out = Command::new(TOOL)
        .args(["wait-ready", "--brokers", &format!("127.0.0.1:{closed}"), "--timeout-ms", "500"])
        .output()
        .expect("run kafka-tool");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broker not ready"));
}

/// `sse-clients` against a minimal server-sent-events endpoint of this test: each client must count
/// exactly the message events (not comments or other events) and time the stamped ones.
#[test]
fn sse_clients_count_message_events_of_every_client() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("address").port();
    let clients = 3;
    let server = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for _ in 0..clients {
            let (mut stream, _) = listener.accept().expect("a client");
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).expect("the request");
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            requests.push(String::from_utf8(request).expect("UTF-8 request"));
            let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
            let mut body = String::from("retry: 3000\n\n: heartbeat\n\nevent: error\ndata: {\"message\":\"x\"}\n\n");
            for i in 0..4 {
                body.push_str(&format!(
                    "id: t-{i}\nevent: message\ndata: {{\"value\":\"{{\\\"seq\\\":{i},\\\"ts_us\\\":{now_us}}}\"}}\n\n"
                ));
            }
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n{body}").expect("write");
            // the stream stays open: the clients end because they saw their events
            std::mem::forget(stream);
        }
        requests
    });
    let out = Command::new(TOOL)
        .args(["sse-clients", "--port", &port.to_string(), "--host", "sse.test", "--path", "/stream?from=earliest"])
        .args(["--clients", &clients.to_string(), "--events", "4", "--sample", "2", "--timeout-ms", "20000"])
        .output()
        .expect("run kafka-tool sse-clients");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(result["clients"], 3);
    assert_eq!(result["complete"], 3, "{result}");
    assert_eq!(result["min_events"], 4, "{result}");
    assert_eq!(result["samples"], 8, "2 sampled clients × 4 stamped events: {result}");
    for request in server.join().expect("the server") {
        assert!(request.starts_with("GET /stream?from=earliest HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nHost: sse.test\r\n") && request.contains("\r\nAccept: text/event-stream\r\n"));
    }
}
