//! `workledger replay`: rebuild projections into new tables from the start of the log while
//! the live ones keep serving, then swap them in (DESIGN §5). Safe while `serve` runs; a
//! failed or interrupted rebuild leaves the serving tables untouched.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use projections::{Projections, RebuildProgress};
use sqlx::PgPool;

use crate::cli::ReplayArgs;

/// A projector name the set does not know: exit code 2, with the valid names.
#[derive(Debug, thiserror::Error)]
#[error("unknown projection {name:?}; valid names: {valid}")]
pub struct UnknownProjection {
    pub name: String,
    pub valid: String,
}

/// Rebuilds the projections `args` names and prints a summary.
pub async fn run(pool: &PgPool, args: ReplayArgs) -> anyhow::Result<()> {
    let all = Projections::all();
    let valid = all.names().join(", ");
    let set = match &args.projection {
        Some(name) => all.only(&[name.as_str()]).map_err(|_| UnknownProjection {
            name: name.clone(),
            valid,
        })?,
        None => all,
    };
    let names = set.names();
    let mut report = Reporter::new(std::io::stderr().is_terminal());
    let started = Instant::now();
    let events = set
        .rebuild(pool, |name, progress| report.progress(name, progress))
        .await
        .context("the rebuild failed; the serving tables are untouched")?;
    report.finish();
    let seconds = started.elapsed().as_secs_f64();
    let tables: Vec<&str> = set
        .projectors()
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "replayed {}: {events} events in {seconds:.2} s ({:.0} events/s); swapped tables: {}",
        names.join(", "),
        events as f64 / seconds.max(1e-3),
        tables.join(", ")
    )?;
    out.flush()?;
    Ok(())
}

/// A progress bar on a terminal, a plain line per second otherwise.
struct Reporter {
    bar: Option<ProgressBar>,
    current: Option<String>,
    last_line: Instant,
}

impl Reporter {
    fn new(terminal: bool) -> Self {
        Self {
            bar: terminal.then(ProgressBar::hidden),
            current: None,
            last_line: Instant::now(),
        }
    }

    fn progress(&mut self, name: &str, p: &RebuildProgress) {
        // global positions count events closely enough for a bar and an ETA
        let total = p
            .head
            .global_position
            .max(p.position.global_position)
            .max(0) as u64;
        let done = p.position.global_position.max(0) as u64;
        match &mut self.bar {
            Some(bar) => {
                if self.current.as_deref() != Some(name) {
                    bar.finish_and_clear();
                    let new = ProgressBar::new(total);
                    new.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>16} [{bar:40}] {pos}/{len} {msg} ETA {eta}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    new.set_prefix(name.to_owned());
                    *bar = new;
                }
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(format!("{:.0} events/s", p.events_per_second));
            }
            None => {
                let first = self.current.as_deref() != Some(name);
                if first || self.last_line.elapsed() >= Duration::from_secs(1) {
                    self.last_line = Instant::now();
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(
                        err,
                        "{name}: {} events, at {} of {}, {:.0} events/s",
                        p.events, p.position, p.head, p.events_per_second
                    );
                }
            }
        }
        self.current = Some(name.to_owned());
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
