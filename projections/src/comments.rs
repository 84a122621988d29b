//! The comments of tasks (`task_comments`, by the tasks projector) and of approvals
//! (`approval_comments`, by the approvals projector): one row per comment event, the text
//! exactly as the event holds it (sealed for its author, DESIGN §2), opened only as the query
//! API serves it.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A comment of a batch.
#[derive(Debug)]
pub(crate) struct Comment<'a> {
    /// The task's or approval's id.
    pub on: Uuid,
    /// The comment event's sequence in its task or approval.
    pub sequence: i64,
    pub tenant_id: &'a str,
    /// The author, as an `Actor` string.
    pub author: String,
    pub text: String,
    pub commented_at: DateTime<Utc>,
}

/// Where comments go: `task_comments` keyed by `task_id`, or `approval_comments` by
/// `approval_id`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Of {
    Tasks,
    Approvals,
}

/// Inserts the comments of a batch, as typed arrays. A comment already there is left as it
/// is: migration 0018 copied the comments made before it from the log, and the projector meets
/// those again.
pub(crate) async fn insert(
    tx: &mut PgConnection,
    of: Of,
    rows: &[Comment<'_>],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let (table, key) = match of {
        Of::Tasks => ("task_comments", "task_id"),
        Of::Approvals => ("approval_comments", "approval_id"),
    };
    let ids: Vec<Uuid> = rows.iter().map(|r| r.on).collect();
    let sequences: Vec<i64> = rows.iter().map(|r| r.sequence).collect();
    let tenant_ids: Vec<&str> = rows.iter().map(|r| r.tenant_id).collect();
    let authors: Vec<&str> = rows.iter().map(|r| r.author.as_str()).collect();
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.commented_at).collect();
    sqlx::query(&format!(
        "insert into {table} ({key}, sequence, tenant_id, author, text, commented_at) \
         select * from unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
                              $6::timestamptz[]) \
         on conflict ({key}, sequence) do nothing"
    ))
    .bind(&ids)
    .bind(&sequences)
    .bind(&tenant_ids)
    .bind(&authors)
    .bind(&texts)
    .bind(&at)
    .execute(tx)
    .await?;
    Ok(())
}
