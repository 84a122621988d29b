use cqrs_es::test::TestFramework;
use event_schemas::{Role, TenantEvent, UserEvent};
use uuid::Uuid;

use super::*;
use crate::caller::{Caller, Command};
use crate::error::{IssueCode, Rejection};
use crate::testing::{T0, admin, elsewhere, member};

type GivenUser = TestFramework<User>;
type GivenTenant = TestFramework<Tenant>;

const ANN: Uuid = Uuid::from_u128(0xA11);

fn cmd<C>(caller: Caller, command: C) -> Command<C> {
    Command::new(caller, T0, command)
}

fn create_ann() -> UserCommand {
    UserCommand::Create(CreateUser {
        user_id: ANN,
        email: "Ann@Example.com".into(),
        display_name: "Ann Example".into(),
        roles: vec![Role::Operator, Role::Member, Role::Member],
        groups: vec!["legal".into(), "clerks".into()],
    })
}

fn ann_created() -> UserEvent {
    UserEvent::UserCreated {
        user_id: ANN,
        tenant_id: "acme".into(),
        email: "Ann@Example.com".into(),
        display_name: "Ann Example".into(),
        roles: vec![Role::Operator, Role::Member],
        groups: vec!["clerks".into(), "legal".into()],
        created_by: admin().actor,
        created_at: T0,
    }
}

fn default_admin() -> Caller {
    let mut caller = admin();
    caller.tenant_id = DEFAULT_TENANT.into();
    caller
}

#[test]
fn an_admin_creates_a_user_with_roles_and_groups_as_sorted_sets() {
    GivenUser::with(())
        .given_no_previous_events()
        .when(cmd(admin(), create_ann()))
        .then_expect_events(vec![ann_created()]);
}

#[test]
fn a_member_may_not_create_users() {
    GivenUser::with(())
        .given_no_previous_events()
        .when(cmd(member(Uuid::from_u128(9)), create_ann()))
        .then_expect_error(UserError::MissingRole {
            action: "manage users",
            roles: "admins",
        });
}

#[test]
fn a_user_needs_an_email_address_and_a_name() {
    let command = UserCommand::Create(CreateUser {
        user_id: ANN,
        email: "not an email".into(),
        display_name: " ".into(),
        roles: vec![],
        groups: vec![" padded ".into()],
    });
    let error = GivenUser::with(())
        .given_no_previous_events()
        .when(cmd(admin(), command))
        .inspect_result()
        .unwrap_err();
    let fields: Vec<_> = error
        .issues()
        .iter()
        .map(|i| i.field.clone().unwrap())
        .collect();
    assert_eq!(fields, ["email", "display_name", "groups[0]"]);
    assert_eq!(error.code(), "invalid_command");
}

#[test]
fn granting_and_revoking_roles_records_both_sides() {
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(
            admin(),
            UserCommand::ChangeRoles {
                roles: vec![Role::Member, Role::Designer],
            },
        ))
        .then_expect_events(vec![UserEvent::UserRolesChanged {
            roles: vec![Role::Designer, Role::Member],
            granted: vec![Role::Designer],
            revoked: vec![Role::Operator],
            changed_by: admin().actor,
            changed_at: T0,
        }]);
}

#[test]
fn replacing_roles_or_groups_with_the_same_set_changes_nothing() {
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(
            admin(),
            UserCommand::ChangeRoles {
                roles: vec![Role::Member, Role::Operator, Role::Member],
            },
        ))
        .then_expect_events(vec![]);
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(
            admin(),
            UserCommand::ChangeGroups {
                groups: vec!["legal".into(), "clerks".into()],
            },
        ))
        .then_expect_events(vec![]);
}

#[test]
fn changing_groups_records_what_was_added_and_removed() {
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(
            admin(),
            UserCommand::ChangeGroups {
                groups: vec!["managers".into(), "clerks".into()],
            },
        ))
        .then_expect_events(vec![UserEvent::UserGroupsChanged {
            groups: vec!["clerks".into(), "managers".into()],
            added: vec!["managers".into()],
            removed: vec!["legal".into()],
            changed_by: admin().actor,
            changed_at: T0,
        }]);
}

