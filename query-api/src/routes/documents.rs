//! `GET /api/v1/documents[/{id}[/content]]`: the files attached to tasks and workflow
//! instances, and their content.
//!
//! A document is visible to whoever may see what it is attached to: a task's to those who see
//! the task, and to those who see its workflow instance; an instance's to those who see the
//! instance. Operators, auditors and admins see every document of their tenant.

use api_common::{ApiError, Claims, CurrentUser, Json, Params};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use projections::names::{APPROVALS, DOCUMENTS, INSTANCES, TASKS};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::types::Json as SqlJson;
use sqlx::{Postgres, QueryBuilder, Row};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::access;
use crate::consistency::ConsistencyToken;
use crate::page::{self, Page};
use crate::params::{self, Instant};
use crate::routes::ReadProblems;
use crate::routes::tagged;
use crate::state::QueryState;

pub(crate) fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(list_documents))
        .routes(routes!(get_document))
        .routes(routes!(get_document_content))
}

/// A file attached to a task or a workflow instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Document {
    pub id: Uuid,
    /// The task it is attached to; `null` when attached to the instance itself.
    pub task_id: Option<Uuid>,
    /// The instance it belongs to (its own or its task's); `null` for an ad-hoc task's.
    pub workflow_instance_id: Option<Uuid>,
    pub name: String,
    pub media_type: String,
    /// Bytes.
    pub size: i64,
    /// The content's SHA-256 digest, hex (also the content's `ETag`).
    pub sha256: String,
    /// `user:UUID` or `service:NAME`.
    pub attached_by: String,
    pub attached_at: DateTime<Utc>,
    pub removed_by: Option<String>,
    /// Set once removed: the document is then listed only with `include_removed=true`, and
    /// its content is gone from the API (410).
    pub removed_at: Option<DateTime<Utc>>,
    pub removal_reason: Option<String>,
    /// 1 once attached, 2 once removed (also the `ETag`).
    pub version: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// The documents of this workflow instance: its own and its tasks'.
    workflow_instance_id: Option<Uuid>,
    /// The documents of this task.
    task_id: Option<Uuid>,
    /// Removed documents too (default false).
    include_removed: Option<bool>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The read models a caller's document queries read: the documents, and for one who does not
/// see all work the tasks, instances and approvals that decide what they see.
fn read_models(claims: &Claims) -> &'static [&'static str] {
    if access::sees_all_work(claims) {
        &[DOCUMENTS]
    } else {
        &[DOCUMENTS, TASKS, INSTANCES, APPROVALS]
    }
}

/// Restricts `sql` to the documents `d` that `claims` may see.
fn visible(sql: &mut QueryBuilder<'_, Postgres>, claims: &Claims) {
    if access::sees_all_work(claims) {
        return;
    }
    sql.push(
        " and ((d.task_id is not null and exists (select from tasks k \
         where k.id = d.task_id and k.tenant_id = d.tenant_id",
    );
    access::push_task_offered(sql, claims, "k.");
    sql.push(
        ")) or (d.workflow_instance_id is not null and exists (select from workflow_instances t \
         where t.id = d.workflow_instance_id and t.tenant_id = d.tenant_id",
    );
    access::push_instance_visible(sql, claims);
    sql.push(")))");
}

