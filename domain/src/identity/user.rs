//! The `User` aggregate (aggregate id: a UUID).
//!
//! Who may do what, in the user's own tenant (another tenant's user is `NotFound`):
//! - create, change roles, change groups, deactivate, reactivate: admins (and services);
//! - change the password: the user themself, or an admin (a reset);
//! - an admin may not revoke their own admin role nor deactivate themselves;
//! - choose which notifications go by email: the user themself, or an admin;
//! - enable two-factor sign-in and replace its recovery codes: the user themself (the
//!   authenticator is theirs); turn it off: the user themself, or an admin (a reset for a user
//!   who lost their authenticator).
//!
//! - erase (forget the person: their data key is destroyed, DESIGN §2): admins, once the user
//!   is deactivated; an erased user takes no command at all afterwards.
//!
//! Replacing roles or groups with the same set, deactivating a deactivated user, reactivating
//! an active one and turning off two-factor sign-in where it is off change nothing (no event).

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use event_schemas::identity::EmailNotifications;
use event_schemas::identity::USER_AGGREGATE_TYPE;
use event_schemas::{Role, UserEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{canonical, check_display_name, check_email, check_groups, difference};
use crate::caller::{Caller, Command};
use crate::decide::Decide;
use crate::error::{ErrorKind, Issue, Rejection};
use crate::text;

/// What can be asked of a user.
#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// Create the user in the caller's tenant.
    Create(CreateUser),
    /// Replace the user's roles.
    ChangeRoles { roles: Vec<Role> },
    /// Replace the user's groups.
    ChangeGroups { groups: Vec<String> },
    /// Record that the user's password was changed (the hash is stored outside the log).
    ChangePassword,
    /// Stop the user from signing in.
    Deactivate { reason: Option<String> },
    /// Let a deactivated user sign in again.
    Reactivate,
    /// Record that the user confirmed an authenticator (its key is stored outside the log).
    EnableTwoFactor,
    /// Sign in with the password alone again.
    DisableTwoFactor { reason: Option<String> },
    /// Record that the user's recovery codes were replaced (they are stored outside the log).
    ReplaceRecoveryCodes,
    /// Choose which notifications the user gets by email.
    SetNotifications { email: EmailNotifications },
    /// End every session the user has (they sign in again).
    EndSessions { reason: Option<String> },
    /// Forget the person: their personal data in the log no longer opens.
    Erase,
}

/// Everything a new user is created with (the password is handled outside the domain).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateUser {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub groups: Vec<String>,
}

/// Why a user command was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UserError {
    #[error("user not found")]
    NotFound,
    #[error("a user with this id already exists")]
    AlreadyExists,
    #[error("only {roles} may {action}")]
    MissingRole {
        action: &'static str,
        roles: &'static str,
    },
    #[error("you cannot {action} yourself; ask another admin")]
    SelfLockout { action: &'static str },
    #[error("only the user themself may {action}")]
    NotSelf { action: &'static str },
    #[error("two-factor sign-in is already on for this user; turn it off first")]
    TwoFactorEnabled,
    #[error("two-factor sign-in is not on for this user")]
    TwoFactorNotEnabled,
    #[error("the user is active; deactivate them before erasing them")]
    StillActive,
    #[error("the user was erased; nothing more can be done with them")]
    Erased,
    #[error("the command is invalid: {}", crate::error::first_issue(.issues))]
    Invalid { issues: Vec<Issue> },
}

impl Rejection for UserError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::MissingRole { .. } | Self::NotSelf { .. } => ErrorKind::Forbidden,
            Self::AlreadyExists
            | Self::SelfLockout { .. }
            | Self::TwoFactorEnabled
            | Self::TwoFactorNotEnabled
            | Self::StillActive
            | Self::Erased => ErrorKind::Conflict,
            Self::Invalid { .. } => ErrorKind::Validation,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "user_not_found",
            Self::AlreadyExists => "user_exists",
            Self::MissingRole { .. } | Self::NotSelf { .. } => "forbidden",
            Self::SelfLockout { .. } => "self_lockout",
            Self::TwoFactorEnabled => "two_factor_enabled",
            Self::TwoFactorNotEnabled => "two_factor_not_enabled",
            Self::StillActive => "user_active",
            Self::Erased => "user_erased",
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

const MANAGE: UserError = UserError::MissingRole {
    action: "manage users",
    roles: "admins",
};

/// Whether a user may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    #[default]
    Active,
    Deactivated,
}

/// A user's state. Personal data (email, display name) stays out of it: the read model has it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    id: Option<Uuid>,
    tenant_id: String,
    roles: Vec<Role>,
    groups: Vec<String>,
    status: UserStatus,
    /// Whether signing in takes a one-time code too (absent from snapshots taken before).
    #[serde(default)]
    two_factor: bool,
    /// Which notifications go by email (absent from snapshots taken before: all).
    #[serde(default)]
    email_notifications: EmailNotifications,
    /// Whether the person was forgotten (absent from snapshots taken before: no).
    #[serde(default)]
    erased: bool,
}

