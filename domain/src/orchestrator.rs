//! The orchestrator's decisions, pure: from one stored event to the commands it causes.
//!
//! The runtime feeds every event (from the command path right after a command, and from the
//! global log after a crash) to [`react`] and carries out the [`Reaction`]s as the service
//! [`Caller::orchestrator`](crate::Caller::orchestrator) of the event's tenant. Reactions carry
//! deterministic ids and every target command is idempotent, so running the orchestrator
//! twice over the same events changes nothing.
//!
//! | event | reaction |
//! |---|---|
//! | `TaskStepActivated` | open the task (id derived from the step) |
//! | `ApprovalStepActivated` | resolve the groups, open the approval ([`Reaction::OpenApproval`]) |
//! | `TimerStarted` | at `fire_at`, fire the timer |
//! | `TaskOpened` / `ApprovalOpened` with `due_at` | at `due_at`, mark it overdue |
//! | `TaskCompleted` of a workflow task | complete the instance's step with the output |
//! | `ApprovalClosed` of a workflow approval | complete the instance's step with the outcome |
//! | `InstanceCompleted` / `Cancelled` / `Failed` | cancel the listed open tasks and approvals |

use chrono::{DateTime, Utc};
use event_schemas::{
    AnyEvent, ApprovalEvent, ApprovalPolicy, ApproverSpec, ChildKind, DecodeError, OpenChild,
    RecordedEvent, TaskEvent, WorkflowInstanceEvent, WorkflowRef, approval, task,
    workflow_instance,
};
use uuid::Uuid;

use crate::approval::{ApprovalCommand, OpenApproval};
use crate::definition::PublishedDefinition;
use crate::ids::overdue_timer_id;
use crate::instance::{Advance, InstanceCommand};
use crate::task::{OpenTask, TaskCommand};

/// Why the orchestrator cancels a task or approval (fixed texts: the instance's own cancel
/// reason is free text and stays on the instance).
pub const CANCELLED_WITH_INSTANCE: &str = "workflow instance cancelled";
/// See [`CANCELLED_WITH_INSTANCE`].
pub const ENDED_WITH_INSTANCE: &str = "workflow instance completed";
/// See [`CANCELLED_WITH_INSTANCE`].
pub const FAILED_WITH_INSTANCE: &str = "workflow instance failed";

/// A command the orchestrator sends because of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Reaction {
    /// Send `command` to task `task_id`.
    Task { task_id: Uuid, command: TaskCommand },
    /// Send `command` to approval `approval_id`.
    Approval {
        approval_id: Uuid,
        command: ApprovalCommand,
    },
    /// Resolve `request`'s groups to their current members, then open approval `approval_id`
    /// ([`OpenApprovalRequest::into_command`]).
    OpenApproval {
        approval_id: Uuid,
        request: OpenApprovalRequest,
    },
    /// Load the definition version the instance runs on, then send
    /// [`InstanceCommand::Advance`] ([`Reaction::instance_command`]).
    Instance {
        instance_id: Uuid,
        definition_key: String,
        definition_version: u32,
        advance: Advance,
    },
    /// Carry out `reaction` at `due_at` (a durable timer). `timer_id` is deterministic: store
    /// it once, however often the orchestrator sees the event.
    Schedule {
        timer_id: Uuid,
        due_at: DateTime<Utc>,
        reaction: Box<Reaction>,
    },
}

