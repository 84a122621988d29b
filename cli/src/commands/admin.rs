//! `workledger admin`: tenants, users, roles and groups through the identity module, without
//! the API (for when it is unreachable). Commands run as the service `cli-admin`, so they go
//! through the same aggregates and checks as the API's and land in the log and the audit
//! trail; passwords are hashed and never written to the log.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use command_api::auth::throttle::Throttle;
use command_api::{Identity, IdentityError, PasswordHashing, ThrottleSettings};
use domain::{Caller, Role};
use event_store::AppendNotifier;
use orchestrator::{Outcome, RequestContext, RuntimeError};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::{AdminCommand, OutputFormat};

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
        AdminCommand::SetPassword {
            tenant,
            user,
            password_env,
        } => {
            // a reset by a service: no current password, so the throttle is not consulted
            let throttle = Throttle::new(pool.clone(), ThrottleSettings::default());
            let new_password = password(&password_env)?;
            let outcome = identity
                .change_password(&context(&tenant), &throttle, user, new_password, None, None)
                .await
                .map_err(explain)?;
            writeln!(
                out,
                "set the password of {user} and ended their sessions (version {})",
                outcome.version
            )?;
        }
        AdminCommand::Deactivate {
            tenant,
            user,
            reason,
        } => {
            let outcome = identity
                .deactivate(&context(&tenant), user, reason, None)
                .await
                .map_err(explain)?;
            writeln!(
                out,
                "deactivated {user} and ended their sessions (version {})",
                outcome.version
            )?;
        }
        AdminCommand::EndSessions {
            tenant,
            user,
            reason,
        } => {
            let command = domain::identity::UserCommand::EndSessions { reason };
            let outcome = identity
                .user_command(&context(&tenant), user, command, None)
                .await
                .map_err(explain)?;
            writeln!(
                out,
                "ended every session of {user} (version {})",
                outcome.version
            )?;
        }
        AdminCommand::EraseUser { tenant, user } => {
            let command = domain::identity::UserCommand::Erase;
            match identity
                .user_command(&context(&tenant), user, command, None)
                .await
            {
                Ok(outcome) => writeln!(
                    out,
                    "erased {user}: their personal data no longer opens (version {})",
                    outcome.version
                )?,
                // erased in the log already: a key a restored backup brought back goes again
                Err(IdentityError::Runtime(RuntimeError::Rejected(refusal)))
                    if refusal.code() == "user_erased" =>
                {
                    let mut conn = pool.acquire().await?;
                    if event_store::personal::erase(&mut conn, &tenant, user).await? {
                        writeln!(out, "{user} was erased before; dropped their key again")?;
                    } else {
                        writeln!(out, "{user} was erased before; nothing left to drop")?;
                    }
                }
                Err(e) => return Err(explain(e)),
            }
        }
        AdminCommand::DisableTwoFactor {
            tenant,
            user,
            reason,
        } => {
            // by a service: no current password, so the throttle is not consulted
            let throttle = Throttle::new(pool.clone(), ThrottleSettings::default());
            let outcome = identity
                .disable_two_factor(&context(&tenant), &throttle, user, None, reason, None)
                .await
                .map_err(explain)?;
            writeln!(
                out,
                "turned off two-factor sign-in of {user} (version {})",
                outcome.version
            )?;
        }
        AdminCommand::Reactivate { tenant, user } => {
            let outcome = identity
                .reactivate(&context(&tenant), user, None)
                .await
                .map_err(explain)?;
            writeln!(out, "reactivated {user} (version {})", outcome.version)?;
        }
        AdminCommand::Users {
            tenant,
            email,
            group,
            format,
        } => list_users(pool, &mut out, &tenant, email, group, format).await?,
        AdminCommand::Tenants { format } => list_tenants(pool, &mut out, format).await?,
        AdminCommand::WrapSecrets => {
            let keys = event_store::master_key::installed()
                .filter(|keys| keys.wraps())
                .context("WORKLEDGER_MASTER_KEY is not set: there is no key to wrap with")?;
            let mut conn = pool.acquire().await?;
            let wrapped = event_store::master_key::wrap_stored(&mut conn, keys).await??;
            writeln!(
                out,
                "wrapped {} personal data keys, {} two-factor secrets and {} server secrets with \
                 the master key",
                wrapped.personal_keys, wrapped.two_factor_secrets, wrapped.server_secrets
            )?;
            // what a process that does not wrap yet wrote meanwhile is left as it is
            let left = event_store::master_key::census(&mut conn, Some(keys)).await?;
            anyhow::ensure!(
                left.unwrapped + left.wrapped_other == 0,
                "{} stored secrets are still not wrapped with WORKLEDGER_MASTER_KEY (written \
                 meanwhile by processes without it): run this again once every process has it",
                left.unwrapped + left.wrapped_other
            );
            writeln!(out, "every stored secret is wrapped with it now")?;
        }
    }
    Ok(())
}

