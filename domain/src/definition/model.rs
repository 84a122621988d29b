//! The definition model (DESIGN §3). Built only by parsing, so a [`Definition`] is always
//! valid; its fields are read through accessors.

use std::collections::HashMap;

use event_schemas::{ApprovalPolicy, ApproverSpec, Escalation, FormField};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::duration::IsoDuration;
use super::expr::Expr;

/// A validated workflow definition.
#[derive(Debug, Clone)]
pub struct Definition {
    pub(super) key: String,
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) start: String,
    pub(super) steps: Vec<Step>,
    pub(super) index: HashMap<String, usize>,
}

impl PartialEq for Definition {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.name == other.name
            && self.description == other.description
            && self.start == other.start
            && self.steps == other.steps
    }
}

impl Definition {
    /// The key (unique per tenant; instances name their definition by key and version).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The optional description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The id of the first step.
    pub fn start(&self) -> &str {
        &self.start
    }

    /// The steps, in the order the document lists them.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The step `id`.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.index.get(id).map(|&i| &self.steps[i])
    }

    /// The canonical JSON form (DESIGN §3 format; optional fields left out when empty).
    pub fn to_value(&self) -> Value {
        let mut root = Map::new();
        root.insert("key".into(), json!(self.key));
        root.insert("name".into(), json!(self.name));
        if let Some(description) = &self.description {
            root.insert("description".into(), json!(description));
        }
        root.insert("start".into(), json!(self.start));
        let steps = self
            .steps
            .iter()
            .map(|step| (step.id.clone(), step.to_value()))
            .collect();
        root.insert("steps".into(), Value::Object(steps));
        Value::Object(root)
    }
}

/// One step of a definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub kind: StepKind,
}

impl Step {
    /// The name to show: the step's `name`, else its id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// The steps control can flow to from here (for a parallel: its branches; the join is
    /// reached through them).
    pub fn successors(&self) -> Vec<&str> {
        self.targets()
            .into_iter()
            .filter(|(field, _)| field != "join")
            .map(|(_, target)| target)
            .collect()
    }

    /// Every step id this step names, with the field naming it.
    pub fn targets(&self) -> Vec<(String, &str)> {
        match &self.kind {
            StepKind::Task(t) => vec![("next".into(), t.next.as_str())],
            StepKind::Approval(a) => vec![
                ("approved".into(), a.approved.as_str()),
                ("rejected".into(), a.rejected.as_str()),
            ],
            StepKind::Decision(d) => d
                .rules
                .iter()
                .enumerate()
                .map(|(i, rule)| (format!("rules[{i}].next"), rule.next.as_str()))
                .chain([("default".into(), d.default.as_str())])
                .collect(),
            StepKind::Parallel(p) => p
                .branches
                .iter()
                .enumerate()
                .map(|(i, branch)| (format!("branches[{i}]"), branch.as_str()))
                .chain([("join".into(), p.join.as_str())])
                .collect(),
            StepKind::Timer(t) => vec![("next".into(), t.next.as_str())],
            StepKind::End(_) => Vec::new(),
        }
    }

    /// Whether the instance waits here (task, approval, timer).
    pub fn is_wait(&self) -> bool {
        matches!(
            self.kind,
            StepKind::Task(_) | StepKind::Approval(_) | StepKind::Timer(_)
        )
    }

    fn to_value(&self) -> Value {
        let mut map = match serde_json::to_value(&self.kind) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let mut out = Map::new();
        if let Some(kind) = map.shift_remove("type") {
            out.insert("type".into(), kind);
        }
        if let Some(name) = &self.name {
            out.insert("name".into(), json!(name));
        }
        if let Some(description) = &self.description {
            out.insert("description".into(), json!(description));
        }
        out.extend(map);
        Value::Object(out)
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StepKind {
    Task(TaskStep),
    Approval(ApprovalStep),
    Decision(DecisionStep),
    Parallel(ParallelStep),
    Timer(TimerStep),
    End(EndStep),
}

/// A human task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskStep {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee: Option<Uuid>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidate_users: Vec<Uuid>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidate_groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<IsoDuration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub form: Vec<FormField>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
    pub next: String,
}

/// An approval by users and/or groups under a policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalStep {
    pub approvers: ApproverSpec,
    pub policy: ApprovalPolicy,
    pub approved: String,
    pub rejected: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<IsoDuration>,
}

/// An exclusive choice: the first rule whose `when` holds, else `default`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionStep {
    pub rules: Vec<Rule>,
    pub default: String,
}

/// One rule of a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub when: Expr,
    pub next: String,
}

/// Starts every branch; `join` runs once, after all of them reached it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParallelStep {
    pub branches: Vec<String>,
    pub join: String,
}

/// Waits for `duration`, then goes on to `next`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimerStep {
    pub duration: IsoDuration,
    pub next: String,
}

/// Ends the instance with `outcome`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndStep {
    pub outcome: String,
}
