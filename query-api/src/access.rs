//! Role checks of the query API.

use api_common::{ApiError, Claims};
use event_schemas::Role;

/// Operators and auditors (and admins) see every task and approval of their tenant; everyone
/// else sees those offered to them.
pub(crate) fn sees_all_work(claims: &Claims) -> bool {
    claims.has_role(Role::Operator) || claims.has_role(Role::Auditor)
}

/// Reports: operators, designers and auditors (and admins).
pub(crate) fn require_reports(claims: &Claims) -> Result<(), ApiError> {
    if claims.has_role(Role::Operator)
        || claims.has_role(Role::Designer)
        || claims.has_role(Role::Auditor)
    {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "reports are for operators, designers, auditors and admins",
        ))
    }
}

/// The audit trail: auditors (and admins).
pub(crate) fn require_auditor(claims: &Claims) -> Result<(), ApiError> {
    if claims.has_role(Role::Auditor) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "the audit trail is for auditors and admins",
        ))
    }
}
