//! The dead-letter topic (`enable_dlq` + `dlq_topic`): a record whose decoding failed is produced there
//! unchanged (key, value, headers) with headers naming its source and the error, by a producer the
//! consumer thread creates when it first needs one (with the consumer's connection settings). The
//! record is left out of the response, and the records after it in its partition wait until the broker
//! acknowledged the write, so that no commit passes a record before it is safe in the DLQ.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{ClientConfig, ClientContext};

use crate::registry::decode::OwnedRecord;
use crate::settings::Settings;

/// The headers a dead letter carries besides its own.
pub const SOURCE_TOPIC: &str = "kong-dlq-source-topic";
pub const SOURCE_PARTITION: &str = "kong-dlq-source-partition";
pub const SOURCE_OFFSET: &str = "kong-dlq-source-offset";
pub const ERROR: &str = "kong-dlq-error";

/// How long the broker may take to acknowledge a dead letter before the write counts as failed.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A write's outcome: the buffer index and offset of the record, and the failure if it failed.
pub type Acknowledgement = (usize, i64, Result<(), String>);

/// Collects the broker's acknowledgements for the consumer thread.
struct Context {
    acknowledged: Arc<Mutex<Vec<Acknowledgement>>>,
}

impl ClientContext for Context {
    // librdkafka's own log lines of the producer are left out: its failures reach the acknowledgements.
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<(usize, i64)>;

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (partition, offset) = *opaque;
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string());
        self.acknowledged.lock().push((partition, offset, outcome));
    }
}

/// The producer of a handle's dead letters.
pub struct DeadLetters {
    topic: String,
    producer: BaseProducer<Context>,
    acknowledged: Arc<Mutex<Vec<Acknowledgement>>>,
}

impl DeadLetters {
    /// A producer to `topic` with the connection settings of `settings`' consumer.
    ///
    /// # Errors
    /// librdkafka refuses the configuration.
    pub fn new(settings: &Settings, topic: &str) -> Result<DeadLetters, String> {
        let mut config: ClientConfig = settings.client_config();
        for consumer_only in [
            "group.id",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "auto.offset.reset",
            "fetch.wait.max.ms",
            "queued.max.messages.kbytes",
            "fetch.queue.backoff.ms",
            "statistics.interval.ms",
        ] {
            config.remove(consumer_only);
        }
        config.set("message.timeout.ms", MESSAGE_TIMEOUT.as_millis().to_string()).set("acks", "all");
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let producer = config
            .create_with_context(Context { acknowledged: Arc::clone(&acknowledged) })
            .map_err(|e| format!("cannot create the DLQ producer: {e}"))?;
        Ok(DeadLetters { topic: topic.to_owned(), producer, acknowledged })
    }

    /// Fetches the producer's OAUTHBEARER token when one is due.
    pub fn refresh(&self, tokens: &mut crate::oauth::Refresh) {
        tokens.run_if_due(self.producer.client());
    }

    /// Writes `record`, read from `topic`/`kafka_partition` (buffer index `partition`), which failed for
    /// `error`. Its acknowledgement comes from [`DeadLetters::acknowledgements`].
    ///
    /// # Errors
    /// librdkafka refuses to queue it (its queue is full): try again later.
    pub fn send(
        &self,
        record: &OwnedRecord,
        partition: usize,
        topic: &str,
        kafka_partition: i32,
        error: &str,
    ) -> Result<(), String> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 4);
        for (name, value) in &record.headers {
            // a name that is not UTF-8 cannot be given to rdkafka's API; it keeps what it can
            headers = headers.insert(Header { key: &String::from_utf8_lossy(name), value: value.as_deref() });
        }
        let partition_text = kafka_partition.to_string();
        let offset_text = record.offset.to_string();
        for (key, value) in [
            (SOURCE_TOPIC, topic),
            (SOURCE_PARTITION, partition_text.as_str()),
            (SOURCE_OFFSET, offset_text.as_str()),
            (ERROR, error),
        ] {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        let mut message: BaseRecord<'_, [u8], [u8], Box<(usize, i64)>> =
            BaseRecord::with_opaque_to(&self.topic, Box::new((partition, record.offset))).headers(headers);
        if let Some(key) = &record.key {
            message = message.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            message = message.payload(value.as_slice());
        }
        if let Some(timestamp) = record.timestamp {
            message = message.timestamp(timestamp);
        }
        self.producer.send(message).map_err(|(e, _)| format!("cannot queue the dead letter: {e}"))
    }

    /// Serves the producer's events and returns the acknowledgements that arrived.
    pub fn acknowledgements(&self) -> Vec<Acknowledgement> {
        self.producer.poll(Duration::ZERO);
        std::mem::take(&mut *self.acknowledged.lock())
    }

    /// Waits (at most `timeout`) for the writes in flight, as the consumer closes.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}
