//! The walk through a definition's graph that one command triggers: from a step that just
//! finished (or `start`) through decisions, parallels and joins until every path waits on a
//! task, approval or timer, or an end is reached.
//!
//! Each step entered becomes an event, applied at once to a scratch copy of the instance, so
//! the walk sees exactly the state the stored events will rebuild.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use event_schemas::{Actor, InstanceStatus, StepRef, WorkflowInstanceEvent};

use super::WorkflowInstance;
use crate::definition::{Definition, StepKind};
use crate::ids::step_child_id;

/// A walk that passes this many steps without waiting is a loop the validation could not
/// see (e.g. a decision's rules always routing back): the instance fails instead of spinning.
const MAX_STEPS: usize = 10_000;

/// Control arriving at `target`, inside the parallel branches of `scope`.
#[derive(Debug)]
struct Token {
    target: String,
    scope: Vec<StepRef>,
    /// Set when a join fired: enter the join step itself.
    joined: bool,
    /// The activation to enter the step as: a path parked by an incident keeps the one its
    /// incident reserved. `None`: the step's next.
    activation: Option<u32>,
}

pub(super) struct Walk<'d> {
    definition: &'d Definition,
    state: WorkflowInstance,
    at: DateTime<Utc>,
    actor: Actor,
    queue: VecDeque<Token>,
    events: Vec<WorkflowInstanceEvent>,
}

impl<'d> Walk<'d> {
    pub(super) fn new(
        definition: &'d Definition,
        state: WorkflowInstance,
        at: DateTime<Utc>,
        actor: Actor,
    ) -> Self {
        Self {
            definition,
            state,
            at,
            actor,
            queue: VecDeque::new(),
            events: Vec::new(),
        }
    }

    pub(super) fn emit(&mut self, event: WorkflowInstanceEvent) {
        self.state.apply(event.clone());
        self.events.push(event);
    }

    /// Enter `step_id` again, as `activation` (within `scope`), once [`Walk::run`] runs: a
    /// path parked there by an incident, which had passed any join already.
    pub(super) fn resume(&mut self, step_id: String, activation: u32, scope: Vec<StepRef>) {
        self.queue.push_back(Token {
            target: step_id,
            scope,
            joined: true,
            activation: Some(activation),
        });
    }

    /// Continue at `target` (within `scope`) once [`Walk::run`] runs.
    pub(super) fn go_to(&mut self, target: &str, scope: Vec<StepRef>) {
        self.queue.push_back(Token {
            target: target.to_owned(),
            scope,
            joined: false,
            activation: None,
        });
    }

    pub(super) fn fail(&mut self, reason: String, step_id: Option<&str>) {
        if self.state.status != InstanceStatus::Running {
            return;
        }
        let open_children = self.state.open_children();
        self.emit(WorkflowInstanceEvent::InstanceFailed {
            reason,
            step_id: step_id.map(str::to_owned),
            open_children,
            failed_by: self.actor.clone(),
            failed_at: self.at,
        });
    }

    /// Walks until every path waits or the instance ended; the events, in order.
    pub(super) fn run(mut self) -> Vec<WorkflowInstanceEvent> {
        let mut passed = 0;
        while let Some(token) = self.queue.pop_front() {
            if self.state.status != InstanceStatus::Running {
                break;
            }
            passed += 1;
            if passed > MAX_STEPS {
                self.fail(
                    format!("more than {MAX_STEPS} steps were passed without waiting: the definition loops"),
                    Some(&token.target),
                );
                break;
            }
            self.visit(token);
        }
        if self.state.status == InstanceStatus::Running
            && self.state.open.is_empty()
            && self.state.incidents.is_empty()
        {
            self.fail(
                "the instance cannot go on: no step waits and no end was reached".to_owned(),
                None,
            );
        }
        self.events
    }

