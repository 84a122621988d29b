//! Operations endpoints: liveness, readiness, metrics, the OpenAPI document and its docs page.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, FromRef, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;
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
    components.add_security_scheme(
        "metrics_token",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// Who may read `/metrics`: with a token (`WORKLEDGER_METRICS_TOKEN`), a scraper that sends
/// it as a bearer token, from anywhere; without one, clients on this machine only (their
/// connection's own address, whatever a proxy's headers say).
#[derive(Clone, Default)]
pub struct MetricsAccess {
    token: Option<Arc<SecretString>>,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsAccess")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl MetricsAccess {
    /// Scrapers must send `token`.
    pub fn with_token(token: SecretString) -> Self {
        Self {
            token: Some(Arc::new(token)),
        }
    }

    /// Whether a request with these headers, over a connection from `peer`, may read.
    fn allows(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> bool {
        match &self.token {
            Some(token) => headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes)
                .and_then(|value| {
                    // the scheme's name is case-insensitive (RFC 9110)
                    let (scheme, sent) = value.split_at_checked(7)?;
                    scheme.eq_ignore_ascii_case(b"bearer ").then_some(sent)
                })
                .is_some_and(|sent| bool::from(sent.ct_eq(token.expose_secret().as_bytes()))),
            // an IPv4 client of a dual-stack listener comes as ::ffff:127.0.0.1
            None => peer.is_some_and(|ip| ip.to_canonical().is_loopback()),
        }
    }
}

#[derive(Clone)]
struct OpsState {
    pool: PgPool,
    metrics: MetricsAccess,
}

impl FromRef<OpsState> for PgPool {
    fn from_ref(state: &OpsState) -> Self {
        state.pool.clone()
    }
}

impl FromRef<OpsState> for MetricsAccess {
    fn from_ref(state: &OpsState) -> Self {
        state.metrics.clone()
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(pool: PgPool, metrics: MetricsAccess) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(prometheus))
        .with_state(OpsState { pool, metrics })
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

/// Prometheus metrics in the text exposition format
///
/// With `WORKLEDGER_METRICS_TOKEN` set, for a scraper that sends it as a bearer token;
/// without, for clients on the server's own machine only.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "No or a wrong metrics token, or (without a token configured) a client on another machine",
         body = ApiError, content_type = "application/problem+json"),
    ),
    security(("metrics_token" = [])))]
async fn prometheus(State(access): State<MetricsAccess>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if !access.allows(request.headers(), peer) {
        let detail = if access.token.is_some() {
            "send the metrics token (WORKLEDGER_METRICS_TOKEN) as a bearer token"
        } else {
            "metrics are served to this machine only; set WORKLEDGER_METRICS_TOKEN to scrape \
             from elsewhere"
        };
        return ApiError::unauthorized(detail).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        metrics_handle().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn without_a_token_only_this_machine_reads_metrics() {
        let open = MetricsAccess::default();
        let none = HeaderMap::new();
        assert!(open.allows(&none, Some("127.0.0.1".parse().unwrap())));
        assert!(open.allows(&none, Some("::1".parse().unwrap())));
        assert!(open.allows(&none, Some("::ffff:127.0.0.1".parse().unwrap())));
        assert!(!open.allows(&none, Some("::ffff:10.1.2.3".parse().unwrap())));
        assert!(!open.allows(&none, Some("10.1.2.3".parse().unwrap())));
        assert!(!open.allows(&bearer("anything"), Some("10.1.2.3".parse().unwrap())));
        assert!(!open.allows(&none, None));
    }

    #[test]
    fn with_a_token_only_its_bearer_reads_metrics_from_anywhere() {
        let access = MetricsAccess::with_token("the scraper's token".into());
        let far = Some("10.1.2.3".parse().unwrap());
        assert!(access.allows(&bearer("the scraper's token"), far));
        let mut lower = HeaderMap::new();
        lower.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer the scraper's token"),
        );
        assert!(access.allows(&lower, far));
        assert!(!access.allows(&bearer("the scraper's"), far));
        assert!(!access.allows(&bearer("the scraper's token!"), far));
        assert!(!access.allows(&HeaderMap::new(), Some("127.0.0.1".parse().unwrap())));
        assert!(!format!("{access:?}").contains("scraper"));
    }
}
