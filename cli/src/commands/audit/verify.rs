//! `workledger audit verify`: the signature, every entry's place in its chain, the manifest's
//! numbers (count, chain ends, positions, times) and the file's sha256; the first problem found
//! is reported as [`Tampered`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use event_schemas::LogPosition;
use projections::audit::{AuditEntry, ChainVerifier, canonical_json};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Manifest, Tampered, manifest_path, signature_path};
use crate::cli::VerifyArgs;

/// `workledger audit verify`: the chain(s), then the manifest, then the signature.
pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    // a file that is not there is an operator's mistake, not tampering
    if !args.file.is_file() {
        anyhow::bail!("{} is not a readable file", args.file.display());
    }
    let manifest_file = manifest_path(&args.file);
    let manifest_bytes = std::fs::read(&manifest_file).map_err(|e| {
        Tampered(format!(
            "cannot read the manifest {}: {e}",
            manifest_file.display()
        ))
    })?;
    let manifest_value: serde_json::Value = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| Tampered(format!("the manifest is not valid JSON: {e}")))?;
    let manifest: Manifest = serde_json::from_value(manifest_value.clone())
        .map_err(|e| Tampered(format!("the manifest is malformed: {e}")))?;

    // the signature first: a valid one makes the manifest's numbers trustworthy
    check_signature(&args, &manifest, &manifest_value)?;

    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let mut verifier = ChainVerifier::new();
    let mut count = 0u64;
    let mut described = Described::default();
    match manifest.format.as_str() {
        "csv" => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(BufReader::new(file));
            for (i, record) in reader.records().enumerate() {
                // line 1 is the header; a quoted field may span lines, so ask the reader
                let record = record.map_err(|e| {
                    let line = e.position().map_or(i as u64 + 2, |p| p.line());
                    Tampered(format!("line {line}: not a CSV record: {e}"))
                })?;
                let line = record.position().map_or(i as u64 + 2, |p| p.line());
                let fields: Vec<&str> = record.iter().collect();
                let entry = AuditEntry::from_record(&fields)
                    .map_err(|e| Tampered(format!("line {line}: not an audit entry: {e}")))?;
                check(&mut verifier, &entry, line)?;
                described.add(&entry);
                count += 1;
            }
        }
        "jsonl" => {
            // split rather than `lines()`: a byte that is not UTF-8 is a changed file (exit 5),
            // not a read error
            for (i, bytes) in BufReader::new(file).split(b'\n').enumerate() {
                let line = i as u64 + 1;
                let mut bytes = bytes.with_context(|| format!("cannot read line {line}"))?;
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                let text = String::from_utf8(bytes)
                    .map_err(|e| Tampered(format!("line {line}: not UTF-8 text: {e}")))?;
                let entry: AuditEntry = serde_json::from_str(&text)
                    .map_err(|e| Tampered(format!("line {line}: not an audit entry: {e}")))?;
                check(&mut verifier, &entry, line)?;
                described.add(&entry);
                count += 1;
            }
        }
        other => {
            return Err(Tampered(format!("the manifest names an unknown format {other:?}")).into());
        }
    }

    let chains = verifier.finish();
    if count != manifest.count {
        return Err(Tampered(format!(
            "the file has {count} entries, the manifest says {}",
            manifest.count
        ))
        .into());
    }
    for expected in &manifest.tenants {
        let Some(found) = chains.iter().find(|c| c.tenant_id == expected.tenant_id) else {
            return Err(Tampered(format!(
                "no entries of tenant {} though the manifest lists {}",
                expected.tenant_id, expected.entries
            ))
            .into());
        };
        if found.first_seq != expected.first_seq
            || found.first_prev_hash != expected.first_prev_hash
        {
            return Err(Tampered(format!(
                "tenant {}: the chain starts at entry {}, the manifest says {} (leading entries removed or added)",
                expected.tenant_id, found.first_seq, expected.first_seq
            ))
            .into());
        }
        if found.last_seq != expected.last_seq || found.last_hash != expected.final_hash {
            return Err(Tampered(format!(
                "tenant {}: the chain ends at entry {} with hash {}, the manifest says entry {} with {} (trailing entries removed or added)",
                expected.tenant_id, found.last_seq, found.last_hash, expected.last_seq, expected.final_hash
            ))
            .into());
        }
    }
    if let Some(extra) = chains
        .iter()
        .find(|c| !manifest.tenants.iter().any(|t| t.tenant_id == c.tenant_id))
    {
        return Err(Tampered(format!(
            "entries of tenant {} that the manifest does not list",
            extra.tenant_id
        ))
        .into());
    }
    described.check(&manifest)?;
    let sha256 = file_sha256(&args.file)?;
    if sha256 != manifest.sha256 {
        return Err(Tampered(format!(
            "the file's sha256 is {sha256}, the manifest says {}",
            manifest.sha256
        ))
        .into());
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "intact: {count} entries, {} chain(s){}",
        chains.len(),
        if signature_path(&args.file).exists() {
            ", signature valid"
        } else {
            ""
        }
    )?;
    Ok(())
}

