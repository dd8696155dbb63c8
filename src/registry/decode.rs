//! Decoding on the consumer thread: each record whose key or value is in Confluent's wire format is
//! rendered through its schema once, when it is read. A record whose schema is not at hand waits in its
//! partition's queue while the registry thread fetches it ([`super::fetcher`]); the records behind it in
//! that partition wait too (order within a partition is kept), the other partitions go on. A schema that
//! cannot be had fails its records one by one: they are served with their raw bytes and a `key_error` /
//! `value_error` naming the cause.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::FailureKind;
use super::config::Registry;
use super::fetcher::{self, Fetcher};
use super::{wire, Compiled};
use crate::encode::{encode_record_with, Part, RecordParts};
use crate::settings::{Deserializer, Settings};

/// After a schema could not be had, records that need it fail at once for this long, and then it is
/// asked for again (a registry that is down is not asked for every record).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(2);
/// A partition whose queue holds this many records is paused until it drains.
pub const PAUSE_AT_QUEUED: usize = 1000;
/// A schema asked for this long ago without an answer fails its records (the registry thread bounds each
/// request, so this is a thread that is gone).
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// A record copied out of librdkafka's message to wait for its schema.
pub struct OwnedRecord {
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    topic: usize,
    /// A record that failed to decode under `enable_dlq`: on its way to the dead-letter topic.
    dead: Option<DeadLetter>,
}

/// A failed record's way to the dead-letter topic.
struct DeadLetter {
    error: String,
    state: Delivery,
}

enum Delivery {
    /// To be written (again) from this moment.
    Unsent(Instant),
    /// Written, not yet acknowledged.
    Sent,
    /// Acknowledged by the broker: it leaves the queue, and the records behind it go on.
    Acknowledged,
}

/// After a failed DLQ write, the next attempt.
const DLQ_RETRY_AFTER: Duration = Duration::from_secs(1);

impl OwnedRecord {
    fn of(record: &RecordParts<'_>, topic: usize) -> Self {
        OwnedRecord {
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record.headers.iter().map(|(n, v)| (n.to_vec(), v.map(<[u8]>::to_vec))).collect(),
            topic,
            dead: None,
        }
    }

    pub fn parts(&self) -> RecordParts<'_> {
        RecordParts {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self.headers.iter().map(|(n, v)| (n.as_slice(), v.as_deref())).collect(),
        }
    }
}

/// What became of a record: rendered (its JSON), or failed to decode (`cause`, for the dead-letter
/// topic; `json` is its rendering with the raw bytes and the error).
pub struct Decided {
    pub json: Box<[u8]>,
    pub failure: Option<String>,
}

/// What a schema lookup found.
enum Lookup {
    Ready(Arc<Compiled>),
    Failed(String),
    Wait,
}

/// The decoding state of one consumer: owned by its thread.
pub struct Decoder {
    deserializer: Deserializer,
    /// `enable_dlq`: failed records go to the dead-letter topic instead of the response.
    dlq: bool,
    /// Why the dead-letter topic cannot be written, until a write succeeds: requests report it (503).
    dlq_error: Option<String>,
    /// The distinct registries of the handle, and the index of each topic's.
    registries: Vec<Registry>,
    topic_registry: Vec<Option<usize>>,
    /// Started with the first schema a record needs.
    fetcher: Option<Fetcher>,
    /// Schemas that arrived for the records waiting now (with ttl 0 the process cache never serves
    /// them), and schemas that could not be had, with when.
    arrived: HashMap<(usize, u32), Arc<Compiled>>,
    /// This handle's copy of the process cache's entries it used, with when each was fetched: a record's
    /// lookup stays on the consumer thread's own map.
    known: HashMap<(usize, u32), (Arc<Compiled>, Instant)>,
    failed: HashMap<(usize, u32), (String, Instant)>,
    /// Schemas the configuration keeps from being fetched (credentials refused, no registry at the
    /// URL): their records wait, asked for again after a while.
    blocked: HashMap<(usize, u32), Instant>,
    /// The last such failure, until a fetch from that registry succeeds: requests report it (503).
    configuration_error: Option<(usize, String)>,
    requested: HashMap<(usize, u32), Instant>,
    /// Per partition (buffer index), the records waiting for a schema, oldest first.
    queues: HashMap<usize, VecDeque<OwnedRecord>>,
    /// A record's key and value rendered through their schemas, before they go into its JSON: kept from
    /// record to record so that rendering allocates nothing once they have grown.
    key_json: Vec<u8>,
    value_json: Vec<u8>,
}

impl Decoder {
    /// The decoder of `settings`, `None` when no topic has a registry.
    pub fn of(settings: &Settings) -> Option<Decoder> {
        let mut registries: Vec<Registry> = Vec::new();
        let topic_registry = settings
            .registries
            .iter()
            .map(|r| {
                r.as_ref().map(|r| match registries.iter().position(|known| known == r) {
                    Some(i) => i,
                    None => {
                        registries.push(r.clone());
                        registries.len() - 1
                    }
                })
            })
            .collect();
        (!registries.is_empty()).then(|| Decoder {
            deserializer: settings.message_deserializer,
            dlq: settings.dlq_topic.is_some(),
            dlq_error: None,
            registries,
            topic_registry,
            fetcher: None,
            arrived: HashMap::new(),
            known: HashMap::new(),
            failed: HashMap::new(),
            blocked: HashMap::new(),
            configuration_error: None,
            requested: HashMap::new(),
            queues: HashMap::new(),
            key_json: Vec::new(),
            value_json: Vec::new(),
        })
    }

