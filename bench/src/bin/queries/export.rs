//! The audit export's rate and memory: streamed from the query API as an auditor (the peak
//! resident set of the server process), and written by `workledger audit export` (its own).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, ensure};
use futures::StreamExt as _;
use workledger_bench::{peak_rss_kib, run_measuring_peak_rss};

use crate::client::{self, Api};

/// One export's figures.
fn row(how: &str, rows: u64, bytes: u64, seconds: f64, peak_kib: Option<u64>) {
    println!(
        "| {how} | {rows} | {:.0} MB | {seconds:.1} s | **{:.0}** | {:.0} MB/s | {} |",
        bytes as f64 / 1e6,
        rows as f64 / seconds,
        bytes as f64 / 1e6 / seconds,
        peak_kib.map_or("?".to_owned(), |kib| format!(
            "**{:.1} MB**",
            kib as f64 / 1024.0
        )),
    );
}

pub fn header(rows: i64) {
    println!("## Audit export of {rows} entries\n");
    println!(
        "| how | rows | size | time | rows/s | throughput | peak RSS |\n|---|---:|---:|---:|---:|---:|---:|"
    );
}

/// `GET /api/v1/audit/export?format=jsonl` as `tenant`'s auditor, counting lines as they
/// arrive; the peak RSS of `server_pid` (a fresh query-API process) afterwards.
pub async fn http(
    login: &str,
    query_base: &str,
    tenant: &str,
    server_pid: u32,
) -> anyhow::Result<()> {
    let http = Api::client()?;
    let auditor = Api::login(
        &http,
        login,
        &client::auditor_email(tenant),
        client::PASSWORD,
        Some(tenant),
    )
    .await?;
    let before = peak_rss_kib(server_pid);
    let started = Instant::now();
    let response = http
        .get(format!("{query_base}/api/v1/audit/export?format=jsonl"))
        .bearer_auth(&auditor.token)
        .send()
        .await?
        .error_for_status()?;
    let expected: u64 = response
        .headers()
        .get("x-audit-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .context("X-Audit-Count")?;
    let mut stream = response.bytes_stream();
    let (mut rows, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        rows += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    ensure!(rows == expected, "{rows} lines, X-Audit-Count {expected}");
    let peak = peak_rss_kib(server_pid);
    eprintln!(
        "query API peak RSS before the export {:?} KiB, after {:?} KiB",
        before, peak
    );
    row(
        "`GET /api/v1/audit/export?format=jsonl` (query API process)",
        rows,
        bytes,
        seconds,
        peak,
    );
    Ok(())
}

/// `workledger audit export --format jsonl -o FILE` as a child process, its peak RSS sampled
/// from /proc; the file is removed afterwards.
pub fn cli(bin: &Path, database_url: &str, output: &Path) -> anyhow::Result<()> {
    let mut command = Command::new(bin);
    command
        .args(["audit", "export", "--format", "jsonl", "-o"])
        .arg(output)
        .env("DATABASE_URL", database_url)
        .env("WORKLEDGER_LOG", "warn")
        .stdout(Stdio::null());
    // the export needs neither; `audit export` refuses one without the other
    command
        .env_remove("WORKLEDGER_ADMIN_EMAIL")
        .env_remove("WORKLEDGER_ADMIN_PASSWORD");
    let started = Instant::now();
    let (status, peak) = run_measuring_peak_rss(&mut command)?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(status.success(), "the export failed: {status}");
    let manifest_path = format!("{}.manifest.json", output.display());
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path)?)?;
    let rows = manifest["count"].as_u64().context("manifest count")?;
    let bytes = std::fs::metadata(output)?.len();
    std::fs::remove_file(output)?;
    std::fs::remove_file(manifest_path)?;
    row(
        "`workledger audit export --format jsonl -o FILE`",
        rows,
        bytes,
        seconds,
        peak,
    );
    Ok(())
}
