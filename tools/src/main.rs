//! `kafka-tool`: small Kafka helpers for integration tests, the demo and benchmarks.
//!
//! Every subcommand talks to `--brokers` (default `127.0.0.1:9092`), prints its result as one JSON line on
//! stdout, and reports errors on stderr with exit status 1. Extra librdkafka properties can be given with
//! `--config KEY=VALUE` (repeatable), e.g. `--config security.protocol=SASL_PLAINTEXT`.
//!
//! ```text
//! kafka-tool produce     --topic T --count N [--size B] [--partition P | --partitions K] [--compression C]
//!                        [--linger-ms MS] [--interval-ms MS | --rate R] [--forever] [--key-prefix S] [--format json|text]
//! kafka-tool produce-one --topic T [--partition P] [--key S | --key-hex HEX] [--value S | --value-hex HEX | --null-value]
//!                        [--header NAME=VALUE ...] [--header-hex NAME=HEX ...] [--header-null NAME ...]
//!                        [--header-raw NAMEHEX=VALUEHEX ...] [--compression C]
//! kafka-tool consume     --topic T --count N [--partitions K] [--from earliest|latest|committed|OFFSET] [--group G]
//!                        [--fetch-wait-ms MS] [--timeout-ms MS] [--commit] [--print]
//! kafka-tool latency     --topic T --count N [--partitions K] [--fetch-wait-ms MS] [--timeout-ms MS] [--samples]
//! kafka-tool committed   --topic T --group G
//! kafka-tool watermarks  --topic T
//! kafka-tool wait-ready  [--timeout-ms MS]
//! kafka-tool sse-clients --port P --host H --events N [--path P] [--clients N] [--sample N] [--timeout-ms MS]
//!                        [--ready-file F]   (many SSE clients against the gateway, for benchmarks)
//! kafka-tool ws-clients  --port P --host H --events N [--path P] [--clients N] [--sample N] [--timeout-ms MS]
//!                        [--ready-file F] [--acks]   (the same over WebSockets; --acks acknowledges every frame)
//! ```
//!
//! `produce --rate R` spreads the records evenly at R per second (fault tests need a producer still writing
//! when they kill the broker). The producer rides out a broker outage shorter than `message.timeout.ms`
//! (30 s here; raise it with `--config`): librdkafka retries without limit (`retries` defaults to INT32_MAX)
//! until then, and a record whose ack was lost in the outage may be written twice.

mod args;
mod stream_clients;

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde_json::{json, Map, Value};

use args::Args;

pub(crate) type Result<T> = std::result::Result<T, Box<dyn Error>>;

const USAGE: &str = "usage: kafka-tool <produce|produce-one|consume|latency|committed|watermarks|wait-ready|sse-clients|ws-clients> \
[--brokers HOST:PORT] [--config KEY=VALUE ...] [options] (see the doc comment in tools/src/main.rs)";

/// Time-outs for requests that should answer quickly on loopback.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let result = match command.as_str() {
        "produce" => produce(rest),
        "produce-one" => produce_one(rest),
        "consume" => consume(rest),
        "latency" => latency(rest),
        "committed" => committed(rest),
        "watermarks" => watermarks(rest),
        "wait-ready" => wait_ready(rest),
        "sse-clients" => stream_clients::sse_clients(rest),
        "ws-clients" => stream_clients::ws_clients(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown subcommand {other:?}\n{USAGE}").into()),
    };
    if let Err(e) = result {
        eprintln!("kafka-tool {command}: {e}");
        std::process::exit(1);
    }
}

/// The one place where client configuration is built: brokers plus any `--config KEY=VALUE` overrides.
fn client_config(args: &Args, defaults: &[(&str, String)]) -> Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config
        .set(
            "bootstrap.servers",
            args.get("brokers").unwrap_or("127.0.0.1:9092"),
        )
        .set("client.id", "kafka-tool");
    for (key, value) in defaults {
        config.set(*key, value.as_str());
    }
    for kv in args.all("config") {
        let (key, value) = kv
            .split_once('=')
            .ok_or_else(|| format!("--config wants KEY=VALUE, got {kv:?}"))?;
        config.set(key, value);
    }
    Ok(config)
}

pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(crate) fn print_json(value: Value) {
    println!("{value}");
}

// ---------------------------------------------------------------------------------------------------------
// Producing

/// Collects delivery reports (served by `BaseProducer::poll`/`flush` on the calling thread).
#[derive(Default)]
struct Deliveries {
    state: Mutex<DeliveryState>,
}