    /// Renders the record of `topic` read for the buffer `partition`, or queues it (copied) while a
    /// schema it needs is fetched, or behind older records of its partition that wait.
    ///
    /// # Errors
    /// The registry thread cannot be started (the record then fails with that cause).
    pub fn offer(&mut self, partition: usize, topic: usize, record: &RecordParts<'_>) -> Option<Decided> {
        if self.queues.get(&partition).is_some_and(|q| !q.is_empty()) {
            self.queues.entry(partition).or_default().push_back(OwnedRecord::of(record, topic));
            return None;
        }
        match self.decide(topic, record) {
            Some(decided) if decided.failure.is_some() && self.dlq => {
                let mut owned = OwnedRecord::of(record, topic);
                let error = decided.failure.unwrap_or_default();
                owned.dead = Some(DeadLetter { error, state: Delivery::Unsent(Instant::now()) });
                self.queues.entry(partition).or_default().push_back(owned);
                None
            }
            Some(decided) => Some(decided),
            None => {
                self.queues.entry(partition).or_default().push_back(OwnedRecord::of(record, topic));
                None
            }
        }
    }

    /// Takes the broker's answer to the dead letter of `partition` at `offset`.
    pub fn acknowledge(&mut self, partition: usize, offset: i64, outcome: Result<(), String>) {
        let head = self.queues.get_mut(&partition).and_then(VecDeque::front_mut);
        let Some(dead) = head.filter(|h| h.offset == offset).and_then(|h| h.dead.as_mut()) else { return };
        match outcome {
            Ok(()) => {
                dead.state = Delivery::Acknowledged;
                self.dlq_error = None;
            }
            Err(why) => {
                dead.state = Delivery::Unsent(Instant::now() + DLQ_RETRY_AFTER);
                self.dlq_error = Some(format!("the dead-letter topic cannot be written: {why}"));
            }
        }
    }

    /// Why the dead-letter topic cannot be written, while it cannot.
    pub fn dlq_error(&self) -> Option<&str> {
        self.dlq_error.as_deref()
    }

    /// The records that no longer wait, by partition in order, after taking the fetches' results.
    /// `on_failure` hears each schema that could not be had (for the error log); `send` writes a dead
    /// letter (partition, record, error), whose acknowledgement comes to [`Decoder::acknowledge`].
    pub fn ready(
        &mut self,
        mut on_failure: impl FnMut(&str),
        mut send: impl FnMut(usize, &OwnedRecord, &str) -> Result<(), String>,
    ) -> Vec<(usize, i64, Option<i64>, Decided)> {
        self.take_results(&mut on_failure);
        let mut out = Vec::new();
        let mut queues = std::mem::take(&mut self.queues);
        for (&partition, queue) in queues.iter_mut() {
            while let Some(head) = queue.front_mut() {
                if let Some(dead) = head.dead.as_mut() {
                    match dead.state {
                        Delivery::Acknowledged => {
                            queue.pop_front();
                            continue;
                        }
                        Delivery::Unsent(at) if Instant::now() >= at => {
                            let error = dead.error.clone();
                            let sent = send(partition, head, &error);
                            if let Some(dead) = head.dead.as_mut() {
                                dead.state = match sent {
                                    Ok(()) => Delivery::Sent,
                                    Err(why) => {
                                        self.dlq_error = Some(format!("the dead-letter topic cannot be written: {why}"));
                                        Delivery::Unsent(Instant::now() + DLQ_RETRY_AFTER)
                                    }
                                };
                            }
                        }
                        Delivery::Unsent(_) | Delivery::Sent => {}
                    }
                    break;
                }
                let Some(decided) = self.decide(head.topic, &head.parts()) else { break };
                if let (Some(error), true) = (&decided.failure, self.dlq) {
                    head.dead = Some(DeadLetter { error: error.clone(), state: Delivery::Unsent(Instant::now()) });
                    continue;
                }
                out.push((partition, head.offset, head.timestamp, decided));
                queue.pop_front();
            }
        }
        queues.retain(|_, q| !q.is_empty());
        self.queues = queues;
        if self.queues.is_empty() {
            // every waiting record has its schema: the next records look in the process cache again
            // (with ttl 0 that means a fetch)
            self.arrived.clear();
        }
        out
    }

    /// Why the configuration keeps a registry from serving schemas, while it does.
    pub fn configuration_error(&self) -> Option<&str> {
        self.configuration_error.as_ref().map(|(_, why)| why.as_str())
    }

    /// Whether records wait for a schema (the consumer thread then polls briefly).
    pub fn waiting(&self) -> bool {
        !self.queues.is_empty()
    }

