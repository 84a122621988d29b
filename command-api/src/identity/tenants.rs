//! Creating tenants, each with its first admin, and their sign-in policy.

use domain::identity::{DEFAULT_TENANT, TenantCommand, TenantError, valid_tenant_id};
use domain::{Caller, Command, Issue, IssueCode, Role};
use event_store::ExecuteError;
use orchestrator::{Outcome, RequestContext};

use super::{Identity, IdentityError, NewUser, TenantCreated, metadata, rejected, store};

impl Identity {
    /// Creates tenant `tenant_id` and its first admin (admins of the default tenant).
    ///
    /// When the tenant exists but has no user yet (an earlier attempt failed between the two
    /// steps), the admin is created: retrying the request completes it.
    pub async fn create_tenant(
        &self,
        ctx: &RequestContext,
        tenant_id: String,
        name: String,
        admin: NewUser,
    ) -> Result<TenantCreated, IdentityError> {
        if ctx.caller.tenant_id != DEFAULT_TENANT || !ctx.caller.acts_as(Role::Admin) {
            return Err(rejected(TenantError::Forbidden));
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
        domain::identity::check_display_name(&name, "name", &mut issues);
        issues.extend(admin.issues("admin_"));
        if !issues.is_empty() {
            return Err(IdentityError::Invalid(issues));
        }
        let command = Command::new(
            ctx.caller.clone(),
            ctx.at,
            TenantCommand::Create {
                tenant_id: tenant_id.clone(),
                name,
            },
        );
        let metadata = metadata(ctx, &tenant_id);
        let tenant = match self
            .inner
            .tenants
            .execute(&tenant_id, command, &metadata, None, &())
            .await
        {
            Ok(executed) => Outcome {
                id: tenant_id.clone(),
                version: executed.version,
                position: executed.position,
                appended: executed.events.len(),
            },
            Err(ExecuteError::Rejected(TenantError::AlreadyExists)) => {
                if store::tenant_has_users(&self.inner.pool, &tenant_id).await? {
                    return Err(rejected(TenantError::AlreadyExists));
                }
                let (_, version) = self.inner.tenants.load(&tenant_id).await?;
                Outcome {
                    id: tenant_id.clone(),
                    version,
                    position: None,
                    appended: 0,
                }
            }
            Err(error) => return Err(error.into()),
        };
        // the admin is created in the new tenant, by the default tenant's admin
        let provisioner = Caller {
            tenant_id: tenant_id.clone(),
            actor: ctx.caller.actor.clone(),
            user_id: ctx.caller.user_id,
            roles: vec![Role::Admin],
            groups: Vec::new(),
        };
        let admin = self
            .create_user_as(ctx, provisioner, admin, "admin_email")
            .await?;
        Ok(TenantCreated { tenant, admin })
    }
    /// Requires (or stops requiring) a second factor at every sign-in of the caller's tenant
    /// (its admins). Another tenant's id is not found.
    pub async fn set_two_factor_policy(
        &self,
        ctx: &RequestContext,
        tenant_id: &str,
        required: bool,
        expected_version: Option<usize>,
    ) -> Result<Outcome, IdentityError> {
        if tenant_id != ctx.caller.tenant_id {
            return Err(rejected(TenantError::NotFound));
        }
        let command = Command::new(
            ctx.caller.clone(),
            ctx.at,
            TenantCommand::SetTwoFactorPolicy {
                tenant_id: tenant_id.to_owned(),
                required,
            },
        );
        let executed = self
            .inner
            .tenants
            .execute(
                tenant_id,
                command,
                &metadata(ctx, tenant_id),
                expected_version,
                &(),
            )
            .await?;
        self.project(executed.position).await;
        Ok(Outcome {
            id: tenant_id.to_owned(),
            version: executed.version,
            position: executed.position,
            appended: executed.events.len(),
        })
    }
}
