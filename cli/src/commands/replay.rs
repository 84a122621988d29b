//! `workledger replay`: rebuild projections into new tables from the start of the log while
//! the live ones keep serving, then swap them in (DESIGN §5). Safe while `serve` runs; a
//! failed or interrupted rebuild leaves the serving tables untouched, and the next run resumes
//! it (`--restart` starts over).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use event_schemas::LogPosition;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use projections::{Projections, RebuildOptions, RebuildProgress};
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
    let set = match &args.which.projection {
        Some(name) => all.only(&[name.as_str()]).map_err(|_| UnknownProjection {
            name: name.clone(),
            valid,
        })?,
        None => all,
    };
    let names = set.names();
    let mut report = Reporter::new(std::io::stderr().is_terminal());
    let started = Instant::now();
    let options = RebuildOptions {
        restart: args.restart,
    };
    let events = set
        .rebuild_with(pool, options, |name, progress| {
            report.progress(name, progress)
        })
        .await
        .context(
            "the rebuild failed; the serving tables of a projection that failed are untouched",
        )?;
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
        "replayed {}: {events} events applied in {seconds:.2} s ({:.0}/s); swapped tables: {}",
        names.join(", "),
        events as f64 / seconds.max(1e-3),
        tables.join(", ")
    )?;
    out.flush()?;
    Ok(())
}

/// A progress bar per projection on a terminal, a plain line per projection per second
/// otherwise.
struct Reporter {
    bars: Option<MultiProgress>,
    seen: HashMap<String, Seen>,
}

struct Seen {
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Reporter {
    fn new(terminal: bool) -> Self {
        Self {
            bars: terminal.then(MultiProgress::new),
            seen: HashMap::new(),
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
        let first = !self.seen.contains_key(name);
        if first && p.resumed_from > LogPosition::START {
            let line = format!(
                "resuming {name} from {} (what an interrupted rebuild left; --restart starts over)",
                p.resumed_from
            );
            match &self.bars {
                Some(bars) => {
                    let _ = bars.println(line);
                }
                None => {
                    let _ = writeln!(std::io::stderr().lock(), "{line}");
                }
            }
        }
        let seen = self.seen.entry(name.to_owned()).or_insert_with(|| Seen {
            bar: self.bars.as_ref().map(|bars| {
                let bar = bars.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>16} [{bar:40}] {pos}/{len} {msg} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(name.to_owned());
                bar
            }),
            last_line: Instant::now(),
        });
        match &seen.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(format!("{:.0} events/s", p.events_per_second));
            }
            None => {
                if first || seen.last_line.elapsed() >= Duration::from_secs(1) {
                    seen.last_line = Instant::now();
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(
                        err,
                        "{name}: {} events, at {} of {}, {:.0} events/s",
                        p.events, p.position, p.head, p.events_per_second
                    );
                }
            }
        }
    }

    fn finish(&mut self) {
        for seen in self.seen.values() {
            if let Some(bar) = &seen.bar {
                bar.finish_and_clear();
            }
        }
    }
}
