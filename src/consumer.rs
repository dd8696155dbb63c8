//! The consumer thread: one rdkafka `BaseConsumer` per handle that `assign()`s every partition of the
//! configured topics at the group's committed offsets (or at `auto_offset_reset`), reads them into the
//! bounded [`buffer`](crate::buffer), and rings the doorbell. Lua only ever touches [`Shared`] under its
//! mutex and never waits on this thread.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, Timestamp, TopicPartitionList};

use crate::buffer::{PartitionBuffer, Record};
use crate::diagnosis::{self, Cause};
use crate::doorbell::Doorbell;
use crate::encode::{encode_record, RecordParts};
use crate::error::Error;
use crate::guard;
use crate::metrics::{self, GroupCounters};
use crate::oauth;
use crate::probe::{self, Listener};
use crate::dlq::DeadLetters;
use crate::registry::decode::{Decoder, OwnedRecord, PAUSE_AT_QUEUED};
use crate::settings::{CommitStrategy, Delivery, OffsetReset, Settings, Start};

/// How long an offset request of the start-up may take before it is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The first metadata request is short: a refused connection or a failed authentication is known within
/// milliseconds, and a slow cluster simply gets another attempt (a timeout alone is not an error).
const METADATA_TIMEOUT: Duration = Duration::from_millis(250);
/// The same log line is written at most once in this period.
const LOG_REPEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Pause between start-up attempts while Kafka is unreachable.
const RETRY_DELAY: Duration = Duration::from_millis(250);
/// How often an unhealthy handle checks whether the cluster answers again; a brief disconnect (a broker
/// closing an idle connection) is cleared this quickly.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Most messages taken from librdkafka per lock of the buffer.
const BATCH: usize = 2048;
/// Once this many bytes were buffered and most are gone again, freed memory goes back to the system.
const TRIM_AFTER_BYTES: usize = 8 << 20;
/// Log lines kept for Lua to drain; older ones are dropped.
const LOG_CAPACITY: usize = 256;
/// How long a failure librdkafka reported still explains a failing request. librdkafka reports a
/// broker's failure again only when it changes or after 30 s of identical repeats, so a start-up attempt
/// that fails silently in that time failed for the reported reason.
const FAILURE_MEMORY: Duration = Duration::from_secs(35);

/// Severity of a line for nginx's error log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
}

/// Life cycle of a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Looking up partitions and committed offsets.
    Starting,
    /// Partitions assigned and their start offsets known.
    Ready,
    /// Closed by Lua; the thread is gone or going.
    Closed,
}

/// Everything the consumer thread and Lua share, under one lock.
pub struct State {
    pub phase: Phase,
    /// The current reason Kafka cannot serve, cleared once it answers again.
    pub error: Option<String>,
    /// Why a schema registry cannot serve the records that wait for it (its configuration), while it
    /// cannot.
    pub registry_error: Option<String>,
    /// Why the dead-letter topic cannot be written, while it cannot.
    pub dlq_error: Option<String>,
    pub partitions: Vec<PartitionBuffer>,
    pub log: VecDeque<(Level, String)>,
    /// Offsets to commit, by partition index.
    pub commits: Vec<(usize, i64)>,
    /// Round-robin start for reads.
    pub rotation: usize,
}

impl State {
    /// Why the handle cannot serve now, as a 503 says it: whose failure (Kafka's first, then the
    /// dead-letter topic's, then the schema registry's) and its reason; `None` while it can serve.
    /// respond.lua recognises these prefixes to answer their generic messages.
    pub fn unavailable(&self) -> Option<String> {
        match (&self.error, &self.dlq_error, &self.registry_error) {
            (Some(e), _, _) => Some(format!("Kafka is unavailable: {e}")),
            (None, Some(e), _) => Some(format!("Dead-letter topic is unavailable: {e}")),
            (None, None, Some(e)) => Some(format!("Schema registry is unavailable: {e}")),
            (None, None, None) => None,
        }
    }
}

/// The part of a handle that outlives any one call.
pub struct Shared {
    pub state: Mutex<State>,
    pub settings: Settings,
    closed: AtomicBool,
    /// Set by callbacks on librdkafka's threads; the consumer thread rings the doorbell for it.
    ring_pending: AtomicBool,
    /// The latest connection failure librdkafka reported: the likely cause of a request failing now.
    last_failure: Mutex<Option<Reported>>,
    /// When each recent log line was last written, to keep a failing broker from flooding the log.
    recent_lines: Mutex<HashMap<String, Instant>>,
    secrets: Vec<String>,
    /// The group's counters in this process (metrics.rs): only atomics are touched on the way.
    pub counters: Arc<GroupCounters>,
    /// When each commit in flight was asked for; librdkafka answers a consumer's commits in order.
    commits_in_flight: Mutex<VecDeque<Instant>>,
}

impl Shared {
    fn new(settings: Settings) -> Self {
        let secrets = settings.secrets();
        let counters = metrics::counters(&settings.group_id, settings.delivery);
        Shared {
            state: Mutex::new(State {
                phase: Phase::Starting,
                error: None,
                registry_error: None,
                dlq_error: None,
                partitions: Vec::new(),
                log: VecDeque::new(),
                commits: Vec::new(),
                rotation: 0,
            }),
            settings,
            closed: AtomicBool::new(false),
            ring_pending: AtomicBool::new(false),
            last_failure: Mutex::new(None),
            recent_lines: Mutex::new(HashMap::new()),
            secrets,
            counters,
            commits_in_flight: Mutex::new(VecDeque::new()),
        }
    }