#[test]
fn another_tenants_user_looks_missing() {
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(
            elsewhere(admin()),
            UserCommand::ChangeRoles { roles: vec![] },
        ))
        .then_expect_error(UserError::NotFound);
}

#[test]
fn an_admin_cannot_revoke_their_own_admin_role_nor_deactivate_themselves() {
    let me = admin().user_id.unwrap();
    let created = UserEvent::UserCreated {
        user_id: me,
        tenant_id: "acme".into(),
        email: "root@example.com".into(),
        display_name: "Root".into(),
        roles: vec![Role::Admin],
        groups: vec![],
        created_by: admin().actor,
        created_at: T0,
    };
    GivenUser::with(())
        .given(vec![created.clone()])
        .when(cmd(
            admin(),
            UserCommand::ChangeRoles {
                roles: vec![Role::Member],
            },
        ))
        .then_expect_error(UserError::SelfLockout {
            action: "revoke the admin role from",
        });
    GivenUser::with(())
        .given(vec![created])
        .when(cmd(admin(), UserCommand::Deactivate { reason: None }))
        .then_expect_error(UserError::SelfLockout {
            action: "deactivate",
        });
}

#[test]
fn users_change_their_own_password_and_admins_reset_others() {
    let ann = Caller::user("acme", ANN, [Role::Member], Vec::<String>::new());
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(ann, UserCommand::ChangePassword))
        .then_expect_events(vec![UserEvent::UserPasswordChanged {
            changed_by: event_schemas::Actor::User(ANN),
            changed_at: T0,
        }]);
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(member(Uuid::from_u128(9)), UserCommand::ChangePassword))
        .then_expect_error(UserError::MissingRole {
            action: "change another user's password",
            roles: "admins",
        });
}

fn ann() -> Caller {
    Caller::user("acme", ANN, [Role::Member], Vec::<String>::new())
}

fn two_factor_enabled() -> UserEvent {
    UserEvent::UserTwoFactorEnabled {
        enabled_by: event_schemas::Actor::User(ANN),
        enabled_at: T0,
    }
}

#[test]
fn only_the_user_turns_on_two_factor_sign_in_and_only_once() {
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(ann(), UserCommand::EnableTwoFactor))
        .then_expect_events(vec![two_factor_enabled()]);
    // not even an admin: the authenticator is the user's
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(admin(), UserCommand::EnableTwoFactor))
        .then_expect_error(UserError::NotSelf {
            action: "turn on two-factor sign-in",
        });
    GivenUser::with(())
        .given(vec![ann_created(), two_factor_enabled()])
        .when(cmd(ann(), UserCommand::EnableTwoFactor))
        .then_expect_error(UserError::TwoFactorEnabled);
    // another tenant's user is not found
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(elsewhere(ann()), UserCommand::EnableTwoFactor))
        .then_expect_error(UserError::NotFound);
}

#[test]
fn two_factor_sign_in_is_turned_off_by_the_user_or_an_admin_and_recorded_once() {
    let disabled =
        |by: event_schemas::Actor, reason: Option<&str>| UserEvent::UserTwoFactorDisabled {
            reason: reason.map(Into::into),
            disabled_by: by,
            disabled_at: T0,
        };
    GivenUser::with(())
        .given(vec![ann_created(), two_factor_enabled()])
        .when(cmd(ann(), UserCommand::DisableTwoFactor { reason: None }))
        .then_expect_events(vec![disabled(event_schemas::Actor::User(ANN), None)]);
    GivenUser::with(())
        .given(vec![ann_created(), two_factor_enabled()])
        .when(cmd(
            admin(),
            UserCommand::DisableTwoFactor {
                reason: Some("lost the phone".into()),
            },
        ))
        .then_expect_events(vec![disabled(admin().actor, Some("lost the phone"))]);
    GivenUser::with(())
        .given(vec![ann_created(), two_factor_enabled()])
        .when(cmd(
            member(Uuid::from_u128(9)),
            UserCommand::DisableTwoFactor { reason: None },
        ))
        .then_expect_error(UserError::MissingRole {
            action: "turn off another user's two-factor sign-in",
            roles: "admins",
        });
    // off already: nothing to record
    GivenUser::with(())
        .given(vec![
            ann_created(),
            two_factor_enabled(),
            disabled(event_schemas::Actor::User(ANN), None),
        ])
        .when(cmd(ann(), UserCommand::DisableTwoFactor { reason: None }))
        .then_expect_events(vec![]);
}

