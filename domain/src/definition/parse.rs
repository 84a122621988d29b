//! From a JSON value to the model, collecting every problem instead of stopping at the first.
//!
//! Where a field is wrong a neutral stand-in is used so the rest can still be checked; the
//! stand-ins never escape, since any problem makes the whole parse fail.

use std::collections::{HashMap, HashSet};

use event_schemas::{ApprovalPolicy, ApproverSpec, Escalation, FieldType, FormField};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::duration::IsoDuration;
use super::expr::Expr;
use super::model::{
    ApprovalStep, DecisionStep, Definition, EndStep, ParallelStep, Rule, Step, StepKind, TaskStep,
    TimerStep,
};
use super::validate;
use crate::error::{Issue, IssueCode};

const MAX_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 4000;

/// Parses and validates `value`; on any problem, every problem found.
pub(super) fn definition(value: &Value, mut issues: Vec<Issue>) -> Result<Definition, Vec<Issue>> {
    let Some(root) = value.as_object() else {
        issues.push(Issue::new(
            None,
            None,
            IssueCode::InvalidType,
            "a definition is an object with key, name, start and steps",
        ));
        return Err(issues);
    };
    let mut r = Reader {
        step: None,
        issues: &mut issues,
    };
    r.keys(root, "", &["key", "name", "description", "start", "steps"]);
    let key = r.string(root, "", "key", true).unwrap_or_default();
    if !key.is_empty() && !valid_key(&key) {
        r.issue(
            "key",
            IssueCode::InvalidKey,
            "a key has 1 to 128 letters, digits, '-', '_' or '.', and starts with a letter or digit",
        );
    }
    let name = r.text(root, "", "name", true, MAX_NAME).unwrap_or_default();
    let description = r.text(root, "", "description", false, MAX_DESCRIPTION);
    let start = r.string(root, "", "start", true).unwrap_or_default();

    let mut steps = Vec::new();
    // Every id the document declares, parsed or not: a reference to a broken step is not also
    // an unknown target.
    let mut declared = HashSet::new();
    let mut complete = true;
    match root.get("steps") {
        None => r.issue("steps", IssueCode::MissingField, "a definition needs steps"),
        Some(Value::Object(map)) if map.is_empty() => {
            r.issue(
                "steps",
                IssueCode::Empty,
                "a definition needs at least one step",
            );
        }
        Some(Value::Object(map)) => {
            for (id, raw) in map {
                declared.insert(id.clone());
                if !valid_step_id(id) {
                    r.issues.push(Issue::new(
                        Some(id),
                        None,
                        IssueCode::InvalidStepId,
                        "a step id has 1 to 64 letters, digits, '-', '_' or '.'",
                    ));
                }
                let mut sr = Reader {
                    step: Some(id),
                    issues: r.issues,
                };
                match sr.step(raw) {
                    Some((name, description, kind)) => steps.push(Step {
                        id: id.clone(),
                        name,
                        description,
                        kind,
                    }),
                    None => complete = false,
                }
            }
        }
        Some(_) => r.issue(
            "steps",
            IssueCode::InvalidType,
            "steps is an object of step id to step",
        ),
    }
    if root.contains_key("start") && start.is_empty() {
        complete = false;
    }
    validate::graph(&start, &steps, &declared, complete, &mut issues);

    if !issues.is_empty() {
        return Err(issues);
    }
    let index: HashMap<String, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, step)| (step.id.clone(), i))
        .collect();
    Ok(Definition {
        key,
        name,
        description,
        start,
        steps,
        index,
    })
}