    /// Removes every secret from a text that came from librdkafka or the broker.
    fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |acc, secret| acc.replace(secret.as_str(), "[REDACTED]"))
    }

    /// Queues a line for nginx's error log, unless the same line was queued recently.
    pub fn log(&self, level: Level, text: &str) {
        let line = self.redact(text);
        {
            let mut recent = self.recent_lines.lock();
            let now = Instant::now();
            if recent.get(&line).is_some_and(|t| now.duration_since(*t) < LOG_REPEAT_INTERVAL) {
                return;
            }
            if recent.len() >= LOG_CAPACITY {
                recent.retain(|_, t| now.duration_since(*t) < LOG_REPEAT_INTERVAL);
            }
            recent.insert(line.clone(), now);
        }
        let mut state = self.state.lock();
        if state.log.len() >= LOG_CAPACITY {
            state.log.pop_front();
        }
        state.log.push_back((level, line));
        drop(state);
        self.ring_pending.store(true, Ordering::Release);
    }

    /// Records why Kafka cannot serve now (and logs it).
    fn set_error(&self, text: &str) {
        let text = self.redact(text);
        let changed = {
            let mut state = self.state.lock();
            let changed = state.error.as_deref() != Some(text.as_str());
            state.error = Some(text.clone());
            changed
        };
        if changed {
            self.log(Level::Error, &text);
        }
    }

    /// The failure reported last, when it is recent enough to explain one now.
    fn recent_failure(&self) -> Option<Reported> {
        self.last_failure.lock().as_ref().filter(|r| r.at.elapsed() < FAILURE_MEMORY).cloned()
    }

    /// Keeps a failure to explain the requests that fail now. A bare connection failure does not replace
    /// a recent, more specific one: after a TLS or SASL failure librdkafka also reports the disconnect.
    fn remember(&self, cause: Cause, message: String) {
        let mut last = self.last_failure.lock();
        let generic = matches!(cause, Cause::Connect | Cause::Resolve);
        let keep = last.as_ref().is_some_and(|r| {
            generic && !matches!(r.cause, Cause::Connect | Cause::Resolve) && r.at.elapsed() < FAILURE_MEMORY
        });
        if !keep {
            *last = Some(Reported { at: Instant::now(), cause, message });
        }
    }

    /// The handle's error for a failure of `cause`, named in the plugin's settings.
    fn explain(&self, cause: Cause, topic: Option<&str>, reason: &str) -> String {
        diagnosis::explain(cause, &self.settings, topic, reason)
    }

    fn clear_error(&self) {
        *self.last_failure.lock() = None;
        let had = self.state.lock().error.take();
        if had.is_some() {
            self.log(Level::Info, "Kafka is reachable again");
        }
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.state.lock().phase = Phase::Closed;
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// librdkafka callbacks: errors and logs go to the handle's log queue (never to stderr), without secrets.
struct Context {
    shared: Arc<Shared>,
}

impl ClientContext for Context {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        let level = match level {
            L::Emerg | L::Alert | L::Critical | L::Error => Level::Error,
            L::Warning => Level::Warn,
            L::Notice | L::Info | L::Debug => return,
        };
        self.shared.log(level, &format!("librdkafka {fac}: {message}"));
    }

    /// librdkafka's statistics carry each partition's last stable offset, which no other call exposes.
    fn stats(&self, statistics: Statistics) {
        let mut state = self.shared.state.lock();
        for p in &mut state.partitions {
            let stable = statistics.topics.get(&p.topic).and_then(|t| t.partitions.get(&p.partition));
            if let Some(stable) = stable.map(|s| s.ls_offset).filter(|&o| o >= 0) {
                p.last_stable_offset = Some(stable);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let Some(code) = error.rdkafka_error_code() else {
            self.shared.counters.broker_error(Cause::Other);
            self.shared.log(Level::Warn, &format!("Kafka error: {reason}"));
            return;
        };
        self.shared.counters.broker_error(diagnosis::classify(code, reason));
        if code == RDKafkaErrorCode::AllBrokersDown {
            // Names no cause itself: the failure reported before it does. Without one (librdkafka does not
            // report a connection closed before any answer), a handle still starting leaves it to the
            // start-up loop, which probes the broker's port.
            let message = match self.shared.recent_failure() {
                Some(failure) => failure.message,
                None if self.shared.state.lock().phase == Phase::Starting => {
                    self.shared.log(Level::Warn, &format!("Kafka error: {reason}"));
                    return;
                }
                None => self.shared.explain(Cause::Connect, None, reason),
            };
            self.shared.set_error(&message);
            return;
        }
        let cause = diagnosis::classify(code, reason);
        if diagnosis::is_unavailable(cause) {
            self.shared.remember(cause, self.shared.explain(cause, None, reason));
        }
        match cause {
            // A broker closing an idle connection, or one of several brokers failing, is no outage: the
            // failure is kept to explain a request that fails now, and "all brokers are down" follows when
            // none is left.
            Cause::Connect | Cause::Resolve => self.shared.log(Level::Warn, &format!("Kafka error: {reason}")),
            Cause::Other if !matches!(code, RDKafkaErrorCode::Fatal | RDKafkaErrorCode::InvalidConfig) => {
                self.shared.log(Level::Warn, &format!("Kafka error: {reason}"));
            }
            cause => self.shared.set_error(&self.shared.explain(cause, None, reason)),
        }
    }
}

/// A failure reported by librdkafka or found by a probe, with when, explained.
#[derive(Clone)]
struct Reported {
    at: Instant,
    cause: Cause,
    message: String,
}

impl ConsumerContext for Context {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let asked = self.shared.commits_in_flight.lock().pop_front();
        if let Some(asked) = asked {
            self.shared.counters.commit_latency.observe(asked.elapsed().as_secs_f64());
        }
        self.shared.counters.commit(result.is_ok());
        if let Err(err) = result {
            self.shared.log(Level::Error, &format!("offset commit failed: {err}"));
            return;
        }
        let mut state = self.shared.state.lock();
        for element in offsets.elements() {
            let Offset::Offset(offset) = element.offset() else { continue };
            let found = state.partitions.iter_mut().find(|p| p.partition == element.partition() && p.topic == element.topic());
            if let Some(p) = found {
                p.committed = Some(p.committed.map_or(offset, |c| c.max(offset)));
            }
        }
    }
}

type KafkaConsumer = BaseConsumer<Context>;

/// Creates the client and its doorbell, and starts the consumer thread. `settings` were checked when they
/// were made ([`Settings::from_conf`]).
///
/// # Errors
/// [`Error::Client`] when librdkafka refuses the configuration, [`Error::Io`] when the doorbell socket or
/// the thread cannot be created.
pub fn spawn(settings: Settings) -> Result<(Arc<Shared>, String), Error> {
    let doorbell = Doorbell::bind(std::path::Path::new(&settings.socket_dir))?;
    let path = doorbell.path().to_string_lossy().into_owned();
    let shared = Arc::new(Shared::new(settings));
    metrics::watch(&shared);
    let consumer: KafkaConsumer = shared
        .settings
        .client_config()
        .create_with_context(Context { shared: Arc::clone(&shared) })
        .map_err(|e| Error::Client(shared.redact(&e.to_string())))?;
    let thread_shared = Arc::clone(&shared);
    std::thread::Builder::new().name("cc-consumer".into()).spawn(move || {
        let mut doorbell = doorbell;
        // A panic must neither take nginx down nor end the thread unnoticed: it closes this handle with
        // the panic as its error, logged before the doorbell closes (which makes Lua drop the handle).
        if let Err(panic) = guard::catch(|| run(&consumer, &thread_shared, &mut doorbell)) {
            thread_shared.set_error(&format!("internal error: the consumer thread panicked: {panic}"));
            thread_shared.close();
        }
        drop(doorbell);
        drop(consumer);
        release_free_memory();
    })?;
    Ok((shared, path))
}

/// Start-up attempts that may fail without librdkafka's reason before the broker's port is probed.
const PROBE_AFTER_ATTEMPTS: u32 = 2;
/// Start-up attempts that may fail without a reason before the failure is reported anyway.
const UNEXPLAINED_ATTEMPTS: u32 = 4;
/// How long the probe of a broker's port may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

fn run(consumer: &KafkaConsumer, shared: &Shared, doorbell: &mut Doorbell) {
    let mut reader = Reader::default();
    let mut unexplained = 0;
    // OAUTHBEARER: this thread fetches the tokens; librdkafka connects to no broker before it has one.
    let mut tokens = oauth::Refresh::of(shared.settings.authentication.as_ref());
    let mut refresh_token = || {
        if let Some(tokens) = tokens.as_mut() {
            tokens.run_if_due(consumer.client());
        }
    };
    while !shared.is_closed() {
        refresh_token();
        match start(consumer, shared) {
            Ok(r) => {
                reader = r;
                *shared.last_failure.lock() = None;
                break;
            }
            Err(err) => {
                // librdkafka's own account of the failure (its error events) is the better message. One
                // poll serves at most one event, and answers None also after serving one that is not a
                // message or an error (a log line), so a None does not mean the queue is empty; a failed
                // attempt queues a few events at most.
                for _ in 0..64 {
                    let _ = consumer.poll(Duration::ZERO);
                }
                match (err, shared.recent_failure()) {
                    // Kafka answered, or the configuration cannot work: that is the reason, whatever a
                    // connection reported before.
                    (StartError::Failed(message), _) => shared.set_error(&message),
                    (StartError::Slow(_) | StartError::ConnectionFailed(_), Some(failure)) => {
                        shared.set_error(&failure.message);
                    }
                    // A request that timed out had a connection: the broker is only slow. Requests wait for
                    // it up to their own timeout.
                    (StartError::Slow(err), None) => shared.log(Level::Warn, &format!("still waiting: {err}")),
                    // No connection came up. The reason usually follows within milliseconds (an error
                    // event): wait for it a few attempts, then ask the broker's port what it speaks, so
                    // that requests see the cause rather than a bare transport error.
                    (StartError::ConnectionFailed(err), None) if unexplained + 1 == PROBE_AFTER_ATTEMPTS => {
                        unexplained += 1;
                        match probe_listener(shared) {
                            Some((cause, message)) => {
                                shared.remember(cause, message.clone());
                                shared.set_error(&message);
                            }
                            None => shared.log(Level::Warn, &format!("still waiting: {err}")),
                        }
                    }
                    (StartError::ConnectionFailed(err), None) if unexplained < UNEXPLAINED_ATTEMPTS => {
                        unexplained += 1;
                        shared.log(Level::Warn, &format!("still waiting: {err}"));
                    }
                    (StartError::ConnectionFailed(err), None) => {
                        shared.set_error(&shared.explain(Cause::Connect, None, &err));
                    }
                }
                doorbell.ring();
                sleep_unless_closed(shared, RETRY_DELAY);
            }
        }
    }
    doorbell.ring();
    let mut last_probe = Instant::now();
    while !shared.is_closed() {
        #[cfg(feature = "fault-injection")]
        crate::fault::consumer_turn();
        refresh_token();
        for partition in apply_requests(consumer, shared) {
            // read again from the seek's offset: what waited belongs to the old position
            if let Some(decoder) = reader.decoder.as_mut() {
                decoder.forget(partition);
            }
        }
        let urgent = {
            let state = shared.state.lock();
            state.partitions.iter().any(|p| p.paused || p.start.is_none() || p.seek_request.is_some())
        } || reader.decoder.as_ref().is_some_and(Decoder::waiting);
        let timeout = Duration::from_millis(if urgent { 5 } else { 100 });
        let got = reader.read_batch(consumer, shared, timeout);
        reader.refresh_positions(consumer, shared);
        if got > 0 {
            shared.clear_error();
            last_probe = Instant::now();
        } else if shared.state.lock().error.is_some() && last_probe.elapsed() >= PROBE_INTERVAL {
            last_probe = Instant::now();
            if consumer.fetch_metadata(None, REQUEST_TIMEOUT).is_ok() {
                shared.clear_error();
            }
        }
        if got > 0 || shared.ring_pending.swap(false, Ordering::AcqRel) {
            doorbell.ring();
        }
    }
    // Commits asked for just before the close (websocket acknowledgements as their worker exits) go out
    // before the consumer does, synchronously: nothing else waits on this thread any more.
    let pending = take_commits(shared);
    if !pending.is_empty() && shared.settings.commit_strategy == CommitStrategy::Auto {
        commit(consumer, shared, &pending, CommitMode::Sync);
    }
    doorbell.ring();
}

/// The commits the requests asked for since the last look, by topic and partition.
fn take_commits(shared: &Shared) -> Vec<(String, i32, i64)> {
    let mut state = shared.state.lock();
    let commits = std::mem::take(&mut state.commits);
    commits
        .into_iter()
        .filter_map(|(i, o)| state.partitions.get(i).map(|p| (p.topic.clone(), p.partition, o)))
        .collect()
}

/// Asks the first bootstrap server's port what it speaks (see [`probe`](crate::probe)) when start-up fails
/// without a reason. Returns the cause and its message when the answer explains the failure.
fn probe_listener(shared: &Shared) -> Option<(Cause, String)> {
    let settings = &shared.settings;
    let server = settings.bootstrap_servers.first()?;
    let address = format!("{}:{}", server.host, server.port);
    let listener = probe::probe(&server.host, server.port, PROBE_TIMEOUT).ok()?;
    let (cause, detail) = match (settings.tls(), listener) {
        (true, Listener::Kafka) => (
            Cause::TlsToPlaintext,
            format!("no answer to the TLS handshake; a plaintext Kafka request to {address} was answered"),
        ),
        (false, Listener::HungUp) => (
            Cause::PlaintextToTls,
            format!("{address} closed the connection on a plaintext Kafka request without an answer"),
        ),
        (_, Listener::Silent) => (
            Cause::NotKafka,
            format!("a plaintext Kafka request to {address} got no answer within {} ms", PROBE_TIMEOUT.as_millis()),
        ),
        (_, Listener::Other) => {
            (Cause::NotKafka, format!("{address} answered a plaintext Kafka request with something else"))
        }
        (true, Listener::HungUp) | (false, Listener::Kafka) => return None,
    };
    Some((cause, shared.redact(&diagnosis::explain_found(cause, settings, &detail))))
}

fn sleep_unless_closed(shared: &Shared, total: Duration) {
    let until = Instant::now() + total;
    while !shared.is_closed() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Partition lookups and the state of `latest` resolution, owned by the consumer thread.
#[derive(Default)]
struct Reader {
    /// Index of partition 0 of each topic in the buffer list, and the topic's index in `topics`.
    topic_base: HashMap<String, (usize, usize)>,
    /// Decodes records through the topics' schema registries; `None` when no topic has one.
    decoder: Option<Decoder>,
    /// The topic and Kafka partition of each buffer index, for dead letters.
    partition_names: Vec<(String, i32)>,
    /// The dead-letter topic's producer, created with the first dead letter, and its OAUTHBEARER tokens.
    dead_letters: Option<DeadLetters>,
    dead_letter_tokens: Option<oauth::Refresh>,
    last_watermarks: Option<Instant>,
    /// Partitions that had no committed offset, to be committed once their start is known.
    commit_start: Vec<usize>,
    /// The most bytes buffered since memory was last handed back to the system.
    buffered_peak: usize,
}

/// Why a start-up attempt did not complete.
enum StartError {
    /// The broker did not answer in time. It may only be busy: requests wait for it up to their own
    /// `timeout`, so this alone is never reported as the handle's error.
    Slow(String),
    /// The connection failed, and librdkafka has not said why yet.
    ConnectionFailed(String),
    /// Kafka answered with an error, or the configuration cannot work: the handle's error, as is.
    Failed(String),
}

impl From<String> for StartError {
    fn from(message: String) -> Self {
        StartError::Failed(message)
    }
}

/// Classifies a failed request of the start-up; `what` says what was asked, `topic` the topic it was
/// about. An error with a known cause (a missing topic, an authorization failure) is explained.
fn request_failed(shared: &Shared, what: &str, topic: Option<&str>, err: KafkaError) -> StartError {
    let message = format!("{what}: {err}");
    let Some(code) = err.rdkafka_error_code() else {
        return StartError::Failed(message);
    };
    match code {
        RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut => StartError::Slow(message),
        RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown => {
            StartError::ConnectionFailed(message)
        }
        code => match diagnosis::classify(code, &message) {
            Cause::Other => StartError::Failed(message),
            cause => StartError::Failed(shared.explain(cause, topic, &message)),
        },
    }
}

/// Looks up partitions and committed offsets and assigns everything.
fn start(consumer: &KafkaConsumer, shared: &Shared) -> Result<Reader, StartError> {
    let settings = &shared.settings;
    let brokers = settings.brokers();
    let mut buffers = Vec::new();
    let mut reader = Reader::default();
    let mut tpl = TopicPartitionList::new();
    reader.decoder = Decoder::of(settings);
    for (topic_index, topic) in settings.topics.iter().enumerate() {
        let metadata = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| {
                request_failed(shared, &format!("metadata request to Kafka at {brokers}"), Some(topic), e)
            })?;
        let missing =
            || StartError::Failed(shared.explain(Cause::TopicNotFound, Some(topic), "no partitions in the metadata"));
        let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(missing());
        };
        if let Some(err) = meta.error() {
            let code = RDKafkaErrorCode::from(err);
            let reason = format!("metadata of topic '{topic}': {code}");
            return Err(match diagnosis::classify(code, &reason) {
                Cause::Other => StartError::Failed(reason),
                cause => StartError::Failed(shared.explain(cause, Some(topic), &reason)),
            });
        }
        if meta.partitions().is_empty() {
            return Err(missing());
        }
        reader.topic_base.insert(topic.clone(), (buffers.len(), topic_index));
        for partition in 0..meta.partitions().len() as i32 {
            tpl.add_partition(topic, partition);
            buffers.push(PartitionBuffer::new(topic, partition, 0));
        }
    }
    reader.partition_names = buffers.iter().map(|b| (b.topic.clone(), b.partition)).collect();
    let starts = start_positions(consumer, shared, &buffers, tpl)?;
    let mut assignment = TopicPartitionList::new();
    for (i, buffer) in buffers.iter_mut().enumerate() {
        let position = match starts[i].at {
            StartAt::Known(n) => {
                buffer.start = Some(n);
                if shared.settings.delivery == Delivery::Queue && !starts[i].uncommitted {
                    buffer.committed = Some(n);
                }
                n
            }
            // ListOffsets may answer below the true end (some brokers give the last batch's base offset
            // + 1): fetch from there and fix the start from the first fetch's high watermark.
            StartAt::End(listed) => listed,
        };
        if starts[i].uncommitted {
            reader.commit_start.push(i);
        }
        buffer.reposition(position, false);
        assignment
            .add_partition_offset(&buffer.topic, buffer.partition, Offset::Offset(position))
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&assignment).map_err(|e| format!("cannot assign partitions: {e}"))?;
    let mut state = shared.state.lock();
    state.partitions = buffers;
    state.error = None;
    Ok(reader)
}

