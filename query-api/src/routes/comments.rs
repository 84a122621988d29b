//! The comments of tasks and approvals (`GET /api/v1/tasks/{id}/comments`,
//! `GET /api/v1/approvals/{id}/comments`, routed by their own modules): what both read.
//!
//! Texts are stored sealed for their authors (DESIGN §2, `event_schemas::personal`) and opened
//! as they are served, with keys read for the page: an erased author's comments read as erased
//! at once, without a change to the read models.

use api_common::{ApiError, Claims};
use chrono::{DateTime, Utc};
use event_schemas::Actor;
use event_store::personal::Keys;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::page::{self, Page};
use crate::params;
use crate::state::QueryState;

/// A comment on a task or an approval.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommentEntry {
    /// Its place among the events of its task or approval (the cursor pages by it).
    pub sequence: i64,
    /// `user:UUID` or `service:NAME`.
    pub author: String,
    /// The author's user id; `null` when a service wrote it.
    pub author_id: Option<Uuid>,
    /// `null` once erased.
    pub text: Option<String>,
    /// The author was erased: the text is gone for good.
    pub erased: bool,
    pub commented_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CommentParams {
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// What comments are read of.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Commented {
    Task,
    Approval,
}

impl Commented {
    /// The resource's table, its comments' table and their key column, and its name in a 404.
    fn tables(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Commented::Task => ("tasks", "task_comments", "task_id", "task"),
            Commented::Approval => ("approvals", "approval_comments", "approval_id", "approval"),
        }
    }
}

/// A page of the comments of the task or approval `id`, oldest first, when the caller may see
/// it (`visible` is the resource's own read check, on its table aliased `t`): otherwise the
/// same 404 as its `GET`.
pub(crate) async fn page(
    state: &QueryState,
    of: Commented,
    claims: &Claims,
    id: Uuid,
    params: CommentParams,
    visible: fn(&mut QueryBuilder<'_, Postgres>, &Claims),
) -> Result<Page<CommentEntry>, ApiError> {
    let limit = params::limit(params.limit)?;
    let after: Option<i64> = page::decode(params.cursor.as_deref())?;
    let (resources, table, key, noun) = of.tables();
    let mut conn = state.pool.acquire().await?;
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "select exists (select from {resources} t where tenant_id = "
    ));
    sql.push_bind(&claims.tid).push(" and id = ").push_bind(id);
    visible(&mut sql, claims);
    sql.push(")");
    let seen: bool = sql.build_query_scalar().fetch_one(&mut *conn).await?;
    if !seen {
        return Err(ApiError::not_found(format!("no {noun} {id}")));
    }
    let rows: Vec<(i64, String, String, DateTime<Utc>)> = sqlx::query_as(&format!(
        "select sequence, author, text, commented_at from {table} \
         where {key} = $1 and tenant_id = $2 and sequence > $3 \
         order by sequence limit $4"
    ))
    .bind(id)
    .bind(&claims.tid)
    // sequences start at 1
    .bind(after.unwrap_or(0))
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    // comments written before sealing existed are plain text: those of an erased author are
    // withheld all the same
    let author_ids = |author: &str| match author.parse::<Actor>() {
        Ok(Actor::User(id)) => Some(id),
        _ => None,
    };
    // a text opens with its author's key only
    let mut persons: Vec<Uuid> = rows
        .iter()
        .filter_map(|(_, author, _, _)| author_ids(author))
        .collect();
    persons.sort_unstable();
    persons.dedup();
    let keys = Keys::read(&mut conn, &claims.tid, &persons).await?;
    let items = rows
        .into_iter()
        .map(|(sequence, author, text, commented_at)| {
            let author_id = author_ids(&author);
            let text = match author_id {
                Some(id) if keys.erased(id) => None,
                _ => keys.open(&text, &claims.tid, author_id),
            };
            CommentEntry {
                sequence,
                author,
                author_id,
                erased: text.is_none(),
                text,
                commented_at,
            }
        })
        .collect();
    Ok(page::page(items, limit, |c: &CommentEntry| c.sequence))
}