#[test]
fn recovery_codes_are_replaced_by_the_user_while_two_factor_sign_in_is_on() {
    GivenUser::with(())
        .given(vec![ann_created(), two_factor_enabled()])
        .when(cmd(ann(), UserCommand::ReplaceRecoveryCodes))
        .then_expect_events(vec![UserEvent::UserRecoveryCodesReplaced {
            replaced_by: event_schemas::Actor::User(ANN),
            replaced_at: T0,
        }]);
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(ann(), UserCommand::ReplaceRecoveryCodes))
        .then_expect_error(UserError::TwoFactorNotEnabled);
    GivenUser::with(())
        .given(vec![ann_created(), two_factor_enabled()])
        .when(cmd(admin(), UserCommand::ReplaceRecoveryCodes))
        .then_expect_error(UserError::NotSelf {
            action: "replace their recovery codes",
        });
}

#[test]
fn the_user_or_an_admin_chooses_which_notifications_go_by_email_and_a_repeat_changes_nothing() {
    use event_schemas::identity::EmailNotifications;
    let changed = |email, by| UserEvent::UserNotificationsChanged {
        email,
        changed_by: by,
        changed_at: T0,
    };
    let direct = UserCommand::SetNotifications {
        email: EmailNotifications::Direct,
    };
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(ann(), direct.clone()))
        .then_expect_events(vec![changed(
            EmailNotifications::Direct,
            event_schemas::Actor::User(ANN),
        )]);
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(
            admin(),
            UserCommand::SetNotifications {
                email: EmailNotifications::None,
            },
        ))
        .then_expect_events(vec![changed(EmailNotifications::None, admin().actor)]);
    GivenUser::with(())
        .given(vec![
            ann_created(),
            changed(EmailNotifications::Direct, admin().actor),
        ])
        .when(cmd(ann(), direct.clone()))
        .then_expect_events(vec![]);
    // everything is the default
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(
            ann(),
            UserCommand::SetNotifications {
                email: EmailNotifications::All,
            },
        ))
        .then_expect_events(vec![]);
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(member(Uuid::from_u128(9)), direct))
        .then_expect_error(UserError::MissingRole {
            action: "choose another user's notifications",
            roles: "admins",
        });
}

#[test]
fn an_admin_or_the_user_ends_their_sessions_with_a_reason_each_time() {
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(
            admin(),
            UserCommand::EndSessions {
                reason: Some("laptop stolen".into()),
            },
        ))
        .then_expect_events(vec![UserEvent::UserSessionsEnded {
            reason: Some("laptop stolen".into()),
            ended_by: admin().actor,
            ended_at: T0,
        }]);
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(ann(), UserCommand::EndSessions { reason: None }))
        .then_expect_events(vec![UserEvent::UserSessionsEnded {
            reason: None,
            ended_by: event_schemas::Actor::User(ANN),
            ended_at: T0,
        }]);
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(
            member(Uuid::from_u128(9)),
            UserCommand::EndSessions { reason: None },
        ))
        .then_expect_error(UserError::MissingRole {
            action: "end another user's sessions",
            roles: "admins",
        });
}

#[test]
fn a_snapshot_taken_before_two_factor_sign_in_existed_still_loads() {
    let old = serde_json::json!({
        "id": ANN, "tenant_id": "acme", "roles": ["member"], "groups": [], "status": "active"
    });
    let user: User = serde_json::from_value(old).unwrap();
    assert!(!user.two_factor());
    assert_eq!(user.id(), Some(ANN));
}