/// A partition's start: a known offset, or the end of the log as ListOffsets reported it.
#[derive(Clone, Copy)]
enum StartAt {
    Known(i64),
    End(i64),
}

struct PartitionStart {
    at: StartAt,
    /// The group had no committed offset for it (queue handles commit the start once known).
    uncommitted: bool,
}

/// Where each partition starts: the group's committed offsets (queue handles), the live edge (broadcast
/// handles), or the requested position (replay handles).
fn start_positions(
    consumer: &KafkaConsumer,
    shared: &Shared,
    buffers: &[PartitionBuffer],
    tpl: TopicPartitionList,
) -> Result<Vec<PartitionStart>, StartError> {
    let settings = &shared.settings;
    let watermarks = |b: &PartitionBuffer| {
        consumer
            .fetch_watermarks(&b.topic, b.partition, REQUEST_TIMEOUT)
            .map_err(|e| {
                let what = format!("cannot read offsets of {}/{}", b.topic, b.partition);
                request_failed(shared, &what, Some(&b.topic), e)
            })
    };
    let edge = |b: &PartitionBuffer, reset: OffsetReset| -> Result<StartAt, StartError> {
        let (low, high) = watermarks(b)?;
        Ok(match reset {
            OffsetReset::Earliest => StartAt::Known(low),
            OffsetReset::Latest => StartAt::End(high),
        })
    };
    let mut starts = Vec::with_capacity(buffers.len());
    match (settings.delivery, &settings.start) {
        (Delivery::Queue, _) | (Delivery::Replay, Some(Start::Committed)) => {
            let committed = consumer.committed_offsets(tpl, REQUEST_TIMEOUT).map_err(|e| {
                let what = format!("cannot read committed offsets of group '{}'", settings.group_id);
                request_failed(shared, &what, None, e)
            })?;
            for b in buffers {
                match committed.find_partition(&b.topic, b.partition).map(|e| e.offset()) {
                    Some(Offset::Offset(n)) if n >= 0 => {
                        starts.push(PartitionStart { at: StartAt::Known(n), uncommitted: false });
                    }
                    _ => starts.push(PartitionStart { at: edge(b, settings.auto_offset_reset)?, uncommitted: true }),
                }
            }
        }
        (Delivery::Broadcast, _) | (Delivery::Replay, Some(Start::Latest) | None) => {
            for b in buffers {
                starts.push(PartitionStart { at: edge(b, OffsetReset::Latest)?, uncommitted: false });
            }
        }
        (Delivery::Replay, Some(Start::Earliest)) => {
            for b in buffers {
                starts.push(PartitionStart { at: edge(b, OffsetReset::Earliest)?, uncommitted: false });
            }
        }
        (Delivery::Replay, Some(Start::Offsets { offsets })) => {
            if offsets.len() != buffers.len() {
                return Err(format!("{} start offsets for {} partitions", offsets.len(), buffers.len()).into());
            }
            starts.extend(offsets.iter().map(|&o| PartitionStart { at: StartAt::Known(o), uncommitted: false }));
        }
        (Delivery::Replay, Some(Start::Timestamp { ms })) => {
            let mut query = TopicPartitionList::new();
            for b in buffers {
                query
                    .add_partition_offset(&b.topic, b.partition, Offset::Offset(*ms))
                    .map_err(|e| e.to_string())?;
            }
            let found = consumer
                .offsets_for_times(query, REQUEST_TIMEOUT)
                .map_err(|e| request_failed(shared, &format!("cannot look up offsets for time {ms}"), None, e))?;
            for b in buffers {
                let at = match found.find_partition(&b.topic, b.partition).map(|e| e.offset()) {
                    Some(Offset::Offset(n)) if n >= 0 => StartAt::Known(n),
                    // Nothing at or after that time: start at the end.
                    _ => edge(b, OffsetReset::Latest)?,
                };
                starts.push(PartitionStart { at, uncommitted: false });
            }
        }
    }
    Ok(starts)
}

