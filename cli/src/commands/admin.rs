//! `workledger admin`: tenants, users, roles and groups through the identity module, without
//! the API (for when it is unreachable). Commands run as the service `cli-admin`, so they go
//! through the same aggregates and checks as the API's and land in the log and the audit
//! trail; passwords are hashed and never written to the log.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use command_api::{Identity, IdentityError, PasswordHashing};
use domain::{Caller, Role};
use event_store::AppendNotifier;
use orchestrator::{Outcome, RequestContext};
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::AdminCommand;

/// The service name admin commands act under (in the log's `actor`).
const SERVICE: &str = "cli-admin";

fn context(tenant: &str) -> RequestContext {
    RequestContext {
        caller: Caller::service(tenant, SERVICE),
        at: chrono::Utc::now(),
        correlation_id: Uuid::now_v7(),
        request_id: "cli-admin".to_owned(),
    }
}

fn password(var: &str) -> anyhow::Result<SecretString> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(SecretString::from(value)),
        _ => anyhow::bail!("the environment variable {var} (--password-env) is not set"),
    }
}

fn roles(names: &[String]) -> anyhow::Result<Vec<Role>> {
    names
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| n.trim().parse::<Role>().map_err(anyhow::Error::from))
        .collect()
}

fn groups(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty())
        .collect()
}

/// One line for a refused identity command: the invalid fields, or the reason.
fn explain(error: IdentityError) -> anyhow::Error {
    match error {
        IdentityError::Invalid(issues) => {
            let list: Vec<String> = issues
                .iter()
                .map(|i| match &i.field {
                    Some(field) => format!("{field}: {}", i.message),
                    None => i.message.clone(),
                })
                .collect();
            anyhow::anyhow!("invalid: {}", list.join("; "))
        }
        other => anyhow::Error::new(other),
    }
}

/// Runs one admin command and prints what it did.
pub async fn run(pool: &PgPool, command: AdminCommand) -> anyhow::Result<()> {
    let identity = Identity::new(
        pool.clone(),
        AppendNotifier::disabled(),
        PasswordHashing::OWASP,
        Duration::from_secs(5),
    )
    .await
    .context("cannot set up password hashing")?;
    let mut out = std::io::stdout().lock();
    match command {
        AdminCommand::CreateTenant {
            id,
            name,
            admin_email,
            admin_name,
            password_env,
        } => {
            let admin = command_api::identity::NewUser {
                email: admin_email,
                display_name: admin_name,
                password: password(&password_env)?,
                roles: vec![Role::Admin],
                groups: Vec::new(),
            };
            let created = identity
                .create_tenant(
                    &context(domain::identity::DEFAULT_TENANT),
                    id.clone(),
                    name,
                    admin,
                )
                .await
                .map_err(explain)?;
            writeln!(out, "created tenant {id} with admin {}", created.admin.id)?;
        }
        AdminCommand::CreateUser {
            tenant,
            email,
            name,
            roles: role_names,
            groups: group_names,
            password_env,
        } => {
            let user = command_api::identity::NewUser {
                email,
                display_name: name,
                password: password(&password_env)?,
                roles: roles(&role_names)?,
                groups: groups(group_names),
            };
            let outcome = identity
                .create_user(&context(&tenant), user)
                .await
                .map_err(explain)?;
            writeln!(out, "created user {} in tenant {tenant}", outcome.id)?;
        }
        AdminCommand::SetRoles {
            tenant,
            user,
            roles: role_names,
        } => {
            let outcome: Outcome = identity
                .change_roles(&context(&tenant), user, roles(&role_names)?, None)
                .await
                .map_err(explain)?;
            writeln!(out, "set the roles of {user} (version {})", outcome.version)?;
        }
        AdminCommand::SetGroups {
            tenant,
            user,
            groups: group_names,
        } => {
            let outcome = identity
                .change_groups(&context(&tenant), user, groups(group_names), None)
                .await
                .map_err(explain)?;
            writeln!(
                out,
                "set the groups of {user} (version {})",
                outcome.version
            )?;
        }
    }
    Ok(())
}
