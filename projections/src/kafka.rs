//! The Kafka publisher: integration events for the rest of the enterprise (DESIGN §7).
//!
//! A projector of the runtime (checkpoint `kafka_publisher`, one active worker by advisory
//! lock, lag and failures in `/metrics` and `workledger status`) that writes no table: each
//! batch of workflow events goes to Kafka, and its checkpoint moves only once the broker has
//! acknowledged every event of it ([`Projector::external`]).
//!
//! - **Topics**: one per aggregate type, `{prefix}{aggregate_type}` (`workledger.task`, ...),
//!   created when missing. Identity events (tenants, users) are not published: names and
//!   emails stay in the identity events alone (DESIGN §2, personal data).
//! - **Messages**: keyed by aggregate id, so an aggregate's events keep their order on one
//!   partition. The value is [`IntegrationEvent`] as JSON: the event as stored (its type, its
//!   version and its payload, not upcast) with its log position, tenant, actor, time and
//!   correlation; its JSON Schemas are in `docs/event-schemas/` (`event_schemas::integration`). Headers carry `event_id`, `event_type`, `event_version`, `tenant_id`,
//!   `correlation_id` (when the event has one) and `content-type`.
//! - **Delivery**: an idempotent producer (`enable.idempotence`: acknowledged by every in-sync
//!   replica, retried without duplicates or reordering). A failed batch is delivered again
//!   after a backoff, so delivery is at least once: consumers drop repeats by `event_id`, or
//!   per aggregate by `sequence` (a repeat can arrive after later events of its aggregate
//!   when a batch is sent again).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use event_schemas::{INTEGRATION_AGGREGATE_TYPES, IntegrationEvent, RecordedEvent};
use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use sqlx::PgConnection;

use crate::names::KAFKA_PUBLISHER;
use crate::projector::{EventFilter, ProjectionError, Projector};

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port,host:port` (`KAFKA_BROKERS`).
    pub brokers: String,
    /// Put before each aggregate type to name its topic.
    pub topic_prefix: String,
    /// Partitions of a topic the publisher creates.
    pub partitions: i32,
    /// Replication factor of a topic the publisher creates.
    pub replication_factor: i32,
    /// How long the producer tries to deliver a message before the batch counts as failed.
    pub delivery_timeout: Duration,
    /// How the publisher connects and signs in (plaintext unless set).
    pub security: KafkaSecurity,
}

/// How the publisher connects to the brokers: TLS, SASL, both or neither.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    /// `security.protocol`.
    pub protocol: SecurityProtocol,
    /// `SASL_*` only: the mechanism and the credentials it signs in with.
    pub sasl: Option<SaslLogin>,
    /// A PEM file of the certificate authorities to trust (the system's otherwise).
    pub ca_location: Option<std::path::PathBuf>,
}

/// `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Every protocol, by its name in librdkafka's configuration.
    pub const ALL: [(&'static str, SecurityProtocol); 4] = [
        ("plaintext", SecurityProtocol::Plaintext),
        ("ssl", SecurityProtocol::Ssl),
        ("sasl_plaintext", SecurityProtocol::SaslPlaintext),
        ("sasl_ssl", SecurityProtocol::SaslSsl),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("plaintext", |(name, _)| name)
    }

    /// Whether it signs in with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// The SASL mechanisms the publisher can sign in with.
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// A SASL sign-in: mechanism (one of [`SASL_MECHANISMS`]), user name and password.
#[derive(Debug, Clone)]
pub struct SaslLogin {
    pub mechanism: String,
    pub username: String,
    pub password: secrecy::SecretString,
}

impl KafkaSettings {
    /// Defaults for `brokers`: topics `workledger.*` of 6 partitions, replicated 3 times,
    /// messages given 30 s.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: "workledger.".to_owned(),
            partitions: 6,
            replication_factor: 3,
            delivery_timeout: Duration::from_secs(30),
            security: KafkaSecurity::default(),
        }
    }

    /// The topic of an aggregate type's events.
    pub fn topic(&self, aggregate_type: &str) -> String {
        format!("{}{aggregate_type}", self.topic_prefix)
    }

    fn client_config(&self) -> ClientConfig {
        use secrecy::ExposeSecret as _;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "workledger")
            .set("security.protocol", self.security.protocol.as_str());
        if let Some(sasl) = &self.security.sasl {
            config
                .set("sasl.mechanism", &sasl.mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose_secret());
        }
        if let Some(ca) = &self.security.ca_location {
            config.set("ssl.ca.location", ca.to_string_lossy());
        }
        config
    }
}