/// Performs the seeks, commits and pause/resume changes the requests asked for. Returns the buffer indices
/// of the partitions that seeked.
fn apply_requests(consumer: &KafkaConsumer, shared: &Shared) -> Vec<usize> {
    let limit = shared.settings.buffer_max_bytes;
    let broadcast = shared.settings.delivery == Delivery::Broadcast;
    let commits = take_commits(shared);
    let (seeks, pause, mut resume) = {
        let mut state = shared.state.lock();
        let (mut seeks, mut pause, mut resume) = (Vec::new(), Vec::new(), Vec::new());
        for (i, p) in state.partitions.iter_mut().enumerate() {
            if broadcast {
                // The live edge never waits for a slow stream: the oldest records go instead.
                p.evict_to_fit(limit);
            }
            // A full buffer (but for a broadcast's), or a long queue of records waiting for a schema.
            let full = p.waiting_on_registry || (!broadcast && p.bytes() >= limit);
            let drained = !p.waiting_on_registry && (broadcast || p.bytes() < limit / 4 * 3);
            let seek = if broadcast { None } else { p.seek_request.take() };
            if let Some(offset) = seek {
                seeks.push((i, p.topic.clone(), p.partition, offset, p.paused));
                p.paused = false;
            } else if !p.paused && full {
                p.paused = true;
                pause.push((p.topic.clone(), p.partition));
            } else if p.paused && drained {
                p.paused = false;
                resume.push((p.topic.clone(), p.partition));
            }
        }
        (seeks, pause, resume)
    };
    let seeked = seeks.iter().map(|s| s.0).collect();
    for (_, topic, partition, offset, was_paused) in seeks {
        if was_paused {
            resume.push((topic.clone(), partition));
        }
        if let Err(err) = consumer.seek(&topic, partition, Offset::Offset(offset), REQUEST_TIMEOUT) {
            shared.log(Level::Error, &format!("seek {topic}/{partition} to {offset} failed: {err}"));
        }
    }
    let list = |items: &[(String, i32)]| {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in items {
            tpl.add_partition(t, *p);
        }
        tpl
    };
    if !pause.is_empty() {
        if let Err(err) = consumer.pause(&list(&pause)) {
            shared.log(Level::Warn, &format!("pause failed: {err}"));
        }
    }
    if !resume.is_empty() {
        if let Err(err) = consumer.resume(&list(&resume)) {
            shared.log(Level::Warn, &format!("resume failed: {err}"));
        }
    }
    // Only http-get and websocket acknowledgements ask for commits, through whichever handle they read.
    if !commits.is_empty() && shared.settings.commit_strategy == CommitStrategy::Auto {
        commit(consumer, shared, &commits, CommitMode::Async);
    }
    seeked
}

