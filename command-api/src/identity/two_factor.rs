//! Two-factor sign-in: enrolling an authenticator, confirming it, recovery codes, turning it
//! off, and the check at sign-in.
//!
//! The user aggregate decides who may (its [`UserCommand`]s); the key and the recovery codes'
//! hashes go to `identity_two_factor` and `identity_recovery_codes`, never to the log.

use chrono::Utc;
use domain::Command;
use domain::identity::UserCommand;
use event_store::master_key;
use orchestrator::{Outcome, RequestContext};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{Identity, IdentityError, rejected, store};
use crate::auth::Throttle;
use crate::auth::two_factor::{TotpKey, is_totp_code, recovery_code_hash, recovery_codes};

/// A started enrolment: what the user puts into their authenticator app.
#[derive(Debug)]
pub struct Enrolment {
    /// The key, base32, for typing in.
    pub secret: SecretString,
    /// The `otpauth://` URI, for a QR code.
    pub uri: SecretString,
}

/// What the second factor at sign-in came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// The account signs in with its password alone.
    NotEnrolled,
    /// The account needs a code and none was sent.
    Required,
    /// A code of the authenticator, not used before.
    Totp,
    /// An unused recovery code (now used up); `remaining` are left.
    Recovery { remaining: i64 },
    /// A wrong, expired or already used code.
    Refused,
}

impl SecondFactor {
    /// Its metric label.
    pub fn name(self) -> &'static str {
        match self {
            SecondFactor::NotEnrolled => "none",
            SecondFactor::Required => "required",
            SecondFactor::Totp => "totp",
            SecondFactor::Recovery { .. } => "recovery_code",
            SecondFactor::Refused => "refused",
        }
    }
}