/// Lists documents, newest first: a task's (`task_id`), an instance's with its tasks'
/// (`workflow_instance_id`), or every one the caller may see.
#[utoipa::path(get, path = "/api/v1/documents", tag = "documents",
    params(ListParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the document read model has passed this token")),
    responses(
        (status = 200, description = "A page of documents, newest first", body = Page<Document>),
        (status = 422, description = "A parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant))]
async fn list_documents(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<ListParams>,
) -> Result<Json<Page<Document>>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let limit = params::limit(params.limit)?;
    let after: Option<(Instant, Uuid)> = page::decode(params.cursor.as_deref())?;
    state.consistent(token, read_models(&claims)).await?;
    let mut sql =
        QueryBuilder::<Postgres>::new("select to_jsonb(d) from documents d where d.tenant_id = ");
    sql.push_bind(&claims.tid);
    if let Some(instance) = params.workflow_instance_id {
        sql.push(" and d.workflow_instance_id = ")
            .push_bind(instance);
    }
    if let Some(task) = params.task_id {
        sql.push(" and d.task_id = ").push_bind(task);
    }
    if !params.include_removed.unwrap_or(false) {
        sql.push(" and d.removed_at is null");
    }
    visible(&mut sql, &claims);
    if let Some((Instant(at), id)) = after {
        sql.push(" and (d.attached_at, d.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" order by d.attached_at desc, d.id desc limit ")
        .push_bind(limit + 1);
    let rows: Vec<SqlJson<Document>> = sql.build_query_scalar().fetch_all(&state.pool).await?;
    let rows = rows.into_iter().map(|SqlJson(row)| row).collect();
    Ok(Json(page::page(rows, limit, |d: &Document| {
        (d.attached_at, d.id)
    })))
}

/// A document's name, media type, size, digest and history. `ETag` is its version.
#[utoipa::path(get, path = "/api/v1/documents/{id}", tag = "documents",
    params(("id" = Uuid, Path, description = "The document id"),
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the document read model has passed this token")),
    responses(
        (status = 200, description = "The document", body = Document,
         headers(("ETag" = String, description = "The document's version, quoted"))),
        (status = 304, description = "The version is the one in If-None-Match"),
        (status = 404, description = "No such document in your tenant, or not one you may see", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, document_id = %id))]
async fn get_document(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let id = params::parse_id(&id)?;
    state.consistent(token, read_models(&claims)).await?;
    let mut sql =
        QueryBuilder::<Postgres>::new("select to_jsonb(d) from documents d where d.tenant_id = ");
    sql.push_bind(&claims.tid)
        .push(" and d.id = ")
        .push_bind(id);
    visible(&mut sql, &claims);
    let row: Option<SqlJson<Document>> =
        sql.build_query_scalar().fetch_optional(&state.pool).await?;
    let Some(SqlJson(document)) = row else {
        return Err(ApiError::not_found(format!("no document {id}")));
    };
    Ok(tagged(&headers, document.version, document))
}

/// The content's digest as RFC 9530 gives it.
const REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");

/// A document's content, as uploaded, checked against its digest before it is sent.
///
/// Served as an attachment (`Content-Disposition`) in a sandbox (`Content-Security-Policy`),
/// so a browser neither renders an uploaded page in the API's origin nor guesses its type.
/// `ETag` is the content's SHA-256 digest. One byte range may be asked for (`Range:
/// bytes=0-1023`, `bytes=1024-`, `bytes=-512`; with `If-Range`), as PDF viewers and download
/// managers do: 206 with `Content-Range`. The whole content is checked against its digest
/// either way.
#[utoipa::path(get, path = "/api/v1/documents/{id}/content", tag = "documents",
    params(("id" = Uuid, Path, description = "The document id"),
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the document read model has passed this token")),
    responses(
        (status = 200, description = "The file, with its media type", content_type = "*/*",
         headers(
            ("ETag" = String, description = "The content's SHA-256 digest, hex, quoted"),
            ("Repr-Digest" = String, description = "`sha-256=:BASE64:` (RFC 9530)"),
            ("Content-Disposition" = String, description = "`attachment` with the file name"))),
        (status = 206, description = "The byte range asked for (`Range`)", content_type = "*/*",
         headers(("Content-Range" = String, description = "`bytes FIRST-LAST/LENGTH`"))),
        (status = 304, description = "The digest is the one in If-None-Match"),
        (status = 416, description = "The range starts past the end (code `range_not_satisfiable`; `Content-Range: bytes */LENGTH`)", body = ApiError, content_type = "application/problem+json"),
        (status = 404, description = "No such document in your tenant, or not one you may see", body = ApiError, content_type = "application/problem+json"),
        (status = 410, description = "The document was removed (code `document_removed`)", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The id is not a UUID", body = ApiError, content_type = "application/problem+json"),
        (status = 500, description = "The stored content does not match its digest (code `document_corrupted`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, document_id = %id))]
async fn get_document_content(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let id = params::parse_id(&id)?;
    state.consistent(token, read_models(&claims)).await?;
    let mut sql = QueryBuilder::<Postgres>::new(
        "select d.name, d.media_type, d.sha256, d.removed_at is not null as removed, \
         (select c.content from document_contents c \
          where c.tenant_id = d.tenant_id and c.sha256 = d.sha256) as content \
         from documents d where d.tenant_id = ",
    );
    sql.push_bind(&claims.tid)
        .push(" and d.id = ")
        .push_bind(id);
    visible(&mut sql, &claims);
    let Some(row) = sql.build().fetch_optional(&state.pool).await? else {
        return Err(ApiError::not_found(format!("no document {id}")));
    };
    if row.try_get::<bool, _>("removed")? {
        return Err(ApiError::new(
            StatusCode::GONE,
            "document_removed",
            format!("document {id} was removed"),
        ));
    }
    let name: String = row.try_get("name")?;
    let media_type: String = row.try_get("media_type")?;
    let sha256: String = row.try_get("sha256")?;
    let etag =
        HeaderValue::from_str(&format!("\"{sha256}\"")).unwrap_or(HeaderValue::from_static("\"\""));
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|list| list.split(',').any(|tag| tag.trim() == etag));
    if cached {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let content: Option<Vec<u8>> = row.try_get("content")?;
    let digest = content.as_deref().map(Sha256::digest);
    let Some((content, digest)) = content
        .zip(digest)
        .filter(|(_, d)| hex::encode(d) == sha256)
    else {
        tracing::error!(%sha256, "a document's stored content is missing or does not match its digest");
        metrics::counter!("workledger_document_corrupted_total").increment(1);
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "document_corrupted",
            format!("the stored content of document {id} does not match its digest"),
        ));
    };
    let length = content.len();
    let (status, body, content_range) = match wanted(&headers, length, &etag) {
        Wanted::Whole => (StatusCode::OK, content, None),
        Wanted::Part(range) => {
            let header = format!("bytes {}-{}/{length}", range.start, range.end - 1);
            (
                StatusCode::PARTIAL_CONTENT,
                content[range].to_vec(),
                Some(header),
            )
        }
        Wanted::Unsatisfiable => {
            let mut refused = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the content has {length} bytes: the range asked for starts past its end"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                refused.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(refused);
        }
    };
    metrics::counter!("workledger_document_downloads_total").increment(1);
    let repr_digest = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(digest)
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(value) = content_range.and_then(|r| HeaderValue::from_str(&r).ok()) {
        out.insert(header::CONTENT_RANGE, value);
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&media_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    out.insert(header::ETAG, etag);
    if let Ok(value) = HeaderValue::from_str(&repr_digest) {
        out.insert(REPR_DIGEST, value);
    }
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&name)) {
        out.insert(header::CONTENT_DISPOSITION, value);
    }
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(response)
}

/// What a request asks for of a content of `length` bytes whose `ETag` is `etag`.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Whole,
    Part(std::ops::Range<usize>),
    Unsatisfiable,
}

/// The one byte range of `Range` (RFC 9110 §14.2), unless `If-Range` names another version.
/// What this does not serve as a range (several ranges, another unit, a malformed header) is
/// answered whole, as the RFC allows.
fn wanted(headers: &HeaderMap, length: usize, etag: &HeaderValue) -> Wanted {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Wanted::Whole;
    };
    if headers
        .get(header::IF_RANGE)
        .is_some_and(|validator| validator != etag)
    {
        return Wanted::Whole;
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Wanted::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-').filter(|_| !spec.contains(',')) else {
        return Wanted::Whole;
    };
    let number = |text: &str| -> Option<usize> {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // the last N bytes
        return match number(last) {
            Some(n) if n > 0 && length > 0 => Wanted::Part(length.saturating_sub(n)..length),
            Some(_) => Wanted::Unsatisfiable,
            None => Wanted::Whole,
        };
    }
    let Some(start) = number(first) else {
        return Wanted::Whole;
    };
    let end = match (last.is_empty(), number(last)) {
        (true, _) => None,
        (false, Some(end)) if end >= start => Some(end),
        // not a range (an end before its start, or not a number): ignored
        (false, _) => return Wanted::Whole,
    };
    if start >= length {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part(start..end.map_or(length, |end| (end + 1).min(length)))
}

/// `attachment; filename="..."; filename*=UTF-8''...` (RFC 6266): an ASCII fallback with
/// anything else replaced, and the name itself percent-encoded.
fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::{Wanted, wanted};
    use axum::http::{HeaderMap, HeaderValue, header};

    fn asked(range: &str, if_range: Option<&str>, length: usize) -> Wanted {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        if let Some(validator) = if_range {
            headers.insert(header::IF_RANGE, HeaderValue::from_str(validator).unwrap());
        }
        wanted(&headers, length, &HeaderValue::from_static("\"abc\""))
    }

    #[test]
    fn one_byte_range_is_served_and_anything_else_whole() {
        assert_eq!(asked("bytes=0-3", None, 10), Wanted::Part(0..4));
        assert_eq!(asked("bytes=5-", None, 10), Wanted::Part(5..10));
        assert_eq!(asked("bytes=-4", None, 10), Wanted::Part(6..10));
        assert_eq!(asked("bytes=-40", None, 10), Wanted::Part(0..10));
        assert_eq!(asked("bytes=8-100", None, 10), Wanted::Part(8..10));
        assert_eq!(asked("bytes=10-", None, 10), Wanted::Unsatisfiable);
        assert_eq!(asked("bytes=-0", None, 10), Wanted::Unsatisfiable);
        assert_eq!(asked("bytes=0-", None, 0), Wanted::Unsatisfiable);
        assert_eq!(asked("bytes=0-1,4-5", None, 10), Wanted::Whole);
        assert_eq!(asked("bytes=5-2", None, 10), Wanted::Whole);
        assert_eq!(asked("items=0-1", None, 10), Wanted::Whole);
        assert_eq!(asked("bytes=a-b", None, 10), Wanted::Whole);
        assert_eq!(asked("bytes=0-3", Some("\"abc\""), 10), Wanted::Part(0..4));
        assert_eq!(asked("bytes=0-3", Some("\"old\""), 10), Wanted::Whole);
        assert_eq!(
            wanted(&HeaderMap::new(), 10, &HeaderValue::from_static("x")),
            Wanted::Whole
        );
    }

    use super::content_disposition;

    #[test]
    fn file_names_are_offered_plain_and_percent_encoded() {
        assert_eq!(
            content_disposition("quote 114.pdf"),
            "attachment; filename=\"quote 114.pdf\"; filename*=UTF-8''quote%20114.pdf"
        );
        assert_eq!(
            content_disposition("Angebot \"Müller\".pdf"),
            "attachment; filename=\"Angebot _M_ller_.pdf\"; \
             filename*=UTF-8''Angebot%20%22M%C3%BCller%22.pdf"
        );
    }
}
