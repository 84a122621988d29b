//! Workflow definitions: the public format (DESIGN §3), parsed from JSON or YAML and validated
//! as a whole, answering every problem with its step and field.
//!
//! ```
//! let source = r#"{"key": "hello", "name": "Hello", "start": "greet", "steps": {
//!     "greet": {"type": "task", "name": "Say hello", "candidate_groups": ["staff"], "next": "done"},
//!     "done":  {"type": "end", "outcome": "greeted"}}}"#;
//! let definition = domain::definition::Definition::from_json(source).unwrap();
//! assert_eq!(definition.start(), "greet");
//! ```

mod duration;
mod expr;
mod model;
mod parse;
mod strict;
mod validate;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{ErrorKind, Issue, IssueCode, Rejection};

pub use duration::IsoDuration;
pub use expr::{Expr, ExprError};
pub use model::{
    ApprovalStep, DecisionStep, Definition, EndStep, ParallelStep, Rule, Step, StepKind, TaskStep,
    TimerStep,
};
pub(crate) use parse::valid_field_id;

/// A definition that failed to parse or validate, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the workflow definition is invalid ({} problem(s); first: {})", issues.len(), first(issues))]
pub struct DefinitionError {
    pub issues: Vec<Issue>,
}

fn first(issues: &[Issue]) -> String {
    issues.first().map(ToString::to_string).unwrap_or_default()
}

impl Rejection for DefinitionError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Validation
    }

    fn code(&self) -> &'static str {
        "invalid_definition"
    }

    fn issues(&self) -> &[Issue] {
        &self.issues
    }
}

impl Definition {
    /// Parses and validates a JSON definition. Duplicate keys are problems, not overwrites.
    pub fn from_json(source: &str) -> Result<Self, DefinitionError> {
        Self::from_document(strict::from_json(source))
    }

    /// Parses and validates a YAML definition (same structure as JSON).
    pub fn from_yaml(source: &str) -> Result<Self, DefinitionError> {
        Self::from_document(strict::from_yaml(source))
    }

    /// Validates an already decoded value (duplicate keys cannot be seen any more).
    pub fn from_value(value: &Value) -> Result<Self, DefinitionError> {
        parse::definition(value, Vec::new()).map_err(|issues| DefinitionError { issues })
    }

    fn from_document(
        document: Result<(Value, Vec<strict::Duplicate>), String>,
    ) -> Result<Self, DefinitionError> {
        let (value, duplicates) = document.map_err(|message| DefinitionError {
            issues: vec![Issue::new(None, None, IssueCode::ParseError, message)],
        })?;
        let issues = duplicates.into_iter().map(duplicate_issue).collect();
        parse::definition(&value, issues).map_err(|issues| DefinitionError { issues })
    }
}

fn duplicate_issue(duplicate: strict::Duplicate) -> Issue {
    let path = &duplicate.path;
    match path.as_slice() {
        [steps] if steps == "steps" => Issue::new(
            Some(&duplicate.key),
            None,
            IssueCode::DuplicateStep,
            format!("step id {:?} is used twice", duplicate.key),
        ),
        [steps, step, rest @ ..] if steps == "steps" => {
            let mut field = rest.join(".").replace(".[", "[");
            if !field.is_empty() && !field.starts_with('[') {
                field.push('.');
            }
            field.push_str(&duplicate.key);
            Issue::new(
                Some(step),
                Some(&field),
                IssueCode::DuplicateKey,
                format!("{:?} is given twice", duplicate.key),
            )
        }
        _ => {
            let mut field = path.join(".").replace(".[", "[");
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(&duplicate.key);
            Issue::new(
                None,
                Some(&field),
                IssueCode::DuplicateKey,
                format!("{:?} is given twice", duplicate.key),
            )
        }
    }
}

impl Serialize for Definition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

/// Deserializing validates: an invalid definition is a deserialization error listing the
/// problems.
impl<'de> Deserialize<'de> for Definition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Definition::from_value(&value).map_err(serde::de::Error::custom)
    }
}

/// A published version of a definition: what instances start on and run with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishedDefinition {
    pub version: u32,
    pub definition: Definition,
}

impl PublishedDefinition {
    /// The definition's key.
    pub fn key(&self) -> &str {
        self.definition.key()
    }
}
