//! Integration events: what other systems receive (the Kafka messages' values, DESIGN §7), and
//! their JSON Schemas for those systems' consumers.
//!
//! An integration event is a stored event as it is: its type, its version and its payload (not
//! upcast: a consumer reads the `event_version` it is given), with its place in the log and
//! the metadata a consumer needs. The schemas are generated from the event types themselves,
//! so they cannot drift from what is stored; `docs/event-schemas/` holds them as published
//! (a test keeps the files equal to the generated ones).

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    ApprovalEvent, LogPosition, RecordedEvent, TaskEvent, WorkflowDefinitionEvent,
    WorkflowInstanceEvent, approval, task, workflow_definition, workflow_instance,
};

/// The aggregate types whose events are integration events. Identity events (tenants, users)
/// are not: names and emails stay in them alone (DESIGN §2, personal data).
pub const INTEGRATION_AGGREGATE_TYPES: [&str; 4] = [
    workflow_definition::AGGREGATE_TYPE,
    workflow_instance::AGGREGATE_TYPE,
    task::AGGREGATE_TYPE,
    approval::AGGREGATE_TYPE,
];

/// One event as other systems receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IntegrationEvent {
    /// Unique per event: a consumer drops repeats by it (delivery is at least once).
    pub event_id: Uuid,
    /// The payload's variant, e.g. `TaskClaimed`.
    pub event_type: String,
    /// The payload's shape version for its `event_type`.
    pub event_version: String,
    /// `workflow_definition`, `workflow_instance`, `task` or `approval`.
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The event's number within its aggregate, from 1, without gaps.
    pub sequence: i64,
    /// Its place in the global log: also a consistency token for the query API
    /// (`X-Consistency-Token`), to read the read models as of this event.
    pub position: LogPosition,
    pub tenant_id: Option<String>,
    /// `user:UUID` or `service:NAME`.
    pub actor: Option<String>,
    /// When the command that caused it was accepted (RFC 3339).
    pub occurred_at: Option<String>,
    /// Shared by everything one request (and the cascade it triggered) caused.
    pub correlation_id: Option<String>,
    /// The event or request that caused this one.
    pub causation_id: Option<String>,
    /// When it was stored.
    pub recorded_at: DateTime<Utc>,
    /// The event itself, tagged by its type (`{"TaskClaimed": {...}}`): see the aggregate
    /// type's schema.
    pub payload: Value,
}

impl IntegrationEvent {
    pub fn of(event: &RecordedEvent) -> Self {
        let metadata = |key: &str| {
            event
                .metadata
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Self {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            position: event.position,
            tenant_id: metadata("tenant_id"),
            actor: metadata("actor"),
            occurred_at: metadata("occurred_at"),
            correlation_id: metadata("correlation_id"),
            causation_id: metadata("causation_id"),
            recorded_at: event.recorded_at,
            payload: event.payload.clone(),
        }
    }
}

impl JsonSchema for LogPosition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LogPosition".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+\\.[0-9]+$",
            "description": "`tx_id.global_position`: positions compare by transaction id, then position"
        })
    }
}

fn generator() -> SchemaGenerator {
    SchemaGenerator::new(SchemaSettings::draft2020_12())
}

/// The JSON Schema of an aggregate type's payloads at their current versions, or `None` for
/// a type whose events are not integration events.
pub fn payload_schema(aggregate_type: &str) -> Option<Schema> {
    let generator = generator();
    Some(match aggregate_type {
        workflow_definition::AGGREGATE_TYPE => {
            generator.into_root_schema_for::<WorkflowDefinitionEvent>()
        }
        workflow_instance::AGGREGATE_TYPE => {
            generator.into_root_schema_for::<WorkflowInstanceEvent>()
        }
        task::AGGREGATE_TYPE => generator.into_root_schema_for::<TaskEvent>(),
        approval::AGGREGATE_TYPE => generator.into_root_schema_for::<ApprovalEvent>(),
        _ => return None,
    })
}

/// The JSON Schema of [`IntegrationEvent`] (the message around a payload).
pub fn integration_event_schema() -> Schema {
    generator().into_root_schema_for::<IntegrationEvent>()
}

