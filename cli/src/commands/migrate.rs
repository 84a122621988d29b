//! `workledger migrate`

use crate::app::open_database;
use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let pool = open_database(&config).await?;
    let applied = event_store::MIGRATOR.iter().count();
    tracing::info!(database = %config.database_display(), migrations = applied, "database is up to date");
    pool.close().await;
    Ok(())
}
