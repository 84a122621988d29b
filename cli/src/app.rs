//! The application `serve` runs: one listener answering every API, built from a [`Config`] so
//! tests can serve it on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use api_common::layers::{self, HttpSettings};
use api_common::ops;
use axum::Router;
use axum::http::HeaderValue;
use event_store::database::PoolSettings;
use event_store::{AppendNotifier, LogWaiter, connect, migrate};
use orchestrator::{ProcessManager, Runtime, StaticDirectory, TimerWorker};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// A built, bound application, ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    pool: PgPool,
    config: Config,
    runtime: Arc<Runtime>,
}

impl Application {
    /// Connects to the database (creating it when missing), applies migrations, assembles the
    /// routers and binds `WORKLEDGER_LISTEN`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = open_database(&config).await?;
        let notifier = AppendNotifier::spawn(pool.clone());
        // group membership comes from identity (the command API); until a group has members,
        // approvals offered to it open with nobody to decide
        let runtime = Arc::new(Runtime::new(
            pool.clone(),
            notifier,
            Arc::new(StaticDirectory::new()),
        ));
        let router = router(&config, pool.clone());
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (WORKLEDGER_LISTEN)", config.listen))?;
        Ok(Self {
            listener,
            router,
            pool,
            config,
            runtime,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The workflow runtime the application's workers and APIs share.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.clone()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish (bounded by
    /// `WORKLEDGER_SHUTDOWN_GRACE`) and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace = self.config.shutdown_grace;
        let workers = CancellationToken::new();
        let mut background = spawn_workers(&self.runtime, &self.config, &workers);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stopping_tx.send(());
        });
        let server = async move { server.await.context("the HTTP server failed") };
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let served = tokio::select! {
            result = server => result,
            () = deadline => {
                tracing::warn!(grace = ?grace, "in-flight requests outlived the shutdown grace");
                Ok(())
            }
        };
        // workers finish the batch they are in (it commits or rolls back as a whole)
        workers.cancel();
        while background.join_next().await.is_some() {}
        served?;
        self.pool.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The background workers of `serve`: the orchestrator's process manager and the timer worker.
fn spawn_workers(runtime: &Arc<Runtime>, config: &Config, stop: &CancellationToken) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let waiter = LogWaiter::new(runtime.pool(), config.poll_interval);
    let manager = ProcessManager::new(runtime.clone());
    let token = stop.clone();
    set.spawn(async move {
        manager
            .run(waiter, Duration::from_millis(200), token.cancelled_owned())
            .await;
    });
    let timers = TimerWorker::new(runtime.clone());
    let poll = config.timer_interval;
    let token = stop.clone();
    set.spawn(async move { timers.run(poll, token.cancelled_owned()).await });
    set
}

/// Connects to `DATABASE_URL`, creating the database when missing, and applies migrations.
pub async fn open_database(config: &Config) -> anyhow::Result<PgPool> {
    let settings = PoolSettings {
        max_connections: config.db_max_connections,
        ..PoolSettings::default()
    };
    let pool = connect(config.database_url.expose_secret(), &settings, true)
        .await
        .with_context(|| format!("database {} (DATABASE_URL)", config.database_display()))?;
    migrate(&pool)
        .await
        .with_context(|| format!("database {}", config.database_display()))?;
    Ok(pool)
}

/// Every route `serve` answers, documented in one OpenAPI document.
fn router(config: &Config, pool: PgPool) -> Router {
    // install the recorder before anything records
    ops::metrics_handle();
    let (api, mut doc) = ops::router(pool).split_for_parts();
    let base = ops::base_openapi();
    doc.info = base.info.clone();
    doc.merge(base);
    let router = api.merge(ops::docs_router(doc));
    let settings = HttpSettings {
        request_timeout: config.request_timeout,
        body_limit: config.body_limit,
        cors_origins: config
            .cors_origin_list()
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect(),
    };
    layers::apply(router, &settings)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