    fn visit(&mut self, token: Token) {
        if !token.joined && self.arrive_at_join(&token) {
            return;
        }
        let definition = self.definition;
        let Some(step) = definition.step(&token.target) else {
            self.fail(
                format!("step {:?} is not in the definition", token.target),
                None,
            );
            return;
        };
        let activation = token
            .activation
            .unwrap_or_else(|| self.state.activation_count(&step.id) + 1);
        let step_id = step.id.clone();
        let at = self.at;
        let child_id = step_child_id(self.state.id.unwrap_or_default(), &step_id, activation);
        let definition_key = self.state.definition_key.clone();
        let definition_version = self.state.definition_version;
        match &step.kind {
            StepKind::End(end) => {
                let cancelled_children = self.state.open_children();
                self.emit(WorkflowInstanceEvent::InstanceCompleted {
                    outcome: end.outcome.clone(),
                    end_step_id: step_id,
                    cancelled_children,
                    completed_at: at,
                });
            }
            StepKind::Decision(decision) => {
                let mut chosen = None;
                for (i, rule) in decision.rules.iter().enumerate() {
                    match rule.when.evaluate(&self.state.variables) {
                        Ok(true) => {
                            chosen = Some(i);
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            // the path waits here for an operator; the others run on
                            let reason = format!(
                                "decision {step_id}: rule {i} (`{}`) could not be evaluated: {e}",
                                rule.when.as_str()
                            );
                            self.emit(WorkflowInstanceEvent::IncidentRaised {
                                step_id,
                                activation,
                                reason,
                                scope: token.scope,
                                raised_at: at,
                            });
                            return;
                        }
                    }
                }
                let next = match chosen {
                    Some(i) => decision.rules[i].next.clone(),
                    None => decision.default.clone(),
                };
                self.emit(WorkflowInstanceEvent::DecisionTaken {
                    step_id,
                    activation,
                    rule: chosen.and_then(|i| u32::try_from(i).ok()),
                    next: next.clone(),
                    decided_at: at,
                });
                self.go_to(&next, token.scope);
            }
            StepKind::Parallel(parallel) => {
                self.emit(WorkflowInstanceEvent::ParallelStarted {
                    step_id: step_id.clone(),
                    activation,
                    branches: parallel.branches.clone(),
                    join: parallel.join.clone(),
                    scope: token.scope.clone(),
                    started_at: at,
                });
                let mut inner = token.scope;
                inner.push(StepRef {
                    step_id,
                    activation,
                });
                for branch in &parallel.branches {
                    self.go_to(branch, inner.clone());
                }
            }
            StepKind::Task(task) => {
                self.emit(WorkflowInstanceEvent::TaskStepActivated {
                    step_id,
                    activation,
                    definition_key,
                    definition_version,
                    task_id: child_id,
                    name: step.display_name().to_owned(),
                    description: step.description.clone(),
                    assignee: task.assignee,
                    candidate_users: task.candidate_users.clone(),
                    candidate_groups: task.candidate_groups.clone(),
                    form: task.form.clone(),
                    due_at: task.due.as_ref().and_then(|d| d.after(at)),
                    escalation: task.escalation.clone(),
                    scope: token.scope,
                    activated_at: at,
                });
            }
            StepKind::Approval(approval) => {
                self.emit(WorkflowInstanceEvent::ApprovalStepActivated {
                    step_id,
                    activation,
                    definition_key,
                    definition_version,
                    approval_id: child_id,
                    name: step.display_name().to_owned(),
                    description: step.description.clone(),
                    approvers: approval.approvers.clone(),
                    policy: approval.policy,
                    due_at: approval.due.as_ref().and_then(|d| d.after(at)),
                    scope: token.scope,
                    activated_at: at,
                });
            }
            StepKind::Timer(timer) => {
                self.emit(WorkflowInstanceEvent::TimerStarted {
                    step_id,
                    activation,
                    definition_key,
                    definition_version,
                    timer_id: child_id,
                    fire_at: timer.duration.after(at).unwrap_or(at),
                    scope: token.scope,
                    started_at: at,
                });
            }
        }
    }

    /// If `token` reaches the join of a parallel it runs in, counts the arrival (entering the
    /// join once all branches arrived) and returns true.
    fn arrive_at_join(&mut self, token: &Token) -> bool {
        let definition = self.definition;
        let Some(frame) = token.scope.iter().rev().find(|frame| {
            matches!(
                definition.step(&frame.step_id).map(|s| &s.kind),
                Some(StepKind::Parallel(p)) if p.join == token.target
            )
        }) else {
            return false;
        };
        let Some(group) = self.state.joins.iter().find(|g| g.parallel == *frame) else {
            // That join already ran: a late branch ends here instead of running it again.
            return true;
        };
        let (arrived, expected, scope) = (group.arrived + 1, group.expected, group.scope.clone());
        self.emit(WorkflowInstanceEvent::BranchJoined {
            join_step_id: token.target.clone(),
            parallel: frame.clone(),
            arrived,
            expected,
            joined_at: self.at,
        });
        if arrived >= expected {
            self.queue.push_back(Token {
                target: token.target.clone(),
                scope,
                joined: true,
                activation: None,
            });
        }
        true
    }
}
