//! `workledger audit export`: every chain (or one tenant's), chunk by chunk, then the manifest
//! and its signature.

use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::Signer as _;
use event_schemas::LogPosition;
use projections::audit::{ExportFormat, Exporter, canonical_json};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use super::{Manifest, TenantChain, manifest_path, signature_path, signing_key};
use crate::cli::{AuditFormat, ExportArgs};

/// Entries read per database round trip.
const CHUNK: i64 = 1000;

/// Refuses a window that holds nothing before anything else happens: bad usage (exit 2, as
/// clap's own errors), before the database is reached or any file is created. An empty
/// export would look like a quiet trail.
pub fn check_window(args: &ExportArgs) {
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from >= to
    {
        clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!(
                "--from {} is not before --to {}: the window [from, to) is empty\n",
                from.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                to.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            ),
        )
        .exit();
    }
}

/// `workledger audit export`.
pub async fn export(pool: &PgPool, args: ExportArgs) -> anyhow::Result<()> {
    check_window(&args);
    let key = signing_key(args.signing_key.as_deref())?;
    let tenants: Vec<String> = match &args.tenant {
        Some(tenant) => vec![tenant.clone()],
        None => sqlx::query_scalar("select tenant_id from audit_chain_heads order by tenant_id")
            .fetch_all(pool)
            .await
            .context("cannot list the audit chains")?,
    };
    let format = match args.format {
        AuditFormat::Jsonl => ExportFormat::Jsonl,
        AuditFormat::Csv => ExportFormat::Csv,
    };
    let file = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut out = BufWriter::new(file);
    let mut digest = Sha256::new();
    let mut chains = Vec::new();
    let mut count = 0u64;
    // the log positions of the export's first and last entries, and when its earliest and
    // latest occurred
    let mut first: Option<LogPosition> = None;
    let mut last: Option<LogPosition> = None;
    let mut occurred: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for tenant in &tenants {
        let range = projections::audit::chain_range(pool, tenant, args.from, args.to).await?;
        let Some(range) = range else { continue };
        let mut exporter = Exporter::new(pool.clone(), tenant.clone(), Some(range), format, CHUNK);
        let mut chunk_no = 0;
        while let Some(chunk) = exporter.next_chunk().await? {
            chunk_no += 1;
            // one CSV header for the whole file
            if format == ExportFormat::Csv && chunk_no == 1 && !chains.is_empty() {
                continue;
            }
            digest.update(&chunk);
            out.write_all(&chunk)?;
        }
        let ends = sqlx::query(
            "select chain_seq, tx_id, global_position, encode(prev_hash, 'hex') as prev_hash \
             from audit_entries where tenant_id = $1 and chain_seq in ($2, $3) order by chain_seq",
        )
        .bind(tenant)
        .bind(range.first)
        .bind(range.last)
        .fetch_all(pool)
        .await?;
        let row_at = |seq: i64| ends.iter().find(|r| r.get::<i64, _>("chain_seq") == seq);
        let (Some(head), Some(tail)) = (row_at(range.first), row_at(range.last)) else {
            anyhow::bail!("the audit chain of {tenant} changed during the export");
        };
        // a chain is in log order: its ends are its first and last positions
        let at = |r: &sqlx::postgres::PgRow| LogPosition {
            tx_id: r.get::<i64, _>("tx_id") as u64,
            global_position: r.get("global_position"),
        };
        let (h, t) = (at(head), at(tail));
        first = Some(first.map_or(h, |f| f.min(h)));
        last = Some(last.map_or(t, |l| l.max(t)));
        if let Some((earliest, latest)) = exporter.occurred() {
            occurred = Some(occurred.map_or((earliest, latest), |(e, l)| {
                (e.min(earliest), l.max(latest))
            }));
        }
        count += exporter.entries();
        chains.push(TenantChain {
            tenant_id: tenant.clone(),
            entries: exporter.entries(),
            first_seq: range.first,
            last_seq: range.last,
            first_prev_hash: head.get("prev_hash"),
            final_hash: exporter.last_hash().unwrap_or_default().to_owned(),
        });
    }
    if format == ExportFormat::Csv && chains.is_empty() {
        // an empty CSV export still has its header
        let header = format!("{}\r\n", projections::audit::FIELDS.join(","));
        digest.update(header.as_bytes());
        out.write_all(header.as_bytes())?;
    }
    out.flush()?;
    drop(out);

    let manifest = Manifest {
        format: args.format.as_str().to_owned(),
        created_at: Utc::now(),
        count,
        first_position: first.map(|p| p.to_string()),
        last_position: last.map(|p| p.to_string()),
        first_occurred_at: occurred.map(|o| o.0),
        last_occurred_at: occurred.map(|o| o.1),
        requested_from: args.from,
        requested_to: args.to,
        tenants: chains,
        sha256: hex::encode(digest.finalize()),
        public_key: key
            .as_ref()
            .map(|k| B64.encode(k.verifying_key().as_bytes())),
    };
    let manifest_file = manifest_path(&args.output);
    std::fs::write(&manifest_file, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("cannot write {}", manifest_file.display()))?;
    if let Some(key) = &key {
        let signature = key.sign(&canonical_json(&serde_json::to_value(&manifest)?));
        let sig_file = signature_path(&args.output);
        std::fs::write(&sig_file, B64.encode(signature.to_bytes()))
            .with_context(|| format!("cannot write {}", sig_file.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "exported {count} audit entries of {} tenant(s) to {} (manifest {}{})",
        manifest.tenants.len(),
        args.output.display(),
        manifest_file.display(),
        if key.is_some() { ", signed" } else { "" }
    )?;
    Ok(())
}
