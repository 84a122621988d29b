//! The workflow report's tables and their rows.

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::rows::Table;

const DAYS: Table = Table {
    name: "workflow_report_days",
    columns: &[
        ("tenant_id", "text"),
        ("definition_key", "text"),
        ("day", "date"),
        ("started", "bigint"),
        ("completed", "bigint"),
        ("cancelled", "bigint"),
        ("failed", "bigint"),
        ("sla_breaches", "bigint"),
    ],
    key: "tenant_id, definition_key, day",
};

const OUTCOMES: Table = Table {
    name: "workflow_report_outcomes",
    columns: &[
        ("tenant_id", "text"),
        ("definition_key", "text"),
        ("day", "date"),
        ("outcome", "text"),
        ("completed", "bigint"),
    ],
    key: "tenant_id, definition_key, day, outcome",
};

const INSTANCES: Table = Table {
    name: "workflow_report_instances",
    columns: &[
        ("instance_id", "uuid"),
        ("tenant_id", "text"),
        ("definition_key", "text"),
        ("started_at", "timestamptz"),
        ("ended_at", "timestamptz"),
        ("status", "text"),
        ("outcome", "text"),
        ("cycle_seconds", "double precision"),
    ],
    key: "instance_id",
};

const CHILDREN: Table = Table {
    name: "workflow_report_children",
    columns: &[
        ("id", "uuid"),
        ("tenant_id", "text"),
        ("definition_key", "text"),
    ],
    key: "id",
};

pub(super) static ADD_DAYS: LazyLock<String> = LazyLock::new(|| {
    DAYS.add_sql(&[
        "started",
        "completed",
        "cancelled",
        "failed",
        "sla_breaches",
    ])
});
pub(super) static ADD_OUTCOMES: LazyLock<String> =
    LazyLock::new(|| OUTCOMES.add_sql(&["completed"]));
pub(super) static UPSERT_INSTANCES: LazyLock<String> = LazyLock::new(|| INSTANCES.upsert_sql());
pub(super) static INSERT_CHILDREN: LazyLock<String> = LazyLock::new(|| CHILDREN.insert_sql());

#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct DayRow {
    pub tenant_id: String,
    pub definition_key: String,
    pub day: NaiveDate,
    pub started: i64,
    pub completed: i64,
    pub cancelled: i64,
    pub failed: i64,
    pub sla_breaches: i64,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct OutcomeRow {
    pub tenant_id: String,
    pub definition_key: String,
    pub day: NaiveDate,
    pub outcome: String,
    pub completed: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct InstanceRow {
    pub instance_id: Uuid,
    pub tenant_id: String,
    pub definition_key: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub status: String,
    pub outcome: Option<String>,
    pub cycle_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ChildRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub definition_key: String,
}
