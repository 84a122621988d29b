//! Group commit: the appends of commands that arrive together go to Postgres in one statement
//! and one transaction.
//!
//! A single-row insert costs Postgres far more in its statement and its commit than in the
//! row (pgbench's single insert into `events` runs at a third of the rows per second of the
//! same insert four rows at a time). So the command path runs at most a few append statements
//! at once ([`Connections::with_writers`]); appends that arrive while all of those are busy
//! wait in a queue, and the next statement takes everything queued (up to [`MAX_EVENTS`]).
//! A command alone on a quiet system goes straight to Postgres as before: nothing waits for a
//! group to fill.
//!
//! Each command still commits, conflicts and fails as if it ran alone:
//! - its events are contiguous in the statement, in staging order, and it is answered only
//!   once the statement committed, with the position of its own last event;
//! - when Postgres refuses a statement of several commands (one of them lost a race for a
//!   sequence number, a deadlock, a constraint), the statement rolled back whole and each
//!   command is then appended alone, so only the one at fault learns of the refusal;
//! - when the statement does not answer (the connection failed on the way), every command in
//!   it is told the store failed, as a command alone would be: it may have committed.
//!
//! The writers are tasks of their own, so a request that is given up (its client went away)
//! never cancels a statement that carries other commands' appends.

use std::collections::VecDeque;
use std::sync::Mutex;

use event_schemas::LogPosition;
use tokio::sync::oneshot;

use crate::appends::{AppendError, Appends, Inserted, alone, insert};
use crate::connections::Connections;

/// At most this many events go into one statement (a command's cascade is never split).
pub const MAX_EVENTS: usize = 512;

type Reply = oneshot::Sender<Result<Option<LogPosition>, AppendError>>;

/// The appends waiting for a writer, and how many writers run.
#[derive(Debug)]
pub(crate) struct Group {
    writers: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(Appends, Reply)>,
    writing: usize,
}

impl Group {
    /// A group commit with at most `writers` statements at once (at least 1).
    pub(crate) fn new(writers: usize) -> Self {
        Self {
            writers: writers.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Queues `appends`; starts a writer when fewer than the limit run.
    fn enqueue(&self, appends: Appends, reply: Reply) -> bool {
        let mut state = lock(&self.state);
        state.queue.push_back((appends, reply));
        if state.writing < self.writers {
            state.writing += 1;
            true
        } else {
            false
        }
    }

    /// The next statement's appends: everything queued, up to [`MAX_EVENTS`] events (at least
    /// one append, however large). Empty when the queue is: the writer has stopped then.
    fn take(&self) -> Vec<(Appends, Reply)> {
        let mut state = lock(&self.state);
        let mut taken = Vec::new();
        let mut events = 0;
        while let Some((appends, _)) = state.queue.front() {
            if !taken.is_empty() && events + appends.len() > MAX_EVENTS {
                break;
            }
            events += appends.len();
            taken.extend(state.queue.pop_front());
        }
        if taken.is_empty() {
            state.writing -= 1;
        }
        taken
    }
}

/// Appends `appends` (sealed), grouped with whatever other commands' appends are waiting.
pub(crate) async fn append(
    connections: &Connections,
    appends: Appends,
) -> Result<Option<LogPosition>, AppendError> {
    let (reply, answer) = oneshot::channel();
    if connections.group().enqueue(appends, reply) {
        tokio::spawn(write(connections.clone()));
    }
    answer.await.unwrap_or_else(|_| {
        Err(AppendError::Store(
            "the append's writer stopped before it answered".into(),
        ))
    })
}

/// A writer: statements one after another until nothing is queued.
async fn write(connections: Connections) {
    // a writer that panicked must not keep its place: the next append starts another
    struct Place<'a>(&'a Connections, bool);
    impl Drop for Place<'_> {
        fn drop(&mut self) {
            if !self.1 {
                lock(&self.0.group().state).writing -= 1;
            }
        }
    }
    let mut place = Place(&connections, false);
    loop {
        let taken = connections.group().take();
        if taken.is_empty() {
            // `take` gave the place back
            place.1 = true;
            return;
        }
        metrics::histogram!("workledger_append_group_size").record(taken.len() as f64);
        write_group(&connections, taken).await;
    }
}

/// One statement for `taken`, then each its answer.
async fn write_group(connections: &Connections, taken: Vec<(Appends, Reply)>) {
    let (appends, mut replies): (Vec<Appends>, Vec<Reply>) = taken.into_iter().unzip();
    let parts: Vec<&Appends> = appends.iter().collect();
    if parts.len() == 1 {
        let answer = alone(insert(connections, &parts).await);
        if let Some(reply) = replies.pop() {
            let _ = reply.send(answer);
        }
        return;
    }
    match insert(connections, &parts).await {
        Inserted::Committed(positions) => {
            let mut end = 0;
            for (part, reply) in parts.iter().zip(replies) {
                end += part.len();
                let _ = reply.send(Ok(Some(positions[end - 1])));
            }
        }
        Inserted::Refused(error) => {
            tracing::debug!(%error, commands = parts.len(), "a group's append was refused; appending each alone");
            metrics::counter!("workledger_append_groups_split_total").increment(1);
            for (part, reply) in parts.iter().zip(replies) {
                let _ = reply.send(alone(insert(connections, &[part]).await));
            }
        }
        Inserted::Failed(error) => {
            let error = std::sync::Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(AppendError::Store(Box::new(Shared(error.clone())))));
            }
        }
    }
}

/// One store error told to every command of a statement.
#[derive(Debug)]
struct Shared(std::sync::Arc<sqlx::Error>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