#[test]
fn deactivation_and_reactivation_are_recorded_once() {
    let deactivated = UserEvent::UserDeactivated {
        reason: Some("left".into()),
        deactivated_by: admin().actor,
        deactivated_at: T0,
    };
    GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(
            admin(),
            UserCommand::Deactivate {
                reason: Some("left".into()),
            },
        ))
        .then_expect_events(vec![deactivated.clone()]);
    GivenUser::with(())
        .given(vec![ann_created(), deactivated.clone()])
        .when(cmd(admin(), UserCommand::Deactivate { reason: None }))
        .then_expect_events(vec![]);
    GivenUser::with(())
        .given(vec![ann_created(), deactivated])
        .when(cmd(admin(), UserCommand::Reactivate))
        .then_expect_events(vec![UserEvent::UserReactivated {
            reactivated_by: admin().actor,
            reactivated_at: T0,
        }]);
}

fn ann_deactivated() -> UserEvent {
    UserEvent::UserDeactivated {
        reason: None,
        deactivated_by: admin().actor,
        deactivated_at: T0,
    }
}

#[test]
fn an_admin_erases_a_deactivated_user() {
    GivenUser::with(())
        .given(vec![ann_created(), ann_deactivated()])
        .when(cmd(admin(), UserCommand::Erase))
        .then_expect_events(vec![UserEvent::UserErased {
            erased_by: admin().actor,
            erased_at: T0,
        }]);
}

#[test]
fn an_active_user_is_not_erased_and_only_admins_erase() {
    let result = GivenUser::with(())
        .given(vec![ann_created()])
        .when(cmd(admin(), UserCommand::Erase))
        .inspect_result();
    assert_eq!(result, Err(UserError::StillActive));
    assert_eq!(UserError::StillActive.code(), "user_active");
    let result = GivenUser::with(())
        .given(vec![ann_created(), ann_deactivated()])
        .when(cmd(member(Uuid::from_u128(9)), UserCommand::Erase))
        .inspect_result();
    assert_eq!(
        result.map_err(|e| e.kind()),
        Err(crate::error::ErrorKind::Forbidden)
    );
    let result = GivenUser::with(())
        .given(vec![ann_created(), ann_deactivated()])
        .when(cmd(elsewhere(admin()), UserCommand::Erase))
        .inspect_result();
    assert_eq!(result, Err(UserError::NotFound));
}

#[test]
fn an_erased_user_takes_no_command_again() {
    let erased = UserEvent::UserErased {
        erased_by: admin().actor,
        erased_at: T0,
    };
    for command in [
        UserCommand::Erase,
        UserCommand::Reactivate,
        UserCommand::ChangeRoles {
            roles: vec![Role::Member],
        },
        UserCommand::EndSessions { reason: None },
    ] {
        let result = GivenUser::with(())
            .given(vec![ann_created(), ann_deactivated(), erased.clone()])
            .when(cmd(admin(), command))
            .inspect_result();
        assert_eq!(result, Err(UserError::Erased));
    }
    assert_eq!(UserError::Erased.kind(), crate::error::ErrorKind::Conflict);
}

#[test]
fn an_admin_of_the_default_tenant_creates_tenants() {
    GivenTenant::with(())
        .given_no_previous_events()
        .when(cmd(
            default_admin(),
            TenantCommand::Create {
                tenant_id: "acme".into(),
                name: "Acme".into(),
            },
        ))
        .then_expect_events(vec![TenantEvent::TenantCreated {
            tenant_id: "acme".into(),
            name: "Acme".into(),
            created_by: admin().actor,
            created_at: T0,
        }]);
}

#[test]
fn admins_of_other_tenants_may_not_create_tenants() {
    GivenTenant::with(())
        .given_no_previous_events()
        .when(cmd(
            admin(),
            TenantCommand::Create {
                tenant_id: "globex".into(),
                name: "Globex".into(),
            },
        ))
        .then_expect_error(TenantError::Forbidden);
}

