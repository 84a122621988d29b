//! The `workledger` binary as a library: configuration, telemetry, the application that
//! `serve` runs, and the operator commands.

pub mod app;
pub mod cli;
mod commands;
pub mod config;
pub mod server;
pub mod telemetry;

use std::process::ExitCode;

use cli::{Cli, Command};

/// Exit codes, as documented in `workledger --help`.
pub mod exit {
    /// The command failed (the message says why).
    pub const FAILURE: u8 = 1;
    /// Bad usage (also `replay` with an unknown projection).
    pub const USAGE: u8 = 2;
    /// The configuration is invalid (the message names the variable).
    pub const CONFIG: u8 = 3;
    /// `status`: a projector is failing.
    pub const UNHEALTHY: u8 = 4;
    /// `audit verify`: the export was tampered with.
    pub const TAMPERED: u8 = 5;
}

/// Runs one invocation of the binary; errors are printed as one line, never a backtrace.
pub fn run(cli: Cli) -> ExitCode {
    let config = match config::Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln_error(&format!("configuration: {error}"));
            return ExitCode::from(exit::CONFIG);
        }
    };
    telemetry::init(&config.log, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln_error(&format!("cannot start the async runtime: {error}"));
            return ExitCode::from(exit::FAILURE);
        }
    };
    // the services log their failures; operator commands only print their one line
    let service = matches!(
        cli.command,
        Command::Serve | Command::CommandApi | Command::QueryApi | Command::Project
    );
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => commands::serve::run(config, app::Roles::ALL).await,
            Command::CommandApi => commands::serve::run(config, app::Roles::COMMAND_API).await,
            Command::QueryApi => commands::serve::run(config, app::Roles::QUERY_API).await,
            Command::Status { format } => {
                let pool = app::open_database(&config).await?;
                return commands::status::run(&pool, format).await;
            }
            Command::Project => commands::serve::run(config, app::Roles::WORKERS).await,
            Command::Migrate => commands::migrate::run(config).await,
            Command::Events(args) => {
                let pool = app::open_database(&config).await?;
                commands::events::run(&pool, args).await
            }
            Command::Replay(args) => {
                let pool = app::open_database(&config).await?;
                commands::replay::run(&pool, args).await
            }
            Command::Audit(cli::AuditCommand::Export(args)) => {
                commands::audit::check_window(&args);
                let pool = app::open_database(&config).await?;
                commands::audit::export(&pool, args).await
            }
            // needs no database: an auditor can verify an export anywhere
            Command::Audit(cli::AuditCommand::Verify(args)) => commands::audit::verify(args),
            Command::Admin(command) => {
                let pool = app::open_database(&config).await?;
                commands::admin::run(&pool, command).await
            }
            Command::Documents(cli::DocumentsCommand::Prune(args)) => {
                let pool = app::open_database(&config).await?;
                commands::documents::prune(&pool, args).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<commands::status::Unhealthy>() => {
            eprintln_error(&format!("{error:#}"));
            ExitCode::from(exit::UNHEALTHY)
        }
        Err(error) if error.is::<commands::audit::Tampered>() => {
            eprintln_error(&format!("{error:#}"));
            ExitCode::from(exit::TAMPERED)
        }
        Err(error) if error.is::<commands::replay::UnknownProjection>() => {
            eprintln_error(&format!("{error:#}"));
            ExitCode::from(exit::USAGE)
        }
        Err(error) if !service => {
            eprintln_error(&format!("{error:#}"));
            ExitCode::from(exit::FAILURE)
        }
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "workledger stopped with an error"
            );
            eprintln_error(&format!("{error:#}"));
            ExitCode::from(exit::FAILURE)
        }
    }
}

#[allow(clippy::print_stderr)] // the CLI's own output
fn eprintln_error(message: &str) {
    eprintln!("error: {message}");
}
