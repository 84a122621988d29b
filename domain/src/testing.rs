//! Shared fixtures for the unit tests.

use chrono::{DateTime, TimeDelta, Utc};
use event_schemas::Role;
use uuid::Uuid;

use crate::caller::Caller;

/// The instant commands are sent at in tests.
pub(crate) const T0: DateTime<Utc> = DateTime::from_timestamp_nanos(1_795_000_000_000_000_000);

/// `T0` plus `hours`.
pub(crate) fn later(hours: i64) -> DateTime<Utc> {
    T0 + TimeDelta::hours(hours)
}

pub(crate) const TENANT: &str = "acme";

pub(crate) fn designer() -> Caller {
    Caller::user(
        TENANT,
        Uuid::from_u128(0xD0),
        [Role::Designer],
        Vec::<String>::new(),
    )
}

pub(crate) fn operator() -> Caller {
    Caller::user(
        TENANT,
        Uuid::from_u128(0x0F),
        [Role::Operator],
        Vec::<String>::new(),
    )
}

pub(crate) fn admin() -> Caller {
    Caller::user(
        TENANT,
        Uuid::from_u128(0xAD),
        [Role::Admin],
        Vec::<String>::new(),
    )
}

pub(crate) fn auditor() -> Caller {
    Caller::user(
        TENANT,
        Uuid::from_u128(0xA0),
        [Role::Auditor],
        Vec::<String>::new(),
    )
}

pub(crate) fn member(user: Uuid) -> Caller {
    Caller::user(TENANT, user, [Role::Member], Vec::<String>::new())
}

pub(crate) fn member_of(user: Uuid, groups: &[&str]) -> Caller {
    Caller::user(TENANT, user, [Role::Member], groups.iter().copied())
}

pub(crate) fn orchestrator() -> Caller {
    Caller::orchestrator(TENANT)
}

pub(crate) fn elsewhere(mut caller: Caller) -> Caller {
    caller.tenant_id = "globex".into();
    caller
}
