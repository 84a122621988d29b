//! How aggregate ids are formed.
//!
//! - workflow definition: `"{tenant_id}/{key}"` ([`definition_id`]);
//! - workflow instance, ad-hoc task: a UUID the API chooses (v7 recommended);
//! - task, approval and timer of a workflow step: UUID v5 in the instance id's namespace over
//!   `"{step_id}:{activation}"` ([`step_child_id`]), so the orchestrator derives the same id
//!   however often it runs.

use uuid::Uuid;

/// The aggregate id of the workflow definition `key` in `tenant_id`.
pub fn definition_id(tenant_id: &str, key: &str) -> String {
    format!("{tenant_id}/{key}")
}

/// The id of the task, approval or timer of activation `activation` of `step_id` in the
/// instance `instance_id`.
pub fn step_child_id(instance_id: Uuid, step_id: &str, activation: u32) -> Uuid {
    Uuid::new_v5(&instance_id, format!("{step_id}:{activation}").as_bytes())
}

/// The id of the durable timer that marks `target_id` (a task or approval) overdue; lets the
/// runtime store the scheduled reaction once however often the orchestrator runs.
pub fn overdue_timer_id(target_id: Uuid) -> Uuid {
    Uuid::new_v5(&target_id, b"overdue")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids_are_stable_and_distinct_per_activation() {
        let instance = Uuid::from_u128(42);
        let first = step_child_id(instance, "review", 1);
        assert_eq!(first, step_child_id(instance, "review", 1));
        assert_ne!(first, step_child_id(instance, "review", 2));
        assert_ne!(first, step_child_id(instance, "approve", 1));
        assert_ne!(first, step_child_id(Uuid::from_u128(43), "review", 1));
        assert_eq!(first.get_version_num(), 5);
        assert_eq!(definition_id("acme", "po"), "acme/po");
    }
}
