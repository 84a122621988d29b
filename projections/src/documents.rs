//! Documents attached to tasks and workflow instances (`documents`): one row per document, with
//! its task and instance, its file's name, media type, size and digest, who attached it and,
//! once removed, who removed it and why. The content stays in `document_contents`, which the
//! command API writes and no projector touches.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use event_schemas::{
    AnyEvent, DocumentFile, RecordedEvent, TaskEvent, WorkflowInstanceEvent, task,
    workflow_instance,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::names::DOCUMENTS;
use crate::projector::{EventFilter, ProjectionError, Projector, decode, meta, uuid_id};
use crate::rows::{self, Table};

const TABLE: Table = Table {
    name: "documents",
    columns: &[
        ("id", "uuid"),
        ("tenant_id", "text"),
        ("task_id", "uuid"),
        ("workflow_instance_id", "uuid"),
        ("name", "text"),
        ("media_type", "text"),
        ("size", "bigint"),
        ("sha256", "text"),
        ("attached_by", "text"),
        ("attached_at", "timestamptz"),
        ("removed_by", "text"),
        ("removed_at", "timestamptz"),
        ("removal_reason", "text"),
        ("version", "bigint"),
    ],
    key: "id",
};

static UPSERT: LazyLock<String> = LazyLock::new(|| TABLE.upsert_sql());

/// The event types this projector reads.
const EVENT_TYPES: [&str; 4] = [
    "TaskDocumentAttached",
    "TaskDocumentRemoved",
    "InstanceDocumentAttached",
    "InstanceDocumentRemoved",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    id: Uuid,
    tenant_id: String,
    task_id: Option<Uuid>,
    workflow_instance_id: Option<Uuid>,
    name: String,
    media_type: String,
    size: i64,
    sha256: String,
    attached_by: String,
    attached_at: DateTime<Utc>,
    removed_by: Option<String>,
    removed_at: Option<DateTime<Utc>>,
    removal_reason: Option<String>,
    version: i64,
}

/// Projects the document events of tasks and instances into `documents`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DocumentsProjector;

impl Projector for DocumentsProjector {
    fn name(&self) -> &'static str {
        DOCUMENTS
    }

    fn filter(&self) -> EventFilter {
        EventFilter::events(
            &[task::AGGREGATE_TYPE, workflow_instance::AGGREGATE_TYPE],
            &EVENT_TYPES,
        )
    }

    fn tables(&self) -> &'static [&'static str] {
        &["documents"]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(tx, events))
    }
}

/// What one event does to a document.
enum Change {
    Attached {
        file: DocumentFile,
        task_id: Option<Uuid>,
        workflow_instance_id: Option<Uuid>,
        by: String,
        at: DateTime<Utc>,
    },
    Removed {
        document_id: Uuid,
        by: String,
        at: DateTime<Utc>,
        reason: Option<String>,
    },
}

fn change(event: &RecordedEvent) -> Result<Change, ProjectionError> {
    let aggregate_id = uuid_id(event)?;
    Ok(match decode(event)? {
        AnyEvent::Task(TaskEvent::TaskDocumentAttached {
            document,
            workflow_instance_id,
            attached_by,
            attached_at,
        }) => Change::Attached {
            file: document,
            task_id: Some(aggregate_id),
            workflow_instance_id,
            by: attached_by.to_string(),
            at: attached_at,
        },
        AnyEvent::WorkflowInstance(WorkflowInstanceEvent::InstanceDocumentAttached {
            document,
            attached_by,
            attached_at,
        }) => Change::Attached {
            file: document,
            task_id: None,
            workflow_instance_id: Some(aggregate_id),
            by: attached_by.to_string(),
            at: attached_at,
        },
        AnyEvent::Task(TaskEvent::TaskDocumentRemoved {
            document_id,
            reason,
            removed_by,
            removed_at,
        })
        | AnyEvent::WorkflowInstance(WorkflowInstanceEvent::InstanceDocumentRemoved {
            document_id,
            reason,
            removed_by,
            removed_at,
        }) => Change::Removed {
            document_id,
            by: removed_by.to_string(),
            at: removed_at,
            reason,
        },
        other => {
            return Err(ProjectionError::inconsistent(
                event,
                format!("{} is not a document event", other.event_type()),
            ));
        }
    })
}

#[tracing::instrument(name = "project_documents", skip_all, fields(events = events.len()))]
async fn apply(tx: &mut PgConnection, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
    let changes = events
        .iter()
        .map(|event| Ok((*event, change(event)?)))
        .collect::<Result<Vec<_>, ProjectionError>>()?;
    // documents removed in this batch but attached in an earlier one
    let attached_here: Vec<Uuid> = changes
        .iter()
        .filter_map(|(_, c)| match c {
            Change::Attached { file, .. } => Some(file.document_id),
            Change::Removed { .. } => None,
        })
        .collect();
    let load: Vec<Uuid> = changes
        .iter()
        .filter_map(|(_, c)| match c {
            Change::Removed { document_id, .. } if !attached_here.contains(document_id) => {
                Some(*document_id)
            }
            _ => None,
        })
        .collect();
    let mut rows: HashMap<Uuid, Row> = rows::load::<Row>(tx, TABLE.name, &load)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    for (event, change) in changes {
        let meta = meta(event)?;
        match change {
            Change::Attached {
                file,
                task_id,
                workflow_instance_id,
                by,
                at,
            } => {
                rows.insert(
                    file.document_id,
                    Row {
                        id: file.document_id,
                        tenant_id: meta.tenant_id.to_owned(),
                        task_id,
                        workflow_instance_id,
                        name: file.name,
                        media_type: file.media_type,
                        size: i64::try_from(file.size).unwrap_or(i64::MAX),
                        sha256: file.sha256,
                        attached_by: by,
                        attached_at: at,
                        removed_by: None,
                        removed_at: None,
                        removal_reason: None,
                        version: 1,
                    },
                );
            }
            Change::Removed {
                document_id,
                by,
                at,
                reason,
            } => {
                let Some(row) = rows.get_mut(&document_id) else {
                    return Err(ProjectionError::inconsistent(
                        event,
                        format!("document {document_id} was never attached"),
                    ));
                };
                row.removed_by = Some(by);
                row.removed_at = Some(at);
                row.removal_reason = reason;
                row.version = 2;
            }
        }
    }
    let rows: Vec<&Row> = rows.values().collect();
    rows::write(tx, &UPSERT, &rows).await?;
    Ok(())
}
