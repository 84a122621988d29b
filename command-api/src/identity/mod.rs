//! Identity: tenants and users as event-sourced aggregates, with the security state kept out
//! of the log (password hashes, email claims) written in the same flow.
//!
//! - [`Identity`]: the commands (create a tenant with its admin, create users, replace roles
//!   and groups, change passwords, deactivate), each followed by the inline projection so
//!   sign-in and group lookups see its effect when it answers.
//! - [`projector`]: the `identity` read model, inline and as a background loop
//!   ([`run_projector`]).
//! - [`PgDirectory`]: group members for the orchestrator, from the read model.
//! - [`bootstrap_admin`]: the first admin, in the `default` tenant.

mod bootstrap;
mod directory;
pub mod projector;
pub mod store;
mod tenants;
mod two_factor;

use std::sync::Arc;
use std::time::Duration;

use domain::identity::{
    CreateUser, UserCommand, UserError, check_display_name, check_email, check_groups,
    check_password, email_key,
};
use domain::{Caller, Command, Issue, IssueCode, Rejection, Role, Tenant, User};
use event_schemas::{EventMetadata, LogPosition};
use event_store::{AppendNotifier, ExecuteError, Executor};
use orchestrator::{Outcome, RequestContext, RuntimeError};
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::throttle::Admission;
use crate::auth::{PasswordError, Passwords, Throttle, ThrottleKey};
use crate::settings::PasswordHashing;

pub use bootstrap::bootstrap_admin;
pub use directory::PgDirectory;
pub use projector::run_projector;
pub use two_factor::{Enrolment, SecondFactor, second_factor};

/// Why an identity command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The domain refused it (or a race / store failure), as for workflow commands.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Fields of the request are invalid (checked before anything is written).
    #[error("the request is invalid")]
    Invalid(Vec<Issue>),
    /// Another user of the tenant has this email address (ignoring case).
    #[error("another user of this tenant has this email address")]
    EmailTaken { field: &'static str },
    /// The current password given to change one's own password is wrong.
    #[error("the current password is not correct")]
    WrongPassword,
    /// Confirming two-factor sign-in without having started an enrolment.
    #[error("no two-factor enrolment is waiting for confirmation; start one first")]
    TwoFactorNotStarted,
    /// Turning one's own second factor off where the tenant requires one.
    #[error(
        "this tenant requires two-factor sign-in: it cannot be turned off (an admin can, for a lost authenticator)"
    )]
    TwoFactorRequiredByTenant,
    /// The one-time code given to confirm an authenticator is not its current one.
    #[error("the one-time code is not correct (or has expired)")]
    WrongOneTimeCode,
    /// Too many wrong passwords for the account (sign-ins and current passwords alike): the
    /// current password is not checked for `retry_after`.
    #[error("too many wrong passwords for this account")]
    Throttled { retry_after: Duration },
    #[error("identity storage failed")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Password(#[from] PasswordError),
}

impl<E> From<ExecuteError<E>> for IdentityError
where
    E: Rejection + Send + Sync + 'static,
{
    fn from(error: ExecuteError<E>) -> Self {
        IdentityError::Runtime(error.into())
    }
}

fn rejected(error: impl Rejection + Send + Sync + 'static) -> IdentityError {
    IdentityError::Runtime(RuntimeError::Rejected(Box::new(error)))
}

/// A user to create, with the password to set.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub display_name: String,
    pub password: SecretString,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
}

impl NewUser {
    /// Problems with its fields, named `{prefix}email`, `{prefix}password`, ...
    fn issues(&self, prefix: &str) -> Vec<Issue> {
        use secrecy::ExposeSecret;
        let mut issues = Vec::new();
        check_email(&self.email, &format!("{prefix}email"), &mut issues);
        check_display_name(
            &self.display_name,
            &format!("{prefix}display_name"),
            &mut issues,
        );
        check_password(
            self.password.expose_secret(),
            &format!("{prefix}password"),
            &mut issues,
        );
        check_groups(&self.groups, &format!("{prefix}groups"), &mut issues);
        issues
    }
}

/// What creating a tenant did.
#[derive(Debug, Clone)]
pub struct TenantCreated {
    pub tenant: Outcome,
    /// The tenant's first admin.
    pub admin: Outcome,
}

/// The identity commands.
#[derive(Debug, Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    users: Executor<User>,
    tenants: Executor<Tenant>,
    passwords: Passwords,
    projection_wait: Duration,
}

const MANAGE_USERS: UserError = UserError::MissingRole {
    action: "manage users",
    roles: "admins",
};

impl Identity {
    /// Identity commands on `pool`, hashing with `hashing`.
    pub async fn new(
        pool: PgPool,
        notifier: AppendNotifier,
        hashing: PasswordHashing,
        projection_wait: Duration,
    ) -> Result<Self, PasswordError> {
        let passwords = Passwords::new(hashing).await?;
        Ok(Self::with_passwords(
            pool,
            notifier,
            passwords,
            projection_wait,
        ))
    }

