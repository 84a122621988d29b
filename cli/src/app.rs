//! The application: the APIs on one listener and the background workers, built from a
//! [`Config`] so tests can serve it on port 0. `serve` runs every role; `command-api`,
//! `query-api` and `project` run one each, for scaling out.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use api_common::layers::{self, HttpSettings};
use api_common::ops;
use axum::Router;
use axum::http::HeaderValue;
use command_api::{CommandApi, CommandSettings, ThrottleSettings};
use event_store::database::PoolSettings;
use event_store::master_key;
use event_store::{AppendNotifier, LogWaiter, connect, migrate};
use orchestrator::{ProcessManager, Runtime, TimerWorker};
use projections::email::EmailNotifier;
use projections::kafka::KafkaPublisher;
use projections::notifications::WebhookNotifier;
use projections::{Projections, Projector, RunSettings};
use query_api::{QuerySettings, QueryState};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::server;

/// Which parts of Workledger one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The command endpoints (`POST`/`PUT` under `/api/v1`, and `/api/v1/auth`).
    pub command_api: bool,
    /// The query endpoints (`GET` under `/api/v1`).
    pub query_api: bool,
    /// Background workers: the orchestrator, timers, projectors and housekeeping.
    pub workers: bool,
}

impl Roles {
    /// Everything, in one process (`workledger serve`).
    pub const ALL: Roles = Roles {
        command_api: true,
        query_api: true,
        workers: true,
    };
    pub const COMMAND_API: Roles = Roles {
        command_api: true,
        query_api: false,
        workers: false,
    };
    pub const QUERY_API: Roles = Roles {
        command_api: false,
        query_api: true,
        workers: false,
    };
    pub const WORKERS: Roles = Roles {
        command_api: false,
        query_api: false,
        workers: true,
    };
}

/// A built, bound application, ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    pool: PgPool,
    config: Config,
    roles: Roles,
    runtime: Arc<Runtime>,
    /// The reactors that deliver outside the database, when the workers run: the Kafka
    /// publisher (`KAFKA_BROKERS`), the webhook notifier (`WORKLEDGER_WEBHOOK_URL`) and the
    /// email notifier (`WORKLEDGER_SMTP_URL`).
    reactors: Vec<Arc<dyn Projector>>,
    /// Commands that run on for requests their clients gave up (see
    /// `command_api::idempotency`): shutdown waits for them within its grace.
    detached_commands: TaskTracker,
}

