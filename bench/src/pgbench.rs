//! pgbench beside our figures: the same machine, database and concurrency, in the same run.

use std::process::Command;

use anyhow::{Context as _, bail};

/// The same event row the store appends, into the same table (a new aggregate each time).
/// pgbench reads `:name` as a variable even inside literals, so the script has no colons.
pub const EVENTS_SCRIPT: &str = "insert into events (aggregate_type, aggregate_id, sequence, \
     event_type, event_version, payload, metadata) values ('PgBench', gen_random_uuid()::text, 1, \
     'Ticked', '1', '{\"Ticked\": {\"note\": \"benchmark\"}}', jsonb_build_object('event_id', \
     gen_random_uuid(), 'tenant_id', 'bench', 'actor', 'service-bench', 'correlation_id', \
     gen_random_uuid(), 'causation_id', 'bench', 'request_id', 'bench', 'occurred_at', now()));\n";

/// A row of the same size into a table with only a primary key (`pgbench_events`).
pub const PLAIN_SCRIPT: &str = "insert into pgbench_events (aggregate_id, payload, metadata) values \
     ('agg-' || :client_id, '{\"Ticked\": {\"note\": \"benchmark\"}}', \
     '{\"event_id\": \"0\", \"tenant_id\": \"bench\", \"actor\": \"service-bench\"}');\n";

/// pgbench's TPS running `script` once per transaction at `clients` clients for `seconds`
/// against the database at `url`.
pub fn tps(url: &str, clients: usize, seconds: u64, script: &str) -> anyhow::Result<f64> {
    let file = std::env::temp_dir().join(format!("workledger_pgbench_{}.sql", std::process::id()));
    std::fs::write(&file, script)?;
    let output = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-f"])
        .arg(&file)
        .args(["-c", &clients.to_string()])
        .args(["-j", &clients.min(2).to_string()])
        .args(["-T", &seconds.to_string()])
        .arg(url)
        .output()
        .context("run pgbench (apt-get install postgresql-client)")?;
    let _ = std::fs::remove_file(&file);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.starts_with("tps ="))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .context("pgbench printed no tps")
}