    /// Identity commands sharing an existing hasher.
    pub fn with_passwords(
        pool: PgPool,
        notifier: AppendNotifier,
        passwords: Passwords,
        projection_wait: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                users: Executor::new(pool.clone(), notifier.clone(), event_schemas::upcasters()),
                tenants: Executor::new(pool.clone(), notifier, event_schemas::upcasters()),
                pool,
                passwords,
                projection_wait,
            }),
        }
    }

    /// The password hasher.
    pub fn passwords(&self) -> &Passwords {
        &self.inner.passwords
    }

    /// Creates a user in the caller's tenant (admins).
    pub async fn create_user(
        &self,
        ctx: &RequestContext,
        user: NewUser,
    ) -> Result<Outcome, IdentityError> {
        if !ctx.caller.acts_as(Role::Admin) {
            return Err(rejected(MANAGE_USERS));
        }
        let issues = user.issues("");
        if !issues.is_empty() {
            return Err(IdentityError::Invalid(issues));
        }
        self.create_user_as(ctx, ctx.caller.clone(), user, "email")
            .await
    }

    /// Replaces the roles of `user_id` (admins).
    pub async fn change_roles(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        roles: Vec<Role>,
        expected_version: Option<usize>,
    ) -> Result<Outcome, IdentityError> {
        self.user_command(
            ctx,
            user_id,
            UserCommand::ChangeRoles { roles },
            expected_version,
        )
        .await
    }

    /// Replaces the groups of `user_id` (admins).
    pub async fn change_groups(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        groups: Vec<String>,
        expected_version: Option<usize>,
    ) -> Result<Outcome, IdentityError> {
        self.user_command(
            ctx,
            user_id,
            UserCommand::ChangeGroups { groups },
            expected_version,
        )
        .await
    }

    /// Stops `user_id` from signing in and ends their sessions (admins).
    pub async fn deactivate(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        reason: Option<String>,
        expected_version: Option<usize>,
    ) -> Result<Outcome, IdentityError> {
        self.user_command(
            ctx,
            user_id,
            UserCommand::Deactivate { reason },
            expected_version,
        )
        .await
    }

    /// Lets a deactivated user sign in again (admins).
    pub async fn reactivate(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        expected_version: Option<usize>,
    ) -> Result<Outcome, IdentityError> {
        self.user_command(ctx, user_id, UserCommand::Reactivate, expected_version)
            .await
    }

    /// Sets a new password: one's own (with the current password, checked under the account's
    /// key of `throttle`) or anyone's in the tenant (admins, a reset). Ends the user's sessions.
    pub async fn change_password(
        &self,
        ctx: &RequestContext,
        throttle: &Throttle,
        user_id: Uuid,
        password: SecretString,
        current_password: Option<SecretString>,
        expected_version: Option<usize>,
    ) -> Result<Outcome, IdentityError> {
        use secrecy::ExposeSecret;
        let own = ctx.caller.person() == Some(user_id);
        if !own && !ctx.caller.acts_as(Role::Admin) {
            return Err(rejected(UserError::MissingRole {
                action: "change another user's password",
                roles: "admins",
            }));
        }
        let mut issues = Vec::new();
        check_password(password.expose_secret(), "password", &mut issues);
        if own && current_password.is_none() {
            issues.push(Issue::field(
                "current_password",
                IssueCode::MissingField,
                "give your current password to change it",
            ));
        }
        if !issues.is_empty() {
            return Err(IdentityError::Invalid(issues));
        }
        if let Some(current) = current_password.filter(|_| own) {
            self.check_current_password(throttle, &ctx.caller.tenant_id, user_id, &current)
                .await?;
        }
        let hash = self.inner.passwords.hash(&password).await?;
        let id = user_id.to_string();
        let command = Command::new(ctx.caller.clone(), ctx.at, UserCommand::ChangePassword);
        let executed = self
            .inner
            .users
            .execute(
                &id,
                command,
                &metadata(ctx, &ctx.caller.tenant_id),
                expected_version,
                &(),
            )
            .await?;
        // after the event: the aggregate decided who may; a failure here is answered as one
        // and a retry sets the password (and records the change again). An erasure that came
        // in between wins: nothing of the person is stored again.
        if !store::replace_password(&self.inner.pool, user_id, &hash).await? {
            tracing::info!(user_id = %user_id, "the user was erased meanwhile: no password stored");
        }
        self.project(executed.position).await;
        Ok(Outcome {
            id,
            version: executed.version,
            position: executed.position,
            appended: executed.events.len(),
        })
    }

    /// Checks one's own current password, counted like a sign-in to the account: a stolen
    /// access token must not be a way to guess the password without limit.
    async fn check_current_password(
        &self,
        throttle: &Throttle,
        tenant_id: &str,
        user_id: Uuid,
        current: &SecretString,
    ) -> Result<(), IdentityError> {
        let Some(email_key) = store::email_key_of(&self.inner.pool, tenant_id, user_id).await?
        else {
            // no account to sign in to, so no password to guess
            return Err(IdentityError::WrongPassword);
        };
        let account = ThrottleKey::Account {
            tenant_id: tenant_id.to_owned(),
            email_key,
        };
        let attempt = match throttle.admit(std::slice::from_ref(&account)).await? {
            Admission::Admitted(attempt) => attempt,
            Admission::Locked(retry_after) => {
                return Err(IdentityError::Throttled { retry_after });
            }
        };
        let stored = store::password_hash(&self.inner.pool, user_id).await?;
        if !self.inner.passwords.verify(current, stored).await? {
            throttle.failed(attempt);
            return Err(IdentityError::WrongPassword);
        }
        throttle.succeeded(attempt).await?;
        Ok(())
    }

    /// Decides `command` on user `user_id` and projects its events before answering.
    pub async fn user_command(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        command: UserCommand,
        expected_version: Option<usize>,
    ) -> Result<Outcome, IdentityError> {
        let id = user_id.to_string();
        let erases = command == UserCommand::Erase;
        let command = Command::new(ctx.caller.clone(), ctx.at, command);
        let executed = self
            .inner
            .users
            .execute(
                &id,
                command,
                &metadata(ctx, &ctx.caller.tenant_id),
                expected_version,
                &(),
            )
            .await?;
        if erases && !executed.events.is_empty() {
            // the key goes before the answer; the identity projector drops it too, with the
            // rest of the erasure, so a crash in between loses nothing
            let mut conn = self.inner.pool.acquire().await?;
            event_store::personal::erase(&mut conn, &ctx.caller.tenant_id, user_id).await?;
        }
        self.project(executed.position).await;
        Ok(Outcome {
            id,
            version: executed.version,
            position: executed.position,
            appended: executed.events.len(),
        })
    }

    /// Claims the email, stores the hash, then appends `UserCreated` as `caller` (whose tenant
    /// the user joins). A failed append gives the claim and the hash back.
    async fn create_user_as(
        &self,
        ctx: &RequestContext,
        caller: Caller,
        user: NewUser,
        email_field: &'static str,
    ) -> Result<Outcome, IdentityError> {
        let tenant_id = caller.tenant_id.clone();
        let user_id = Uuid::now_v7();
        let hash = self.inner.passwords.hash(&user.password).await?;
        let mut tx = self.inner.pool.begin().await?;
        if !store::claim_email(&mut tx, &tenant_id, &email_key(&user.email), user_id).await? {
            return Err(IdentityError::EmailTaken { field: email_field });
        }
        store::set_password(&mut *tx, user_id, &hash).await?;
        tx.commit().await?;
        let id = user_id.to_string();
        let command = Command::new(
            caller,
            ctx.at,
            UserCommand::Create(CreateUser {
                user_id,
                email: user.email,
                display_name: user.display_name,
                roles: user.roles,
                groups: user.groups,
            }),
        );
        let executed = match self
            .inner
            .users
            .execute(&id, command, &metadata(ctx, &tenant_id), None, &())
            .await
        {
            Ok(executed) => executed,
            Err(error) => {
                if let Err(cleanup) = self.release(&tenant_id, user_id).await {
                    tracing::warn!(error = %cleanup, "could not release a failed user's email claim");
                }
                return Err(error.into());
            }
        };
        self.project(executed.position).await;
        Ok(Outcome {
            id,
            version: executed.version,
            position: executed.position,
            appended: executed.events.len(),
        })
    }

    async fn release(&self, tenant_id: &str, user_id: Uuid) -> Result<(), sqlx::Error> {
        let mut conn = self.inner.pool.acquire().await?;
        store::release_user(&mut conn, tenant_id, user_id).await
    }

    /// Brings the read model up to `position`, logging rather than failing: the command has
    /// taken effect either way.
    async fn project(&self, position: Option<LogPosition>) {
        let Some(target) = position else {
            return;
        };
        match projector::catch_up_to(&self.inner.pool, target, self.inner.projection_wait).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(position = %target,
                "the identity read model did not reach the command's events in time; the projector will"),
            Err(error) => tracing::error!(error = %api_common::problem::chain(&error),
                "identity projection failed; the projector will retry"),
        }
    }
}

/// The metadata of identity events: the request's ids, the tenant the events belong to.
fn metadata(ctx: &RequestContext, tenant_id: &str) -> EventMetadata {
    EventMetadata {
        event_id: Uuid::nil(), // stamped per event by the repository
        tenant_id: tenant_id.to_owned(),
        actor: ctx.caller.actor.clone(),
        correlation_id: ctx.correlation_id,
        causation_id: ctx.request_id.clone(),
        request_id: ctx.request_id.clone(),
        occurred_at: ctx.at,
    }
}
