//! Workledger's workflow runtime on Postgres.
//!
//! - [`Runtime`]: executes commands on the four workflow aggregates and, before answering, the
//!   cascade they trigger (the next task or approval exists when `complete` returns).
//! - [`ProcessManager`]: the same reactions driven from the global log with a checkpoint, so a
//!   cascade a crash interrupted is finished, exactly once in effect.
//! - [`timers`]: durable timers (timer steps, due dates), written with the process manager's
//!   checkpoint and fired by [`TimerWorker`].
//! - [`Directory`]: who is in a group, for approvals offered to groups.
//!
//! Everything the orchestrator sends carries a deterministic id and every target command is
//! idempotent (see `domain::orchestrator`), so running a reaction twice changes nothing.

mod definitions;
pub mod directory;
mod error;
mod process_manager;
mod runtime;
pub mod timers;
mod together;

pub use directory::{Directory, DirectoryError, StaticDirectory};
pub use error::RuntimeError;
pub use process_manager::{PROCESS_MANAGER, ProcessError, ProcessManager};
pub use runtime::{Outcome, RequestContext, Runtime};
pub use timers::TimerWorker;

/// `error: cause: cause` on one line, for logs.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
