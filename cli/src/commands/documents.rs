//! `workledger documents prune`: deletes stored document contents no document needs.
//!
//! Which content belongs to which document is read from the log (the `...DocumentAttached`
//! and `...DocumentRemoved` events), never from the `documents` read model, which may be
//! behind: a content attached a moment ago is not one to delete. An upload sets its content's
//! `stored_at` before it sends its command, and the delete checks `stored_at` again, row by
//! row: a content uploaded again while the prune runs (for a new document) is kept.

use std::io::Write;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use crate::cli::PruneArgs;

/// `2026-01-01T00:00:00Z`, or a date (`2026-01-01`: midnight UTC).
pub fn parse_day_or_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    crate::commands::events::parse_time(text).map_err(|_| {
        "expected a date (2026-01-01) or an RFC 3339 time (2026-01-01T00:00:00Z)".to_owned()
    })
}

/// The contents to delete, with why: `unreferenced` (no document) or `removed` (every
/// document with it removed before the cut-off). `$1`: the grace in seconds; `$2`: the
/// cut-off, or null. The document events are read through the partial index of migration
/// 0023, whose predicate is these four event types.
const PRUNABLE: &str = "\
    with attached as ( \
        select metadata->>'tenant_id' as tenant_id, \
               coalesce(payload #>> '{TaskDocumentAttached,document,document_id}', \
                        payload #>> '{InstanceDocumentAttached,document,document_id}') as document_id, \
               coalesce(payload #>> '{TaskDocumentAttached,document,sha256}', \
                        payload #>> '{InstanceDocumentAttached,document,sha256}') as sha256 \
        from events where event_type in ('TaskDocumentAttached', 'InstanceDocumentAttached') \
    ), removed as ( \
        select coalesce(payload #>> '{TaskDocumentRemoved,document_id}', \
                        payload #>> '{InstanceDocumentRemoved,document_id}') as document_id, \
               min(coalesce(payload #>> '{TaskDocumentRemoved,removed_at}', \
                            payload #>> '{InstanceDocumentRemoved,removed_at}')::timestamptz) as removed_at \
        from events where event_type in ('TaskDocumentRemoved', 'InstanceDocumentRemoved') \
        group by 1 \
    ), needed as ( \
        select a.tenant_id, a.sha256, \
               bool_or(r.document_id is null or $2::timestamptz is null or r.removed_at >= $2) as kept \
        from attached a left join removed r using (document_id) \
        group by 1, 2 \
    ) \
    select c.tenant_id, c.sha256, c.size, \
           case when n.sha256 is null then 'unreferenced' else 'removed' end as reason \
    from document_contents c \
    left join needed n on n.tenant_id = c.tenant_id and n.sha256 = c.sha256 \
    where c.stored_at < now() - make_interval(secs => $1) and (n.sha256 is null or not n.kept) \
    order by c.tenant_id, c.sha256";

/// Deletes (or with `--dry-run` lists) the contents no document needs.
pub async fn prune(pool: &PgPool, args: PruneArgs) -> anyhow::Result<()> {
    let grace = args.grace.as_secs_f64();
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(PRUNABLE)
        .bind(grace)
        .bind(args.removed_before)
        .fetch_all(pool)
        .await
        .context("cannot read which contents are needed")?;
    let mut out = std::io::stdout().lock();
    if args.dry_run {
        for (tenant, sha256, size, reason) in &rows {
            writeln!(out, "{tenant} {sha256} {size} bytes {reason}")?;
        }
        let bytes: i64 = rows.iter().map(|r| r.2).sum();
        writeln!(out, "would delete {} contents ({bytes} bytes)", rows.len())?;
        return Ok(());
    }
    let tenants: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let digests: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    // `stored_at` checked again: a content uploaded since it was read is needed again
    let deleted: Vec<(String, String, i64)> = sqlx::query_as(
        "delete from document_contents c \
         using unnest($1::text[], $2::text[]) as d(tenant_id, sha256) \
         where c.tenant_id = d.tenant_id and c.sha256 = d.sha256 \
           and c.stored_at < now() - make_interval(secs => $3) \
         returning c.tenant_id, c.sha256, c.size",
    )
    .bind(&tenants)
    .bind(&digests)
    .bind(grace)
    .fetch_all(pool)
    .await
    .context("cannot delete the contents")?;
    for (tenant, sha256, size) in &deleted {
        let reason = rows
            .iter()
            .find(|r| &r.0 == tenant && &r.1 == sha256)
            .map_or("", |r| r.3.as_str());
        writeln!(out, "{tenant} {sha256} {size} bytes {reason}")?;
    }
    let bytes: i64 = deleted.iter().map(|r| r.2).sum();
    writeln!(out, "deleted {} contents ({bytes} bytes)", deleted.len())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_is_a_date_or_a_time() {
        assert_eq!(
            parse_day_or_time("2026-01-01").unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_day_or_time("2026-01-01T12:30:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-01-01T11:30:00+00:00"
        );
        assert!(parse_day_or_time("January").is_err());
    }
}
