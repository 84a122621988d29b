//! The timeline of an instance: one row per instance event (`workflow_instance_timeline`).

use chrono::{DateTime, Utc};
use event_schemas::RecordedEvent;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::projector::Meta;

/// One entry of an instance's timeline.
#[derive(Debug)]
pub(super) struct TimelineRow<'a> {
    pub instance_id: Uuid,
    pub sequence: i64,
    pub tenant_id: &'a str,
    pub event_type: &'a str,
    pub step_id: Option<String>,
    pub activation: Option<u64>,
    pub actor: &'a str,
    pub at: DateTime<Utc>,
    pub data: Value,
}

impl<'a> TimelineRow<'a> {
    /// The timeline row of `event` of instance `instance_id`.
    pub(super) fn of(instance_id: Uuid, event: &'a RecordedEvent, meta: &Meta<'a>) -> Self {
        TimelineRow {
            instance_id,
            sequence: event.sequence,
            tenant_id: meta.tenant_id,
            event_type: &event.event_type,
            step_id: step_of(&event.payload, &event.event_type),
            activation: inner(&event.payload, &event.event_type)
                .and_then(|o| o.get("activation"))
                .and_then(Value::as_u64),
            actor: meta.actor,
            at: meta.occurred_at,
            data: timeline_data(&event.payload, &event.event_type),
        }
    }
}

/// The event's fields: the payload is `{"EventType": {...}}`.
fn inner<'a>(payload: &'a Value, event_type: &str) -> Option<&'a serde_json::Map<String, Value>> {
    payload.get(event_type).and_then(Value::as_object)
}

/// The step an event is about, when it is about one.
fn step_of(payload: &Value, event_type: &str) -> Option<String> {
    let fields = inner(payload, event_type)?;
    ["step_id", "join_step_id", "end_step_id"]
        .iter()
        .find_map(|key| fields.get(*key).and_then(Value::as_str))
        .map(str::to_owned)
}

/// What the timeline keeps of an event: its fields, except the merged variables of a completed
/// step (the instance row has the current ones; the step's `output` stays).
fn timeline_data(payload: &Value, event_type: &str) -> Value {
    let mut fields = inner(payload, event_type).cloned().unwrap_or_default();
    if event_type == "TaskStepCompleted" {
        fields.remove("variables");
    }
    Value::Object(fields)
}

/// Inserts the timeline rows of a batch, as typed arrays (binary, no JSON document to unpack).
pub(super) async fn insert(
    tx: &mut PgConnection,
    rows: &[TimelineRow<'_>],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&TimelineRow<'_>) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    let instance_ids: Vec<Uuid> = rows.iter().map(|r| r.instance_id).collect();
    let sequences: Vec<i64> = rows.iter().map(|r| r.sequence).collect();
    let activations: Vec<Option<i64>> = rows
        .iter()
        .map(|r| r.activation.map(|a| a as i64))
        .collect();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.at).collect();
    let data: Vec<String> = rows.iter().map(|r| r.data.to_string()).collect();
    sqlx::query(
        "insert into workflow_instance_timeline \
             (instance_id, sequence, tenant_id, event_type, step_id, activation, actor, at, data) \
         select * from unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
                              $6::int[], $7::text[], $8::timestamptz[], $9::json[])",
    )
    .bind(&instance_ids)
    .bind(&sequences)
    .bind(column(|r| Some(r.tenant_id.to_owned())))
    .bind(column(|r| Some(r.event_type.to_owned())))
    .bind(column(|r| r.step_id.clone()))
    .bind(&activations)
    .bind(column(|r| Some(r.actor.to_owned())))
    .bind(&at)
    .bind(&data)
    .execute(tx)
    .await?;
    Ok(())
}