/// The message's headers.
fn headers(event: &IntegrationEvent) -> OwnedHeaders {
    let event_id = event.event_id.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(6)
        .insert(header("event_id", &event_id))
        .insert(header("event_type", &event.event_type))
        .insert(header("event_version", &event.event_version))
        .insert(header("content-type", "application/json"));
    if let Some(tenant) = &event.tenant_id {
        headers = headers.insert(header("tenant_id", tenant));
    }
    if let Some(correlation) = &event.correlation_id {
        headers = headers.insert(header("correlation_id", correlation));
    }
    headers
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// Why the publisher could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Kafka producer for {brokers}")]
pub struct KafkaSetupError {
    brokers: String,
    #[source]
    source: KafkaError,
}

/// The Kafka publisher (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct KafkaPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    settings: KafkaSettings,
    /// Replaced after a failed batch (see [`KafkaPublisher::recover`]).
    producer: RwLock<FutureProducer>,
    admin: AdminClient<DefaultClientContext>,
    /// Topic by aggregate type.
    topics: HashMap<&'static str, String>,
    /// Whether every topic is known to exist: checked before a batch until then, and again
    /// after a failed batch (a topic may have been deleted, or the cluster replaced).
    topics_ready: AtomicBool,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("brokers", &self.inner.settings.brokers)
            .field("topic_prefix", &self.inner.settings.topic_prefix)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A publisher for `settings`. Connects lazily: a broker down at start is a failing
    /// batch, retried, not a failed start; a setting librdkafka refuses is an error here.
    pub fn new(settings: KafkaSettings) -> Result<Self, KafkaSetupError> {
        let failed = |source| KafkaSetupError {
            brokers: settings.brokers.clone(),
            source,
        };
        let producer = new_producer(&settings).map_err(failed)?;
        let admin: AdminClient<DefaultClientContext> =
            settings.client_config().create().map_err(failed)?;
        let topics = INTEGRATION_AGGREGATE_TYPES
            .iter()
            .map(|t| (*t, settings.topic(t)))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                producer: RwLock::new(producer),
                admin,
                topics,
                topics_ready: AtomicBool::new(false),
            }),
        })
    }

    /// The topics it publishes to.
    pub fn topics(&self) -> Vec<String> {
        INTEGRATION_AGGREGATE_TYPES
            .iter()
            .map(|t| self.inner.topics[t].clone())
            .collect()
    }

    /// Creates the topics that do not exist yet. Only missing ones are asked for: a client
    /// without the right to create topics is refused even for topics that exist, and a
    /// cluster whose topics are made beforehand is fine.
    async fn ensure_topics(&self, first: &RecordedEvent) -> Result<(), ProjectionError> {
        let inner = &self.inner;
        if inner.topics_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let existing = self
            .existing_topics()
            .await
            .map_err(|error| ProjectionError::delivery(first, error))?;
        let new: Vec<NewTopic<'_>> = inner
            .topics
            .values()
            .filter(|name| !existing.contains(*name))
            .map(|name| {
                NewTopic::new(
                    name,
                    inner.settings.partitions,
                    TopicReplication::Fixed(inner.settings.replication_factor),
                )
            })
            .collect();
        if new.is_empty() {
            inner.topics_ready.store(true, Ordering::Release);
            return Ok(());
        }
        let timeout = Some(inner.settings.delivery_timeout);
        // without a request timeout the call waits for a broker as long as it takes
        let options = AdminOptions::new()
            .request_timeout(timeout)
            .operation_timeout(timeout);
        let results = inner
            .admin
            .create_topics(&new, &options)
            .await
            .map_err(|error| {
                ProjectionError::delivery(
                    first,
                    TopicsError {
                        brokers: inner.settings.brokers.clone(),
                        error,
                    },
                )
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(ProjectionError::delivery(
                        first,
                        TopicError {
                            topic,
                            error: KafkaError::AdminOp(code),
                        },
                    ));
                }
            }
        }
        inner.topics_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The cluster's topics (the metadata call blocks: it runs off the async threads).
    async fn existing_topics(&self) -> Result<HashSet<String>, TopicsError> {
        let producer = self.producer();
        let timeout = self.inner.settings.delivery_timeout;
        let brokers = self.inner.settings.brokers.clone();
        let failed = |error| TopicsError {
            brokers: brokers.clone(),
            error,
        };
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|metadata| {
                    metadata
                        .topics()
                        .iter()
                        .filter(|topic| topic.error().is_none())
                        .map(|topic| topic.name().to_owned())
                        .collect()
                })
        })
        .await
        .map_err(|_| failed(KafkaError::Canceled))?;
        metadata.map_err(failed)
    }

    fn producer(&self) -> FutureProducer {
        self.inner
            .producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn publish(&self, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        let result = self.send(events).await;
        if result.is_err() {
            self.recover();
        }
        result
    }

    /// After a failed batch: topics are checked again, and the producer is replaced by a new
    /// one. An idempotent producer whose messages timed out must agree a new epoch with the
    /// broker before it sends again, and one that lost its broker (a cluster replaced, or
    /// restored) can wait on that for good; a new producer starts clean. Repeats this may
    /// cause are the at-least-once the consumers expect.
    fn recover(&self) {
        let inner = &self.inner;
        inner.topics_ready.store(false, Ordering::Release);
        let fresh = match new_producer(&inner.settings) {
            Ok(fresh) => fresh,
            Err(error) => {
                tracing::error!(error = %error, "cannot start a new Kafka producer; keeping the old one");
                return;
            }
        };
        let old = std::mem::replace(
            &mut *inner.producer.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        if let Some((code, reason)) = old.client().fatal_error() {
            tracing::warn!(%code, reason, "the Kafka producer had failed for good");
        }
        // dropping a producer purges its queue and waits for up to half a second
        tokio::task::spawn_blocking(move || drop(old));
    }

    async fn send(&self, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        self.ensure_topics(first).await?;
        let producer = self.producer();
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let Some(topic) = self.inner.topics.get(event.aggregate_type.as_str()) else {
                return Err(ProjectionError::inconsistent(
                    event,
                    "the publisher does not publish this aggregate type",
                ));
            };
            let message = IntegrationEvent::of(event);
            let value =
                serde_json::to_vec(&message).map_err(|e| ProjectionError::delivery(event, e))?;
            let record = FutureRecord::to(topic)
                .key(event.aggregate_id.as_str())
                .payload(&value)
                .headers(headers(&message));
            // queued; a full queue is a failed batch, retried
            let delivery = producer
                .send_result(record)
                .map_err(|(error, _)| ProjectionError::delivery(event, error))?;
            pending.push((*event, delivery));
        }
        // in order: the first event that failed is named (the producer keeps each partition's
        // order, retries included)
        for (event, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(ProjectionError::delivery(event, error)),
                Err(_canceled) => {
                    return Err(ProjectionError::delivery(event, KafkaError::Canceled));
                }
            }
        }
        metrics::counter!("workledger_kafka_messages_total").increment(events.len() as u64);
        Ok(())
    }
}

