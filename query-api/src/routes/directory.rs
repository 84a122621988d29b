//! `GET /api/v1/directory`: the tenant's active people, for everyone signed in, to find the
//! colleague to assign or delegate a task or an approval to. Names, email addresses and groups
//! only: roles, status and history stay with `/api/v1/users` (admins).

use api_common::{ApiError, CurrentUser, FieldError, Json};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder, Row};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::users::IDENTITY;
use crate::consistency::ConsistencyToken;
use crate::page::{self, Page};
use crate::params::{self, Params};
use crate::routes::ReadProblems;
use crate::state::QueryState;

/// The longest search text.
const MAX_QUERY_CHARS: usize = 200;

pub(crate) fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new().routes(routes!(directory))
}

/// A colleague.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Person {
    /// The id to assign or delegate to.
    pub id: Uuid,
    pub display_name: String,
    pub email: String,
    /// The groups tasks and approvals are offered to.
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DirectoryParams {
    /// Part of a name or an email address, ignoring case.
    q: Option<String>,
    /// People in this group.
    group: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Find colleagues
///
/// The active users of the caller's tenant, by name, for anyone signed in: whom to assign or
/// delegate work to.
#[utoipa::path(get, path = "/api/v1/directory", tag = "users", operation_id = "find_people",
    params(DirectoryParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the identity read model has passed this token")),
    responses(
        (status = 200, description = "A page of people, by name", body = Page<Person>),
        (status = 422, description = "A parameter is not valid (named in `errors`)", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant))]
async fn directory(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<DirectoryParams>,
) -> Result<Json<Page<Person>>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let limit = params::limit(params.limit)?;
    let q = params.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS) {
        return Err(ApiError::validation(vec![FieldError::new(
            "q",
            "too_long",
            format!("at most {MAX_QUERY_CHARS} characters"),
        )]));
    }
    let after: Option<(String, Uuid)> = page::decode(params.cursor.as_deref())?;
    state.consistent(token, &[IDENTITY]).await?;
    let mut sql = QueryBuilder::<Postgres>::new(
        "select user_id, display_name, email, groups, lower(display_name) as name_key \
         from identity_users where status = 'active' and tenant_id = ",
    );
    sql.push_bind(&claims.tid);
    if let Some(q) = q {
        let pattern = format!("%{}%", like_escaped(&q.to_lowercase()));
        sql.push(" and (lower(display_name) like ")
            .push_bind(pattern.clone())
            .push(" or email_key like ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(group) = &params.group {
        sql.push(" and groups @> array[")
            .push_bind(group)
            .push("]::text[]");
    }
    if let Some((name_key, id)) = &after {
        sql.push(" and (lower(display_name), user_id) > (")
            .push_bind(name_key)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" order by lower(display_name), user_id limit ")
        .push_bind(limit + 1);
    let mut rows = sql.build().fetch_all(&state.pool).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    // the cursor is the key Postgres sorted by, not one computed here
    let next_cursor = match rows.last().filter(|_| more) {
        Some(last) => Some(page::encode(&(
            last.try_get::<String, _>("name_key")?,
            last.try_get::<Uuid, _>("user_id")?,
        ))),
        None => None,
    };
    let items = rows
        .iter()
        .map(|row| {
            Ok(Person {
                id: row.try_get("user_id")?,
                display_name: row.try_get("display_name")?,
                email: row.try_get("email")?,
                groups: row.try_get("groups")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Json(Page { items, next_cursor }))
}

/// `text` with the `like` wildcards taken literally.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn wildcards_in_a_search_are_taken_literally() {
        assert_eq!(super::like_escaped("50%_a\\b"), "50\\%\\_a\\\\b");
    }
}
