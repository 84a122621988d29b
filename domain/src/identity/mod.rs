//! Identity: the `Tenant` and `User` aggregates, and the rules for what they may hold.
//!
//! - [`Tenant`] (aggregate id: the tenant id): created by an admin of the [`DEFAULT_TENANT`]
//!   (or the bootstrap service). Tenant ids are lowercase slugs, so they are safe in aggregate
//!   ids (`"{tenant}/{key}"`) and URLs.
//! - [`User`] (aggregate id: a UUID): created and managed by the admins of its tenant. Roles
//!   and groups are replaced as a whole; each change records who granted or revoked what.
//!   An admin may not take their own admin role or deactivate themselves, so a tenant cannot
//!   lock out its last admin by accident.
//!
//! Passwords never enter the domain: the API checks the [`check_password`] policy, hashes,
//! and keeps the hash out of the event log; [`UserCommand::ChangePassword`] only records (and
//! authorizes) the fact. Email uniqueness within a tenant spans aggregates and is enforced by
//! the API's identity store.

mod tenant;
#[cfg(test)]
mod tests;
mod user;

use crate::error::{Issue, IssueCode};
use crate::text;

pub use tenant::{Tenant, TenantCommand, TenantError};
pub use user::{CreateUser, User, UserCommand, UserError, UserStatus};

/// The tenant created on first start; its admins may create further tenants.
pub const DEFAULT_TENANT: &str = "default";

/// The shortest password accepted (OWASP ASVS 2.1.1).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password accepted: long passphrases are welcome, megabytes are not.
pub const MAX_PASSWORD_CHARS: usize = 256;
/// The longest email address (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;

/// Whether `id` is a usable tenant id: 2 to 63 characters of `a-z`, `0-9` and `-`, starting
/// and ending with a letter or digit.
pub fn valid_tenant_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    (2..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Problems with an email address: `local@domain`, no spaces or control characters, a domain
/// with a dot, at most [`MAX_EMAIL_CHARS`]. Deliverability is not checked.
pub fn check_email(email: &str, field: &str, issues: &mut Vec<Issue>) {
    let problem = if email.trim().is_empty() {
        Some((IssueCode::Empty, "the email address is empty"))
    } else if email.chars().count() > MAX_EMAIL_CHARS {
        Some((IssueCode::TooLong, "the email address is too long"))
    } else {
        let shape_ok = match email.rsplit_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && !domain.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        (!shape_ok).then_some((IssueCode::InvalidValue, "not an email address"))
    };
    if let Some((code, message)) = problem {
        issues.push(Issue::field(field, code, message));
    }
}

/// The key under which an email address is unique in its tenant: compared ignoring case.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Problems with a new password: [`MIN_PASSWORD_CHARS`] to [`MAX_PASSWORD_CHARS`] characters.
/// No composition rules (NIST SP 800-63B): length is what makes a password strong.
pub fn check_password(password: &str, field: &str, issues: &mut Vec<Issue>) {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        issues.push(Issue::field(
            field,
            IssueCode::InvalidValue,
            format!("a password has at least {MIN_PASSWORD_CHARS} characters"),
        ));
    } else if chars > MAX_PASSWORD_CHARS {
        issues.push(Issue::field(
            field,
            IssueCode::TooLong,
            format!("a password has at most {MAX_PASSWORD_CHARS} characters"),
        ));
    }
}

/// Problems with a display name: not blank, at most 200 characters.
pub fn check_display_name(name: &str, field: &str, issues: &mut Vec<Issue>) {
    text::check_name(name, field, issues);
}

/// Problems with group names: each not blank, without surrounding spaces, at most 200
/// characters.
pub fn check_groups(groups: &[String], field: &str, issues: &mut Vec<Issue>) {
    for (i, group) in groups.iter().enumerate() {
        let path = format!("{field}[{i}]");
        text::check_name(group, &path, issues);
        if group.trim() != group && !group.trim().is_empty() {
            issues.push(Issue::field(
                path,
                IssueCode::InvalidValue,
                "a group name has no leading or trailing spaces",
            ));
        }
    }
}

/// Sorted and without duplicates: roles and groups are sets, stored in one canonical order.
pub(crate) fn canonical<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items.dedup();
    items
}

/// `(in new but not old, in old but not new)`.
pub(crate) fn difference<T: Ord + Clone>(old: &[T], new: &[T]) -> (Vec<T>, Vec<T>) {
    let added = new.iter().filter(|x| !old.contains(x)).cloned().collect();
    let removed = old.iter().filter(|x| !new.contains(x)).cloned().collect();
    (added, removed)
}
