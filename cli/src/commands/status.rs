//! `workledger status`: each projector's position, lag and error; the log's size; how many
//! instances wait on an incident (an operator's retry); how the stored secrets are wrapped.

use std::io::Write;

use event_store::master_key;
use projections::Projections;
use sqlx::PgPool;

use crate::cli::StatusFormat;

/// A projector is failing: `status` exits with code 4.
#[derive(Debug, thiserror::Error)]
#[error("{0} failing: see the ERROR column")]
pub struct Unhealthy(pub String);

pub async fn run(pool: &PgPool, format: StatusFormat) -> anyhow::Result<()> {
    let statuses = Projections::status(pool).await?;
    let events: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(pool)
        .await?;
    // through the partial index of the instances that have one (migration 0019)
    let incidents: i64 =
        sqlx::query_scalar("select count(*) from workflow_instances where has_incident")
            .fetch_one(pool)
            .await?;
    let secrets = master_key::census(&mut *pool.acquire().await?, master_key::installed()).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        StatusFormat::Json => {
            let body = serde_json::json!({
                "events": events,
                "instances_with_incidents": incidents,
                "secrets": secrets,
                "projectors": statuses,
            });
            serde_json::to_writer_pretty(&mut out, &body)?;
            writeln!(out)?;
        }
        StatusFormat::Table => {
            writeln!(
                out,
                "{:<18} {:<20} {:>10} {:>10} {:<7} ERROR",
                "PROJECTOR", "POSITION", "LAG", "LAG (s)", "ACTIVE"
            )?;
            for s in &statuses {
                let error = s.error.as_ref().map_or("-".to_owned(), |e| {
                    let at = e.position.map(|p| format!(" at {p}")).unwrap_or_default();
                    format!("{}{at} ({} attempts)", e.message, e.attempts)
                });
                writeln!(
                    out,
                    "{:<18} {:<20} {:>10} {:>10.1} {:<7} {}",
                    s.name,
                    s.position.to_string(),
                    s.lag_events,
                    s.lag_seconds,
                    // the runtime's projectors (read models, the Kafka publisher) have workers
                    if s.read_model || s.worker.is_some() {
                        if s.active { "yes" } else { "no" }
                    } else {
                        "-"
                    },
                    error
                )?;
            }
            writeln!(out, "\n{events} events in the log")?;
            writeln!(
                out,
                "{incidents} instances wait on an incident (GET /api/v1/workflow-instances?incident=true)"
            )?;
            let advice = if secrets.unwrapped + secrets.wrapped_other > 0
                && master_key::installed().is_some_and(|keys| keys.wraps())
            {
                " (run `workledger admin wrap-secrets`)"
            } else {
                ""
            };
            writeln!(
                out,
                "{} stored secrets wrapped with WORKLEDGER_MASTER_KEY, {} with another key, {} \
                 unwrapped{advice}",
                secrets.wrapped_current, secrets.wrapped_other, secrets.unwrapped
            )?;
        }
    }
    out.flush()?;
    let failing: Vec<&str> = statuses
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.name.as_str())
        .collect();
    if failing.is_empty() {
        Ok(())
    } else {
        Err(Unhealthy(failing.join(", ")).into())
    }
}