#[derive(Default)]
struct DeliveryState {
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
    first_offsets: BTreeMap<i32, i64>,
    last: Option<(i32, i64)>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut state = self.state.lock().unwrap();
        match result {
            Ok(message) => {
                state.delivered += 1;
                let (partition, offset) = (message.partition(), message.offset());
                let first = state.first_offsets.entry(partition).or_insert(offset);
                *first = (*first).min(offset);
                state.last = Some((partition, offset));
            }
            Err((error, _)) => {
                state.failed += 1;
                state.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

fn producer(args: &Args, linger_ms: u64) -> Result<BaseProducer<Deliveries>> {
    let compression = args.get("compression").unwrap_or("none").to_string();
    let config = client_config(
        args,
        &[
            ("compression.codec", compression),
            ("linger.ms", linger_ms.to_string()),
            ("batch.num.messages", "10000".into()),
            ("queue.buffering.max.messages", "2000000".into()),
            ("queue.buffering.max.kbytes", "2097152".into()),
            ("message.timeout.ms", "30000".into()),
        ],
    )?;
    Ok(config.create_with_context(Deliveries::default())?)
}

/// Enqueues a record, serving delivery reports while librdkafka's queue is full.
fn send_record(
    producer: &BaseProducer<Deliveries>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(5));
                record = back;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Waits for every outstanding delivery report and fails if any record was not delivered.
fn finish_producing(producer: &BaseProducer<Deliveries>) -> Result<()> {
    producer.flush(Duration::from_secs(60))?;
    let state = producer.context().state.lock().unwrap();
    if state.failed > 0 {
        return Err(format!(
            "{} record(s) failed, first error: {}",
            state.failed,
            state.first_error.as_deref().unwrap_or("?")
        )
        .into());
    }
    Ok(())
}

/// `produce`: bulk load for tests, the demo (`--interval-ms --forever`) and benchmarks.
/// JSON values are `{"seq":i,"ts_us":<µs since epoch at produce time>,"pad":"xx…"}`, padded to `--size` bytes,
/// so `latency` (and the plugin's tests) can measure end-to-end delay; text values are `msg-<i>`.
fn produce(argv: &[String]) -> Result<()> {
    let args = Args::parse(
        argv,
        &[
            "topic",
            "count",
            "size",
            "partition",
            "partitions",
            "compression",
            "linger-ms",
            "interval-ms",
            "rate",
            "key-prefix",
            "format",
        ],
        &["forever"],
    )?;
    let topic = args.required("topic")?;
    let forever = args.flag("forever");
    let count: u64 = if forever {
        u64::MAX
    } else {
        args.number("count")?.ok_or("--count is required")?
    };
    let size: usize = args.number("size")?.unwrap_or(200);
    let fixed_partition: Option<i32> = args.number("partition")?;
    let round_robin: Option<i32> = args.number("partitions")?;
    let interval = args
        .number::<u64>("interval-ms")?
        .map(Duration::from_millis);
    let rate: Option<f64> = args.number("rate")?;
    if let Some(r) = rate {
        if !(r.is_finite() && r > 0.0) || interval.is_some() {
            return Err("--rate wants records per second (> 0), without --interval-ms".into());
        }
    }
    let linger_ms = args
        .number("linger-ms")?
        .unwrap_or(if interval.is_some() { 0 } else { 5 });
    let key_prefix = args.get("key-prefix");
    let json_format = match args.get("format").unwrap_or("json") {
        "json" => true,
        "text" => false,
        other => return Err(format!("--format must be json or text, got {other:?}").into()),
    };
    if forever && interval.is_none() && rate.is_none() {
        return Err("--forever needs --interval-ms or --rate".into());
    }
    if round_robin == Some(0) {
        return Err("--partitions must be at least 1".into());
    }

    let producer = producer(&args, linger_ms)?;
    let started = Instant::now();
    let mut seq: u64 = 0;
    while seq < count {
        let value = if json_format {
            json_value(seq, size)
        } else {
            format!("msg-{seq}")
        };
        let key = key_prefix.map(|prefix| format!("{prefix}{seq}"));
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).payload(value.as_bytes());
        if let Some(key) = &key {
            record = record.key(key.as_bytes());
        }
        if let Some(partition) = fixed_partition.or(round_robin.map(|k| (seq % k as u64) as i32)) {
            record = record.partition(partition);
        }
        send_record(&producer, record)?;
        seq += 1;
        match interval {
            Some(pause) => {
                producer.poll(Duration::ZERO);
                std::thread::sleep(pause);
            }
            None if seq.is_multiple_of(1024) => producer.poll(Duration::ZERO),
            None => {}
        }
        if let Some(r) = rate {
            // record `seq` is due `seq / r` seconds after the start; serve delivery reports meanwhile
            let due = started + Duration::from_secs_f64(seq as f64 / r);
            loop {
                let now = Instant::now();
                if now >= due {
                    break;
                }
                producer.poll(due - now);
            }
        }
    }
    finish_producing(&producer)?;
    let seconds = started.elapsed().as_secs_f64();
    let state = producer.context().state.lock().unwrap();
    let first_offsets: Map<String, Value> = state
        .first_offsets
        .iter()
        .map(|(p, o)| (p.to_string(), json!(o)))
        .collect();
    print_json(
        json!({"produced": state.delivered, "first_offsets": first_offsets, "seconds": round3(seconds)}),
    );
    Ok(())
}

/// A JSON value for record `seq`, padded with `x` to `size` bytes (when `size` is large enough).
fn json_value(seq: u64, size: usize) -> String {
    let head = format!("{{\"seq\":{seq},\"ts_us\":{},\"pad\":\"", now_us());
    let pad = size.saturating_sub(head.len() + 2);
    let mut value = String::with_capacity(head.len() + pad + 2);
    value.push_str(&head);
    value.extend(std::iter::repeat_n('x', pad));
    value.push_str("\"}");
    value
}

/// `produce-one`: one record with exact bytes (newlines, non-UTF-8, tombstones, binary headers) for tests.
fn produce_one(argv: &[String]) -> Result<()> {
    let args = Args::parse(
        argv,
        &[
            "topic",
            "partition",
            "key",
            "key-hex",
            "value",
            "value-hex",
            "header",
            "header-hex",
            "header-null",
            "header-raw",
            "compression",
        ],
        &["null-value"],
    )?;
    let topic = args.required("topic")?;
    let key = bytes_option(&args, "key", "key-hex")?;
    let value = bytes_option(&args, "value", "value-hex")?;
    if args.flag("null-value") && value.is_some() {
        return Err("--null-value excludes --value/--value-hex".into());
    }
    let value = if args.flag("null-value") {
        None
    } else {
        Some(value.unwrap_or_default())
    };

    let mut header_values: Vec<(String, Vec<u8>)> = Vec::new();
    for (option, hex) in [("header", false), ("header-hex", true)] {
        for spec in args.all(option) {
            let (name, raw) = spec
                .split_once('=')
                .ok_or_else(|| format!("--{option} wants NAME=VALUE"))?;
            let bytes = if hex {
                decode_hex(raw)?
            } else {
                raw.as_bytes().to_vec()
            };
            header_values.push((name.to_string(), bytes));
        }
    }
    let mut headers = OwnedHeaders::new_with_capacity(header_values.len());
    for (name, bytes) in &header_values {
        headers = headers.insert(Header {
            key: name,
            value: Some(bytes),
        });
    }
    for name in args.all("header-null") {
        headers = headers.insert::<[u8]>(Header { key: name, value: None });
    }
    for spec in args.all("header-raw") {
        let (name, value) = spec
            .split_once('=')
            .ok_or("--header-raw wants NAMEHEX=VALUEHEX")?;
        add_raw_header(&headers, &decode_hex(name)?, &decode_hex(value)?)?;
    }

    let producer = producer(&args, 0)?;
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
    if let Some(key) = &key {
        record = record.key(key.as_slice());
    }
    if let Some(value) = &value {
        record = record.payload(value.as_slice());
    }
    if let Some(partition) = args.number::<i32>("partition")? {
        record = record.partition(partition);
    }
    send_record(&producer, record)?;
    finish_producing(&producer)?;
    let (partition, offset) = producer
        .context()
        .state
        .lock()
        .unwrap()
        .last
        .ok_or("no delivery report")?;
    print_json(json!({"partition": partition, "offset": offset}));
    Ok(())
}

/// Adds a header whose name is any bytes (not necessarily UTF-8, as a hostile producer may send), which
/// rdkafka's `Header` (a `&str` key) cannot express, through librdkafka's C API.
fn add_raw_header(headers: &OwnedHeaders, name: &[u8], value: &[u8]) -> Result<()> {
    if name.contains(&0) {
        return Err("--header-raw: a header name cannot contain a NUL byte".into());
    }
    // rdkafka's BorrowedHeaders is a zero-sized view whose address is librdkafka's rd_kafka_headers_t.
    let native = headers.as_borrowed() as *const _ as *mut rdkafka::bindings::rd_kafka_headers_t;
    // SAFETY: `native` is the live header list owned by `headers`; librdkafka copies name and value.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_header_add(
            native,
            name.as_ptr().cast(),
            name.len() as isize,
            value.as_ptr().cast(),
            value.len() as isize,
        )
    };
    if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(format!("--header-raw: librdkafka refused the header ({err:?})").into());
    }
    Ok(())
}

