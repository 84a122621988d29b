//! `GET /api/v1/workflow-definitions[/{key}[/versions/{n}]]`.

use api_common::{ApiError, CurrentUser, Json};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use projections::names::DEFINITIONS;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::consistency::ConsistencyToken;
use crate::page::{self, Page};
use crate::params::{self, Params};
use crate::routes::ReadProblems;
use crate::routes::tagged;
use crate::state::QueryState;

pub(crate) fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(list_definitions))
        .routes(routes!(get_definition))
        .routes(routes!(get_definition_version))
}

/// A definition key with its latest version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DefinitionSummary {
    pub key: String,
    /// The latest version's name.
    pub name: String,
    pub latest_version: i64,
    /// When the latest version was published, and by whom (`user:{id}`).
    pub published_at: DateTime<Utc>,
    pub published_by: String,
}

/// One published version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DefinitionVersion {
    pub key: String,
    pub version: i64,
    pub name: String,
    /// The definition in its canonical JSON form (DESIGN §3).
    #[schema(value_type = Object)]
    pub definition: Value,
    pub published_by: String,
    pub published_at: DateTime<Utc>,
}

/// A version in a definition's history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionSummary {
    pub version: i64,
    pub name: String,
    pub published_by: String,
    pub published_at: DateTime<Utc>,
}

/// A definition: its latest version in full, and every version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Definition {
    pub key: String,
    pub name: String,
    pub latest_version: i64,
    #[schema(value_type = Object)]
    pub definition: Value,
    pub published_by: String,
    pub published_at: DateTime<Utc>,
    /// Every version, newest first.
    pub versions: Vec<VersionSummary>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists workflow definitions by key, with their latest version.
#[utoipa::path(get, path = "/api/v1/workflow-definitions", tag = "definitions",
    params(ListParams,
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the definitions read model has passed this token")),
    responses(
        (status = 200, description = "A page of definitions, by key", body = Page<DefinitionSummary>),
        (status = 422, description = "A parameter is not valid", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant))]
async fn list_definitions(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Params(params): Params<ListParams>,
) -> Result<Json<Page<DefinitionSummary>>, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let limit = params::limit(params.limit)?;
    let after: Option<String> = page::decode(params.cursor.as_deref())?;
    state.consistent(token, &[DEFINITIONS]).await?;
    let rows: Vec<SqlJson<DefinitionSummary>> = sqlx::query_scalar(
        "select jsonb_build_object('key', key, 'name', name, 'latest_version', version, \
             'published_at', published_at, 'published_by', published_by) \
         from (select distinct on (key) * from workflow_definitions \
               where tenant_id = $1 and ($2::text is null or key > $2) \
               order by key, version desc) latest \
         order by key limit $3",
    )
    .bind(&claims.tid)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let rows = rows.into_iter().map(|SqlJson(row)| row).collect();
    Ok(Json(page::page(rows, limit, |d: &DefinitionSummary| {
        d.key.clone()
    })))
}

async fn versions(
    state: &QueryState,
    tenant: &str,
    key: &str,
) -> Result<Vec<DefinitionVersion>, ApiError> {
    let rows: Vec<SqlJson<DefinitionVersion>> = sqlx::query_scalar(
        "select to_jsonb(t) from workflow_definitions t \
         where tenant_id = $1 and key = $2 order by version desc",
    )
    .bind(tenant)
    .bind(key)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows.into_iter().map(|SqlJson(row)| row).collect())
}

/// A definition's latest version in full, and its version history. `ETag` is the latest
/// version.
#[utoipa::path(get, path = "/api/v1/workflow-definitions/{key}", tag = "definitions",
    params(("key" = String, Path, description = "The definition key"),
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the definitions read model has passed this token")),
    responses(
        (status = 200, description = "The definition", body = Definition,
         headers(("ETag" = String, description = "The latest version, quoted"))),
        (status = 304, description = "The latest version is the one in If-None-Match"),
        (status = 404, description = "No such definition in your tenant", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, key = %key))]
async fn get_definition(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    state.consistent(token, &[DEFINITIONS]).await?;
    let versions = versions(&state, &claims.tid, &key).await?;
    let Some(latest) = versions.first().cloned() else {
        return Err(ApiError::not_found(format!(
            "no workflow definition {key:?}"
        )));
    };
    let body = Definition {
        key: latest.key,
        name: latest.name,
        latest_version: latest.version,
        definition: latest.definition,
        published_by: latest.published_by,
        published_at: latest.published_at,
        versions: versions
            .into_iter()
            .map(|v| VersionSummary {
                version: v.version,
                name: v.name,
                published_by: v.published_by,
                published_at: v.published_at,
            })
            .collect(),
    };
    Ok(tagged(&headers, body.latest_version, body))
}

/// One published version of a definition. `ETag` is the version.
#[utoipa::path(get, path = "/api/v1/workflow-definitions/{key}/versions/{n}", tag = "definitions",
    params(("key" = String, Path, description = "The definition key"),
        ("n" = u32, Path, description = "The version"),
        ("X-Consistency-Token" = Option<String>, Header, description = "Wait until the definitions read model has passed this token")),
    responses(
        (status = 200, description = "The version", body = DefinitionVersion,
         headers(("ETag" = String, description = "The version, quoted"))),
        (status = 304, description = "The version is the one in If-None-Match"),
        (status = 404, description = "No such definition version in your tenant", body = ApiError, content_type = "application/problem+json"),
        (status = 422, description = "The version is not a number", body = ApiError, content_type = "application/problem+json"),
        ReadProblems,
    ),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(tenant, key = %key, version = %n))]
async fn get_definition_version(
    State(state): State<QueryState>,
    CurrentUser(claims): CurrentUser,
    token: ConsistencyToken,
    Path((key, n)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("tenant", claims.tid.as_str());
    let version: i32 = n
        .parse()
        .map_err(|_| params::invalid("n", format!("{n:?} is not a version number")))?;
    state.consistent(token, &[DEFINITIONS]).await?;
    let row: Option<SqlJson<DefinitionVersion>> = sqlx::query_scalar(
        "select to_jsonb(t) from workflow_definitions t \
         where tenant_id = $1 and key = $2 and version = $3",
    )
    .bind(&claims.tid)
    .bind(&key)
    .bind(version)
    .fetch_optional(&state.pool)
    .await?;
    let Some(SqlJson(body)) = row else {
        return Err(ApiError::not_found(format!(
            "no version {version} of workflow definition {key:?}"
        )));
    };
    Ok(tagged(&headers, body.version, body))
}
