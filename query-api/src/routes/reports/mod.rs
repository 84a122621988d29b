//! `GET /api/v1/reports/workflows` and `GET /api/v1/reports/tasks`.

mod tasks;
mod workflows;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::QueryState;

pub(crate) fn router() -> OpenApiRouter<QueryState> {
    OpenApiRouter::new()
        .routes(routes!(workflows::workflow_report))
        .routes(routes!(tasks::task_report))
}

/// Midnight (UTC) starting `day`.
fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}
