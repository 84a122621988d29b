//! `X-Consistency-Token`: read your own writes. A request carrying the token a command
//! returned waits, bounded by [`crate::QuerySettings::consistency_wait`], until the projectors
//! behind its endpoint have checkpoints at or past it, then answers from their tables.

use std::time::{Duration, Instant};

use api_common::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use event_schemas::LogPosition;
use sqlx::Row;

use crate::state::QueryState;

/// The request header carrying a consistency token (`TX.POSITION`, as commands return it).
pub const CONSISTENCY_HEADER: &str = "x-consistency-token";

/// The token a request carries, if any. A malformed token is a 400 problem.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConsistencyToken(pub Option<LogPosition>);

impl<S: Send + Sync> FromRequestParts<S> for ConsistencyToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(CONSISTENCY_HEADER) else {
            return Ok(Self(None));
        };
        value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<LogPosition>().ok())
            .map(|position| Self(Some(position)))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_consistency_token",
                    "X-Consistency-Token is not a token a command returned (expected TX.POSITION)",
                )
            })
    }
}

impl QueryState {
    /// Waits until every projector of `projectors` has passed `token` (at once without one).
    #[tracing::instrument(name = "consistency_wait", skip_all, fields(token))]
    pub(crate) async fn consistent(
        &self,
        token: ConsistencyToken,
        projectors: &[&str],
    ) -> Result<(), ApiError> {
        let Some(target) = token.0 else {
            return Ok(());
        };
        tracing::Span::current().record("token", tracing::field::display(target));
        let started = Instant::now();
        let deadline = started + self.settings.consistency_wait;
        let mut pause = Duration::from_millis(2);
        loop {
            let behind = self.behind(target, projectors).await?;
            if behind.is_empty() {
                metrics::histogram!("workledger_consistency_wait_seconds")
                    .record(started.elapsed().as_secs_f64());
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                metrics::counter!("workledger_consistency_timeouts_total").increment(1);
                return Err(self.timeout(target, &behind).await);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    /// The projectors of `projectors` whose checkpoint is before `target`.
    async fn behind(
        &self,
        target: LogPosition,
        projectors: &[&str],
    ) -> Result<Vec<String>, ApiError> {
        let rows = sqlx::query(
            "select n.name, c.tx_id::text::bigint as tx_id, c.global_position \
             from unnest($1::text[]) as n(name) left join checkpoints c on c.name = n.name",
        )
        .bind(projectors)
        .fetch_all(&self.pool)
        .await?;
        let mut behind = Vec::new();
        for row in rows {
            let position = match row.try_get::<Option<i64>, _>("tx_id")? {
                Some(tx_id) => LogPosition {
                    tx_id: tx_id as u64,
                    global_position: row.try_get("global_position")?,
                },
                None => LogPosition::START,
            };
            if position < target {
                behind.push(row.try_get("name")?);
            }
        }
        Ok(behind)
    }

    async fn timeout(&self, target: LogPosition, behind: &[String]) -> ApiError {
        // a projector stopped on a failing event will not get there by waiting
        let failing: Vec<String> = sqlx::query_scalar(
            "select name from projector_status where name = any($1) and error is not null",
        )
        .bind(behind)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        let mut detail = format!(
            "the read models behind this endpoint ({}) have not reached {target} within {} ms; \
             retry shortly",
            behind.join(", "),
            self.settings.consistency_wait.as_millis()
        );
        if !failing.is_empty() {
            detail.push_str(&format!(
                " (stopped on a failing event: {}; see `workledger status`)",
                failing.join(", ")
            ));
        }
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "consistency_timeout",
            detail,
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }
}