impl Reaction {
    /// The aggregate type the reaction's command goes to.
    pub fn aggregate_type(&self) -> &'static str {
        match self {
            Reaction::Task { .. } => task::AGGREGATE_TYPE,
            Reaction::Approval { .. } | Reaction::OpenApproval { .. } => approval::AGGREGATE_TYPE,
            Reaction::Instance { .. } => workflow_instance::AGGREGATE_TYPE,
            Reaction::Schedule { reaction, .. } => reaction.aggregate_type(),
        }
    }

    /// The aggregate id the reaction's command goes to.
    pub fn aggregate_id(&self) -> Uuid {
        match self {
            Reaction::Task { task_id, .. } => *task_id,
            Reaction::Approval { approval_id, .. } | Reaction::OpenApproval { approval_id, .. } => {
                *approval_id
            }
            Reaction::Instance { instance_id, .. } => *instance_id,
            Reaction::Schedule { reaction, .. } => reaction.aggregate_id(),
        }
    }

    /// For [`Reaction::Instance`]: the command, given the definition version it names.
    pub fn instance_command(
        advance: Advance,
        definition: std::sync::Arc<PublishedDefinition>,
    ) -> InstanceCommand {
        InstanceCommand::Advance {
            definition,
            advance,
        }
    }
}

/// An approval to open once its groups are resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenApprovalRequest {
    pub workflow: WorkflowRef,
    pub name: String,
    pub description: Option<String>,
    pub policy: ApprovalPolicy,
    pub approvers: ApproverSpec,
    pub due_at: Option<DateTime<Utc>>,
}

impl OpenApprovalRequest {
    /// The groups whose members the runtime must look up.
    pub fn groups(&self) -> &[String] {
        &self.approvers.groups
    }

    /// The open command with the approvers resolved: listed users first (in listed order), then
    /// each group's members in the order `members` gives them (sort them, e.g. by user id, for
    /// a stable `sequential` order); duplicates are dropped.
    pub fn into_command(
        self,
        approval_id: Uuid,
        mut members: impl FnMut(&str) -> Vec<Uuid>,
    ) -> ApprovalCommand {
        let mut approvers = self.approvers.users.clone();
        for group in &self.approvers.groups {
            for user in members(group) {
                if !approvers.contains(&user) {
                    approvers.push(user);
                }
            }
        }
        ApprovalCommand::Open(OpenApproval {
            approval_id,
            workflow: Some(self.workflow),
            name: self.name,
            description: self.description,
            policy: self.policy,
            approvers,
            due_at: self.due_at,
        })
    }
}

/// The reactions to an event read from the global log: decodes it (upcasting older versions)
/// and calls [`react`]. Events of other aggregates (identity, ...) cause nothing.
pub fn react_to_recorded(event: &RecordedEvent) -> Result<Vec<Reaction>, DecodeError> {
    Ok(match AnyEvent::from_recorded(event)? {
        Some(decoded) => react(&event.aggregate_id, &decoded),
        None => Vec::new(),
    })
}

/// The reactions to `event` of aggregate `aggregate_id`.
pub fn react(aggregate_id: &str, event: &AnyEvent) -> Vec<Reaction> {
    let Ok(id) = Uuid::parse_str(aggregate_id) else {
        // Definitions (ids "tenant/key") cause nothing.
        return Vec::new();
    };
    match event {
        AnyEvent::WorkflowDefinition(_) | AnyEvent::Tenant(_) | AnyEvent::User(_) => Vec::new(),
        AnyEvent::WorkflowInstance(e) => react_to_instance(id, e),
        AnyEvent::Task(e) => react_to_task(id, e),
        AnyEvent::Approval(e) => react_to_approval(id, e),
    }
}

