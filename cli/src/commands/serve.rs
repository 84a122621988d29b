//! `workledger serve`

use crate::app::{Application, shutdown_signal};
use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let database = config.database_display();
    let app = Application::build(config).await?;
    tracing::info!(address = %app.address(), %database, "workledger is serving");
    app.run_until_stopped(shutdown_signal()).await
}
