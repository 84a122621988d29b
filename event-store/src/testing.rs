//! A fresh, migrated database per test, so tests run in parallel and never see each other's rows.
//!
//! The server is `WORKLEDGER_TEST_DATABASE_URL` (default: the local Postgres as `postgres`).
//! Each [`TestDatabase`] creates `wl_test_<unix seconds>_<random>` and drops it when dropped;
//! databases left by a killed run are swept once they are more than two hours old.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::database::MIGRATOR;

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PREFIX: &str = "wl_test_";
const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pub pool: PgPool,
    pub name: String,
    options: PgConnectOptions,
}

fn server() -> PgConnectOptions {
    let url = std::env::var("WORKLEDGER_TEST_DATABASE_URL").unwrap_or(DEFAULT_SERVER.into());
    PgConnectOptions::from_str(&url)
        .expect("WORKLEDGER_TEST_DATABASE_URL is not a Postgres URL")
        .log_statements(tracing::log::LevelFilter::Trace)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl TestDatabase {
    /// A personal field as stored in an event of `tenant_id`, checked to be sealed (DESIGN §2),
    /// opened with its person's key: `None` once they were erased.
    pub async fn opened(&self, tenant_id: &str, stored: &str) -> Option<String> {
        let sealed = event_schemas::personal::Sealed::parse(stored)
            .unwrap_or_else(|| panic!("not sealed: {stored}"));
        let mut conn = self.pool.acquire().await.expect("a connection");
        crate::personal::open_all(&mut conn, tenant_id, sealed.subject, &[stored])
            .await
            .expect("the keys are read")
            .remove(0)
    }

    /// Creates and migrates a new database; panics with the cause when Postgres is not there.
    pub async fn new() -> Self {
        Self::with_pool_size(16).await
    }

    pub async fn with_pool_size(max_connections: u32) -> Self {
        let server = server();
        let mut admin = server
            .connect()
            .await
            .expect("cannot connect to the test Postgres (WORKLEDGER_TEST_DATABASE_URL)");
        sweep_stale(&mut admin).await;
        let name = format!("{PREFIX}{}_{}", now_secs(), Uuid::new_v4().simple());
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .expect("cannot create a test database");
        // Tests prove ordering and atomicity, not durability across a power cut: skip the
        // WAL flush wait so the suite runs fast on a small machine.
        sqlx::query(&format!(
            "alter database {name} set synchronous_commit = off"
        ))
        .execute(&mut admin)
        .await
        .expect("cannot configure the test database");
        admin.close().await.ok();
        let options = server.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options.clone())
            .await
            .expect("cannot connect to the new test database");
        MIGRATOR.run(&pool).await.expect("migrations failed");
        Self {
            pool,
            name,
            options,
        }
    }

    /// The URL of this database (for a process under test).
    pub fn url(&self) -> String {
        let url = std::env::var("WORKLEDGER_TEST_DATABASE_URL").unwrap_or(DEFAULT_SERVER.into());
        match url.rfind('/') {
            Some(i) if !url[..i].ends_with('/') => format!("{}/{}", &url[..i], self.name),
            _ => format!("{url}/{}", self.name),
        }
    }

    /// Connection options of this database.
    pub fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropping needs async I/O; run it on a runtime of its own so this works from within
        // (or outside) a test's runtime.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = server().connect().await {
                    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

async fn sweep_stale(admin: &mut PgConnection) {
    let Ok(names) = sqlx::query_scalar::<_, String>(
        "select datname from pg_database where datname like 'wl\\_test\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    else {
        return;
    };
    let cutoff = now_secs().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let created = name[PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|t| t < cutoff) {
            let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                .execute(&mut *admin)
                .await;
        }
    }
}