/// The published schema documents: `(file name, schema)`, as in `docs/event-schemas/`.
pub fn schema_documents() -> Vec<(String, Schema)> {
    let mut documents = vec![(
        "integration-event.json".to_owned(),
        integration_event_schema(),
    )];
    for aggregate_type in INTEGRATION_AGGREGATE_TYPES {
        if let Some(schema) = payload_schema(aggregate_type) {
            documents.push((format!("{aggregate_type}.json"), schema));
        }
    }
    documents
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use chrono::TimeZone as _;
    use serde_json::json;

    use super::*;

    fn validator(schema: &Schema) -> jsonschema::Validator {
        jsonschema::validator_for(&serde_json::to_value(schema).unwrap()).unwrap()
    }

    fn problems(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    #[test]
    fn every_stored_sample_of_an_integration_aggregate_matches_its_schema() {
        let mut checked = 0;
        for (aggregate_type, event_type, payload) in crate::golden::samples() {
            let Some(schema) = payload_schema(aggregate_type) else {
                assert!(!INTEGRATION_AGGREGATE_TYPES.contains(&aggregate_type));
                continue;
            };
            let found = problems(&validator(&schema), &payload);
            assert!(found.is_empty(), "{event_type}: {found:?}");
            checked += 1;
        }
        assert!(checked > 20, "only {checked} samples checked");
    }

    #[test]
    fn a_payload_of_the_wrong_shape_does_not_match() {
        let tasks = validator(&payload_schema(task::AGGREGATE_TYPE).unwrap());
        let claimed = json!({"TaskClaimed": {"user_id": "0190e4b4-0000-7000-8000-000000000001",
                                             "claimed_at": "2026-11-26T10:00:00Z"}});
        assert!(tasks.is_valid(&claimed));
        for wrong in [
            json!({"TaskClaimed": {"claimed_at": "2026-11-26T10:00:00Z"}}),
            json!({"TaskClaimed": {"user_id": 7, "claimed_at": "2026-11-26T10:00:00Z"}}),
            json!({"TaskTeleported": {}}),
            json!({"ApprovalDecided": {}}),
        ] {
            assert!(!tasks.is_valid(&wrong), "{wrong}");
        }
    }

    #[test]
    fn an_integration_event_matches_the_envelope_schema() {
        let recorded = RecordedEvent {
            position: LogPosition {
                tx_id: 1204,
                global_position: 17,
            },
            event_id: Uuid::nil(),
            aggregate_type: task::AGGREGATE_TYPE.to_owned(),
            aggregate_id: Uuid::nil().to_string(),
            sequence: 2,
            event_type: "TaskClaimed".to_owned(),
            event_version: "1".to_owned(),
            payload: json!({"TaskClaimed": {"user_id": Uuid::nil(), "claimed_at": "2026-11-26T10:00:00Z"}}),
            metadata: json!({"tenant_id": "acme", "actor": "service:test",
                             "correlation_id": "c", "causation_id": "d",
                             "occurred_at": "2026-11-26T10:00:00Z"}),
            recorded_at: Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 1).unwrap(),
        };
        let event = serde_json::to_value(IntegrationEvent::of(&recorded)).unwrap();
        assert_eq!(event["position"], "1204.17");
        let envelope = validator(&integration_event_schema());
        let found = problems(&envelope, &event);
        assert!(found.is_empty(), "{found:?}");
        let mut wrong = event.clone();
        wrong["position"] = json!(17);
        assert!(!envelope.is_valid(&wrong));
    }

    /// `docs/event-schemas/` holds the generated schemas; `UPDATE_SCHEMAS=1` rewrites them.
    #[test]
    fn the_published_schemas_are_the_generated_ones() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/event-schemas");
        for (name, schema) in schema_documents() {
            let path = dir.join(&name);
            let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            if std::env::var_os("UPDATE_SCHEMAS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &generated).unwrap();
                continue;
            }
            let published = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                published == generated,
                "docs/event-schemas/{name} is stale: run `UPDATE_SCHEMAS=1 cargo nextest run -p event-schemas schemas`"
            );
        }
    }
}
