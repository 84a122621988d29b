//! Exporting a tenant's audit trail in constant memory: JSON lines or CSV, one entry per line
//! with its hashes, read in keyset batches of `chain_seq`.
//!
//! An export is a contiguous stretch of the tenant's hash chain ([`chain_range`]), so it
//! verifies on its own with [`super::ChainVerifier`] ([`AuditEntry::from_record`] reads a CSV
//! record back). The query API streams it over HTTP; `workledger audit export` can write it to
//! a file with a manifest ([`Exporter::entries`], [`Exporter::last_hash`]).

use std::io;
use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use event_schemas::LogPosition;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::AuditEntry;

/// The fields of every exported entry, in order (the CSV header).
pub const FIELDS: [&str; 14] = [
    "event_id",
    "position",
    "tenant_id",
    "chain_seq",
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "event_version",
    "actor",
    "occurred_at",
    "payload",
    "prev_hash",
    "hash",
];

/// How entries are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line (the [`AuditEntry`] fields).
    #[default]
    Jsonl,
    /// A header line ([`FIELDS`]), then one record per entry, `payload` as JSON text; CRLF.
    Csv,
}

/// A stretch of a tenant's chain: `chain_seq` from `first` to `last`, both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainRange {
    pub first: i64,
    pub last: i64,
}