fn react_to_instance(instance_id: Uuid, event: &WorkflowInstanceEvent) -> Vec<Reaction> {
    use WorkflowInstanceEvent as E;
    let workflow = |step_id: &str, activation: u32, key: &str, version: u32| WorkflowRef {
        instance_id,
        definition_key: key.to_owned(),
        definition_version: version,
        step_id: step_id.to_owned(),
        activation,
    };
    match event {
        E::TaskStepActivated {
            step_id,
            activation,
            definition_key,
            definition_version,
            task_id,
            name,
            description,
            assignee,
            candidate_users,
            candidate_groups,
            form,
            due_at,
            escalation,
            ..
        } => vec![Reaction::Task {
            task_id: *task_id,
            command: TaskCommand::Open(Box::new(OpenTask {
                task_id: *task_id,
                workflow: Some(workflow(
                    step_id,
                    *activation,
                    definition_key,
                    *definition_version,
                )),
                name: name.clone(),
                description: description.clone(),
                assignee: *assignee,
                candidate_users: candidate_users.clone(),
                candidate_groups: candidate_groups.clone(),
                form: form.clone(),
                due_at: *due_at,
                escalation: escalation.clone(),
            })),
        }],
        E::ApprovalStepActivated {
            step_id,
            activation,
            definition_key,
            definition_version,
            approval_id,
            name,
            description,
            approvers,
            policy,
            due_at,
            ..
        } => vec![Reaction::OpenApproval {
            approval_id: *approval_id,
            request: OpenApprovalRequest {
                workflow: workflow(step_id, *activation, definition_key, *definition_version),
                name: name.clone(),
                description: description.clone(),
                policy: *policy,
                approvers: approvers.clone(),
                due_at: *due_at,
            },
        }],
        E::TimerStarted {
            step_id,
            activation,
            definition_key,
            definition_version,
            timer_id,
            fire_at,
            ..
        } => vec![Reaction::Schedule {
            timer_id: *timer_id,
            due_at: *fire_at,
            reaction: Box::new(Reaction::Instance {
                instance_id,
                definition_key: definition_key.clone(),
                definition_version: *definition_version,
                advance: Advance::FireTimer {
                    step_id: step_id.clone(),
                    activation: *activation,
                },
            }),
        }],
        E::InstanceCompleted {
            cancelled_children, ..
        } => cancel_children(cancelled_children, ENDED_WITH_INSTANCE),
        E::InstanceCancelled { open_children, .. } => {
            cancel_children(open_children, CANCELLED_WITH_INSTANCE)
        }
        E::InstanceFailed { open_children, .. } => {
            cancel_children(open_children, FAILED_WITH_INSTANCE)
        }
        E::InstanceStarted { .. }
        | E::DecisionTaken { .. }
        | E::ParallelStarted { .. }
        | E::BranchJoined { .. }
        | E::TaskStepCompleted { .. }
        | E::ApprovalStepCompleted { .. }
        | E::TimerFired { .. }
        | E::IncidentRaised { .. }
        | E::IncidentRetried { .. }
        | E::InstanceDocumentAttached { .. }
        | E::InstanceDocumentRemoved { .. } => Vec::new(),
    }
}

fn cancel_children(children: &[OpenChild], reason: &str) -> Vec<Reaction> {
    children
        .iter()
        .filter_map(|child| match child.kind {
            ChildKind::Task => Some(Reaction::Task {
                task_id: child.id,
                command: TaskCommand::Cancel {
                    reason: reason.to_owned(),
                },
            }),
            ChildKind::Approval => Some(Reaction::Approval {
                approval_id: child.id,
                command: ApprovalCommand::Cancel {
                    reason: reason.to_owned(),
                },
            }),
            // A timer of an ended instance fires into a no-op.
            ChildKind::Timer => None,
        })
        .collect()
}

fn react_to_task(task_id: Uuid, event: &TaskEvent) -> Vec<Reaction> {
    match event {
        TaskEvent::TaskOpened {
            due_at: Some(due_at),
            ..
        } => vec![Reaction::Schedule {
            timer_id: overdue_timer_id(task_id),
            due_at: *due_at,
            reaction: Box::new(Reaction::Task {
                task_id,
                command: TaskCommand::MarkOverdue,
            }),
        }],
        TaskEvent::TaskCompleted {
            workflow: Some(workflow),
            output,
            completed_by,
            ..
        } => vec![Reaction::Instance {
            instance_id: workflow.instance_id,
            definition_key: workflow.definition_key.clone(),
            definition_version: workflow.definition_version,
            advance: Advance::CompleteTask {
                step_id: workflow.step_id.clone(),
                activation: workflow.activation,
                task_id,
                output: output.clone(),
                completed_by: completed_by.clone(),
            },
        }],
        _ => Vec::new(),
    }
}

