//! The `Tenant` aggregate (aggregate id: the tenant id).

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use event_schemas::identity::TENANT_AGGREGATE_TYPE;
use event_schemas::{Role, TenantEvent};
use serde::{Deserialize, Serialize};

use super::{DEFAULT_TENANT, valid_tenant_id};
use crate::caller::Command;
use crate::decide::Decide;
use crate::error::{ErrorKind, Issue, IssueCode, Rejection};
use crate::text;

/// What can be asked of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantCommand {
    /// Create the tenant `tenant_id` (the aggregate id) named `name`.
    Create { tenant_id: String, name: String },
    /// Require (or stop requiring) a second factor at every sign-in of the users of tenant
    /// `tenant_id` (the aggregate id).
    SetTwoFactorPolicy { tenant_id: String, required: bool },
}

/// Why a tenant command was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TenantError {
    #[error("only admins of the default tenant may create tenants")]
    Forbidden,
    #[error("only the tenant's admins may change its sign-in policy")]
    NotItsAdmin,
    #[error("no such tenant")]
    NotFound,
    #[error("a tenant with this id already exists")]
    AlreadyExists,
    #[error("the command is invalid: {}", crate::error::first_issue(.issues))]
    Invalid { issues: Vec<Issue> },
}

impl Rejection for TenantError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Forbidden | Self::NotItsAdmin => ErrorKind::Forbidden,
            Self::NotFound => ErrorKind::NotFound,
            Self::AlreadyExists => ErrorKind::Conflict,
            Self::Invalid { .. } => ErrorKind::Validation,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Forbidden | Self::NotItsAdmin => "forbidden",
            Self::NotFound => "tenant_not_found",
            Self::AlreadyExists => "tenant_exists",
            Self::Invalid { .. } => "invalid_command",
        }
    }

    fn issues(&self) -> &[Issue] {
        match self {
            Self::Invalid { issues } => issues,
            _ => &[],
        }
    }
}

/// A tenant's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    id: Option<String>,
    name: String,
    created_at: Option<DateTime<Utc>>,
    /// Whether every sign-in needs a second factor.
    #[serde(default)]
    two_factor_required: bool,
}

impl Tenant {
    /// The id, once created.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether every sign-in needs a second factor.
    pub fn two_factor_required(&self) -> bool {
        self.two_factor_required
    }

    /// Decides a command: the events it causes, or why it is rejected.
    pub fn decide(&self, command: Command<TenantCommand>) -> Result<Vec<TenantEvent>, TenantError> {
        let Command {
            caller,
            at,
            command,
        } = command;
        match command {
            TenantCommand::Create { tenant_id, name } => {
                if caller.tenant_id != DEFAULT_TENANT || !caller.acts_as(Role::Admin) {
                    return Err(TenantError::Forbidden);
                }
                if self.id.is_some() {
                    return Err(TenantError::AlreadyExists);
                }
                let mut issues = Vec::new();
                if !valid_tenant_id(&tenant_id) {
                    issues.push(Issue::field(
                        "id",
                        IssueCode::InvalidKey,
                        "a tenant id is 2 to 63 characters of a-z, 0-9 and '-', \
                         starting and ending with a letter or digit",
                    ));
                }
                text::check_name(&name, "name", &mut issues);
                if !issues.is_empty() {
                    return Err(TenantError::Invalid { issues });
                }
                Ok(vec![TenantEvent::TenantCreated {
                    tenant_id,
                    name,
                    created_by: caller.actor,
                    created_at: at,
                }])
            }
            TenantCommand::SetTwoFactorPolicy {
                tenant_id,
                required,
            } => {
                // another tenant's is not found, not forbidden: nothing of it is told. The
                // default tenant exists from the first admin on, also in logs from before it
                // had a `TenantCreated` of its own
                let exists = self.id.as_deref() == Some(tenant_id.as_str())
                    || (self.id.is_none() && tenant_id == DEFAULT_TENANT);
                if !exists || caller.tenant_id != tenant_id {
                    return Err(TenantError::NotFound);
                }
                if !caller.acts_as(Role::Admin) {
                    return Err(TenantError::NotItsAdmin);
                }
                if self.two_factor_required == required {
                    return Ok(Vec::new());
                }
                Ok(vec![TenantEvent::TenantTwoFactorPolicyChanged {
                    required,
                    changed_by: caller.actor,
                    changed_at: at,
                }])
            }
        }
    }
}

impl Decide for Tenant {
    fn decide(&self, command: Command<TenantCommand>) -> Result<Vec<TenantEvent>, TenantError> {
        Tenant::decide(self, command)
    }
}

impl Aggregate for Tenant {
    const TYPE: &'static str = TENANT_AGGREGATE_TYPE;
    type Command = Command<TenantCommand>;
    type Event = TenantEvent;
    type Error = TenantError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TenantEvent::TenantCreated {
                tenant_id,
                name,
                created_at,
                ..
            } => {
                self.id = Some(tenant_id);
                self.name = name;
                self.created_at = Some(created_at);
            }
            TenantEvent::TenantTwoFactorPolicyChanged { required, .. } => {
                self.two_factor_required = required;
            }
        }
    }
}
