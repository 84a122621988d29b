//! Who sends a command, and the wrapper every aggregate takes as its command.

use chrono::{DateTime, Utc};
use event_schemas::{Actor, Role};
use uuid::Uuid;

/// The authenticated sender of a command, as the API (or a service) established it.
///
/// Services (the orchestrator, the timer runtime) are [`Actor::Service`] and act with full
/// rights in their tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant_id: String,
    pub actor: Actor,
    /// The person behind the command; `None` for services.
    pub user_id: Option<Uuid>,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
}

/// The service name the orchestrator acts under.
pub const ORCHESTRATOR: &str = "orchestrator";

impl Caller {
    /// A person of `tenant_id` with their roles and groups.
    pub fn user(
        tenant_id: impl Into<String>,
        user_id: Uuid,
        roles: impl IntoIterator<Item = Role>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            actor: Actor::User(user_id),
            user_id: Some(user_id),
            roles: roles.into_iter().collect(),
            groups: groups.into_iter().map(Into::into).collect(),
        }
    }

    /// One of Workledger's own services, acting in `tenant_id` with full rights.
    pub fn service(tenant_id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            actor: Actor::Service(name.into()),
            user_id: None,
            roles: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// The orchestrator of `tenant_id` (what [`crate::orchestrator`] reactions run as).
    pub fn orchestrator(tenant_id: impl Into<String>) -> Self {
        Self::service(tenant_id, ORCHESTRATOR)
    }

    /// True for services.
    pub fn is_service(&self) -> bool {
        matches!(self.actor, Actor::Service(_))
    }

    /// The person behind the command, if any.
    pub fn person(&self) -> Option<Uuid> {
        self.user_id.or_else(|| self.actor.user_id())
    }

    /// Whether the caller may act as `role`: services and admins may act as any role.
    pub fn acts_as(&self, role: Role) -> bool {
        self.is_service() || self.roles.contains(&Role::Admin) || self.roles.contains(&role)
    }

    /// Whether the caller may act as any of `roles`.
    pub fn acts_as_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|role| self.acts_as(*role))
    }

    /// Services and admins: may do everything in their tenant.
    pub fn is_privileged(&self) -> bool {
        self.acts_as(Role::Admin)
    }

    /// Whether the caller belongs to one of `groups`.
    pub fn in_any_group(&self, groups: &[String]) -> bool {
        groups.iter().any(|g| self.groups.contains(g))
    }
}

/// A command as every aggregate takes it: who sends it, when (the clock is an input, the domain
/// never reads it), and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Command<C> {
    pub caller: Caller,
    pub at: DateTime<Utc>,
    pub command: C,
}

impl<C> Command<C> {
    /// Wraps `command` sent by `caller` at `at`.
    pub fn new(caller: Caller, at: DateTime<Utc>, command: C) -> Self {
        Self {
            caller,
            at,
            command,
        }
    }
}