impl Application {
    /// Every role (what `serve` runs).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Roles::ALL).await
    }

    /// Connects to the database (creating it when missing), applies migrations, creates the
    /// bootstrap admin when configured, assembles the routes of `roles` and binds
    /// `WORKLEDGER_LISTEN`. Operations routes (`/healthz`, `/readyz`, `/metrics`, docs) are
    /// always served.
    pub async fn build_with(config: Config, roles: Roles) -> anyhow::Result<Self> {
        let pool = open_database(&config).await?;
        if !config.master_keys()?.is_some_and(|keys| keys.wraps()) {
            tracing::warn!(
                "WORKLEDGER_MASTER_KEY is not set: personal data keys, two-factor secrets and \
                 the generated token signing secret are stored unwrapped, so a copy of the \
                 database opens them (docs/operations.md)"
            );
        }
        let notifier = AppendNotifier::spawn(pool.clone());
        let commands = CommandApi::build(pool.clone(), notifier, command_settings(&config))
            .await
            .context("starting the command API")?;
        if roles.command_api
            && let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password)
            && let Some(admin) = commands
                .bootstrap_admin(email, password)
                .await
                .context("creating the admin from WORKLEDGER_ADMIN_EMAIL")?
        {
            tracing::info!(user_id = %admin, "created the first admin in tenant `default`");
        }
        let metrics = match &config.metrics_token {
            Some(token) => ops::MetricsAccess::with_token(token.clone()),
            None => ops::MetricsAccess::default(),
        };
        let mut routes = ops::router(pool.clone(), metrics);
        if roles.command_api {
            routes = routes.merge(commands.router());
        }
        if roles.query_api {
            let settings = QuerySettings {
                consistency_wait: config.consistency_wait,
                export_batch: config.export_batch,
            };
            routes = routes.merge(query_api::router(QueryState::new(
                pool.clone(),
                commands.token_keys(),
                settings,
            )));
        }
        let mut reactors: Vec<Arc<dyn Projector>> = Vec::new();
        if let Some(settings) = config.kafka().filter(|_| roles.workers) {
            tracing::info!(brokers = %settings.brokers, prefix = %settings.topic_prefix,
                "publishing integration events to Kafka");
            reactors.push(Arc::new(KafkaPublisher::new(settings).context(
                "setting up the Kafka publisher (KAFKA_BROKERS, WORKLEDGER_KAFKA_*)",
            )?));
        }
        if let Some(settings) = config.webhook().filter(|_| roles.workers) {
            tracing::info!(url = %projections::notifications::redacted_url(&settings.url),
                "notifying a webhook of work to do");
            WebhookNotifier::start_at_head(&pool)
                .await
                .context("starting the webhook notifier at the head of the log")?;
            reactors.push(Arc::new(
                WebhookNotifier::new(settings).context("setting up the webhook notifier")?,
            ));
        }
        if let Some(settings) = config.email().filter(|_| roles.workers) {
            tracing::info!(relay = %projections::email::redacted_smtp_url(settings.smtp_url.expose_secret()),
                from = %settings.from, "emailing people the work they have to do");
            EmailNotifier::start_at_head(&pool)
                .await
                .context("starting the email notifier at the head of the log")?;
            reactors
                .push(Arc::new(EmailNotifier::new(settings).context(
                    "setting up the email notifier (WORKLEDGER_SMTP_URL)",
                )?));
        }
        let router = finish(routes, &config);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (WORKLEDGER_LISTEN)", config.listen))?;
        Ok(Self {
            listener,
            router,
            pool,
            config,
            roles,
            runtime: commands.runtime(),
            reactors,
            detached_commands: commands.detached_commands(),
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
    /// `WORKLEDGER_SHUTDOWN_GRACE`), stops the workers after their current batch, and closes
    /// the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace = self.config.shutdown_grace;
        let workers = CancellationToken::new();
        let mut background = JoinSet::new();
        if self.roles.workers {
            spawn_workers(
                &mut background,
                &self.runtime,
                &self.config,
                &self.reactors,
                &workers,
            );
        }
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        // each request carries its peer's address: it feeds the per-address login throttle
        let header_timeout = self.config.header_timeout;
        let server = server::serve(self.listener, self.router, header_timeout, async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stopping_tx.send(());
        });
        // the in-flight requests, then the commands still running for requests their clients
        // gave up (each stores its answer for its Idempotency-Key before the pool closes)
        let detached = self.detached_commands.clone();
        let server = async move {
            server.await;
            detached.close();
            detached.wait().await;
        };
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = server => {}
            () = deadline => {
                tracing::warn!(
                    grace = ?grace,
                    commands = self.detached_commands.len(),
                    "in-flight requests outlived the shutdown grace"
                );
            }
        }
        // workers finish the batch they are in (it commits or rolls back as a whole)
        workers.cancel();
        while background.join_next().await.is_some() {}
        self.pool.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

fn command_settings(config: &Config) -> CommandSettings {
    CommandSettings {
        jwt_secret: config.jwt_secret.clone(),
        access_token_ttl: config.access_token_ttl,
        refresh_token_ttl: config.refresh_token_ttl,
        idempotency_ttl: config.idempotency_ttl,
        body_limit: config.body_limit,
        document_limit: config.document_limit,
        trusted_proxy_hops: config.trusted_proxy_hops,
        command_connections: config.db_command_connections,
        append_writers: config.db_append_writers,
        login_throttle: ThrottleSettings {
            max_failures_per_account: config.login_max_failures_per_account,
            max_failures_per_address: config.login_max_failures_per_address,
            window: config.login_failure_window,
            lockout: config.login_lockout,
        },
        ..CommandSettings::default()
    }
}

/// The background workers: the read-model projectors, the Kafka publisher and the webhook
/// notifier (when configured), the orchestrator's process manager, the timer worker, the
/// identity projector and the sweeper of expired sessions, idempotency keys and login
/// counters.
fn spawn_workers(
    set: &mut JoinSet<()>,
    runtime: &Arc<Runtime>,
    config: &Config,
    reactors: &[Arc<dyn Projector>],
    stop: &CancellationToken,
) {
    let pool = runtime.pool().clone();
    let settings = RunSettings {
        batch_size: config.projector_batch,
        poll_interval: config.poll_interval,
        takeover_interval: config.projector_takeover,
        retry_max: config.projector_retry_max,
        ..RunSettings::default()
    };
    let projections = Projections::all().with_settings(settings.clone());
    set.spawn(projections.run(pool.clone(), stop.clone()));
    // each reactor in a set of its own: a broker or receiver that is slow or down holds back
    // no read model, and not the other reactor
    for reactor in reactors {
        let running =
            Projections::from_projectors(vec![reactor.clone()]).with_settings(settings.clone());
        set.spawn(running.run(pool.clone(), stop.clone()));
    }
    let manager = ProcessManager::new(runtime.clone());
    let waiter = LogWaiter::new(&pool, config.poll_interval);
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
    let waiter = LogWaiter::new(&pool, config.poll_interval);
    set.spawn(command_api::identity::run_projector(
        pool.clone(),
        waiter,
        stop.clone().cancelled_owned(),
    ));
    set.spawn(command_api::maintenance::run_sweeper(
        pool,
        Duration::from_secs(300),
        config.login_failure_window,
        stop.clone().cancelled_owned(),
    ));
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
    install_master_key(config, &pool).await?;
    Ok(pool)
}