fn bytes_option(args: &Args, text: &str, hex: &str) -> Result<Option<Vec<u8>>> {
    match (args.get(text), args.get(hex)) {
        (Some(_), Some(_)) => Err(format!("--{text} and --{hex} exclude each other").into()),
        (Some(s), None) => Ok(Some(s.as_bytes().to_vec())),
        (None, Some(h)) => Ok(Some(decode_hex(h)?)),
        (None, None) => Ok(None),
    }
}

fn decode_hex(hex: &str) -> Result<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("odd-length hex string {hex:?}").into());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .map_err(|_| format!("bad hex string {hex:?}").into())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Consuming

fn consumer(args: &Args, group: &str, fetch_wait_ms: u64) -> Result<BaseConsumer> {
    let config = client_config(
        args,
        &[
            // assign() needs a group id even though we never join the group.
            ("group.id", group.to_string()),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("auto.offset.reset", "earliest".into()),
            ("fetch.wait.max.ms", fetch_wait_ms.to_string()),
        ],
    )?;
    Ok(config.create()?)
}

/// The topic's partition count, from `--partitions` or a metadata request.
fn partition_count(args: &Args, client: &BaseConsumer, topic: &str) -> Result<i32> {
    if let Some(k) = args.number("partitions")? {
        return Ok(k);
    }
    let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let t = metadata
        .topics()
        .first()
        .ok_or("no metadata for the topic")?;
    if let Some(error) = t.error() {
        return Err(format!("topic {topic}: {:?}", RDKafkaErrorCode::from(error)).into());
    }
    match t.partitions().len() {
        0 => Err(format!("topic {topic} has no partitions").into()),
        n => Ok(n as i32),
    }
}