#[test]
fn a_tenant_is_created_once() {
    let created = TenantEvent::TenantCreated {
        tenant_id: "acme".into(),
        name: "Acme".into(),
        created_by: admin().actor,
        created_at: T0,
    };
    GivenTenant::with(())
        .given(vec![created])
        .when(cmd(
            default_admin(),
            TenantCommand::Create {
                tenant_id: "acme".into(),
                name: "Acme again".into(),
            },
        ))
        .then_expect_error(TenantError::AlreadyExists);
}

#[test]
fn tenant_ids_are_lowercase_slugs() {
    for good in ["acme", "a1", "acme-eu-2"] {
        assert!(valid_tenant_id(good), "{good}");
    }
    for bad in ["a", "Acme", "acme/eu", "-acme", "acme-", "ac me", ""] {
        assert!(!valid_tenant_id(bad), "{bad}");
    }
    let error = Tenant::default()
        .decide(cmd(
            default_admin(),
            TenantCommand::Create {
                tenant_id: "Acme/EU".into(),
                name: "".into(),
            },
        ))
        .unwrap_err();
    let codes: Vec<_> = error.issues().iter().map(|i| i.code).collect();
    assert_eq!(codes, [IssueCode::InvalidKey, IssueCode::Empty]);
}

#[test]
fn passwords_are_checked_for_length_only() {
    let mut issues = Vec::new();
    check_password("short", "password", &mut issues);
    check_password("correct horse battery staple", "password", &mut issues);
    check_password(&"x".repeat(MAX_PASSWORD_CHARS + 1), "password", &mut issues);
    let codes: Vec<_> = issues.iter().map(|i| i.code).collect();
    assert_eq!(codes, [IssueCode::InvalidValue, IssueCode::TooLong]);
}

#[test]
fn email_addresses_are_checked_loosely_and_compared_ignoring_case() {
    let mut issues = Vec::new();
    for good in ["a@b.co", "first.last+tag@sub.example.org"] {
        check_email(good, "email", &mut issues);
    }
    assert!(issues.is_empty(), "{issues:?}");
    for bad in [
        "",
        "plain",
        "@example.com",
        "a@b",
        "a b@example.com",
        "a@.com",
    ] {
        let mut issues = Vec::new();
        check_email(bad, "email", &mut issues);
        assert_eq!(issues.len(), 1, "{bad:?}");
    }
    assert_eq!(email_key(" Ann@Example.COM "), "ann@example.com");
}

#[test]
fn a_tenants_own_admins_require_two_factor_sign_in() {
    let created = TenantEvent::TenantCreated {
        tenant_id: "acme".into(),
        name: "Acme".into(),
        created_by: admin().actor,
        created_at: T0,
    };
    let set = |tenant_id: &str, required| TenantCommand::SetTwoFactorPolicy {
        tenant_id: tenant_id.into(),
        required,
    };
    let changed = |caller: Caller| TenantEvent::TenantTwoFactorPolicyChanged {
        required: true,
        changed_by: caller.actor,
        changed_at: T0,
    };
    GivenTenant::with(())
        .given(vec![created.clone()])
        .when(cmd(admin(), set("acme", true)))
        .then_expect_events(vec![changed(admin())]);
    GivenTenant::with(())
        .given(vec![created.clone(), changed(admin())])
        .when(cmd(admin(), set("acme", true)))
        .then_expect_events(vec![]);
    GivenTenant::with(())
        .given(vec![created.clone()])
        .when(cmd(ann(), set("acme", true)))
        .then_expect_error(TenantError::NotItsAdmin);
    // another tenant's, even for the default tenant's admins, is not found
    GivenTenant::with(())
        .given(vec![created])
        .when(cmd(default_admin(), set("acme", true)))
        .then_expect_error(TenantError::NotFound);
    // the default tenant, in a log from before it had a `TenantCreated`
    GivenTenant::with(())
        .given_no_previous_events()
        .when(cmd(default_admin(), set(DEFAULT_TENANT, true)))
        .then_expect_events(vec![changed(default_admin())]);
}