impl User {
    /// The id, once created.
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }

    /// The tenant, once created.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The roles, sorted.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// The groups, sorted.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Active or deactivated.
    pub fn status(&self) -> UserStatus {
        self.status
    }

    /// Whether signing in takes a one-time code besides the password.
    pub fn two_factor(&self) -> bool {
        self.two_factor
    }

    /// Which notifications go by email.
    pub fn email_notifications(&self) -> EmailNotifications {
        self.email_notifications
    }

    /// Whether the person was erased.
    pub fn erased(&self) -> bool {
        self.erased
    }

    /// Decides a command: the events it causes, or why it is rejected.
    pub fn decide(&self, command: Command<UserCommand>) -> Result<Vec<UserEvent>, UserError> {
        let Command {
            caller,
            at,
            command,
        } = command;
        if let UserCommand::Create(create) = command {
            return self.create(caller, at, create);
        }
        if self.id.is_none() || self.tenant_id != caller.tenant_id {
            return Err(UserError::NotFound);
        }
        if self.erased {
            return Err(UserError::Erased);
        }
        match command {
            UserCommand::Create(_) => Err(UserError::AlreadyExists),
            UserCommand::ChangeRoles { roles } => self.change_roles(&caller, at, roles),
            UserCommand::ChangeGroups { groups } => self.change_groups(&caller, at, groups),
            UserCommand::ChangePassword => {
                if !self.is_self(&caller) && !caller.acts_as(Role::Admin) {
                    return Err(UserError::MissingRole {
                        action: "change another user's password",
                        roles: "admins",
                    });
                }
                Ok(vec![UserEvent::UserPasswordChanged {
                    changed_by: caller.actor,
                    changed_at: at,
                }])
            }
            UserCommand::Deactivate { reason } => self.deactivate(&caller, at, reason),
            UserCommand::Reactivate => {
                if !caller.acts_as(Role::Admin) {
                    return Err(MANAGE);
                }
                if self.status == UserStatus::Active {
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::UserReactivated {
                    reactivated_by: caller.actor,
                    reactivated_at: at,
                }])
            }
            UserCommand::EnableTwoFactor => {
                self.ensure_self(&caller, "turn on two-factor sign-in")?;
                if self.two_factor {
                    return Err(UserError::TwoFactorEnabled);
                }
                Ok(vec![UserEvent::UserTwoFactorEnabled {
                    enabled_by: caller.actor,
                    enabled_at: at,
                }])
            }
            UserCommand::DisableTwoFactor { reason } => self.disable_two_factor(caller, at, reason),
            UserCommand::EndSessions { reason } => {
                if !self.is_self(&caller) && !caller.acts_as(Role::Admin) {
                    return Err(UserError::MissingRole {
                        action: "end another user's sessions",
                        roles: "admins",
                    });
                }
                check_reason(reason.as_deref())?;
                Ok(vec![UserEvent::UserSessionsEnded {
                    reason,
                    ended_by: caller.actor,
                    ended_at: at,
                }])
            }
            UserCommand::SetNotifications { email } => {
                if !self.is_self(&caller) && !caller.acts_as(Role::Admin) {
                    return Err(UserError::MissingRole {
                        action: "choose another user's notifications",
                        roles: "admins",
                    });
                }
                if email == self.email_notifications {
                    return Ok(Vec::new());
                }
                Ok(vec![UserEvent::UserNotificationsChanged {
                    email,
                    changed_by: caller.actor,
                    changed_at: at,
                }])
            }
            UserCommand::Erase => {
                if !caller.acts_as(Role::Admin) {
                    return Err(MANAGE);
                }
                if self.status == UserStatus::Active {
                    return Err(UserError::StillActive);
                }
                Ok(vec![UserEvent::UserErased {
                    erased_by: caller.actor,
                    erased_at: at,
                }])
            }
            UserCommand::ReplaceRecoveryCodes => {
                self.ensure_self(&caller, "replace their recovery codes")?;
                if !self.two_factor {
                    return Err(UserError::TwoFactorNotEnabled);
                }
                Ok(vec![UserEvent::UserRecoveryCodesReplaced {
                    replaced_by: caller.actor,
                    replaced_at: at,
                }])
            }
        }
    }

    fn ensure_self(&self, caller: &Caller, action: &'static str) -> Result<(), UserError> {
        if self.is_self(caller) {
            Ok(())
        } else {
            Err(UserError::NotSelf { action })
        }
    }

    fn disable_two_factor(
        &self,
        caller: Caller,
        at: DateTime<Utc>,
        reason: Option<String>,
    ) -> Result<Vec<UserEvent>, UserError> {
        if !self.is_self(&caller) && !caller.acts_as(Role::Admin) {
            return Err(UserError::MissingRole {
                action: "turn off another user's two-factor sign-in",
                roles: "admins",
            });
        }
        check_reason(reason.as_deref())?;
        if !self.two_factor {
            return Ok(Vec::new());
        }
        Ok(vec![UserEvent::UserTwoFactorDisabled {
            reason,
            disabled_by: caller.actor,
            disabled_at: at,
        }])
    }

    fn is_self(&self, caller: &Caller) -> bool {
        caller.person().is_some() && caller.person() == self.id
    }

    fn create(
        &self,
        caller: Caller,
        at: DateTime<Utc>,
        create: CreateUser,
    ) -> Result<Vec<UserEvent>, UserError> {
        if !caller.acts_as(Role::Admin) {
            return Err(MANAGE);
        }
        if self.id.is_some() {
            return Err(UserError::AlreadyExists);
        }
        let mut issues = Vec::new();
        check_email(&create.email, "email", &mut issues);
        check_display_name(&create.display_name, "display_name", &mut issues);
        check_groups(&create.groups, "groups", &mut issues);
        if !issues.is_empty() {
            return Err(UserError::Invalid { issues });
        }
        Ok(vec![UserEvent::UserCreated {
            user_id: create.user_id,
            tenant_id: caller.tenant_id,
            email: create.email,
            display_name: create.display_name,
            roles: canonical(create.roles),
            groups: canonical(create.groups),
            created_by: caller.actor,
            created_at: at,
        }])
    }

    fn change_roles(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        roles: Vec<Role>,
    ) -> Result<Vec<UserEvent>, UserError> {
        if !caller.acts_as(Role::Admin) {
            return Err(MANAGE);
        }
        let roles = canonical(roles);
        let (granted, revoked) = difference(&self.roles, &roles);
        if granted.is_empty() && revoked.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_self(caller) && revoked.contains(&Role::Admin) {
            return Err(UserError::SelfLockout {
                action: "revoke the admin role from",
            });
        }
        Ok(vec![UserEvent::UserRolesChanged {
            roles,
            granted,
            revoked,
            changed_by: caller.actor.clone(),
            changed_at: at,
        }])
    }

    fn change_groups(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        groups: Vec<String>,
    ) -> Result<Vec<UserEvent>, UserError> {
        if !caller.acts_as(Role::Admin) {
            return Err(MANAGE);
        }
        let mut issues = Vec::new();
        check_groups(&groups, "groups", &mut issues);
        if !issues.is_empty() {
            return Err(UserError::Invalid { issues });
        }
        let groups = canonical(groups);
        let (added, removed) = difference(&self.groups, &groups);
        if added.is_empty() && removed.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![UserEvent::UserGroupsChanged {
            groups,
            added,
            removed,
            changed_by: caller.actor.clone(),
            changed_at: at,
        }])
    }

    fn deactivate(
        &self,
        caller: &Caller,
        at: DateTime<Utc>,
        reason: Option<String>,
    ) -> Result<Vec<UserEvent>, UserError> {
        if !caller.acts_as(Role::Admin) {
            return Err(MANAGE);
        }
        if self.is_self(caller) {
            return Err(UserError::SelfLockout {
                action: "deactivate",
            });
        }
        check_reason(reason.as_deref())?;
        if self.status == UserStatus::Deactivated {
            return Ok(Vec::new());
        }
        Ok(vec![UserEvent::UserDeactivated {
            reason,
            deactivated_by: caller.actor.clone(),
            deactivated_at: at,
        }])
    }
}

