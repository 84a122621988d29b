//! Workledger's event store on Postgres.
//!
//! - [`database`]: connecting, creating the database, applying `migrations/`.
//! - [`repository`]: postgres-es's repository, wrapped so every appended event gets its own
//!   `event_id` and wakes the log readers.
//! - [`execute`]: the command path: expected versions, lost races, consistency tokens.
//! - [`appends`]: a command and its cascade appended together, across aggregates.
//! - [`group`]: group commit: the appends of commands that arrive together, in one statement.
//! - [`log`]: the gap-free global log reader, ordered by `(tx_id, global_position)`.
//! - [`connections`]: connections the command path keeps between statements.
//! - [`checkpoint`]: named readers' positions, advanced in the same transaction as their effects.
//! - [`notify`]: LISTEN/NOTIFY wake-ups with a poll fallback.
//! - [`personal`]: the per-person keys personal data is sealed with, and erasure.

pub mod appends;
pub mod checkpoint;
pub mod connections;
pub mod database;
pub mod execute;
pub mod group;
pub mod log;
pub mod master_key;
pub mod notify;
pub mod personal;
pub mod repository;
#[cfg(feature = "testing")]
pub mod testing;

pub use appends::{AppendError, Appends};
pub use checkpoint::{BatchError, Checkpoints, process_batch, process_batch_matching};
pub use database::{DatabaseError, MIGRATOR, PoolSettings, connect, migrate, migrations_applied};
pub use event_schemas::{LogPosition, RecordedEvent};
pub use execute::{ExecuteError, Executed, Executor, Planned};
pub use log::{GlobalLog, LogError, LogFilter};
pub use notify::{AppendNotifier, LogWaiter};
pub use repository::{EventRepository, EventStore, SNAPSHOT_EVERY, capture_position};