fn commit(consumer: &KafkaConsumer, shared: &Shared, offsets: &[(String, i32, i64)], mode: CommitMode) {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        if tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).is_err() {
            return;
        }
    }
    let rk = consumer.client().native_ptr();
    let asked = Instant::now();
    let sync = matches!(mode, CommitMode::Sync);
    // rdkafka's `commit(.., Async)` (rd_kafka_commit) posts its result nowhere, so `commit_callback`
    // would never learn whether a commit succeeded or how long it took. rd_kafka_commit_queue posts it
    // as an event on the consumer's queue, which the thread's poll serves to `commit_callback`. Given no
    // queue it waits for the answer and returns it: the last commits, after the poll loop ended.
    // SAFETY: `rk` is the live client `consumer` owns; the queue reference is released below, and
    // librdkafka copies `tpl` before rd_kafka_commit_queue returns.
    let err = unsafe {
        let queue = if sync { std::ptr::null_mut() } else { rdkafka::bindings::rd_kafka_queue_get_consumer(rk) };
        let err = rdkafka::bindings::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        if !queue.is_null() {
            rdkafka::bindings::rd_kafka_queue_destroy(queue);
        }
        err
    };
    if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
        shared.counters.commit(false);
        shared.log(Level::Error, &format!("offset commit failed: {}", RDKafkaErrorCode::from(err)));
    } else if sync {
        shared.counters.commit_latency.observe(asked.elapsed().as_secs_f64());
        shared.counters.commit(true);
    } else {
        shared.commits_in_flight.lock().push_back(asked);
    }
}

