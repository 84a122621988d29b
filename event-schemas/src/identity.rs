//! Events of the identity aggregates: `tenant` (id: the tenant id, e.g. `"acme"`) and `user`
//! (id: a UUID).
//!
//! Personal data (email address, display name, free-text reasons) appears in these events
//! only, besides the comments of tasks and approvals; every other event names people by user
//! id (DESIGN §2). Those fields are stored sealed with the person's own key
//! ([`crate::personal`]): erasing the key ([`UserEvent::UserErased`]) forgets the person while
//! the rest of the log stays intact.
//!
//! Credentials are *not* events: a password hash written to the log could never be erased, and
//! a leaked log would hand out offline-crackable hashes. The hash lives in the credentials
//! table of the identity read model, written in the same flow as the command; the log records
//! the fact that a password was set or changed, by whom and when ([`UserEvent::UserPasswordChanged`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Actor, Role};

/// The aggregate type of tenants.
pub const TENANT_AGGREGATE_TYPE: &str = "tenant";
/// The aggregate type of users.
pub const USER_AGGREGATE_TYPE: &str = "user";

/// Something that happened to a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TenantEvent {
    /// The tenant exists; its users and workflows are invisible to every other tenant.
    TenantCreated {
        tenant_id: String,
        name: String,
        created_by: Actor,
        created_at: DateTime<Utc>,
    },
    /// Whether the tenant's users must sign in with a second factor: with `required`, a user
    /// without one enrols before their next sign-in, and cannot turn it off themself.
    TenantTwoFactorPolicyChanged {
        required: bool,
        changed_by: Actor,
        changed_at: DateTime<Utc>,
    },
}

event_names!(TenantEvent {
    TenantCreated => "1",
    TenantTwoFactorPolicyChanged => "1",
});

/// Which notifications a user wants by email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailNotifications {
    /// Everything: also work offered to one of their groups.
    #[default]
    All,
    /// Only work for them personally: assigned or handed to them, approvals they decide.
    Direct,
    /// None.
    None,
}

impl EmailNotifications {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EmailNotifications::All => "all",
            EmailNotifications::Direct => "direct",
            EmailNotifications::None => "none",
        }
    }
}

/// Something that happened to a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The user exists in `tenant_id`, active, with these roles and groups. Their password was
    /// set at the same time (the hash is kept out of the log).
    UserCreated {
        user_id: Uuid,
        tenant_id: String,
        /// As given; unique per tenant ignoring case.
        email: String,
        display_name: String,
        roles: Vec<Role>,
        groups: Vec<String>,
        created_by: Actor,
        created_at: DateTime<Utc>,
    },
    /// `changed_by` replaced the user's roles with `roles`: `granted` were added, `revoked`
    /// taken away.
    UserRolesChanged {
        roles: Vec<Role>,
        granted: Vec<Role>,
        revoked: Vec<Role>,
        changed_by: Actor,
        changed_at: DateTime<Utc>,
    },
    /// `changed_by` replaced the user's groups with `groups`: `added` and `removed` are the
    /// difference.
    UserGroupsChanged {
        groups: Vec<String>,
        added: Vec<String>,
        removed: Vec<String>,
        changed_by: Actor,
        changed_at: DateTime<Utc>,
    },
    /// The user's password was changed, by the user or reset by an admin (the hash is not
    /// part of the event).
    UserPasswordChanged {
        changed_by: Actor,
        changed_at: DateTime<Utc>,
    },
    /// The user may no longer sign in; their sessions were ended.
    UserDeactivated {
        reason: Option<String>,
        deactivated_by: Actor,
        deactivated_at: DateTime<Utc>,
    },
    /// A deactivated user may sign in again.
    UserReactivated {
        reactivated_by: Actor,
        reactivated_at: DateTime<Utc>,
    },
    /// The user confirmed an authenticator app: from now on signing in takes a one-time code
    /// (or one of their recovery codes) besides the password. The TOTP key and the recovery
    /// codes are kept out of the log, like password hashes.
    UserTwoFactorEnabled {
        enabled_by: Actor,
        enabled_at: DateTime<Utc>,
    },
    /// Signing in takes the password alone again: turned off by the user, or by an admin for
    /// a user who lost their authenticator and recovery codes.
    UserTwoFactorDisabled {
        reason: Option<String>,
        disabled_by: Actor,
        disabled_at: DateTime<Utc>,
    },
    /// The user's recovery codes were replaced by new ones (the old ones no longer work).
    UserRecoveryCodesReplaced {
        replaced_by: Actor,
        replaced_at: DateTime<Utc>,
    },
    /// Every session the user had was ended (by an admin, or the user), e.g. for a lost
    /// laptop: their access and refresh tokens stop working; their password still signs in.
    UserSessionsEnded {
        reason: Option<String>,
        ended_by: Actor,
        ended_at: DateTime<Utc>,
    },
    /// The person was forgotten: their data key was erased, so their email address, name, the
    /// reasons recorded about them and the comments they wrote no longer open anywhere
    /// ([`crate::personal`]). The user id stays, so the log, the audit trail and who did what
    /// remain whole. Only a deactivated user is erased; nothing happens to them afterwards.
    UserErased {
        erased_by: Actor,
        erased_at: DateTime<Utc>,
    },
    /// Which notifications the user gets by email changed (by the user, or an admin).
    UserNotificationsChanged {
        email: EmailNotifications,
        changed_by: Actor,
        changed_at: DateTime<Utc>,
    },
}

event_names!(UserEvent {
    UserCreated => "1",
    UserRolesChanged => "1",
    UserGroupsChanged => "1",
    UserPasswordChanged => "1",
    UserDeactivated => "1",
    UserReactivated => "1",
    UserTwoFactorEnabled => "1",
    UserTwoFactorDisabled => "1",
    UserRecoveryCodesReplaced => "1",
    UserNotificationsChanged => "1",
    UserSessionsEnded => "1",
    UserErased => "1",
});
