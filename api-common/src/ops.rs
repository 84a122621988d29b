//! Operations endpoints: liveness, readiness, metrics, the OpenAPI document and its docs page.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_scalar::Scalar;

use crate::json::Json;
use crate::problem::{ApiError, FieldError};

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const LATENCY: &[f64] = &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY)
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`
    pub status: &'static str,
}

/// Documentation shared by every API: title, bearer security, the problem schema.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Workledger",
        description = "Workflows, tasks and approvals: commands become events; queries read projections.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ApiError, FieldError)),
    tags(
        (name = "operations", description = "Health, readiness, metrics and API documentation"),
    )
)]
struct BaseDoc;

/// The base OpenAPI document, with the bearer scheme every `/api/v1` route uses.
pub fn base_openapi() -> OpenApi {
    let mut doc = BaseDoc::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(pool: PgPool) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(prometheus))
        .with_state(pool)
}

/// `/openapi.json` and `/docs` for a finished document.
pub fn docs_router(doc: OpenApi) -> axum::Router {
    let json = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    let html = Scalar::new(doc).to_html();
    axum::Router::new()
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    json.clone(),
                )
            }),
        )
        .route("/docs", get(move || async move { Html(html.clone()) }))
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready: the database answers and every migration this binary knows is applied.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 503, description = "Database unreachable or migrations pending", body = ApiError,
         content_type = "application/problem+json"),
    ))]
async fn readyz(State(pool): State<PgPool>) -> Result<Json<Health>, ApiError> {
    match event_store::migrations_applied(&pool).await {
        Ok(true) => Ok(Json(Health { status: "ok" })),
        Ok(false) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "migrations_pending",
            "the database lacks migrations this version needs; run `workledger migrate`",
        )),
        Err(error) => Err(ApiError::unavailable(&error)),
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn prometheus() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        metrics_handle().render(),
    )
        .into_response()
}