impl Reader {
    /// Reads what librdkafka has (waiting at most `timeout` for the first message), encodes it outside the
    /// lock and appends it. Returns how many records were appended.
    fn read_batch(&mut self, consumer: &KafkaConsumer, shared: &Shared, timeout: Duration) -> usize {
        let deserializer = shared.settings.message_deserializer;
        // A batch larger than a quarter of the buffer could push records out before anyone read them.
        let max_batch_bytes = shared.settings.buffer_max_bytes / 4;
        let mut batch: Vec<(usize, Record)> = Vec::new();
        let mut batch_bytes = 0;
        let mut wait = timeout;
        while batch.len() < BATCH && batch_bytes < max_batch_bytes {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => {
                    if let Some(&(base, topic)) = self.topic_base.get(message.topic()) {
                        let parts = parts(&message);
                        let partition = base + message.partition() as usize;
                        let json = match self.decoder.as_mut() {
                            Some(decoder) => decoder.offer(partition, topic, &parts).map(|d| d.json),
                            None => Some(encode_record(&parts, deserializer)),
                        };
                        if let Some(json) = json {
                            let record = Record { offset: parts.offset, timestamp: parts.timestamp, json };
                            batch_bytes += record.json.len();
                            batch.push((partition, record));
                        }
                    }
                }
                Some(Err(err)) => shared.log(Level::Warn, &format!("consume error: {err}")),
            }
            wait = Duration::ZERO;
        }
        if let Some(decoder) = self.decoder.as_mut() {
            if let Some(dead_letters) = &self.dead_letters {
                if let Some(tokens) = self.dead_letter_tokens.as_mut() {
                    dead_letters.refresh(tokens);
                }
                for (partition, offset, outcome) in dead_letters.acknowledgements() {
                    decoder.acknowledge(partition, offset, outcome);
                }
            }
            let (names, dead_letters) = (&self.partition_names, &mut self.dead_letters);
            let tokens = &mut self.dead_letter_tokens;
            let send = |partition: usize, record: &OwnedRecord, error: &str| {
                let Some(topic) = shared.settings.dlq_topic.as_deref() else { return Err("no dlq_topic".into()) };
                if dead_letters.is_none() {
                    *dead_letters = Some(DeadLetters::new(&shared.settings, topic)?);
                    *tokens = oauth::Refresh::of(shared.settings.authentication.as_ref());
                }
                let (source, kafka_partition) = &names[partition];
                let dead_letters = dead_letters.as_ref().ok_or("no DLQ producer")?;
                if let Some(tokens) = tokens.as_mut() {
                    dead_letters.refresh(tokens);
                }
                dead_letters.send(record, partition, source, *kafka_partition, error)
            };
            for (partition, offset, timestamp, decided) in decoder.ready(|why| shared.log(Level::Warn, why), send) {
                batch.push((partition, Record { offset, timestamp, json: decided.json }));
            }
            let registry_error = decoder.configuration_error().map(|e| shared.redact(e));
            let dlq_error = decoder.dlq_error().map(|e| shared.redact(e));
            let mut state = shared.state.lock();
            for (i, p) in state.partitions.iter_mut().enumerate() {
                p.waiting_on_registry = decoder.queued(i) >= PAUSE_AT_QUEUED;
            }
            if state.registry_error != registry_error || state.dlq_error != dlq_error {
                state.registry_error = registry_error;
                state.dlq_error = dlq_error;
                drop(state);
                // requests waiting on the handle look at it again
                shared.ring_pending.store(true, Ordering::Release);
            }
        }
        if batch.is_empty() {
            return 0;
        }
        let mut state = shared.state.lock();
        let mut appended = 0;
        for (i, record) in batch {
            if let Some(p) = state.partitions.get_mut(i) {
                appended += usize::from(p.append(record));
            }
        }
        appended
    }

    /// Updates high watermarks from librdkafka's cache of fetch responses, and resolves `latest` starts.
    fn refresh_positions(&mut self, consumer: &KafkaConsumer, shared: &Shared) {
        let due = self.last_watermarks.is_none_or(|t| t.elapsed() >= Duration::from_millis(50));
        if !due {
            return;
        }
        self.last_watermarks = Some(Instant::now());
        let keys: Vec<(usize, String, i32)> = {
            let state = shared.state.lock();
            state.partitions.iter().enumerate().map(|(i, p)| (i, p.topic.clone(), p.partition)).collect()
        };
        let marks: Vec<(usize, Option<(i64, i64)>)> =
            keys.into_iter().map(|(i, t, p)| (i, cached_watermarks(consumer, &t, p))).collect();
        let mut newly_started = Vec::new();
        let mut became_ready = false;
        let mut trim = false;
        {
            let mut state = shared.state.lock();
            let buffered: usize = state.partitions.iter().map(PartitionBuffer::bytes).sum();
            self.buffered_peak = self.buffered_peak.max(buffered);
            if self.buffered_peak >= TRIM_AFTER_BYTES && buffered < TRIM_AFTER_BYTES / 8 {
                self.buffered_peak = buffered;
                trim = true;
            }
            for (i, marks) in marks {
                let Some((low, high)) = marks else { continue };
                let p = &mut state.partitions[i];
                p.high_watermark = Some(high);
                p.log_start_offset = (low >= 0).then_some(low);
                if p.start.is_none() {
                    p.raise_floor(high);
                    p.start = Some(high);
                    newly_started.push((p.topic.clone(), p.partition, high));
                }
            }
            if state.phase == Phase::Starting && state.partitions.iter().all(|p| p.start.is_some()) {
                state.phase = Phase::Ready;
                became_ready = true;
            }
        }
        if trim {
            // outside the lock: requests never wait for it
            release_free_memory();
        }
        if became_ready {
            shared.ring_pending.store(true, Ordering::Release);
            // The group now has a position: `latest` keeps meaning "after this moment" across restarts.
            let state = shared.state.lock();
            let starts: Vec<(String, i32, i64)> = self
                .commit_start
                .drain(..)
                .filter_map(|i| state.partitions.get(i))
                .filter_map(|p| p.start.map(|s| (p.topic.clone(), p.partition, s)))
                .collect();
            drop(state);
            let queue = shared.settings.delivery == Delivery::Queue;
            if queue && shared.settings.commit_strategy == CommitStrategy::Auto && !starts.is_empty() {
                commit(consumer, shared, &starts, CommitMode::Async);
            }
        }
    }
}

