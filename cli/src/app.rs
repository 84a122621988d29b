//! The application `serve` runs: one listener answering every API, built from a [`Config`] so
//! tests can serve it on port 0.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use api_common::layers::{self, HttpSettings};
use api_common::ops;
use axum::Router;
use axum::http::HeaderValue;
use event_store::database::PoolSettings;
use event_store::{AppendNotifier, connect, migrate};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::Config;

/// A built, bound application, ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    pool: PgPool,
    config: Config,
}

impl Application {
    /// Connects to the database (creating it when missing), applies migrations, assembles the
    /// routers and binds `WORKLEDGER_LISTEN`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = open_database(&config).await?;
        let _notifier = AppendNotifier::spawn(pool.clone());
        let router = router(&config, pool.clone());
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (WORKLEDGER_LISTEN)", config.listen))?;
        Ok(Self {
            listener,
            router,
            pool,
            config,
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

    /// Serves until `shutdown` resolves, then lets in-flight requests finish (bounded by
    /// `WORKLEDGER_SHUTDOWN_GRACE`) and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace = self.config.shutdown_grace;
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
        tokio::select! {
            result = server => result?,
            () = deadline => tracing::warn!(grace = ?grace, "in-flight requests outlived the shutdown grace"),
        }
        self.pool.close().await;
        tracing::info!("stopped");
        Ok(())
    }
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