/// The users of `tenant` (optionally one email address, or one group's), by email address.
async fn list_users(
    pool: &PgPool,
    out: &mut impl Write,
    tenant: &str,
    email: Option<String>,
    group: Option<String>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    // the default tenant has no TenantCreated: it exists from its first user on
    let tenant_exists: bool = sqlx::query_scalar(
        "select exists (select from identity_tenants where tenant_id = $1) \
                 or exists (select from identity_users where tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .context("cannot read the tenants")?;
    if !tenant_exists {
        anyhow::bail!("there is no tenant {tenant:?} (workledger admin tenants lists them)");
    }
    let users: Vec<Value> = sqlx::query_scalar(
        "select jsonb_build_object('id', user_id, 'tenant_id', tenant_id, 'email', email, \
                'display_name', display_name, 'roles', roles, 'groups', groups, \
                'status', status, 'version', version, 'created_at', created_at, \
                'updated_at', updated_at, 'password_changed_at', password_changed_at, \
                'two_factor', two_factor_enabled_at is not null) \
         from identity_users \
         where tenant_id = $1 and ($2::text is null or email_key = $2) \
           and ($3::text is null or groups @> array[$3]) \
         order by email_key, user_id",
    )
    .bind(tenant)
    .bind(email.as_deref().map(domain::identity::email_key))
    .bind(group)
    .fetch_all(pool)
    .await
    .context("cannot read the users")?;
    match format {
        OutputFormat::Jsonl => {
            for user in &users {
                writeln!(out, "{user}")?;
            }
        }
        OutputFormat::Table => {
            let text = |user: &Value, key: &str| user[key].as_str().unwrap_or_default().to_owned();
            let list = |user: &Value, key: &str| {
                let names: Vec<&str> = user[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if names.is_empty() {
                    "-".to_owned()
                } else {
                    names.join(",")
                }
            };
            let two_factor = |user: &Value| {
                if user["two_factor"].as_bool() == Some(true) {
                    "on"
                } else {
                    "off"
                }
                .to_owned()
            };
            let rows: Vec<[String; 7]> = users
                .iter()
                .map(|u| {
                    [
                        text(u, "id"),
                        text(u, "email"),
                        text(u, "display_name"),
                        text(u, "status"),
                        two_factor(u),
                        list(u, "roles"),
                        list(u, "groups"),
                    ]
                })
                .collect();
            let header =
                ["ID", "EMAIL", "NAME", "STATUS", "2FA", "ROLES", "GROUPS"].map(str::to_owned);
            write_table(out, &header, &rows)?;
            let noun = if users.len() == 1 { "user" } else { "users" };
            writeln!(out, "\n{} {noun}", users.len())?;
        }
    }
    Ok(())
}

/// Every tenant, with how many users it has.
async fn list_tenants(
    pool: &PgPool,
    out: &mut impl Write,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let tenants = query_api::all_tenants(pool)
        .await
        .context("cannot read the tenants")?;
    match format {
        OutputFormat::Jsonl => {
            for tenant in &tenants {
                writeln!(out, "{}", serde_json::to_value(tenant)?)?;
            }
        }
        OutputFormat::Table => {
            let rows: Vec<[String; 5]> = tenants
                .iter()
                .map(|t| {
                    [
                        t.id.clone(),
                        t.name.clone(),
                        t.created_at.to_rfc3339(),
                        if t.two_factor_required {
                            "required"
                        } else {
                            "optional"
                        }
                        .to_owned(),
                        t.users.to_string(),
                    ]
                })
                .collect();
            let header = ["ID", "NAME", "CREATED", "TWO-FACTOR", "USERS"].map(str::to_owned);
            write_table(out, &header, &rows)?;
        }
    }
    Ok(())
}

/// Left-aligned columns, each as wide as its widest cell.
fn write_table<const N: usize>(
    out: &mut impl Write,
    header: &[String; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}
