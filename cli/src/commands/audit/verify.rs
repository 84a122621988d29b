//! `workledger audit verify`: the signature, every entry's place in its chain, the manifest's
//! numbers and the file's sha256; the first problem found is reported as [`Tampered`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use projections::audit::{AuditEntry, ChainVerifier, canonical_json};
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
                count += 1;
            }
        }
        "jsonl" => {
            for (i, text) in BufReader::new(file).lines().enumerate() {
                let line = i as u64 + 1;
                let text = text.with_context(|| format!("cannot read line {line}"))?;
                let entry: AuditEntry = serde_json::from_str(&text)
                    .map_err(|e| Tampered(format!("line {line}: not an audit entry: {e}")))?;
                check(&mut verifier, &entry, line)?;
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