    /// How many records of the buffer `partition` wait.
    pub fn queued(&self, partition: usize) -> usize {
        self.queues.get(&partition).map_or(0, VecDeque::len)
    }

    /// Forgets the waiting records of `partition`, which is read again from elsewhere (a seek).
    pub fn forget(&mut self, partition: usize) {
        self.queues.remove(&partition);
    }

    fn take_results(&mut self, on_failure: &mut impl FnMut(&str)) {
        let Some(fetcher) = &self.fetcher else { return };
        for (index, id, fetched) in fetcher.results() {
            self.requested.remove(&(index, id));
            match fetched {
                Ok(compiled) => {
                    self.failed.remove(&(index, id));
                    self.blocked.remove(&(index, id));
                    if self.configuration_error.as_ref().is_some_and(|(i, _)| *i == index) {
                        self.configuration_error = None;
                    }
                    self.known.insert((index, id), (Arc::clone(&compiled), Instant::now()));
                    self.arrived.insert((index, id), compiled);
                }
                Err(e) => {
                    on_failure(&e.cause);
                    if e.kind == FailureKind::Configuration {
                        self.blocked.insert((index, id), Instant::now());
                        self.configuration_error = Some((index, e.cause));
                    } else {
                        self.failed.insert((index, id), (e.cause, Instant::now()));
                    }
                }
            }
        }
    }

    /// The record rendered, or `None` when a schema it needs is not at hand (and is now asked for).
    fn decide(&mut self, topic: usize, record: &RecordParts<'_>) -> Option<Decided> {
        let registry = self.topic_registry.get(topic).copied().flatten();
        let (key, value) = match registry {
            Some(_) => (record.key.and_then(wire::split), record.value.and_then(wire::split)),
            None => (None, None),
        };
        let (Some(registry), true) = (registry, key.is_some() || value.is_some()) else {
            let json = encode_record_with(record, self.deserializer, Part::Raw, Part::Raw);
            return Some(Decided { json, failure: None });
        };
        let key_schema = key.map(|(id, _)| self.lookup(registry, id));
        let value_schema = value.map(|(id, _)| self.lookup(registry, id));
        if matches!(key_schema, Some(Lookup::Wait)) || matches!(value_schema, Some(Lookup::Wait)) {
            return None;
        }
        self.key_json.clear();
        self.value_json.clear();
        let key_part = render(key, key_schema, &mut self.key_json);
        let value_part = render(value, value_schema, &mut self.value_json);
        let failure = match (&key_part, &value_part) {
            (Part::Failed(why), _) => Some(format!("key: {why}")),
            (_, Part::Failed(why)) => Some(format!("value: {why}")),
            _ => None,
        };
        let json = encode_record_with(record, self.deserializer, key_part, value_part);
        Some(Decided { json, failure })
    }

    fn lookup(&mut self, registry: usize, id: u32) -> Lookup {
        // the common case: a schema this handle used before
        if let Some((compiled, at)) = self.known.get(&(registry, id)) {
            if fetcher::fresh(&self.registries[registry], *at) {
                return Lookup::Ready(Arc::clone(compiled));
            }
        }
        if let Some(compiled) = self.arrived.get(&(registry, id)) {
            return Lookup::Ready(Arc::clone(compiled));
        }
        if let Some((why, at)) = self.failed.get(&(registry, id)) {
            if at.elapsed() < RETRY_FAILED_AFTER {
                return Lookup::Failed(why.clone());
            }
        }
        if let Some((compiled, at)) = fetcher::cached(&self.registries[registry], id) {
            self.known.insert((registry, id), (Arc::clone(&compiled), at));
            return Lookup::Ready(compiled);
        }
        if let Some(at) = self.blocked.get(&(registry, id)) {
            if at.elapsed() < RETRY_FAILED_AFTER {
                return Lookup::Wait;
            }
        }
        if let Some(at) = self.requested.get(&(registry, id)) {
            if at.elapsed() > GIVE_UP_AFTER {
                return Lookup::Failed(format!("schema {id}: no answer from the registry thread"));
            }
        } else {
            if self.fetcher.is_none() {
                match Fetcher::spawn(self.registries.clone()) {
                    Ok(fetcher) => self.fetcher = Some(fetcher),
                    Err(e) => {
                        return Lookup::Failed(format!("schema {id}: cannot start the registry thread: {e}"));
                    }
                }
            }
            if let Some(fetcher) = &self.fetcher {
                fetcher.request(registry, id);
            }
            self.requested.insert((registry, id), Instant::now());
        }
        Lookup::Wait
    }
}

/// The rendering of a framed key or value through its schema lookup, into `out`.
fn render<'a>(framed: Option<(u32, &[u8])>, schema: Option<Lookup>, out: &'a mut Vec<u8>) -> Part<'a> {
    match (framed, schema) {
        (Some((_, body)), Some(Lookup::Ready(compiled))) => match compiled.render(body, out) {
            Ok(()) => Part::Rendered(out),
            Err(e) => Part::Failed(e.to_string()),
        },
        (_, Some(Lookup::Failed(why))) => Part::Failed(why),
        _ => Part::Raw,
    }
}
