//! Role checks of the query API.

use api_common::{ApiError, Claims};
use event_schemas::{Actor, Role};
use sqlx::{Postgres, QueryBuilder};

/// Operators and auditors (and admins) see every instance, task and approval of their tenant;
/// everyone else sees the work offered to them and the instances it belongs to.
pub(crate) fn sees_all_work(claims: &Claims) -> bool {
    claims.has_role(Role::Operator) || claims.has_role(Role::Auditor)
}

/// ` and ` the condition that `claims` may see a task, on the columns of the task row
/// `alias` (`""` for the query's own table): assigned or offered to them, directly or through
/// one of their groups. Callers who see all work check [`sees_all_work`] first.
pub(crate) fn push_task_offered(
    sql: &mut QueryBuilder<'_, Postgres>,
    claims: &Claims,
    alias: &str,
) {
    sql.push(format!(" and ({alias}assignee = "))
        .push_bind(claims.sub)
        .push(format!(" or {alias}candidate_users @> array["))
        .push_bind(claims.sub)
        .push(format!("]::uuid[] or {alias}candidate_groups && "))
        .push_bind(claims.groups.clone())
        .push("::text[])");
}

/// ` and ` the condition that `claims` may see an approval (row `alias`): they hold, held or
/// cast one of its votes.
pub(crate) fn push_approval_participant(
    sql: &mut QueryBuilder<'_, Postgres>,
    claims: &Claims,
    alias: &str,
) {
    sql.push(format!(" and {alias}participants @> array["))
        .push_bind(claims.sub)
        .push("]::uuid[]");
}

/// ` and ` the condition that `claims` may see the workflow instance `t`: operators, auditors
/// and admins see every instance of their tenant (nothing is pushed); everyone else the ones
/// they started or take part in: a task of the instance they may see, or an approval of it
/// they hold, held or voted on. An instance's variables and timeline (its comments, outputs
/// and decisions) are no business of the rest of the tenant.
pub(crate) fn push_instance_visible(sql: &mut QueryBuilder<'_, Postgres>, claims: &Claims) {
    if sees_all_work(claims) {
        return;
    }
    sql.push(" and (t.started_by = ")
        .push_bind(Actor::User(claims.sub).to_string())
        .push(
            " or exists (select from tasks k \
             where k.workflow_instance_id = t.id and k.tenant_id = t.tenant_id",
        );
    push_task_offered(sql, claims, "k.");
    sql.push(
        ") or exists (select from approvals a \
         where a.workflow_instance_id = t.id and a.tenant_id = t.tenant_id",
    );
    push_approval_participant(sql, claims, "a.");
    sql.push("))");
}

/// The instance rows `t` of a list that `claims` may see (see [`push_instance_visible`]), for
/// a caller who does not see them all: ` left join lateral ... where (...)`, after a `from`
/// of a bounded, ordered scan aliased `t`. Each row is checked with one lookup of its tasks
/// and one of its approvals, as it comes, so a page is found after as many rows as it takes.
/// (The `exists` of [`push_instance_visible`] lets the planner collect every task and approval
/// the caller may see first: 200 ms and more for a member in a tenant of 500,000 instances,
/// docs/benchmarks.md, "Instance lists".)
pub(crate) fn push_instance_visible_rows(sql: &mut QueryBuilder<'_, Postgres>, claims: &Claims) {
    sql.push(
        " left join lateral (select true as seen from tasks k \
         where k.workflow_instance_id = t.id and k.tenant_id = t.tenant_id",
    );
    push_task_offered(sql, claims, "k.");
    sql.push(
        " limit 1) k on true \
         left join lateral (select true as seen from approvals a \
         where a.workflow_instance_id = t.id and a.tenant_id = t.tenant_id",
    );
    push_approval_participant(sql, claims, "a.");
    sql.push(" limit 1) a on true where (t.started_by = ")
        .push_bind(Actor::User(claims.sub).to_string())
        .push(" or k.seen or a.seen)");
}

/// ` and id in (...)`: the instances of `claims`' tenant they started or take part in (see
/// [`push_instance_visible`]), collected through the indexes of each way to take part: the
/// way to list them for a caller who sees few of many, where checking row by row
/// ([`push_instance_visible_rows`]) would pass most of the tenant first.
pub(crate) fn push_instances_taken_part_in(sql: &mut QueryBuilder<'_, Postgres>, claims: &Claims) {
    let tenant = claims.tid.clone();
    sql.push(" and id in (select id from workflow_instances where tenant_id = ")
        .push_bind(tenant.clone())
        .push(" and started_by = ")
        .push_bind(Actor::User(claims.sub).to_string())
        .push(" union all select workflow_instance_id from tasks where tenant_id = ")
        .push_bind(tenant.clone())
        .push(" and assignee = ")
        .push_bind(claims.sub)
        .push(" union all select workflow_instance_id from tasks where tenant_id = ")
        .push_bind(tenant.clone())
        .push(" and candidate_users @> array[")
        .push_bind(claims.sub)
        .push("]::uuid[] union all select workflow_instance_id from tasks where tenant_id = ")
        .push_bind(tenant.clone())
        .push(" and candidate_groups && ")
        .push_bind(claims.groups.clone())
        .push("::text[] union all select workflow_instance_id from approvals where tenant_id = ")
        .push_bind(tenant);
    push_approval_participant(sql, claims, "");
    sql.push(")");
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

/// The tenant's users: admins.
pub(crate) fn require_admin(claims: &Claims) -> Result<(), ApiError> {
    if claims.has_role(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::forbidden("the tenant's users are for its admins"))
    }
}