fn new_producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    let timeout_ms = settings.delivery_timeout.as_millis().max(1).to_string();
    settings
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", &timeout_ms)
        .set("linger.ms", "5")
        // the partition of a key as Kafka's Java clients choose it, so that their topics
        // keyed by the same ids line up
        .set("partitioner", "murmur2_random")
        .create()
}

/// The topics could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the topics on {brokers}")]
struct TopicsError {
    brokers: String,
    #[source]
    error: KafkaError,
}

/// A topic the publisher could not create.
#[derive(Debug, thiserror::Error)]
#[error("cannot create topic {topic}")]
struct TopicError {
    topic: String,
    #[source]
    error: KafkaError,
}

impl Projector for KafkaPublisher {
    fn name(&self) -> &'static str {
        KAFKA_PUBLISHER
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregates(&INTEGRATION_AGGREGATE_TYPES)
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn external(&self) -> bool {
        true
    }

    fn apply<'a>(
        &'a self,
        _conn: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(self.publish(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secured(protocol: SecurityProtocol, mechanism: &str) -> KafkaSettings {
        KafkaSettings {
            security: KafkaSecurity {
                protocol,
                sasl: protocol.uses_sasl().then(|| SaslLogin {
                    mechanism: mechanism.to_owned(),
                    username: "workledger".to_owned(),
                    password: "kafka secret".to_owned().into(),
                }),
                ca_location: None,
            },
            ..KafkaSettings::new("127.0.0.1:9")
        }
    }

    #[test]
    fn the_client_configuration_carries_the_security_settings() {
        let config = secured(SecurityProtocol::SaslSsl, "SCRAM-SHA-256").client_config();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(config.get("sasl.username"), Some("workledger"));
        assert_eq!(config.get("sasl.password"), Some("kafka secret"));
        let plain = KafkaSettings::new("127.0.0.1:9").client_config();
        assert_eq!(plain.get("security.protocol"), Some("plaintext"));
        assert_eq!(plain.get("sasl.password"), None);
        // the settings print without the password
        assert!(
            !format!("{:?}", secured(SecurityProtocol::SaslSsl, "PLAIN")).contains("kafka secret")
        );
    }

    /// librdkafka checks the protocol and mechanism when a client is made (it connects only
    /// later): this fails on a build without TLS or SCRAM.
    #[tokio::test]
    async fn the_publisher_can_be_made_for_every_protocol_and_mechanism() {
        for (_, protocol) in SecurityProtocol::ALL {
            for mechanism in SASL_MECHANISMS {
                let settings = secured(protocol, mechanism);
                if let Err(error) = KafkaPublisher::new(settings) {
                    panic!("{} with {mechanism}: {error:#}", protocol.as_str());
                }
            }
        }
    }
}
