//! Incidents: a decision whose rules could not be evaluated on the instance's variables (one
//! missing, of the wrong type, a rule giving no boolean) parks the path that reached it, and
//! the rest of the instance runs on. An operator sets the variables the rules need and retries
//! the decision; the walk goes on from there as if it had never stopped.
//!
//! - retry: operators and admins, while the instance runs and an incident waits at the step.

use chrono::{DateTime, Utc};
use event_schemas::{InstanceStatus, Role, StepRef, WorkflowInstanceEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::engine::Walk;
use super::{InstanceError, WorkflowInstance};
use crate::caller::Caller;
use crate::definition::PublishedDefinition;

/// A path of the instance waiting at a decision that could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub step_id: String,
    /// The decision's activation, reserved when the incident was raised: the retried decision
    /// is taken as this one.
    pub activation: u32,
    pub reason: String,
    /// The parallel branches the path runs in.
    pub scope: Vec<StepRef>,
    pub raised_at: DateTime<Utc>,
}

impl WorkflowInstance {
    /// Sets `variables` and evaluates the decision of every incident at `step_id` again.
    pub(super) fn retry_incident(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        published: &PublishedDefinition,
        step_id: String,
        variables: Map<String, Value>,
    ) -> Result<Vec<WorkflowInstanceEvent>, InstanceError> {
        if !caller.acts_as(Role::Operator) {
            return Err(InstanceError::MissingRole {
                action: "retry incidents",
                roles: "operators and admins",
            });
        }
        if self.status != InstanceStatus::Running {
            return Err(InstanceError::Ended {
                status: self.status,
            });
        }
        self.check_definition(published)?;
        let waiting: Vec<Incident> = self
            .incidents
            .iter()
            .filter(|i| i.step_id == step_id)
            .cloned()
            .collect();
        if waiting.is_empty() {
            return Err(InstanceError::NoIncident { step_id });
        }
        let mut walk = Walk::new(
            &published.definition,
            self.clone(),
            at,
            caller.actor.clone(),
        );
        walk.emit(WorkflowInstanceEvent::IncidentRetried {
            step_id,
            variables,
            retried_by: caller.actor.clone(),
            retried_at: at,
        });
        for incident in waiting {
            walk.resume(incident.step_id, incident.activation, incident.scope);
        }
        Ok(walk.run())
    }

    /// The incidents waiting now.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    pub(super) fn incident_raised(&mut self, incident: Incident) {
        // raised again by a retry: the path keeps its place
        self.activated(&incident.step_id, incident.activation);
        self.incidents
            .retain(|i| !(i.step_id == incident.step_id && i.activation == incident.activation));
        self.incidents.push(incident);
    }

    pub(super) fn incident_retried(&mut self, step_id: &str, variables: Map<String, Value>) {
        self.variables.extend(variables);
        self.incidents.retain(|i| i.step_id != step_id);
    }
}