fn assignment(topic: &str, partitions: i32, offset: Offset) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, offset)?;
    }
    Ok(tpl)
}

/// `consume`: the raw reference consumer for benchmarks. It assign()s every partition (no group join, no
/// commits) and polls until `--count` records arrived. With `--commit` it then commits its positions for
/// `--group` (OffsetCommit without joining), which lets tests seed a group's committed offsets. `--print`
/// writes one JSON line per record (hex key/value/headers) before the summary line, to check exact bytes.
fn consume(argv: &[String]) -> Result<()> {
    let args = Args::parse(
        argv,
        &[
            "topic",
            "partitions",
            "count",
            "from",
            "group",
            "fetch-wait-ms",
            "timeout-ms",
        ],
        &["commit", "print"],
    )?;
    let print = args.flag("print");
    let topic = args.required("topic")?;
    let count: u64 = args.number("count")?.ok_or("--count is required")?;
    let offset = match args.get("from").unwrap_or("earliest") {
        "earliest" => Offset::Beginning,
        "latest" => Offset::End,
        "committed" => Offset::Stored,
        other => match other.parse::<i64>() {
            Ok(offset) if offset >= 0 => Offset::Offset(offset),
            _ => {
                return Err(format!(
                    "--from must be earliest, latest, committed or an offset, got {other:?}"
                )
                .into())
            }
        },
    };
    let timeout = Duration::from_millis(args.number("timeout-ms")?.unwrap_or(60_000));
    // the consumer's start (creation, metadata) counts only in the `..._since_create` figures
    let created = Instant::now();
    let consumer = consumer(
        &args,
        args.get("group").unwrap_or("kafka-tool"),
        args.number("fetch-wait-ms")?.unwrap_or(10),
    )?;
    let partitions = partition_count(&args, &consumer, topic)?;

    let started = Instant::now();
    consumer.assign(&assignment(topic, partitions, offset)?)?;
    let (mut records, mut bytes, mut first_record) = (0u64, 0u64, None);
    while records < count {
        let left = timeout
            .checked_sub(started.elapsed())
            .ok_or_else(|| format!("timed out after {records} of {count} records"))?;
        match consumer.poll(left.min(Duration::from_millis(100))) {
            Some(Ok(message)) => {
                records += 1;
                if print {
                    print_json(record_json(&message));
                }
                bytes += (message.payload_len() + message.key().map_or(0, <[u8]>::len)) as u64;
                first_record.get_or_insert_with(|| (started.elapsed(), created.elapsed()));
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => eprintln!("kafka-tool consume: {e}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let since_create = created.elapsed().as_secs_f64();
    if args.flag("commit") {
        consumer.commit(&consumer.position()?, CommitMode::Sync)?;
    }
    print_json(json!({
        "records": records,
        "seconds": round3(seconds),
        "records_per_s": (records as f64 / seconds).round(),
        // the same rate with the consumer's start (creation, metadata) counted, as a plugin route's first
        // request counts its consumer's
        "records_per_s_since_create": (records as f64 / since_create).round(),
        "bytes": bytes,
        "first_record_ms": round3(first_record.unwrap_or_default().0.as_secs_f64() * 1e3),
        "first_record_since_create_ms": round3(first_record.unwrap_or_default().1.as_secs_f64() * 1e3),
    }));
    Ok(())
}

/// One record as `{"partition","offset","key_hex","value_hex","headers":[[name, hex|null], ...]}`;
/// a missing key or value (tombstone) is `null`. A header name that is not UTF-8 (any producer may send
/// one) shows U+FFFD for its bad bytes.
fn record_json(message: &BorrowedMessage<'_>) -> Value {
    let headers: Vec<Value> = raw_headers(message)
        .into_iter()
        .map(|(name, value)| json!([String::from_utf8_lossy(name), value.map(encode_hex)]))
        .collect();
    json!({
        "partition": message.partition(),
        "offset": message.offset(),
        "key_hex": message.key().map(encode_hex),
        "value_hex": message.payload().map(encode_hex),
        "headers": headers,
    })
}

/// Every header of `message` as (name bytes, value), read through librdkafka's C API: rdkafka's own
/// accessor panics on a name that is not UTF-8.
fn raw_headers<'a>(message: &'a BorrowedMessage<'a>) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
    use rdkafka::bindings as rd;
    let mut headers = std::ptr::null_mut();
    // SAFETY: the message pointer is valid while `message` lives; librdkafka only writes the out pointer,
    // to the header list the message owns.
    let err = unsafe { rd::rd_kafka_message_headers(message.ptr(), &mut headers) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return Vec::new();
    }
    let mut list = Vec::new();
    // SAFETY: `headers` belongs to the message and lives as long as it; names are NUL-terminated and
    // values `size` bytes long, as librdkafka documents for rd_kafka_header_get_all.
    unsafe {
        for i in 0..rd::rd_kafka_header_cnt(headers) {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            if rd::rd_kafka_header_get_all(headers, i, &mut name, &mut value, &mut size)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                || name.is_null()
            {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(name).to_bytes();
            let value = (!value.is_null()).then(|| std::slice::from_raw_parts(value.cast::<u8>(), size));
            list.push((name, value));
        }
    }
    list
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `latency`: assign at the end of every partition and measure receive time − `ts_us` (as written by
/// `produce --format json`) over `--count` new records. Records stamped before start-up are skipped: tansu's
/// "latest" offset can point into the last batch.
fn latency(argv: &[String]) -> Result<()> {
    let args = Args::parse(
        argv,
        &[
            "topic",
            "partitions",
            "count",
            "fetch-wait-ms",
            "timeout-ms",
        ],
        &["samples"],
    )?;
    let topic = args.required("topic")?;
    let count: usize = args.number("count")?.ok_or("--count is required")?;
    let timeout = Duration::from_millis(args.number("timeout-ms")?.unwrap_or(60_000));
    let consumer = consumer(
        &args,
        "kafka-tool-latency",
        args.number("fetch-wait-ms")?.unwrap_or(10),
    )?;
    let partitions = partition_count(&args, &consumer, topic)?;

    let started = Instant::now();
    let start_us = now_us();
    consumer.assign(&assignment(topic, partitions, Offset::End)?)?;
    let mut delays_ms: Vec<f64> = Vec::with_capacity(count);
    while delays_ms.len() < count {
        let left = timeout
            .checked_sub(started.elapsed())
            .ok_or_else(|| format!("timed out after {} of {count} records", delays_ms.len()))?;
        match consumer.poll(left.min(Duration::from_millis(100))) {
            Some(Ok(message)) => {
                let received_us = now_us();
                let sent_us = message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                    .and_then(|v| v.get("ts_us").and_then(Value::as_i64));
                match sent_us {
                    Some(sent) if sent >= start_us => {
                        delays_ms.push((received_us - sent) as f64 / 1e3)
                    }
                    _ => {}
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => eprintln!("kafka-tool latency: {e}"),
        }
    }
    delays_ms.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        delays_ms[((p * delays_ms.len() as f64).ceil() as usize).clamp(1, delays_ms.len()) - 1]
    };
    let mut result = json!({
        "count": delays_ms.len(),
        "p50_ms": round3(percentile(0.50)),
        "p99_ms": round3(percentile(0.99)),
        "max_ms": round3(percentile(1.0)),
    });
    if args.flag("samples") {
        // every delay, for a latency chart
        result["samples_ms"] = json!(delays_ms.iter().map(|d| round3(*d)).collect::<Vec<_>>());
    }
    print_json(result);
    Ok(())
}

/// `committed`: the group's committed offset per partition (OffsetFetch through the coordinator, no join).
fn committed(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv, &["topic", "group", "partitions"], &[])?;
    let topic = args.required("topic")?;
    let consumer = consumer(&args, args.required("group")?, 10)?;
    let partitions = partition_count(&args, &consumer, topic)?;
    let tpl = consumer.committed_offsets(
        assignment(topic, partitions, Offset::Invalid)?,
        REQUEST_TIMEOUT,
    )?;
    let result: Map<String, Value> = tpl
        .elements_for_topic(topic)
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => json!(o),
                _ => Value::Null,
            };
            (e.partition().to_string(), offset)
        })
        .collect();
    print_json(Value::Object(result));
    Ok(())
}

/// `watermarks`: low and high watermark per partition. tansu's ListOffsets "latest" can answer the last
/// batch's base offset + 1, so the high mark is confirmed with a Fetch, whose high watermark is right.
fn watermarks(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv, &["topic", "partitions"], &[])?;
    let topic = args.required("topic")?;
    let consumer = consumer(&args, "kafka-tool", 10)?;
    let partitions = partition_count(&args, &consumer, topic)?;

    let mut marks = BTreeMap::new();
    let mut probe = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT)?;
        if high > low {
            // Fetch from the last offset ListOffsets vouches for; the response carries the true high mark.
            probe.add_partition_offset(topic, p, Offset::Offset(high - 1))?;
        }
        marks.insert(p, (low, high));
    }
    if probe.count() > 0 {
        consumer.assign(&probe)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut pending: Vec<i32> = probe.elements().iter().map(|e| e.partition()).collect();
        while !pending.is_empty() && Instant::now() < deadline {
            let _ = consumer.poll(Duration::from_millis(10)); // serves the Fetch responses
            pending.retain(|&p| match cached_high_watermark(&consumer, topic, p) {
                Some(fetched) => {
                    let high = &mut marks.get_mut(&p).expect("probed partition").1;
                    *high = (*high).max(fetched);
                    false
                }
                None => true,
            });
        }
    }
    let result: Map<String, Value> = marks
        .iter()
        .map(|(p, (low, high))| (p.to_string(), json!({"low": low, "high": high})))
        .collect();
    print_json(Value::Object(result));
    Ok(())
}

/// The high watermark librdkafka cached from the last Fetch response (no request is sent).
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime; the out-pointers are live locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// `wait-ready`: succeed as soon as the broker answers a metadata request (used by scripts/broker.sh).
fn wait_ready(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv, &["timeout-ms"], &[])?;
    let timeout = Duration::from_millis(args.number("timeout-ms")?.unwrap_or(20_000));
    let config = client_config(
        &args,
        &[
            ("reconnect.backoff.ms", "20".into()),
            ("reconnect.backoff.max.ms", "200".into()),
        ],
    )?;
    let producer: BaseProducer = config.create()?;
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match producer
            .client()
            .fetch_metadata(None, left.min(Duration::from_millis(500)))
        {
            Ok(_) => {
                print_json(json!({"ready": true, "ms": started.elapsed().as_millis() as u64}));
                return Ok(());
            }
            Err(e) if started.elapsed() >= timeout => {
                return Err(format!("broker not ready: {e}").into())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