/// Installs the configured master keys (`event_store::master_key`) once they are known to
/// include the key of every wrapped secret: a wrong or missing key stops the process here,
/// with the fix, rather than fail on a person's data later.
async fn install_master_key(config: &Config, pool: &PgPool) -> anyhow::Result<()> {
    let keys = config.master_keys()?;
    let mut conn = pool.acquire().await.context("database")?;
    master_key::check(&mut conn, keys.as_ref())
        .await
        .context("reading the stored secrets' master key ids")?
        .context(
            "stored secrets (personal data keys, two-factor or signing secrets) were wrapped \
             with another master key: set WORKLEDGER_MASTER_KEY (and \
             WORKLEDGER_MASTER_KEY_PREVIOUS during a rotation) as the processes that wrote \
             them had it",
        )?;
    anyhow::ensure!(
        master_key::install(keys),
        "this process runs with other master keys already"
    );
    Ok(())
}

/// The routes, documented in one OpenAPI document, behind Workledger's middleware.
fn finish(routes: utoipa_axum::router::OpenApiRouter, config: &Config) -> Router {
    // install the recorder before anything records
    ops::metrics_handle();
    let (api, mut doc) = routes.split_for_parts();
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

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its own large error type
mod tests {
    use figment::Jail;
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn the_command_api_gets_every_setting_of_its_own_from_the_configuration() {
        Jail::expect_with(|jail| {
            for (variable, value) in [
                (
                    "WORKLEDGER_JWT_SECRET",
                    "a signing secret of at least thirty-two bytes",
                ),
                ("WORKLEDGER_ACCESS_TOKEN_TTL", "5m"),
                ("WORKLEDGER_REFRESH_TOKEN_TTL", "2d"),
                ("WORKLEDGER_IDEMPOTENCY_TTL", "3h"),
                ("WORKLEDGER_BODY_LIMIT", "65536"),
                ("WORKLEDGER_DOCUMENT_LIMIT", "1048576"),
                ("WORKLEDGER_TRUSTED_PROXY_HOPS", "2"),
                ("WORKLEDGER_DB_COMMAND_CONNECTIONS", "3"),
                ("WORKLEDGER_LOGIN_MAX_FAILURES_PER_ACCOUNT", "7"),
                ("WORKLEDGER_LOGIN_MAX_FAILURES_PER_ADDRESS", "70"),
                ("WORKLEDGER_LOGIN_FAILURE_WINDOW", "20m"),
                ("WORKLEDGER_LOGIN_LOCKOUT", "9m"),
            ] {
                jail.set_env(variable, value);
            }
            let settings = command_settings(&Config::load(None).unwrap());
            assert_eq!(
                settings.jwt_secret.as_ref().map(|s| s.expose_secret()),
                Some("a signing secret of at least thirty-two bytes")
            );
            assert_eq!(settings.access_token_ttl, Duration::from_secs(5 * 60));
            assert_eq!(settings.refresh_token_ttl, Duration::from_secs(2 * 86_400));
            assert_eq!(settings.idempotency_ttl, Duration::from_secs(3 * 3600));
            assert_eq!(settings.body_limit, 65_536);
            assert_eq!(settings.document_limit, 1_048_576);
            assert_eq!(settings.trusted_proxy_hops, 2);
            assert_eq!(settings.command_connections, 3);
            let throttle = &settings.login_throttle;
            assert_eq!(throttle.max_failures_per_account, 7);
            assert_eq!(throttle.max_failures_per_address, 70);
            assert_eq!(throttle.window, Duration::from_secs(20 * 60));
            assert_eq!(throttle.lockout, Duration::from_secs(9 * 60));
            Ok(())
        });
    }
}
