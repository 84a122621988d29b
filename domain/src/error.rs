//! What the aggregates' rejection enums have in common, for the HTTP layer.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The class of a rejected command; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The aggregate does not exist, or belongs to another tenant (indistinguishable): 404.
    NotFound,
    /// The caller's roles or relation to the aggregate do not allow the command: 403.
    Forbidden,
    /// The aggregate's state does not allow the command now (already completed, not your turn,
    /// already exists, ...): 409.
    Conflict,
    /// The command's content is invalid; see [`Rejection::issues`]: 422.
    Validation,
}

impl ErrorKind {
    /// The HTTP status the API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::Forbidden => 403,
            ErrorKind::Conflict => 409,
            ErrorKind::Validation => 422,
        }
    }
}

/// Implemented by every aggregate's rejection enum.
pub trait Rejection: std::error::Error {
    /// How the API should answer.
    fn kind(&self) -> ErrorKind;
    /// A stable machine code for problem+json's `code` (e.g. `"task_already_closed"`).
    fn code(&self) -> &'static str;
    /// Field- or step-level problems, for problem+json's `errors`.
    fn issues(&self) -> &[Issue] {
        &[]
    }
}

/// The first issue, for one-line error messages.
pub(crate) fn first_issue(issues: &[Issue]) -> String {
    issues.first().map(ToString::to_string).unwrap_or_default()
}

/// One problem with a definition or with a command's content, located by step and/or field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// The step the problem is in, if any.
    pub step: Option<String>,
    /// The field (a path such as `rules[0].when` or `approvers.users[1]`), if any.
    pub field: Option<String>,
    pub code: IssueCode,
    pub message: String,
}

impl Issue {
    /// A problem in `step` (if any) at `field` (if any).
    pub fn new(
        step: Option<&str>,
        field: Option<&str>,
        code: IssueCode,
        message: impl Into<String>,
    ) -> Self {
        Self {
            step: step.map(str::to_owned),
            field: field.map(str::to_owned),
            code,
            message: message.into(),
        }
    }

    /// A problem with `field` of a command.
    pub fn field(field: impl Into<String>, code: IssueCode, message: impl Into<String>) -> Self {
        Self {
            step: None,
            field: Some(field.into()),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.step, &self.field) {
            (Some(step), Some(field)) => write!(f, "step {step}, {field}: ")?,
            (Some(step), None) => write!(f, "step {step}: ")?,
            (None, Some(field)) => write!(f, "{field}: ")?,
            (None, None) => {}
        }
        write!(f, "{}", self.message)
    }
}

/// The machine code of an [`Issue`], serialized in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueCode {
    /// The document is not JSON / YAML.
    ParseError,
    /// A key appears twice in one object.
    DuplicateKey,
    /// A step id appears twice.
    DuplicateStep,
    UnknownField,
    MissingField,
    InvalidType,
    InvalidValue,
    /// The definition key is not usable in an id or URL.
    InvalidKey,
    /// A step id is not usable (letters, digits, `_`, `-`, `.`).
    InvalidStepId,
    UnknownStepType,
    /// A `start`, `next`, route, branch or join names no step.
    UnknownTarget,
    UnreachableStep,
    NoPathToEnd,
    NoEndStep,
    /// A parallel branch has no path to the parallel's join.
    BranchNeverJoins,
    /// The join is the parallel itself, one of its branches, or shared by two parallels.
    InvalidJoin,
    DuplicateBranch,
    /// Decisions and parallels form a cycle without a task, approval or timer: it would spin.
    LoopWithoutWait,
    InvalidExpression,
    InvalidDuration,
    EmptyApprovers,
    InvalidQuorum,
    InvalidUserId,
    DuplicateFormField,
    InvalidFieldId,
    /// An escalation needs a `due` to be triggered by.
    EscalationWithoutDue,
    /// A required form field is missing from a task's output.
    Required,
    TooLong,
    Empty,
}

impl IssueCode {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::ParseError => "parse_error",
            IssueCode::DuplicateKey => "duplicate_key",
            IssueCode::DuplicateStep => "duplicate_step",
            IssueCode::UnknownField => "unknown_field",
            IssueCode::MissingField => "missing_field",
            IssueCode::InvalidType => "invalid_type",
            IssueCode::InvalidValue => "invalid_value",
            IssueCode::InvalidKey => "invalid_key",
            IssueCode::InvalidStepId => "invalid_step_id",
            IssueCode::UnknownStepType => "unknown_step_type",
            IssueCode::UnknownTarget => "unknown_target",
            IssueCode::UnreachableStep => "unreachable_step",
            IssueCode::NoPathToEnd => "no_path_to_end",
            IssueCode::NoEndStep => "no_end_step",
            IssueCode::BranchNeverJoins => "branch_never_joins",
            IssueCode::InvalidJoin => "invalid_join",
            IssueCode::DuplicateBranch => "duplicate_branch",
            IssueCode::LoopWithoutWait => "loop_without_wait",
            IssueCode::InvalidExpression => "invalid_expression",
            IssueCode::InvalidDuration => "invalid_duration",
            IssueCode::EmptyApprovers => "empty_approvers",
            IssueCode::InvalidQuorum => "invalid_quorum",
            IssueCode::InvalidUserId => "invalid_user_id",
            IssueCode::DuplicateFormField => "duplicate_form_field",
            IssueCode::InvalidFieldId => "invalid_field_id",
            IssueCode::EscalationWithoutDue => "escalation_without_due",
            IssueCode::Required => "required",
            IssueCode::TooLong => "too_long",
            IssueCode::Empty => "empty",
        }
    }
}

impl fmt::Display for IssueCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_codes_serialize_as_their_names() {
        for code in [
            IssueCode::UnknownTarget,
            IssueCode::LoopWithoutWait,
            IssueCode::Required,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().to_owned())
            );
        }
    }
}
