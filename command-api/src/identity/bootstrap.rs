//! The first admin: created in the default tenant on first start.

use std::time::Duration;

use chrono::Utc;
use domain::identity::{DEFAULT_TENANT, TenantCommand, TenantError};
use domain::{Caller, Command, Role};
use event_store::{AppendNotifier, ExecuteError};
use orchestrator::RequestContext;
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Identity, IdentityError, NewUser, metadata};
use crate::settings::PasswordHashing;

impl Identity {
    /// Creates the first admin (`email`, `password`) in the default tenant, creating that
    /// tenant too, unless a user exists already. `Ok(None)` when there was nothing to do.
    ///
    /// Instances starting together agree through an advisory lock: one creates the admin.
    pub async fn bootstrap_admin(
        &self,
        email: &str,
        password: &SecretString,
    ) -> Result<Option<Uuid>, IdentityError> {
        // "workledger bootstrap", as a lock key
        const LOCK: i64 = 0x776c_626f_6f74;
        let mut lock = self.inner.pool.acquire().await?;
        sqlx::query("select pg_advisory_lock($1)")
            .bind(LOCK)
            .execute(&mut *lock)
            .await?;
        let result = self.bootstrap_locked(email, password).await;
        if let Err(error) = sqlx::query("select pg_advisory_unlock($1)")
            .bind(LOCK)
            .execute(&mut *lock)
            .await
        {
            // the lock goes with the connection
            tracing::warn!(error = %error, "could not release the bootstrap lock");
            lock.detach();
        }
        result
    }

    async fn bootstrap_locked(
        &self,
        email: &str,
        password: &SecretString,
    ) -> Result<Option<Uuid>, IdentityError> {
        let any_user: bool =
            sqlx::query_scalar("select exists(select 1 from events where aggregate_type = 'user')")
                .fetch_one(&self.inner.pool)
                .await?;
        if any_user {
            return Ok(None);
        }
        let user = NewUser {
            email: email.to_owned(),
            display_name: "Administrator".to_owned(),
            password: password.clone(),
            roles: vec![Role::Admin],
            groups: Vec::new(),
        };
        let issues = user.issues("");
        if !issues.is_empty() {
            return Err(IdentityError::Invalid(issues));
        }
        let ctx = RequestContext {
            caller: Caller::service(DEFAULT_TENANT, "bootstrap"),
            at: Utc::now(),
            correlation_id: Uuid::now_v7(),
            request_id: "bootstrap".to_owned(),
        };
        let command = Command::new(
            ctx.caller.clone(),
            ctx.at,
            TenantCommand::Create {
                tenant_id: DEFAULT_TENANT.to_owned(),
                name: "Default".to_owned(),
            },
        );
        match self
            .inner
            .tenants
            .execute(
                DEFAULT_TENANT,
                command,
                &metadata(&ctx, DEFAULT_TENANT),
                None,
                &(),
            )
            .await
        {
            Ok(_) | Err(ExecuteError::Rejected(TenantError::AlreadyExists)) => {}
            Err(error) => return Err(error.into()),
        }
        let outcome = self
            .create_user_as(&ctx, ctx.caller.clone(), user, "email")
            .await?;
        tracing::info!(user_id = %outcome.id, tenant = DEFAULT_TENANT, "created the first admin");
        Ok(Uuid::parse_str(&outcome.id).ok())
    }
}

/// Creates the first admin in the default tenant when no user exists yet, hashing with the
/// OWASP parameters (what `serve` calls with `WORKLEDGER_ADMIN_EMAIL` /
/// `WORKLEDGER_ADMIN_PASSWORD`). Returns the new admin's id, or `None` when users exist.
pub async fn bootstrap_admin(
    pool: &PgPool,
    email: &str,
    password: &SecretString,
) -> Result<Option<Uuid>, IdentityError> {
    let identity = Identity::new(
        pool.clone(),
        AppendNotifier::disabled(),
        PasswordHashing::OWASP,
        Duration::from_secs(5),
    )
    .await?;
    identity.bootstrap_admin(email, password).await
}