/// Hands memory freed by a closed handle or an emptied buffer back to the system; without it glibc keeps
/// the freed heap of one large catch-up and the worker's RSS never comes down.
fn release_free_memory() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim only releases free pages of the allocator's own arenas.
    unsafe {
        malloc_trim(0);
    }
}

/// The log start offset (negative when the broker did not send it) and the high watermark of the last
/// fetch response for the partition, if one arrived.
fn cached_watermarks(consumer: &KafkaConsumer, topic: &str, partition: i32) -> Option<(i64, i64)> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is valid while `consumer` lives; librdkafka only reads the topic string
    // and writes the two integers.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some((low, high))
}

fn parts<'a>(message: &'a BorrowedMessage<'a>) -> RecordParts<'a> {
    let timestamp = match message.timestamp() {
        Timestamp::NotAvailable => None,
        Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
    };
    let mut native_headers = std::ptr::null_mut();
    // SAFETY: the message pointer is valid while `message` lives; librdkafka only writes the out pointer,
    // to headers the message owns.
    let err = unsafe { rdkafka::bindings::rd_kafka_message_headers(message.ptr(), &mut native_headers) };
    let headers = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && !native_headers.is_null() {
        // SAFETY: the headers belong to the message and live as long as it does.
        unsafe { header_list(native_headers) }
    } else {
        Vec::new()
    };
    RecordParts { offset: message.offset(), timestamp, key: message.key(), value: message.payload(), headers }
}