/// `user_id`'s stored authenticator key, opened with the master key when it is wrapped
/// (`event_store::master_key`).
fn open_secret(user_id: Uuid, stored: &[u8]) -> Result<Vec<u8>, sqlx::Error> {
    master_key::unwrap(stored, &master_key::two_factor_owner(user_id))
        .map(|secret| secret.to_vec())
        .map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

/// Checks `code` as the second factor of `user_id` at `unix_seconds`, using it up: each TOTP
/// code works once (the step is recorded atomically, so two concurrent sign-ins with one code
/// cannot both pass) and so does each recovery code.
pub async fn second_factor(
    pool: &PgPool,
    user_id: Uuid,
    code: Option<&SecretString>,
    unix_seconds: i64,
) -> Result<SecondFactor, sqlx::Error> {
    let secret: Option<Vec<u8>> = sqlx::query_scalar(
        "select secret from identity_two_factor where user_id = $1 and confirmed_at is not null",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let Some(secret) = secret else {
        return Ok(SecondFactor::NotEnrolled);
    };
    let secret = open_secret(user_id, &secret)?;
    let Some(code) = code.map(ExposeSecret::expose_secret) else {
        return Ok(SecondFactor::Required);
    };
    if is_totp_code(code) {
        let Some(step) = TotpKey::from_bytes(secret).verify(code, unix_seconds) else {
            return Ok(SecondFactor::Refused);
        };
        return Ok(if use_step(pool, user_id, step).await? {
            SecondFactor::Totp
        } else {
            SecondFactor::Refused
        });
    }
    let row = sqlx::query(
        "with used as (update identity_recovery_codes set used_at = now() \
           where user_id = $1 and code_hash = $2 and used_at is null returning code_hash) \
         select exists(select 1 from used) as used, \
           (select count(*) from identity_recovery_codes \
             where user_id = $1 and used_at is null and code_hash not in (select code_hash from used)) \
             as remaining",
    )
    .bind(user_id)
    .bind(recovery_code_hash(code))
    .fetch_one(pool)
    .await?;
    Ok(if row.try_get("used")? {
        SecondFactor::Recovery {
            remaining: row.try_get("remaining")?,
        }
    } else {
        SecondFactor::Refused
    })
}

/// Records `step` as the last one used by `user_id`; `false` if it (or a later one) was.
async fn use_step<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    user_id: Uuid,
    step: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "update identity_two_factor set last_used_step = $2 \
         where user_id = $1 and (last_used_step is null or last_used_step < $2)",
    )
    .bind(user_id)
    .bind(step)
    .execute(executor)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Replaces the recovery codes of `user_id` by new ones, returned in clear (once).
async fn store_recovery_codes(
    conn: &mut sqlx::PgConnection,
    user_id: Uuid,
) -> Result<Vec<SecretString>, sqlx::Error> {
    let codes = recovery_codes();
    let hashes: Vec<Vec<u8>> = codes
        .iter()
        .map(|c| recovery_code_hash(c.expose_secret()))
        .collect();
    sqlx::query("delete from identity_recovery_codes where user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "insert into identity_recovery_codes (user_id, code_hash) select $1, unnest($2::bytea[])",
    )
    .bind(user_id)
    .bind(hashes)
    .execute(&mut *conn)
    .await?;
    Ok(codes)
}

impl Identity {
    /// Decides `command` on the stored user without appending: who may, in which tenant and
    /// state. For the steps that must be refused before any security state is written.
    async fn precheck(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        command: UserCommand,
    ) -> Result<(), IdentityError> {
        let (user, _) = self.inner.users.load(&user_id.to_string()).await?;
        user.decide(Command::new(ctx.caller.clone(), ctx.at, command))
            .map(drop)
            .map_err(rejected)
    }

    /// Starts enrolling an authenticator for oneself (with one's current password): a new key,
    /// waiting for its first code ([`Identity::confirm_two_factor`]). Starting again replaces
    /// a key not yet confirmed.
    pub async fn begin_two_factor(
        &self,
        ctx: &RequestContext,
        throttle: &Throttle,
        user_id: Uuid,
        current_password: Option<SecretString>,
    ) -> Result<Enrolment, IdentityError> {
        self.precheck(ctx, user_id, UserCommand::EnableTwoFactor)
            .await?;
        let current = required_password(current_password)?;
        self.check_current_password(throttle, &ctx.caller.tenant_id, user_id, &current)
            .await?;
        self.start_enrolment(ctx, user_id).await
    }

    /// [`Identity::begin_two_factor`] for a caller whose password was checked already (a
    /// sign-in's check, `POST /api/v1/auth/two-factor`).
    pub(crate) async fn begin_two_factor_signed_in(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
    ) -> Result<Enrolment, IdentityError> {
        self.precheck(ctx, user_id, UserCommand::EnableTwoFactor)
            .await?;
        self.start_enrolment(ctx, user_id).await
    }

    async fn start_enrolment(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
    ) -> Result<Enrolment, IdentityError> {
        let tenant_id = &ctx.caller.tenant_id;
        let key = TotpKey::generate();
        let stored = sqlx::query(
            "insert into identity_two_factor (user_id, secret) values ($1, $2) \
             on conflict (user_id) do update set secret = excluded.secret, created_at = now(), \
               last_used_step = null \
             where identity_two_factor.confirmed_at is null",
        )
        .bind(user_id)
        .bind(master_key::wrap(
            key.bytes(),
            &master_key::two_factor_owner(user_id),
        ))
        .execute(&self.inner.pool)
        .await?;
        if stored.rows_affected() == 0 {
            // confirmed meanwhile, by a concurrent request
            return Err(rejected(domain::identity::UserError::TwoFactorEnabled));
        }
        let email = store::email_key_of(&self.inner.pool, tenant_id, user_id)
            .await?
            .unwrap_or_default();
        let account = if tenant_id == domain::identity::DEFAULT_TENANT {
            email
        } else {
            format!("{email} ({tenant_id})")
        };
        tracing::info!(user_id = %user_id, "two-factor enrolment started");
        Ok(Enrolment {
            secret: key.base32(),
            uri: key.uri(&account),
        })
    }

    /// Confirms one's enrolment with a code of the new authenticator: two-factor sign-in is
    /// on from now, and the first recovery codes are returned (in clear, only here).
    pub async fn confirm_two_factor(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        code: &SecretString,
        expected_version: Option<usize>,
    ) -> Result<(Outcome, Vec<SecretString>), IdentityError> {
        self.precheck(ctx, user_id, UserCommand::EnableTwoFactor)
            .await?;
        let secret: Option<Vec<u8>> = sqlx::query_scalar(
            "select secret from identity_two_factor where user_id = $1 and confirmed_at is null",
        )
        .bind(user_id)
        .fetch_optional(&self.inner.pool)
        .await?;
        let Some(secret) = secret else {
            return Err(IdentityError::TwoFactorNotStarted);
        };
        let secret = open_secret(user_id, &secret)?;
        let Some(step) =
            TotpKey::from_bytes(secret).verify(code.expose_secret(), Utc::now().timestamp())
        else {
            return Err(IdentityError::WrongOneTimeCode);
        };
        // the key is confirmed and the codes stored before the event, and given back if the
        // command fails: a user the log shows with two-factor sign-in always has a key
        let mut tx = self.inner.pool.begin().await?;
        let confirmed = sqlx::query(
            "update identity_two_factor set confirmed_at = now(), last_used_step = $2 \
             where user_id = $1 and confirmed_at is null",
        )
        .bind(user_id)
        .bind(step)
        .execute(&mut *tx)
        .await?;
        if confirmed.rows_affected() == 0 {
            return Err(rejected(domain::identity::UserError::TwoFactorEnabled));
        }
        let codes = store_recovery_codes(&mut tx, user_id).await?;
        tx.commit().await?;
        let outcome = match self
            .user_command(ctx, user_id, UserCommand::EnableTwoFactor, expected_version)
            .await
        {
            Ok(outcome) => outcome,
            Err(error) => {
                if let Err(cleanup) = self.unconfirm(user_id).await {
                    tracing::warn!(error = %cleanup, "could not take back a refused two-factor confirmation");
                }
                return Err(error);
            }
        };
        tracing::info!(user_id = %user_id, "two-factor sign-in turned on");
        Ok((outcome, codes))
    }

    async fn unconfirm(&self, user_id: Uuid) -> Result<(), sqlx::Error> {
        self.clear_two_factor(
            user_id,
            "update identity_two_factor set confirmed_at = null where user_id = $1",
        )
        .await
    }

    /// Runs `key_statement` on the key of `user_id` (`$1`) and deletes their recovery codes,
    /// in one transaction.
    async fn clear_two_factor(
        &self,
        user_id: Uuid,
        key_statement: &'static str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.inner.pool.begin().await?;
        sqlx::query(key_statement)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("delete from identity_recovery_codes where user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Turns two-factor sign-in off: one's own (with the current password), or another
    /// user's (admins: for a lost authenticator). The key and recovery codes are deleted, a
    /// pending enrolment's too.
    pub async fn disable_two_factor(
        &self,
        ctx: &RequestContext,
        throttle: &Throttle,
        user_id: Uuid,
        current_password: Option<SecretString>,
        reason: Option<String>,
        expected_version: Option<usize>,
    ) -> Result<Outcome, IdentityError> {
        let command = UserCommand::DisableTwoFactor { reason };
        self.precheck(ctx, user_id, command.clone()).await?;
        if ctx.caller.person() == Some(user_id) {
            if store::two_factor_required(&self.inner.pool, &ctx.caller.tenant_id).await? {
                return Err(IdentityError::TwoFactorRequiredByTenant);
            }
            let current = required_password(current_password)?;
            self.check_current_password(throttle, &ctx.caller.tenant_id, user_id, &current)
                .await?;
        }
        let outcome = self
            .user_command(ctx, user_id, command, expected_version)
            .await?;
        // after the event: a failure here is answered as one, and a retry (no new event)
        // deletes what is left
        self.clear_two_factor(
            user_id,
            "delete from identity_two_factor where user_id = $1",
        )
        .await?;
        tracing::info!(user_id = %user_id, by = %ctx.caller.actor, "two-factor sign-in turned off");
        Ok(outcome)
    }

    /// Replaces one's recovery codes (with the current password): the old ones stop working
    /// and the new ones are returned (in clear, only here).
    pub async fn replace_recovery_codes(
        &self,
        ctx: &RequestContext,
        throttle: &Throttle,
        user_id: Uuid,
        current_password: Option<SecretString>,
        expected_version: Option<usize>,
    ) -> Result<(Outcome, Vec<SecretString>), IdentityError> {
        self.precheck(ctx, user_id, UserCommand::ReplaceRecoveryCodes)
            .await?;
        let current = required_password(current_password)?;
        self.check_current_password(throttle, &ctx.caller.tenant_id, user_id, &current)
            .await?;
        let outcome = self
            .user_command(
                ctx,
                user_id,
                UserCommand::ReplaceRecoveryCodes,
                expected_version,
            )
            .await?;
        let mut tx = self.inner.pool.begin().await?;
        let codes = store_recovery_codes(&mut tx, user_id).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user_id, "recovery codes replaced");
        Ok((outcome, codes))
    }
}

fn required_password(password: Option<SecretString>) -> Result<SecretString, IdentityError> {
    password.ok_or_else(|| {
        IdentityError::Invalid(vec![domain::Issue::field(
            "current_password",
            domain::IssueCode::MissingField,
            "give your current password",
        )])
    })
}
