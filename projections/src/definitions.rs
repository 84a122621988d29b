//! Published workflow definitions, every version (`workflow_definitions`).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use event_schemas::workflow_definition::{AGGREGATE_TYPE, WorkflowDefinitionEvent};
use event_schemas::{AnyEvent, RecordedEvent};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

use crate::names::DEFINITIONS;
use crate::projector::{EventFilter, ProjectionError, Projector, decode, meta};
use crate::rows::{self, Table};

const TABLE: Table = Table {
    name: "workflow_definitions",
    columns: &[
        ("tenant_id", "text"),
        ("key", "text"),
        ("version", "integer"),
        ("name", "text"),
        ("definition", "jsonb"),
        ("published_by", "text"),
        ("published_at", "timestamptz"),
    ],
    key: "tenant_id, key, version",
};

static INSERT: LazyLock<String> = LazyLock::new(|| TABLE.insert_sql());

#[derive(Debug, Serialize)]
struct Row<'a> {
    tenant_id: &'a str,
    key: String,
    version: u32,
    name: String,
    definition: Value,
    published_by: String,
    published_at: DateTime<Utc>,
}

/// Projects `WorkflowDefinitionPublished` into `workflow_definitions`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefinitionsProjector;

impl Projector for DefinitionsProjector {
    fn name(&self) -> &'static str {
        DEFINITIONS
    }

    fn filter(&self) -> EventFilter {
        EventFilter::aggregates(&[AGGREGATE_TYPE])
    }

    fn tables(&self) -> &'static [&'static str] {
        &["workflow_definitions"]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(tx, events))
    }
}

#[tracing::instrument(name = "project_definitions", skip_all, fields(events = events.len()))]
async fn apply(tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let meta = meta(event)?;
        match decode(event)? {
            AnyEvent::WorkflowDefinition(
                WorkflowDefinitionEvent::WorkflowDefinitionPublished {
                    key,
                    version,
                    name,
                    definition,
                    published_by,
                    published_at,
                    ..
                },
            ) => rows.push(Row {
                tenant_id: meta.tenant_id,
                key,
                version,
                name,
                definition,
                published_by: published_by.to_string(),
                published_at,
            }),
            other => {
                return Err(ProjectionError::inconsistent(
                    event,
                    format!("{} is not a definition event", other.event_type()),
                ));
            }
        }
    }
    rows::write(tx, &INSERT, &rows).await?;
    Ok(())
}
