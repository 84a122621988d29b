//! Events of the `workflow_definition` aggregate (id `"{tenant_id}/{key}"`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Actor;

/// The aggregate type under which these events are stored.
pub const AGGREGATE_TYPE: &str = "workflow_definition";

/// Something that happened to a workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum WorkflowDefinitionEvent {
    /// A validated version was published; published versions never change.
    WorkflowDefinitionPublished {
        tenant_id: String,
        key: String,
        /// 1 for the first publication of the key, then 2, 3, ...
        version: u32,
        name: String,
        /// The definition in its canonical JSON form (DESIGN §3 format).
        definition: Value,
        published_by: Actor,
        published_at: DateTime<Utc>,
    },
}

event_names!(WorkflowDefinitionEvent {
    WorkflowDefinitionPublished => "1",
});