/// Every header as (name bytes, value). rdkafka's own accessor panics on a name that is not UTF-8, which
/// any producer can send: one such record would end every consumer that reads it.
///
/// # Safety
/// `headers` must be valid for `'a`.
unsafe fn header_list<'a>(headers: *const rdkafka::bindings::rd_kafka_headers_t) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
    let count = rdkafka::bindings::rd_kafka_header_cnt(headers);
    let mut list = Vec::with_capacity(count);
    for i in 0..count {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
        let err = rdkafka::bindings::rd_kafka_header_get_all(headers, i, &mut name, &mut value, &mut size);
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        let name = std::ffi::CStr::from_ptr(name).to_bytes();
        let value = (!value.is_null()).then(|| std::slice::from_raw_parts(value.cast::<u8>(), size));
        list.push((name, value));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(Settings::from_conf(&crate::schema::tests::conf(), Default::default()).unwrap())
    }

    #[test]
    fn a_bare_disconnect_does_not_replace_a_recent_specific_failure() {
        let shared = shared();
        shared.remember(Cause::TlsVerify, "certificate".into());
        shared.remember(Cause::Connect, "disconnected".into());
        assert_eq!(shared.recent_failure().map(|f| f.message), Some("certificate".into()));
        shared.remember(Cause::Tls, "alert".into());
        assert_eq!(shared.recent_failure().map(|f| f.message), Some("alert".into()), "specific replaces specific");

        let shared = self::shared();
        shared.remember(Cause::Connect, "refused".into());
        shared.remember(Cause::Resolve, "no such name".into());
        assert_eq!(shared.recent_failure().map(|f| f.message), Some("no such name".into()));
        shared.remember(Cause::Authentication, "invalid-proof".into());
        assert_eq!(shared.recent_failure().map(|f| f.message), Some("invalid-proof".into()));

        // once Kafka answers again, nothing old explains a new failure
        shared.clear_error();
        assert!(shared.recent_failure().is_none());
    }

    #[test]
    fn log_lines_never_show_the_confluent_api_key_or_secret() {
        let mut conf = crate::schema::tests::conf();
        conf["cluster_api_key"] = "KEY-9e8d".into();
        conf["cluster_api_secret"] = "SECRET-1c2b".into();
        let shared = Shared::new(Settings::from_conf(&conf, Default::default()).unwrap());
        shared.log(Level::Error, "SASL authentication as KEY-9e8d with SECRET-1c2b failed");
        let (_, line) = shared.state.lock().log.pop_front().unwrap();
        assert_eq!(line, "SASL authentication as [REDACTED] with [REDACTED] failed");
    }

    #[test]
    fn header_names_that_are_not_utf8_are_read_as_bytes() {
        use rdkafka::bindings as rd;
        // SAFETY: a header list of our own, freed at the end.
        unsafe {
            let headers = rd::rd_kafka_headers_new(3);
            let add = |name: &[u8], value: Option<&[u8]>| {
                let (ptr, len) = value.map_or((std::ptr::null(), 0), |v| (v.as_ptr().cast(), v.len() as isize));
                rd::rd_kafka_header_add(headers, name.as_ptr().cast(), name.len() as isize, ptr, len)
            };
            add(b"trace", Some(b"abc"));
            add(&[0xff, b'x'], Some(&[0x80]));
            add(b"none", None);
            let list = header_list(headers);
            assert_eq!(list, vec![
                (&b"trace"[..], Some(&b"abc"[..])),
                (&[0xff, b'x'][..], Some(&[0x80][..])),
                (&b"none"[..], None),
            ]);
            rd::rd_kafka_headers_destroy(headers);
        }
    }
}
