//! Shared pieces of Workledger's benchmarks: a minimal aggregate for raw event-store figures,
//! a bare HTTP/1.1 client for load, small statistics helpers and peak memory of a process.

pub mod http1;
pub mod pgbench;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use event_schemas::{Actor, EventMetadata};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An aggregate whose only event is `Ticked`: measures the store, not a domain.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ticker {
    pub ticks: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TickerEvent {
    Ticked { note: String },
}

impl DomainEvent for TickerEvent {
    fn event_type(&self) -> String {
        "Ticked".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never rejected")]
pub struct Never;

impl Aggregate for Ticker {
    const TYPE: &'static str = "BenchTicker";
    type Command = ();
    type Event = TickerEvent;
    type Error = Never;
    type Services = ();

    async fn handle(&mut self, _: (), _: &(), sink: &EventSink<Self>) -> Result<(), Never> {
        sink.write(
            TickerEvent::Ticked {
                note: "benchmark".into(),
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, _: TickerEvent) {
        self.ticks += 1;
    }
}

/// Metadata as a command would carry it.
pub fn metadata() -> HashMap<String, String> {
    EventMetadata {
        event_id: Uuid::nil(),
        tenant_id: "bench".into(),
        actor: Actor::Service("bench".into()),
        correlation_id: Uuid::now_v7(),
        causation_id: "bench".into(),
        request_id: "bench".into(),
        occurred_at: Utc::now(),
    }
    .to_map(false)
}

/// The `q`-quantile (0..=1) of `samples`, sorting them.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index]
}

/// The median of `values`.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the parenthesised command name; utime and stime are the 12th and 13th
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The peak resident set of process `pid` so far (`VmHWM` of /proc/PID/status, the kernel's
/// high-water mark), in KiB; `None` once it has exited.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `command` to its end, sampling its peak resident set every few milliseconds (a process
/// that has exited has none to read): the exit status and the largest peak seen, in KiB.
pub fn run_measuring_peak_rss(
    command: &mut std::process::Command,
) -> std::io::Result<(std::process::ExitStatus, Option<u64>)> {
    let mut child = command.spawn()?;
    let mut peak: Option<u64> = None;
    loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = Some(peak.map_or(kib, |p| p.max(kib)));
        }
        if let Some(status) = child.try_wait()? {
            return Ok((status, peak));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
