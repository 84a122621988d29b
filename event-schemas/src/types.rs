//! Value types shared by the events of several aggregates (and by the domain's commands).
//!
//! Their serialized form is part of the storage contract, and for [`ApprovalPolicy`] also of
//! the definition format (DESIGN §3).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A role a user holds in a tenant (DESIGN §4).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in its tenant.
    Admin,
    /// Publishes workflow definitions.
    Designer,
    /// Starts and cancels instances, assigns tasks.
    Operator,
    /// Works the tasks and approvals offered to them.
    Member,
    /// Reads and exports the audit trail; read-only.
    Auditor,
}

impl Role {
    /// Every role, in the order above.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Designer,
        Role::Operator,
        Role::Member,
        Role::Auditor,
    ];

    /// The stored and wire name (`"admin"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Designer => "designer",
            Role::Operator => "operator",
            Role::Member => "member",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected admin, designer, operator, member or auditor)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// How the decisions of an approval's approvers combine (DESIGN §3).
///
/// Serialized exactly as the definition format writes it: `"any"`, `"all"`, `"sequential"` or
/// `{"quorum": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalPolicy {
    /// The first decision decides.
    Any,
    /// Every approver must approve; one rejection rejects.
    All,
    /// Approved at N approvals; rejected as soon as N can no longer be reached.
    Quorum(u32),
    /// Approvers in the listed order, each must approve; one rejection rejects.
    Sequential,
}

impl fmt::Display for ApprovalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApprovalPolicy::Any => f.write_str("any"),
            ApprovalPolicy::All => f.write_str("all"),
            ApprovalPolicy::Quorum(n) => write!(f, "quorum of {n}"),
            ApprovalPolicy::Sequential => f.write_str("sequential"),
        }
    }
}

/// One approver's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalDecision {
    Approve,
    Reject,
}

/// How an approval ended; routes the workflow to the step's `approved` or `rejected` target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalOutcome {
    Approved,
    Rejected,
}

/// Why an approval closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalCloseReason {
    /// The approvers' decisions settled it under the policy.
    Decided,
    /// It opened with no approvers at all (e.g. an empty group): rejected at once.
    NoApprovers,
    /// It opened with fewer approvers than its quorum: rejected at once.
    NotEnoughApprovers,
}

/// Lifecycle of a task (DESIGN §4 resource shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    #[default]
    Open,
    Completed,
    Cancelled,
}

/// Lifecycle of an approval (DESIGN §4 resource shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    #[default]
    Pending,
    Approved,
    Rejected,
    Cancelled,
}

/// Lifecycle of a workflow instance (DESIGN §4 resource shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    #[default]
    Running,
    Completed,
    Cancelled,
    Failed,
}

/// The type of a form field; a task's output is checked against it on completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// A JSON string.
    String,
    /// Any JSON number.
    Number,
    /// A JSON number without a fractional part.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A string `YYYY-MM-DD`.
    Date,
    /// An RFC 3339 timestamp string.
    Datetime,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

impl FieldType {
    /// The name used in definitions (`"string"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Integer => "integer",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Object => "object",
            FieldType::Array => "array",
        }
    }

    /// Every field type.
    pub const ALL: [FieldType; 8] = [
        FieldType::String,
        FieldType::Number,
        FieldType::Integer,
        FieldType::Boolean,
        FieldType::Date,
        FieldType::Datetime,
        FieldType::Object,
        FieldType::Array,
    ];
}

/// One field of a task's form: the output key it fills, its type and whether it is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FormField {
    pub id: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default)]
    pub required: bool,
    /// A caption for forms; not personal data.
    #[serde(default)]
    pub label: Option<String>,
}

/// What happens when a task becomes overdue: more people are offered the task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Escalation {
    #[serde(default)]
    pub candidate_users: Vec<Uuid>,
    #[serde(default)]
    pub candidate_groups: Vec<String>,
}

/// Approvers as a definition names them; groups are resolved to members when the approval opens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ApproverSpec {
    #[serde(default)]
    pub users: Vec<Uuid>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// One activation of one step of a workflow instance.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct StepRef {
    pub step_id: String,
    /// 1 for the step's first activation in the instance, 2 for the second (loops), ...
    pub activation: u32,
}

/// The workflow step a task or approval was opened for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct WorkflowRef {
    pub instance_id: Uuid,
    pub definition_key: String,
    pub definition_version: u32,
    pub step_id: String,
    pub activation: u32,
}

/// What a workflow step waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChildKind {
    Task,
    Approval,
    Timer,
}

/// A step activation still waiting when an instance ended; its task or approval is cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct OpenChild {
    pub kind: ChildKind,
    /// The task id, approval id or timer id.
    pub id: Uuid,
    pub step_id: String,
    pub activation: u32,
}

/// A file attached to a task or a workflow instance, as its events record it. The content is
/// stored outside the log, once per tenant and digest (`sha256`); the events say which file
/// is which document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct DocumentFile {
    pub document_id: Uuid,
    /// The file name the uploader gave, e.g. `quote-2026-114.pdf`.
    pub name: String,
    /// The content's media type, e.g. `application/pdf`.
    pub media_type: String,
    /// The content's length in bytes.
    pub size: u64,
    /// The content's SHA-256 digest, 64 lowercase hex digits.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_serialize_as_the_definition_format_writes_them() {
        let cases = [
            (ApprovalPolicy::Any, json!("any")),
            (ApprovalPolicy::All, json!("all")),
            (ApprovalPolicy::Sequential, json!("sequential")),
            (ApprovalPolicy::Quorum(2), json!({"quorum": 2})),
        ];
        for (policy, value) in cases {
            assert_eq!(serde_json::to_value(policy).unwrap(), value);
            assert_eq!(
                serde_json::from_value::<ApprovalPolicy>(value).unwrap(),
                policy
            );
        }
        assert!(serde_json::from_value::<ApprovalPolicy>(json!("most")).is_err());
        assert!(serde_json::from_value::<ApprovalPolicy>(json!({"quorum": -1})).is_err());
    }

    #[test]
    fn roles_parse_by_name_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert_eq!("root".parse::<Role>(), Err(UnknownRole("root".to_owned())));
    }
}
