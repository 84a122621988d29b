//! Live projector lag: while other load runs, a comment every `interval` on a task of our own;
//! each answer's `X-Consistency-Token` is then watched in the `checkpoints` table (read every
//! millisecond) until the projectors have passed it. The lag counts from the answer's arrival,
//! which is after the commit: it misses the few hundred microseconds the answer took to come
//! back, and includes up to one poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use event_schemas::LogPosition;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::client::Api;
use crate::load::Samples;

/// A command waiting for the projectors: its token and when its answer arrived.
#[derive(Debug, Clone, Copy)]
struct Pending {
    token: LogPosition,
    answered: Instant,
    /// When the task read model had passed it.
    tasks: Option<Duration>,
}

/// Every projector's checkpoint.
async fn checkpoints(pool: &PgPool) -> anyhow::Result<HashMap<String, LogPosition>> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "select name, tx_id::text::bigint, global_position from checkpoints \
         where name in ('definitions', 'instances', 'tasks', 'approvals', 'workflow_reports', \
                        'audit')",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, tx_id, global_position)| {
            (
                name,
                LogPosition {
                    tx_id: tx_id as u64,
                    global_position,
                },
            )
        })
        .collect())
}

pub async fn run(
    admin: &Api,
    database_url: &str,
    seconds: u64,
    interval: Duration,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    let task = admin
        .post(
            "/api/v1/tasks",
            json!({"name": "lag probe", "candidate_groups": ["clerks"]}),
        )
        .await?;
    let path = format!(
        "/api/v1/tasks/{}/comments",
        task["id"].as_str().context("task id")?
    );
    let pending: Arc<Mutex<Vec<Pending>>> = Arc::default();
    let done: Arc<Mutex<(Vec<Duration>, Vec<Duration>)>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());

    let watcher = {
        let (pending, done, stop) = (pending.clone(), done.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stopped = stop.notified();
                let positions = checkpoints(&pool).await?;
                let now = Instant::now();
                let tasks = positions
                    .get("tasks")
                    .copied()
                    .unwrap_or(LogPosition::START);
                let slowest = positions
                    .values()
                    .min()
                    .copied()
                    .unwrap_or(LogPosition::START);
                let idle = {
                    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
                    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
                    pending.retain_mut(|p| {
                        if p.tasks.is_none() && tasks >= p.token {
                            p.tasks = Some(now - p.answered);
                        }
                        if positions.len() == 6 && slowest >= p.token {
                            done.0.push(p.tasks.unwrap_or(now - p.answered));
                            done.1.push(now - p.answered);
                            return false;
                        }
                        true
                    });
                    pending.is_empty()
                };
                tokio::select! {
                    _ = stopped, if idle => return anyhow::Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
        })
    };

    let started = Instant::now();
    let mut n = 0u32;
    let mut errors = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep_until((started + interval * n).into()).await;
        n += 1;
        match admin
            .post_with_headers(&path, json!({"text": "lag probe"}))
            .await
        {
            Ok((_, headers)) => {
                let answered = Instant::now();
                let token = headers
                    .get("x-consistency-token")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<LogPosition>().ok())
                    .context("X-Consistency-Token")?;
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Pending {
                        token,
                        answered,
                        tasks: None,
                    });
            }
            Err(_) => errors += 1,
        }
    }
    stop.notify_one();
    tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .context("the projectors did not catch up within 30 s")???;
    let (tasks, all) = std::mem::take(&mut *done.lock().unwrap_or_else(|e| e.into_inner()));
    println!(
        "## Live projector lag: a comment every {} ms for {seconds} s beside the load\n",
        interval.as_millis()
    );
    println!("| projectors | commands | p50 | p99 | max |\n|---|---:|---:|---:|---:|");
    for (what, lags) in [("tasks", &tasks), ("all six", &all)] {
        println!(
            "| {what} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            lags.len(),
            Samples::ms(lags, 0.5),
            Samples::ms(lags, 0.99),
            Samples::ms(lags, 1.0),
        );
    }
    if errors > 0 {
        println!("\n{errors} probe commands failed.");
    }
    Ok(())
}
