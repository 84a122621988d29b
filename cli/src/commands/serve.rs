//! `workledger serve`, `command-api`, `project`

use crate::app::{Application, Roles, shutdown_signal};
use crate::config::Config;

pub async fn run(config: Config, roles: Roles) -> anyhow::Result<()> {
    let database = config.database_display();
    let app = Application::build_with(config, roles).await?;
    tracing::info!(address = %app.address(), %database, ?roles, "workledger is serving");
    app.run_until_stopped(shutdown_signal()).await
}
