//! Waking log readers when events are appended.
//!
//! A `NOTIFY` inside each appending transaction would serialize every commit in the database
//! (Postgres takes a database-wide lock for it at commit, held across the WAL flush), so appends
//! only poke an [`AppendNotifier`], whose background task sends coalesced notifications from
//! its own connection. Readers ([`LogWaiter`]) `LISTEN` and also poll, so a missed
//! notification (another writer, a dropped connection) costs at most one poll interval.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

/// The Postgres channel appends are announced on.
pub const CHANNEL: &str = "workledger_events";

/// At most one notification per this interval: under load, readers wake for batches of
/// events rather than for each one.
pub const NOTIFY_SPACING: Duration = Duration::from_millis(5);

/// Announces appends on [`CHANNEL`], coalescing bursts into one notification.
#[derive(Debug, Clone, Default)]
pub struct AppendNotifier {
    wake: Option<Arc<Notify>>,
}

impl AppendNotifier {
    /// Starts the notifier's task on the current Tokio runtime.
    pub fn spawn(pool: PgPool) -> Self {
        let wake = Arc::new(Notify::new());
        let task_wake = wake.clone();
        tokio::spawn(async move {
            loop {
                // `notify_one` leaves a permit when nobody waits, so appends that happen while
                // a notification is being sent are announced by the next one.
                task_wake.notified().await;
                match sqlx::query("select pg_notify($1, '')")
                    .bind(CHANNEL)
                    .execute(&pool)
                    .await
                {
                    Ok(_) => tokio::time::sleep(NOTIFY_SPACING).await,
                    Err(error) => {
                        tracing::warn!(error = %error, "could not announce appended events; readers will poll");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Self { wake: Some(wake) }
    }

    /// A notifier that announces nothing (readers rely on polling).
    pub fn disabled() -> Self {
        Self { wake: None }
    }

    pub fn notify(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }
}

/// Waits for new events: a notification on [`CHANNEL`] or the poll interval, whichever is first.
///
/// The `LISTEN` connection lives in its own task (a listener's `recv` is not safe to cancel
/// mid-message), which turns notifications into a wake-up permit.
#[derive(Debug)]
pub struct LogWaiter {
    wake: Arc<Notify>,
    poll: Duration,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl LogWaiter {
    /// Listens on [`CHANNEL`] (reconnecting as needed) and polls every `poll`.
    pub fn new(pool: &PgPool, poll: Duration) -> Self {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(pool.clone(), wake.clone()));
        Self {
            wake,
            poll,
            listener: Some(listener),
        }
    }

    /// A waiter that only polls.
    pub fn polling(poll: Duration) -> Self {
        Self {
            wake: Arc::new(Notify::new()),
            poll,
            listener: None,
        }
    }

    /// Returns after a notification or after the poll interval.
    pub async fn wait(&self) {
        self.wait_at_most(self.poll).await;
    }

    /// Returns after a notification or after `timeout`.
    pub async fn wait_at_most(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }
}

impl Drop for LogWaiter {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
    }
}

async fn listen(pool: PgPool, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, "cannot LISTEN for appended events; polling meanwhile");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %error, "cannot LISTEN for appended events; polling meanwhile");
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(100);
        // Wake once after (re)connecting: anything announced while disconnected is not lost.
        wake.notify_one();
        loop {
            match listener.recv().await {
                Ok(_) => wake.notify_one(),
                Err(error) => {
                    tracing::warn!(error = %error, "LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}