/// Problems with a free-text reason: at most [`text::MAX_REASON`] characters.
fn check_reason(reason: Option<&str>) -> Result<(), UserError> {
    let Some(reason) = reason else {
        return Ok(());
    };
    let mut issues = Vec::new();
    text::check_length(reason, "reason", text::MAX_REASON, &mut issues);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(UserError::Invalid { issues })
    }
}

impl Decide for User {
    fn decide(&self, command: Command<UserCommand>) -> Result<Vec<UserEvent>, UserError> {
        User::decide(self, command)
    }
}

impl Aggregate for User {
    const TYPE: &'static str = USER_AGGREGATE_TYPE;
    type Command = Command<UserCommand>;
    type Event = UserEvent;
    type Error = UserError;
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
            UserEvent::UserCreated {
                user_id,
                tenant_id,
                roles,
                groups,
                ..
            } => {
                *self = User {
                    id: Some(user_id),
                    tenant_id,
                    roles,
                    groups,
                    status: UserStatus::Active,
                    two_factor: false,
                    email_notifications: EmailNotifications::All,
                    erased: false,
                };
            }
            UserEvent::UserRolesChanged { roles, .. } => self.roles = roles,
            UserEvent::UserGroupsChanged { groups, .. } => self.groups = groups,
            UserEvent::UserPasswordChanged { .. } => {}
            UserEvent::UserDeactivated { .. } => self.status = UserStatus::Deactivated,
            UserEvent::UserReactivated { .. } => self.status = UserStatus::Active,
            UserEvent::UserTwoFactorEnabled { .. } => self.two_factor = true,
            UserEvent::UserTwoFactorDisabled { .. } => self.two_factor = false,
            UserEvent::UserRecoveryCodesReplaced { .. } => {}
            UserEvent::UserNotificationsChanged { email, .. } => self.email_notifications = email,
            UserEvent::UserSessionsEnded { .. } => {}
            UserEvent::UserErased { .. } => self.erased = true,
        }
    }
}