impl ChainRange {
    /// Entries in the range.
    pub fn len(&self) -> i64 {
        (self.last - self.first + 1).max(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the audit trail failed")]
    Database(#[from] sqlx::Error),
    #[error("writing an entry failed")]
    Write(#[from] io::Error),
}

/// The stretch of `tenant`'s chain an export from `from` to `to` covers: the shortest one that
/// holds every entry that occurred at or after `from` and before `to` (the whole chain without
/// either), so that it can be verified link by link. `occurred_at` is when a command was asked
/// for (a reaction carries its cause's), so it is not in chain order everywhere: an entry
/// inside the stretch that occurred outside the window is exported too, rather than any entry
/// of the window being left out. `None` when no entry occurred in the window.
pub async fn chain_range(
    pool: &PgPool,
    tenant: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Option<ChainRange>, sqlx::Error> {
    let (first, last): (Option<i64>, Option<i64>) = if from.is_none() && to.is_none() {
        sqlx::query_as("select 1::bigint, chain_seq from audit_chain_heads where tenant_id = $1")
            .bind(tenant)
            .fetch_optional(pool)
            .await?
            .unwrap_or((None, None))
    } else {
        // the window's entries, from the index on (tenant_id, occurred_at, chain_seq)
        sqlx::query_as(
            "select min(chain_seq), max(chain_seq) from audit_entries \
             where tenant_id = $1 and occurred_at >= coalesce($2, '-infinity') \
               and occurred_at < coalesce($3, 'infinity')",
        )
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await?
    };
    Ok(match (first, last) {
        (Some(first), Some(last)) if first <= last => Some(ChainRange { first, last }),
        _ => None,
    })
}

/// Writes a range of a tenant's chain chunk by chunk (one database round trip per chunk), so
/// memory stays at two chunks however long the trail is: while one chunk is written out, the
/// next one is already being read (Postgres turning entries to text and the export formatting
/// them run side by side).
#[derive(Debug)]
pub struct Exporter {
    pool: PgPool,
    tenant: String,
    next: i64,
    last: i64,
    /// The read of the chunk starting at `next`, under way.
    ahead: Option<tokio::task::JoinHandle<Result<Vec<PgRow>, sqlx::Error>>>,
    batch: i64,
    format: ExportFormat,
    header_written: bool,
    entries: u64,
    last_hash: Option<String>,
    /// When the earliest and the latest entry written occurred.
    occurred: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Exporter {
    /// An export of `range` (nothing for `None`) in chunks of `batch` entries.
    pub fn new(
        pool: PgPool,
        tenant: impl Into<String>,
        range: Option<ChainRange>,
        format: ExportFormat,
        batch: i64,
    ) -> Self {
        let range = range.unwrap_or(ChainRange { first: 1, last: 0 });
        Self {
            pool,
            tenant: tenant.into(),
            next: range.first,
            last: range.last,
            ahead: None,
            batch: batch.max(1),
            format,
            header_written: false,
            entries: 0,
            last_hash: None,
            occurred: None,
        }
    }

    /// The next chunk of the export, `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ExportError> {
        if self.format == ExportFormat::Csv && !self.header_written {
            self.header_written = true;
            let mut header = FIELDS.join(",").into_bytes();
            header.extend_from_slice(b"\r\n");
            return Ok(Some(header));
        }
        if self.next > self.last {
            return Ok(None);
        }
        let upto = self.upto(self.next);
        let rows = match self.ahead.take() {
            Some(read) => read
                .await
                .map_err(|e| io::Error::other(format!("reading ahead stopped: {e}")))??,
            None => read_chunk(self.pool.clone(), self.tenant.clone(), self.next, upto).await?,
        };
        if upto < self.last {
            let after = upto + 1;
            self.ahead = Some(tokio::spawn(read_chunk(
                self.pool.clone(),
                self.tenant.clone(),
                after,
                self.upto(after),
            )));
        }
        let mut out = Vec::with_capacity(rows.len() * 640);
        match self.format {
            ExportFormat::Jsonl => {
                for row in &rows {
                    let line = Line::read(row, &self.tenant)?;
                    line.write_json(&mut out)?;
                }
            }
            ExportFormat::Csv => {
                let mut writer = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(&mut out);
                for row in &rows {
                    let line = Line::read(row, &self.tenant)?;
                    writer
                        .write_record(line.fields())
                        .map_err(io::Error::from)?;
                }
                writer.flush()?;
            }
        }
        for row in &rows {
            let at: DateTime<Utc> = row.try_get(10).map_err(io::Error::other)?;
            self.occurred = Some(match self.occurred {
                Some((earliest, latest)) => (earliest.min(at), latest.max(at)),
                None => (at, at),
            });
        }
        if let Some(row) = rows.last() {
            self.last_hash = Some(Line::read(row, &self.tenant)?.hash.as_str().to_owned());
        }
        self.entries += rows.len() as u64;
        self.next = upto + 1;
        Ok(Some(out))
    }

    /// The last `chain_seq` of the chunk starting at `first`.
    fn upto(&self, first: i64) -> i64 {
        first.saturating_add(self.batch - 1).min(self.last)
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// When the earliest and the latest entry written so far occurred (not the chain's ends:
    /// entries are not in time order everywhere, see [`chain_range`]).
    pub fn occurred(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.occurred
    }

    /// The hash of the last entry written (the export's final hash once done).
    pub fn last_hash(&self) -> Option<&str> {
        self.last_hash.as_deref()
    }
}

impl Drop for Exporter {
    /// An export given up half-way (a client that went away) stops reading ahead.
    fn drop(&mut self) {
        if let Some(read) = self.ahead.take() {
            read.abort();
        }
    }
}

/// The entries of `tenant` from `chain_seq` `first` to `last`, as the export writes them.
async fn read_chunk(
    pool: PgPool,
    tenant: String,
    first: i64,
    last: i64,
) -> Result<Vec<PgRow>, sqlx::Error> {
    sqlx::query(
        "select event_id, tx_id, global_position, chain_seq, aggregate_type, aggregate_id, \
             sequence, event_type, event_version, actor, occurred_at, \
             payload::text as payload, prev_hash, hash \
         from audit_entries where tenant_id = $1 and chain_seq between $2 and $3 \
         order by chain_seq",
    )
    .bind(tenant)
    .bind(first)
    .bind(last)
    .fetch_all(&pool)
    .await
}

/// Why a CSV record is not an audit entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {message}")]
pub struct RecordError {
    pub field: &'static str,
    pub message: String,
}

impl AuditEntry {
    /// An entry from a CSV record of the export ([`FIELDS`] order).
    pub fn from_record<S: AsRef<str>>(fields: &[S]) -> Result<Self, RecordError> {
        if fields.len() != FIELDS.len() {
            return Err(RecordError {
                field: "record",
                message: format!("{} fields, expected {}", fields.len(), FIELDS.len()),
            });
        }
        let get = |i: usize| fields[i].as_ref();
        fn parse<T: std::str::FromStr>(field: &'static str, value: &str) -> Result<T, RecordError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| RecordError {
                field,
                message: e.to_string(),
            })
        }
        Ok(AuditEntry {
            event_id: parse::<Uuid>("event_id", get(0))?,
            position: parse::<LogPosition>("position", get(1))?,
            tenant_id: get(2).to_owned(),
            chain_seq: parse("chain_seq", get(3))?,
            aggregate_type: get(4).to_owned(),
            aggregate_id: get(5).to_owned(),
            sequence: parse("sequence", get(6))?,
            event_type: get(7).to_owned(),
            event_version: get(8).to_owned(),
            actor: get(9).to_owned(),
            occurred_at: DateTime::parse_from_rfc3339(get(10))
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| RecordError {
                    field: "occurred_at",
                    message: e.to_string(),
                })?,
            payload: serde_json::from_str(get(11)).map_err(|e| RecordError {
                field: "payload",
                message: e.to_string(),
            })?,
            prev_hash: get(12).to_owned(),
            hash: get(13).to_owned(),
        })
    }
}

/// One entry as the export writes it, its text borrowed from the row.
struct Line<'a> {
    event_id: Uuid,
    position: LogPosition,
    tenant_id: &'a str,
    chain_seq: i64,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    sequence: i64,
    event_type: &'a str,
    event_version: &'a str,
    actor: &'a str,
    occurred_at: String,
    /// As Postgres writes the stored JSON (the verifier re-canonicalizes it).
    payload: &'a str,
    prev_hash: Hex,
    hash: Hex,
}

/// A 32-byte hash as lowercase hex (written here rather than by Postgres' `encode`: a
/// lookup per byte, no allocation).
struct Hex([u8; 64]);

impl Hex {
    fn of(bytes: &[u8]) -> Result<Self, sqlx::Error> {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(bytes, &mut hex)
            .map_err(|_| sqlx::Error::Decode(format!("a hash of {} bytes", bytes.len()).into()))?;
        Ok(Self(hex))
    }

    fn as_str(&self) -> &str {
        // hex digits are ASCII
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl<'a> Line<'a> {
    /// The columns by index, in the order of `read_chunk`'s select list.
    fn read(row: &'a PgRow, tenant_id: &'a str) -> Result<Self, io::Error> {
        let get = || -> Result<Self, sqlx::Error> {
            Ok(Line {
                event_id: row.try_get(0)?,
                position: LogPosition {
                    tx_id: row.try_get::<i64, _>(1)? as u64,
                    global_position: row.try_get(2)?,
                },
                tenant_id,
                chain_seq: row.try_get(3)?,
                aggregate_type: row.try_get(4)?,
                aggregate_id: row.try_get(5)?,
                sequence: row.try_get(6)?,
                event_type: row.try_get(7)?,
                event_version: row.try_get(8)?,
                actor: row.try_get(9)?,
                occurred_at: row
                    .try_get::<DateTime<Utc>, _>(10)?
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
                payload: row.try_get(11)?,
                prev_hash: Hex::of(row.try_get(12)?)?,
                hash: Hex::of(row.try_get(13)?)?,
            })
        };
        get().map_err(io::Error::other)
    }

    fn fields(&self) -> [String; 14] {
        [
            self.event_id.to_string(),
            self.position.to_string(),
            self.tenant_id.to_owned(),
            self.chain_seq.to_string(),
            self.aggregate_type.to_owned(),
            self.aggregate_id.to_owned(),
            self.sequence.to_string(),
            self.event_type.to_owned(),
            self.event_version.to_owned(),
            self.actor.to_owned(),
            self.occurred_at.clone(),
            self.payload.to_owned(),
            self.prev_hash.as_str().to_owned(),
            self.hash.as_str().to_owned(),
        ]
    }

    /// `{"event_id":...,"payload":{...},...}\n`, strings escaped as JSON.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), io::Error> {
        let string = |out: &mut Vec<u8>, key: &str, value: &str| -> Result<(), io::Error> {
            write!(out, ",\"{key}\":")?;
            serde_json::to_writer(&mut *out, value).map_err(io::Error::other)
        };
        write!(out, "{{\"event_id\":\"{}\"", self.event_id)?;
        write!(out, ",\"position\":\"{}\"", self.position)?;
        string(out, "tenant_id", self.tenant_id)?;
        write!(out, ",\"chain_seq\":{}", self.chain_seq)?;
        string(out, "aggregate_type", self.aggregate_type)?;
        string(out, "aggregate_id", self.aggregate_id)?;
        write!(out, ",\"sequence\":{}", self.sequence)?;
        string(out, "event_type", self.event_type)?;
        string(out, "event_version", self.event_version)?;
        string(out, "actor", self.actor)?;
        write!(out, ",\"occurred_at\":\"{}\"", self.occurred_at)?;
        write!(out, ",\"payload\":{}", self.payload)?;
        out.extend_from_slice(b",\"prev_hash\":\"");
        out.extend_from_slice(&self.prev_hash.0);
        out.extend_from_slice(b"\",\"hash\":\"");
        out.extend_from_slice(&self.hash.0);
        out.extend_from_slice(b"\"}");
        out.push(b'\n');
        Ok(())
    }
}