/// What the manifest's descriptive fields should say, recomputed from the entries.
#[derive(Debug, Default)]
struct Described {
    /// The smallest and largest log position of any entry.
    positions: Option<(LogPosition, LogPosition)>,
    /// When the earliest and the latest entry occurred (not the chains' ends: entries are not
    /// in time order everywhere).
    occurred: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Described {
    fn add(&mut self, entry: &AuditEntry) {
        let (p, at) = (entry.position, entry.occurred_at);
        self.positions = Some(self.positions.map_or((p, p), |(f, l)| (f.min(p), l.max(p))));
        self.occurred = Some(
            self.occurred
                .map_or((at, at), |(e, l)| (e.min(at), l.max(at))),
        );
    }

    /// The manifest's positions and times against the entries'; `requested_from` before
    /// `requested_to`. Entries need not lie inside the requested window: an export includes
    /// the entries of the chain stretch that occurred just outside it.
    fn check(&self, manifest: &Manifest) -> Result<(), Tampered> {
        let first = self.positions.map(|p| p.0.to_string());
        let last = self.positions.map(|p| p.1.to_string());
        compare(
            "first_position",
            &manifest.first_position,
            &first,
            "the entries' earliest position",
        )?;
        compare(
            "last_position",
            &manifest.last_position,
            &last,
            "the entries' latest position",
        )?;
        let earliest = self.occurred.map(|o| o.0);
        let latest = self.occurred.map(|o| o.1);
        compare(
            "first_occurred_at",
            &manifest.first_occurred_at,
            &earliest,
            "the earliest entry's occurred_at",
        )?;
        compare(
            "last_occurred_at",
            &manifest.last_occurred_at,
            &latest,
            "the latest entry's occurred_at",
        )?;
        if let (Some(from), Some(to)) = (manifest.requested_from, manifest.requested_to)
            && from >= to
        {
            return Err(Tampered(format!(
                "the manifest's requested_from {} is not before its requested_to {}",
                from.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                to.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            )));
        }
        Ok(())
    }
}

/// A manifest field against the value recomputed from the entries (`None`: no entries).
fn compare<T: PartialEq + Serialize>(
    field: &str,
    manifest: &Option<T>,
    entries: &Option<T>,
    what: &str,
) -> Result<(), Tampered> {
    if manifest == entries {
        return Ok(());
    }
    let show = |v: &Option<T>| serde_json::to_string(v).unwrap_or_default();
    Err(Tampered(format!(
        "the manifest's {field} is {}, but {what} is {}",
        show(manifest),
        show(entries)
    )))
}

fn check(verifier: &mut ChainVerifier, entry: &AuditEntry, line: u64) -> Result<(), Tampered> {
    verifier
        .push(entry)
        .map_err(|e| Tampered(format!("line {line}: {e}")))
}

fn check_signature(
    args: &VerifyArgs,
    manifest: &Manifest,
    value: &serde_json::Value,
) -> anyhow::Result<()> {
    let sig_file = signature_path(&args.file);
    let signature = match std::fs::read_to_string(&sig_file) {
        Ok(text) => text,
        Err(_) if args.public_key.is_none() && manifest.public_key.is_none() => return Ok(()),
        Err(e) => {
            return Err(Tampered(format!(
                "the manifest should be signed but {} cannot be read: {e}",
                sig_file.display()
            ))
            .into());
        }
    };
    let key_text = args
        .public_key
        .as_deref()
        .or(manifest.public_key.as_deref())
        .ok_or_else(|| Tampered("a signature but no public key in the manifest".into()))?;
    let key_bytes: [u8; 32] = B64
        .decode(key_text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("the public key is not 32 bytes of base64")?;
    let key = VerifyingKey::from_bytes(&key_bytes).context("the public key is not valid")?;
    let sig_bytes: [u8; 64] = B64
        .decode(signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Tampered("the signature is not 64 bytes of base64".into()))?;
    key.verify(&canonical_json(value), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| {
            Tampered("the manifest's signature does not verify with the public key".into())
        })?;
    Ok(())
}

fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut digest = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        digest.update(&buffer[..n]);
    }
    Ok(hex::encode(digest.finalize()))
}