fn valid_key(key: &str) -> bool {
    key.len() <= 128
        && key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_step_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A form field id must be usable as a CEL identifier, as it becomes an instance variable.
pub(crate) fn valid_field_id(id: &str) -> bool {
    id.len() <= 64
        && id
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const COMMON: [&str; 3] = ["type", "name", "description"];

struct Reader<'a> {
    step: Option<&'a str>,
    issues: &'a mut Vec<Issue>,
}

type StepParts = (Option<String>, Option<String>, StepKind);

impl Reader<'_> {
    fn issue(&mut self, field: &str, code: IssueCode, message: impl Into<String>) {
        let field = (!field.is_empty()).then_some(field);
        self.issues
            .push(Issue::new(self.step, field, code, message));
    }

    fn keys(&mut self, obj: &Map<String, Value>, prefix: &str, allowed: &[&str]) {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                self.issue(
                    &format!("{prefix}{key}"),
                    IssueCode::UnknownField,
                    format!(
                        "unknown field {key:?} (expected one of: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// A string field; `None` if absent (reported when required) or not a string.
    fn string(
        &mut self,
        obj: &Map<String, Value>,
        prefix: &str,
        key: &str,
        required: bool,
    ) -> Option<String> {
        let field = format!("{prefix}{key}");
        match obj.get(key) {
            None | Some(Value::Null) if required => {
                self.issue(
                    &field,
                    IssueCode::MissingField,
                    format!("{key} is required"),
                );
                None
            }
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => {
                self.issue(&field, IssueCode::Empty, format!("{key} is empty"));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.issue(&field, IssueCode::InvalidType, format!("{key} is a string"));
                None
            }
        }
    }

    /// A string field with a length limit.
    fn text(
        &mut self,
        obj: &Map<String, Value>,
        prefix: &str,
        key: &str,
        required: bool,
        max: usize,
    ) -> Option<String> {
        let s = self.string(obj, prefix, key, required)?;
        if s.chars().count() > max {
            self.issue(
                &format!("{prefix}{key}"),
                IssueCode::TooLong,
                format!("{key} is longer than {max} characters"),
            );
        }
        Some(s)
    }

    /// A step target: a required string (checked against the steps later).
    fn target(&mut self, obj: &Map<String, Value>, key: &str) -> String {
        self.string(obj, "", key, true).unwrap_or_default()
    }

    fn array<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        prefix: &str,
        key: &str,
    ) -> Option<&'v Vec<Value>> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items),
            Some(_) => {
                self.issue(
                    &format!("{prefix}{key}"),
                    IssueCode::InvalidType,
                    format!("{key} is a list"),
                );
                None
            }
        }
    }

    fn strings(&mut self, obj: &Map<String, Value>, prefix: &str, key: &str) -> Vec<String> {
        let Some(items) = self.array(obj, prefix, key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) if !s.trim().is_empty() && s.len() <= MAX_NAME => out.push(s.to_owned()),
                _ => self.issue(
                    &format!("{prefix}{key}[{i}]"),
                    IssueCode::InvalidValue,
                    format!("{key} holds non-empty strings of at most {MAX_NAME} characters"),
                ),
            }
        }
        out
    }

    fn user(&mut self, value: &Value, field: &str) -> Option<Uuid> {
        match value.as_str().map(Uuid::parse_str) {
            Some(Ok(id)) => Some(id),
            _ => {
                self.issue(
                    field,
                    IssueCode::InvalidUserId,
                    format!("{value} is not a user id (a UUID)"),
                );
                None
            }
        }
    }

    fn users(&mut self, obj: &Map<String, Value>, prefix: &str, key: &str) -> Vec<Uuid> {
        let Some(items) = self.array(obj, prefix, key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(id) = self.user(item, &format!("{prefix}{key}[{i}]"))
                && !out.contains(&id)
            {
                out.push(id);
            }
        }
        out
    }

    fn duration(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        required: bool,
    ) -> Option<IsoDuration> {
        let source = self.string(obj, "", key, required)?;
        match IsoDuration::parse(&source) {
            Ok(d) => Some(d),
            Err(message) => {
                self.issue(key, IssueCode::InvalidDuration, message);
                None
            }
        }
    }

    fn step(&mut self, raw: &Value) -> Option<StepParts> {
        let Some(obj) = raw.as_object() else {
            self.issue(
                "",
                IssueCode::InvalidType,
                "a step is an object with a type",
            );
            return None;
        };
        let kind = match obj.get("type") {
            None => {
                self.issue("type", IssueCode::MissingField, "type is required");
                return None;
            }
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => {
                self.issue("type", IssueCode::InvalidType, "type is a string");
                return None;
            }
        };
        let allowed = |extra: &[&'static str]| -> Vec<&'static str> {
            COMMON.iter().chain(extra).copied().collect()
        };
        let parsed = match kind {
            "task" => {
                let fields = [
                    "assignee",
                    "candidate_users",
                    "candidate_groups",
                    "due",
                    "form",
                    "escalation",
                    "next",
                ];
                self.keys(obj, "", &allowed(&fields));
                StepKind::Task(self.task(obj))
            }
            "approval" => {
                let fields = ["approvers", "policy", "approved", "rejected", "due"];
                self.keys(obj, "", &allowed(&fields));
                StepKind::Approval(self.approval(obj))
            }
            "decision" => {
                self.keys(obj, "", &allowed(&["rules", "default"]));
                StepKind::Decision(self.decision(obj))
            }
            "parallel" => {
                self.keys(obj, "", &allowed(&["branches", "join"]));
                let branches = self.strings(obj, "", "branches");
                if !obj.contains_key("branches") {
                    self.issue("branches", IssueCode::MissingField, "branches is required");
                } else if branches.is_empty() && obj.get("branches").is_some_and(Value::is_array) {
                    self.issue("branches", IssueCode::Empty, "a parallel needs branches");
                }
                StepKind::Parallel(ParallelStep {
                    branches,
                    join: self.target(obj, "join"),
                })
            }
            "timer" => {
                self.keys(obj, "", &allowed(&["duration", "next"]));
                let duration = self.duration(obj, "duration", true);
                let next = self.target(obj, "next");
                StepKind::Timer(TimerStep {
                    duration: duration.unwrap_or_else(zero),
                    next,
                })
            }
            "end" => {
                self.keys(obj, "", &allowed(&["outcome"]));
                let outcome = self.text(obj, "", "outcome", true, MAX_NAME);
                StepKind::End(EndStep {
                    outcome: outcome.unwrap_or_default(),
                })
            }
            other => {
                self.issue(
                    "type",
                    IssueCode::UnknownStepType,
                    format!(
                        "unknown step type {other:?} (expected task, approval, decision, parallel, timer or end)"
                    ),
                );
                return None;
            }
        };
        let name = self.text(obj, "", "name", false, MAX_NAME);
        let description = self.text(obj, "", "description", false, MAX_DESCRIPTION);
        Some((name, description, parsed))
    }

    fn task(&mut self, obj: &Map<String, Value>) -> TaskStep {
        let assignee = match obj.get("assignee") {
            None | Some(Value::Null) => None,
            Some(value) => self.user(value, "assignee"),
        };
        let candidate_users = self.users(obj, "", "candidate_users");
        let candidate_groups = self.strings(obj, "", "candidate_groups");
        let due = self.duration(obj, "due", false);
        let form = self.form(obj);
        let escalation = match obj.get("escalation") {
            None | Some(Value::Null) => None,
            Some(Value::Object(esc)) => {
                self.keys(esc, "escalation.", &["candidate_users", "candidate_groups"]);
                let escalation = Escalation {
                    candidate_users: self.users(esc, "escalation.", "candidate_users"),
                    candidate_groups: self.strings(esc, "escalation.", "candidate_groups"),
                };
                if escalation.candidate_users.is_empty() && escalation.candidate_groups.is_empty() {
                    self.issue(
                        "escalation",
                        IssueCode::Empty,
                        "an escalation names candidate_users or candidate_groups",
                    );
                }
                if !obj.contains_key("due") {
                    self.issue(
                        "escalation",
                        IssueCode::EscalationWithoutDue,
                        "an escalation applies when the task is overdue: give the task a due",
                    );
                }
                Some(escalation)
            }
            Some(_) => {
                self.issue(
                    "escalation",
                    IssueCode::InvalidType,
                    "escalation is an object",
                );
                None
            }
        };
        TaskStep {
            assignee,
            candidate_users,
            candidate_groups,
            due,
            form,
            escalation,
            next: self.target(obj, "next"),
        }
    }

    fn form(&mut self, obj: &Map<String, Value>) -> Vec<FormField> {
        let Some(items) = self.array(obj, "", "form") else {
            return Vec::new();
        };
        let mut fields: Vec<FormField> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let prefix = format!("form[{i}].");
            let Some(field) = item.as_object() else {
                self.issue(
                    &format!("form[{i}]"),
                    IssueCode::InvalidType,
                    "a form field is an object with id, type and required",
                );
                continue;
            };
            self.keys(field, &prefix, &["id", "type", "required", "label"]);
            let id = self.string(field, &prefix, "id", true);
            if let Some(id) = &id {
                if !valid_field_id(id) {
                    self.issue(
                        &format!("{prefix}id"),
                        IssueCode::InvalidFieldId,
                        "a field id is an identifier: letters, digits and '_', not starting with a digit",
                    );
                } else if fields.iter().any(|f| &f.id == id) {
                    self.issue(
                        &format!("{prefix}id"),
                        IssueCode::DuplicateFormField,
                        format!("field {id:?} is listed twice"),
                    );
                }
            }
            let field_type = self.string(field, &prefix, "type", true).and_then(|t| {
                let found = FieldType::ALL.into_iter().find(|ft| ft.as_str() == t);
                if found.is_none() {
                    let names: Vec<_> = FieldType::ALL.iter().map(|ft| ft.as_str()).collect();
                    self.issue(
                        &format!("{prefix}type"),
                        IssueCode::InvalidValue,
                        format!(
                            "unknown field type {t:?} (expected one of: {})",
                            names.join(", ")
                        ),
                    );
                }
                found
            });
            let required = match field.get("required") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    self.issue(
                        &format!("{prefix}required"),
                        IssueCode::InvalidType,
                        "required is true or false",
                    );
                    false
                }
            };
            let label = self.text(field, &prefix, "label", false, MAX_NAME);
            if let (Some(id), Some(field_type)) = (id, field_type) {
                fields.push(FormField {
                    id,
                    field_type,
                    required,
                    label,
                });
            }
        }
        fields
    }

    fn approval(&mut self, obj: &Map<String, Value>) -> ApprovalStep {
        let approvers = match obj.get("approvers") {
            None | Some(Value::Null) => {
                self.issue(
                    "approvers",
                    IssueCode::MissingField,
                    "approvers is required",
                );
                ApproverSpec::default()
            }
            Some(Value::Object(spec)) => {
                self.keys(spec, "approvers.", &["users", "groups"]);
                let approvers = ApproverSpec {
                    users: self.users(spec, "approvers.", "users"),
                    groups: self.strings(spec, "approvers.", "groups"),
                };
                let listed = |k: &str| {
                    spec.get(k)
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty())
                };
                if !listed("users") && !listed("groups") {
                    self.issue(
                        "approvers",
                        IssueCode::EmptyApprovers,
                        "an approval needs approvers: users and/or groups",
                    );
                }
                approvers
            }
            Some(_) => {
                self.issue(
                    "approvers",
                    IssueCode::InvalidType,
                    "approvers is an object {users, groups}",
                );
                ApproverSpec::default()
            }
        };
        let policy = self.policy(obj, &approvers);
        let due = self.duration(obj, "due", false);
        ApprovalStep {
            approvers,
            policy,
            approved: self.target(obj, "approved"),
            rejected: self.target(obj, "rejected"),
            due,
        }
    }

    fn policy(&mut self, obj: &Map<String, Value>, approvers: &ApproverSpec) -> ApprovalPolicy {
        let expected = r#"policy is "any", "all", "sequential" or {"quorum": N}"#;
        match obj.get("policy") {
            None | Some(Value::Null) => {
                self.issue("policy", IssueCode::MissingField, expected);
                ApprovalPolicy::Any
            }
            Some(Value::String(s)) => match s.as_str() {
                "any" => ApprovalPolicy::Any,
                "all" => ApprovalPolicy::All,
                "sequential" => ApprovalPolicy::Sequential,
                _ => {
                    self.issue("policy", IssueCode::InvalidValue, expected);
                    ApprovalPolicy::Any
                }
            },
            Some(Value::Object(q)) if q.len() == 1 && q.contains_key("quorum") => {
                let n = q.get("quorum").and_then(Value::as_i64);
                match n {
                    Some(n) if n < 1 => {
                        self.issue(
                            "policy.quorum",
                            IssueCode::InvalidQuorum,
                            "a quorum is at least 1",
                        );
                    }
                    Some(n)
                        if approvers.groups.is_empty()
                            && usize::try_from(n).is_ok_and(|n| n > approvers.users.len()) =>
                    {
                        self.issue(
                            "policy.quorum",
                            IssueCode::InvalidQuorum,
                            format!(
                                "a quorum of {n} can never be reached by {} listed approvers",
                                approvers.users.len()
                            ),
                        );
                    }
                    Some(n) => {
                        if let Ok(n) = u32::try_from(n) {
                            return ApprovalPolicy::Quorum(n);
                        }
                        self.issue(
                            "policy.quorum",
                            IssueCode::InvalidQuorum,
                            "the quorum is too large",
                        );
                    }
                    None => {
                        self.issue(
                            "policy.quorum",
                            IssueCode::InvalidType,
                            "the quorum is a whole number",
                        );
                    }
                }
                ApprovalPolicy::Any
            }
            Some(_) => {
                self.issue("policy", IssueCode::InvalidValue, expected);
                ApprovalPolicy::Any
            }
        }
    }

    fn decision(&mut self, obj: &Map<String, Value>) -> DecisionStep {
        let mut rules = Vec::new();
        if let Some(items) = self.array(obj, "", "rules") {
            for (i, item) in items.iter().enumerate() {
                let prefix = format!("rules[{i}].");
                let Some(rule) = item.as_object() else {
                    self.issue(
                        &format!("rules[{i}]"),
                        IssueCode::InvalidType,
                        "a rule is an object {when, next}",
                    );
                    continue;
                };
                self.keys(rule, &prefix, &["when", "next"]);
                let when =
                    self.string(rule, &prefix, "when", true).and_then(
                        |source| match Expr::compile(&source) {
                            Ok(expr) => Some(expr),
                            Err(message) => {
                                self.issue(
                                    &format!("{prefix}when"),
                                    IssueCode::InvalidExpression,
                                    format!("not a valid CEL expression: {message}"),
                                );
                                None
                            }
                        },
                    );
                let next = self.string(rule, &prefix, "next", true).unwrap_or_default();
                // A rule whose `when` failed keeps its route for the graph checks; the
                // definition is rejected anyway.
                let when = when.unwrap_or_else(|| Expr::invalid(rule.get("when")));
                rules.push(Rule { when, next });
            }
        }
        DecisionStep {
            rules,
            default: self.target(obj, "default"),
        }
    }
}

fn zero() -> IsoDuration {
    IsoDuration::zero()
}