fn react_to_approval(approval_id: Uuid, event: &ApprovalEvent) -> Vec<Reaction> {
    match event {
        ApprovalEvent::ApprovalOpened {
            due_at: Some(due_at),
            ..
        } => vec![Reaction::Schedule {
            timer_id: overdue_timer_id(approval_id),
            due_at: *due_at,
            reaction: Box::new(Reaction::Approval {
                approval_id,
                command: ApprovalCommand::MarkOverdue,
            }),
        }],
        ApprovalEvent::ApprovalClosed {
            workflow: Some(workflow),
            outcome,
            ..
        } => vec![Reaction::Instance {
            instance_id: workflow.instance_id,
            definition_key: workflow.definition_key.clone(),
            definition_version: workflow.definition_version,
            advance: Advance::CompleteApproval {
                step_id: workflow.step_id.clone(),
                activation: workflow.activation,
                approval_id,
                outcome: *outcome,
            },
        }],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use event_schemas::{Actor, TaskEvent, WorkflowDefinitionEvent};
    use serde_json::{Map, json};

    use super::*;
    use crate::ids::step_child_id;

    const INSTANCE: Uuid = Uuid::from_u128(0x1);

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn workflow(step: &str) -> WorkflowRef {
        WorkflowRef {
            instance_id: INSTANCE,
            definition_key: "po".into(),
            definition_version: 2,
            step_id: step.into(),
            activation: 1,
        }
    }

    #[test]
    fn approvers_are_listed_users_then_group_members_without_duplicates() {
        let (a, b, c) = (
            Uuid::from_u128(0xA),
            Uuid::from_u128(0xB),
            Uuid::from_u128(0xC),
        );
        let request = OpenApprovalRequest {
            workflow: workflow("board"),
            name: "Board".into(),
            description: None,
            policy: ApprovalPolicy::Sequential,
            approvers: ApproverSpec {
                users: vec![b],
                groups: vec!["x".into(), "y".into()],
            },
            due_at: None,
        };
        assert_eq!(request.groups(), ["x".to_owned(), "y".to_owned()]);
        let command = request.into_command(INSTANCE, |group| match group {
            "x" => vec![a, b],
            _ => vec![c, a],
        });
        let ApprovalCommand::Open(open) = command else {
            panic!("{command:?}");
        };
        assert_eq!(open.approvers, vec![b, a, c]);
        assert_eq!(open.workflow, Some(workflow("board")));
    }

    #[test]
    fn a_completed_workflow_task_advances_its_instance_and_an_ad_hoc_one_nothing() {
        let task_id = step_child_id(INSTANCE, "review", 1);
        let completed = |workflow| {
            AnyEvent::Task(TaskEvent::TaskCompleted {
                workflow,
                output: Map::new(),
                completed_by: Actor::User(Uuid::nil()),
                completed_at: at(),
            })
        };
        let reactions = react(&task_id.to_string(), &completed(Some(workflow("review"))));
        assert_eq!(
            reactions,
            vec![Reaction::Instance {
                instance_id: INSTANCE,
                definition_key: "po".into(),
                definition_version: 2,
                advance: Advance::CompleteTask {
                    step_id: "review".into(),
                    activation: 1,
                    task_id,
                    output: Map::new(),
                    completed_by: Actor::User(Uuid::nil()),
                },
            }]
        );
        assert_eq!(
            reactions[0].aggregate_type(),
            workflow_instance::AGGREGATE_TYPE
        );
        assert!(react(&task_id.to_string(), &completed(None)).is_empty());
    }

    #[test]
    fn due_dates_become_durable_timers_with_stable_ids() {
        let task_id = Uuid::from_u128(0x7);
        let opened = AnyEvent::Task(TaskEvent::TaskOpened {
            task_id,
            tenant_id: "t".into(),
            workflow: None,
            name: "x".into(),
            description: None,
            assignee: None,
            candidate_users: vec![],
            candidate_groups: vec![],
            form: vec![],
            due_at: Some(at()),
            escalation: None,
            opened_by: Actor::Service("api".into()),
            opened_at: at(),
        });
        let reactions = react(&task_id.to_string(), &opened);
        let [
            Reaction::Schedule {
                timer_id,
                due_at,
                reaction,
            },
        ] = reactions.as_slice()
        else {
            panic!("{reactions:?}");
        };
        assert_eq!((*timer_id, *due_at), (overdue_timer_id(task_id), at()));
        assert_eq!(
            **reaction,
            Reaction::Task {
                task_id,
                command: TaskCommand::MarkOverdue
            }
        );
        assert_eq!(reactions[0].aggregate_id(), task_id);
    }

    #[test]
    fn an_ended_instance_cancels_its_tasks_and_approvals_but_not_its_timers() {
        let child = |kind, n| OpenChild {
            kind,
            id: Uuid::from_u128(n),
            step_id: format!("s{n}"),
            activation: 1,
        };
        let cancelled = AnyEvent::WorkflowInstance(WorkflowInstanceEvent::InstanceCancelled {
            reason: "personal reason".into(),
            open_children: vec![
                child(ChildKind::Task, 1),
                child(ChildKind::Approval, 2),
                child(ChildKind::Timer, 3),
            ],
            cancelled_by: Actor::User(Uuid::nil()),
            cancelled_at: at(),
        });
        assert_eq!(
            react(&INSTANCE.to_string(), &cancelled),
            vec![
                Reaction::Task {
                    task_id: Uuid::from_u128(1),
                    command: TaskCommand::Cancel {
                        reason: CANCELLED_WITH_INSTANCE.into()
                    },
                },
                Reaction::Approval {
                    approval_id: Uuid::from_u128(2),
                    command: ApprovalCommand::Cancel {
                        reason: CANCELLED_WITH_INSTANCE.into()
                    },
                },
            ]
        );
    }

    #[test]
    fn events_from_the_global_log_are_decoded_then_reacted_to() {
        use event_schemas::{LogPosition, RecordedEvent};
        let task_id = step_child_id(INSTANCE, "review", 1);
        let recorded = |aggregate_type: &str, event_type: &str, payload| RecordedEvent {
            position: LogPosition::START,
            event_id: Uuid::nil(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: task_id.to_string(),
            sequence: 3,
            event_type: event_type.into(),
            event_version: "1".into(),
            payload,
            metadata: json!({}),
            recorded_at: at(),
        };
        let completed = json!({"TaskCompleted": {
            "workflow": {"instance_id": INSTANCE, "definition_key": "po", "definition_version": 2,
                         "step_id": "review", "activation": 1},
            "output": {"ok": true}, "completed_by": "service:api", "completed_at": at()}});
        let reactions = react_to_recorded(&recorded("task", "TaskCompleted", completed)).unwrap();
        assert!(matches!(
            reactions.as_slice(),
            [Reaction::Instance { instance_id, advance: Advance::CompleteTask { .. }, .. }]
                if *instance_id == INSTANCE
        ));
        let foreign = recorded("invoice", "InvoiceIssued", json!({}));
        assert!(react_to_recorded(&foreign).unwrap().is_empty());
        let identity = recorded(
            "user",
            "UserPasswordChanged",
            json!({"UserPasswordChanged": {"changed_by": "service:api", "changed_at": at()}}),
        );
        assert!(react_to_recorded(&identity).unwrap().is_empty());
        let garbage = recorded("task", "TaskCompleted", json!({"TaskCompleted": 1}));
        assert!(react_to_recorded(&garbage).is_err());
    }

    #[test]
    fn definitions_cause_nothing() {
        let published =
            AnyEvent::WorkflowDefinition(WorkflowDefinitionEvent::WorkflowDefinitionPublished {
                tenant_id: "t".into(),
                key: "po".into(),
                version: 1,
                name: "PO".into(),
                definition: json!({}),
                published_by: Actor::Service("x".into()),
                published_at: at(),
            });
        assert!(react("t/po", &published).is_empty());
    }
}
