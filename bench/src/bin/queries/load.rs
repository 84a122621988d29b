//! Open-loop load: requests started on a fixed schedule whatever the answers take, latency
//! counted from the scheduled start (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use workledger_bench::quantile;

/// What came back: latency, kind and items of each success, and the errors.
#[derive(Debug, Default)]
pub struct Samples {
    pub ok: Vec<(&'static str, Duration, usize)>,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Samples {
    pub fn all(&self) -> Vec<Duration> {
        self.ok.iter().map(|(_, d, _)| *d).collect()
    }

    pub fn rate(&self) -> f64 {
        self.ok.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Per kind: its latencies and its average items.
    pub fn by_kind(&mut self) -> Vec<(&'static str, Vec<Duration>, f64)> {
        let mut kinds: BTreeMap<&'static str, (Vec<Duration>, usize)> = BTreeMap::new();
        for (kind, latency, items) in &self.ok {
            let entry = kinds.entry(kind).or_default();
            entry.0.push(*latency);
            entry.1 += items;
        }
        kinds
            .into_iter()
            .map(|(kind, (latencies, items))| {
                let average = items as f64 / latencies.len().max(1) as f64;
                (kind, latencies, average)
            })
            .collect()
    }

    /// The `q` quantile of `latencies` in milliseconds.
    pub fn ms(latencies: &[Duration], q: f64) -> f64 {
        let mut sorted = latencies.to_vec();
        quantile(&mut sorted, q).as_secs_f64() * 1e3
    }
}

/// Sends `send(n)` at `rate` per second for `duration`, at most `in_flight` at once (beyond
/// that a request waits, and the wait counts in its latency).
pub async fn open_loop<F, Fut>(send: &F, rate: f64, duration: Duration, in_flight: usize) -> Samples
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<(&'static str, usize)>> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let limit = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let started = Instant::now();
    let mut n = 0u64;
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let request = send(n);
        let (samples, limit) = (samples.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = request.await;
            let latency = due.elapsed();
            let mut samples = samples.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok((kind, items)) => samples.ok.push((kind, latency, items)),
                Err(error) => {
                    samples.errors += 1;
                    samples
                        .first_error
                        .get_or_insert_with(|| format!("{error:#}"));
                }
            }
        }));
        n += 1;
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    samples.elapsed = started.elapsed();
    if let Some(error) = &samples.first_error {
        eprintln!("{} errors, the first: {error}", samples.errors);
    }
    samples
}
