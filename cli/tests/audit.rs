//! `workledger audit export` and `verify`: an export verifies, and every kind of tampering
//! (edit, deletion, insertion, reordering, a wrong key) exits 5 naming the first bad entry.

use std::path::{Path, PathBuf};

use event_store::testing::TestDatabase;
use uuid::Uuid;

mod support;
use support::{populated, stdout, workledger_with_env};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// A fresh directory for an export.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("workledger-audit-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `audit verify` on `file`: the exit code and the stderr.
fn verify(db: &TestDatabase, file: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["audit", "verify", path(file)];
    args.extend_from_slice(extra);
    let output = workledger_with_env(db, &args, &[]);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn export(db: &TestDatabase, format: &str, env: &[(&str, &str)]) -> PathBuf {
    let file = scratch().join(format!("audit.{format}"));
    stdout(&workledger_with_env(
        db,
        &["audit", "export", "--format", format, "-o", path(&file)],
        env,
    ));
    file
}

fn rewrite_lines(file: &Path, change: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    change(&mut lines);
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

fn assert_tampered(db: &TestDatabase, file: &Path, expect: &[&str]) {
    let (code, stderr) = verify(db, file, &[]);
    assert_eq!(code, Some(5), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: tampered:"), "{stderr}");
    for e in expect {
        assert!(stderr.contains(e), "{e:?} in {stderr}");
    }
}

#[tokio::test]
async fn an_export_verifies_and_its_manifest_describes_it() {
    let db = populated(&["acme", "globex"], 4).await;
    let entries: i64 = sqlx::query_scalar("select count(*) from audit_entries")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let file = export(&db, "jsonl", &[]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.manifest.json", path(&file))).unwrap())
            .unwrap();
    assert_eq!(manifest["count"], entries);
    assert_eq!(manifest["format"], "jsonl");
    assert_eq!(manifest["tenants"].as_array().unwrap().len(), 2);
    assert_eq!(manifest["tenants"][0]["tenant_id"], "acme");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().lines().count() as i64,
        entries
    );
    let (code, stderr) = verify(&db, &file, &[]);
    assert_eq!(code, Some(0), "{stderr}");

    let csv = export(&db, "csv", &[]);
    let (code, stderr) = verify(&db, &csv, &[]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn one_tenant_exports_alone_and_verifies() {
    let db = populated(&["acme", "globex"], 4).await;
    let file = scratch().join("globex.jsonl");
    stdout(&workledger_with_env(
        &db,
        &["audit", "export", "--tenant", "globex", "-o", path(&file)],
        &[],
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().count() >= 1);
    assert!(text.lines().all(|l| l.contains("\"tenant_id\":\"globex\"")));
    assert_eq!(verify(&db, &file, &[]).0, Some(0));
}

#[tokio::test]
async fn every_kind_of_tampering_exits_5_naming_the_first_bad_entry() {
    let db = populated(&["acme", "globex"], 4).await;
    let original = export(&db, "jsonl", &[]);
    let copy = |name: &str| {
        let file = original.with_file_name(name);
        std::fs::copy(&original, &file).unwrap();
        std::fs::copy(
            format!("{}.manifest.json", path(&original)),
            format!("{}.manifest.json", path(&file)),
        )
        .unwrap();
        file
    };

    let edited = copy("edited.jsonl");
    rewrite_lines(&edited, |lines| {
        let mut entry: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        entry["actor"] = "user:someone-else".into();
        lines[1] = entry.to_string();
    });
    assert_tampered(&db, &edited, &["line 2", "entry 2", "edited"]);

    let deleted = copy("deleted.jsonl");
    rewrite_lines(&deleted, |lines| {
        lines.remove(1);
    });
    assert_tampered(&db, &deleted, &["line 2", "chain_seq 3"]);

    let inserted = copy("inserted.jsonl");
    rewrite_lines(&inserted, |lines| {
        let again = lines[1].clone();
        lines.insert(2, again);
    });
    assert_tampered(&db, &inserted, &["line 3"]);

    let swapped = copy("swapped.jsonl");
    rewrite_lines(&swapped, |lines| lines.swap(1, 2));
    assert_tampered(&db, &swapped, &["line 2", "event "]);

    let truncated = copy("truncated.jsonl");
    rewrite_lines(&truncated, |lines| {
        lines.pop();
    });
    assert_tampered(&db, &truncated, &["entries"]);

    let edited_csv = export(&db, "csv", &[]);
    rewrite_lines(&edited_csv, |lines| {
        lines[2] = lines[2].replace("acme", "acmf");
    });
    let (code, stderr) = verify(&db, &edited_csv, &[]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[tokio::test]
async fn a_signed_manifest_verifies_with_its_key_and_fails_with_another() {
    let db = populated(&["acme", "globex"], 4).await;
    let seed = B64.encode([7u8; 32]);
    let file = export(&db, "jsonl", &[("WORKLEDGER_AUDIT_SIGNING_KEY", &seed)]);
    let public = B64.encode(
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
            .verifying_key()
            .as_bytes(),
    );
    assert!(Path::new(&format!("{}.manifest.sig", path(&file))).exists());
    let (code, stderr) = verify(&db, &file, &["--public-key", &public]);
    assert_eq!(code, Some(0), "{stderr}");

    let other = B64.encode(
        ed25519_dalek::SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .as_bytes(),
    );
    let (code, stderr) = verify(&db, &file, &["--public-key", &other]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("signature"), "{stderr}");

    // a manifest edited after signing no longer verifies, even with its own key
    let manifest = format!("{}.manifest.json", path(&file));
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["count"] = 1.into();
    std::fs::write(&manifest, value.to_string()).unwrap();
    let (code, stderr) = verify(&db, &file, &[]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("signature"), "{stderr}");
}

#[tokio::test]
async fn a_missing_file_is_a_clear_failure_and_a_missing_manifest_is_tampering() {
    let db = TestDatabase::new().await;
    let (code, stderr) = verify(&db, Path::new("/nonexistent/audit.jsonl"), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a readable file"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let dir = scratch();
    let orphan = dir.join("orphan.jsonl");
    std::fs::write(&orphan, "").unwrap();
    let (code, stderr) = verify(&db, &orphan, &[]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("manifest"), "{stderr}");
}

#[tokio::test]
async fn a_time_range_selects_entries_and_an_empty_range_still_verifies() {
    let db = populated(&["acme", "globex"], 4).await;
    let file = scratch().join("future.jsonl");
    stdout(&workledger_with_env(
        &db,
        &[
            "audit",
            "export",
            "--from",
            "2999-01-01T00:00:00Z",
            "-o",
            path(&file),
        ],
        &[],
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
    assert_eq!(verify(&db, &file, &[]).0, Some(0));

    let file = scratch().join("past.csv");
    stdout(&workledger_with_env(
        &db,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "--to",
            "2999-01-01T00:00:00Z",
            "-o",
            path(&file),
        ],
        &[],
    ));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.manifest.json", path(&file))).unwrap())
            .unwrap();
    assert!(manifest["count"].as_u64().unwrap() > 0);
    assert_eq!(manifest["requested_to"], "2999-01-01T00:00:00Z");
    assert_eq!(verify(&db, &file, &[]).0, Some(0));
}

/// Entries are not in time order everywhere along the chain (`occurred_at` is when a command
/// was asked for): a window still exports every entry that occurred in it, as a stretch of
/// chain that verifies, and the manifest gives the earliest and latest time written.
#[tokio::test]
async fn a_time_range_exports_every_entry_of_the_window_when_times_are_out_of_chain_order() {
    let db = TestDatabase::new().await;
    let rt = support::runtime(&db);
    let at = |s: &str| -> chrono::DateTime<chrono::Utc> { s.parse().unwrap() };
    let asked_at = |time: &str, roles: Vec<domain::Role>| {
        let mut ctx = support::ctx("acme", roles, &[]);
        ctx.at = at(time);
        ctx
    };
    rt.publish(
        &asked_at("2026-05-01T09:00:00Z", vec![domain::Role::Designer]),
        domain::definition::Definition::from_json(support::ONE_TASK).unwrap(),
    )
    .await
    .unwrap();
    // appended in this order, asked for in the other
    for time in ["2026-05-01T10:00:02Z", "2026-05-01T10:00:01Z"] {
        rt.start(
            &asked_at(time, vec![domain::Role::Operator]),
            "one-task",
            None,
            None,
            Default::default(),
        )
        .await
        .unwrap();
    }
    support::project_everything(&db.pool).await;
    let in_window: i64 = sqlx::query_scalar(
        "select count(*) from audit_entries where occurred_at >= '2026-05-01T10:00:00Z' \
         and occurred_at < '2026-05-01T10:00:03Z'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        in_window >= 4,
        "both instances and their tasks: {in_window}"
    );

    let file = scratch().join("window.jsonl");
    stdout(&workledger_with_env(
        &db,
        &[
            "audit",
            "export",
            "--from",
            "2026-05-01T10:00:00Z",
            "--to",
            "2026-05-01T10:00:03Z",
            "-o",
            path(&file),
        ],
        &[],
    ));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.manifest.json", path(&file))).unwrap())
            .unwrap();
    assert_eq!(manifest["count"], in_window, "the definition is outside");
    assert_eq!(manifest["first_occurred_at"], "2026-05-01T10:00:01Z");
    assert_eq!(manifest["last_occurred_at"], "2026-05-01T10:00:02Z");
    let (code, stderr) = verify(&db, &file, &[]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn a_line_that_is_not_utf8_is_tampering_naming_the_line() {
    let db = populated(&["acme"], 2).await;
    let file = export(&db, "jsonl", &[]);
    let mut bytes = std::fs::read(&file).unwrap();
    let second = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    let at = second
        + bytes[second..]
            .windows(4)
            .position(|w| w == b"acme")
            .unwrap();
    bytes[at] = 0xff;
    std::fs::write(&file, bytes).unwrap();
    assert_tampered(&db, &file, &["line 2", "UTF-8"]);
}

/// `audit verify` with `manifest.json` of `file` changed by `change` (unsigned, so only the
/// recomputation can notice).
fn assert_manifest_edit_is_tampering(
    db: &TestDatabase,
    file: &Path,
    name: &str,
    change: impl FnOnce(&mut serde_json::Value),
    expect: &[&str],
) {
    let copy = file.with_file_name(name);
    std::fs::copy(file, &copy).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.manifest.json", path(file))).unwrap())
            .unwrap();
    let mut edited = manifest.clone();
    change(&mut edited);
    assert_ne!(edited, manifest, "{name}: the edit changes the manifest");
    std::fs::write(
        format!("{}.manifest.json", path(&copy)),
        serde_json::to_vec_pretty(&edited).unwrap(),
    )
    .unwrap();
    assert_tampered(db, &copy, expect);
}

/// A change to a manifest.
type Edit<'a> = Box<dyn FnOnce(&mut serde_json::Value) + 'a>;

fn shifted(time: &serde_json::Value, seconds: i64) -> serde_json::Value {
    let at: chrono::DateTime<chrono::Utc> = time.as_str().unwrap().parse().unwrap();
    serde_json::to_value(at + chrono::Duration::seconds(seconds)).unwrap()
}

#[tokio::test]
async fn edits_to_the_manifests_positions_times_and_window_are_tampering() {
    let db = populated(&["acme", "globex"], 3).await;
    let file = export(&db, "jsonl", &[]);
    assert_eq!(verify(&db, &file, &[]).0, Some(0));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.manifest.json", path(&file))).unwrap())
            .unwrap();
    let first = manifest["first_position"].as_str().unwrap().to_owned();
    let last = manifest["last_position"].as_str().unwrap().to_owned();
    assert_ne!(first, last);
    let (tx, position) = first.split_once('.').unwrap();
    let tx: u64 = tx.parse().unwrap();

    let cases: Vec<(&str, Edit<'_>, &str)> = vec![
        (
            "first-position.jsonl",
            Box::new(|m| m["first_position"] = last.clone().into()),
            "first_position",
        ),
        (
            // the same global position in another transaction is another position
            "first-position-tx.jsonl",
            Box::new(move |m| m["first_position"] = format!("{}.{position}", tx + 1).into()),
            "first_position",
        ),
        (
            "last-position.jsonl",
            Box::new(|m| m["last_position"] = first.clone().into()),
            "last_position",
        ),
        (
            "no-last-position.jsonl",
            Box::new(|m| m["last_position"] = serde_json::Value::Null),
            "last_position",
        ),
        (
            "first-occurred.jsonl",
            Box::new(|m| m["first_occurred_at"] = shifted(&m["first_occurred_at"], -1)),
            "first_occurred_at",
        ),
        (
            "last-occurred.jsonl",
            Box::new(|m| m["last_occurred_at"] = shifted(&m["last_occurred_at"], 1)),
            "last_occurred_at",
        ),
        (
            "window.jsonl",
            Box::new(|m| {
                m["requested_from"] = "2026-05-02T00:00:00Z".into();
                m["requested_to"] = "2026-05-01T00:00:00Z".into();
            }),
            "requested_from",
        ),
    ];
    for (name, change, field) in cases {
        assert_manifest_edit_is_tampering(&db, &file, name, change, &[field]);
    }

    // an empty export describes nothing
    let empty = scratch().join("empty.jsonl");
    stdout(&workledger_with_env(
        &db,
        &["audit", "export", "--tenant", "initech", "-o", path(&empty)],
        &[],
    ));
    assert_eq!(verify(&db, &empty, &[]).0, Some(0));
    let first_of_full = manifest["first_position"].clone();
    assert_manifest_edit_is_tampering(
        &db,
        &empty,
        "empty-described.jsonl",
        |m| m["first_position"] = first_of_full,
        &["first_position", "null"],
    );
}

#[tokio::test]
async fn a_window_that_does_not_end_after_it_starts_is_a_usage_error_and_writes_nothing() {
    let db = populated(&["acme"], 1).await;
    for (from, to) in [
        ("2026-05-01T10:00:00Z", "2026-05-01T10:00:00Z"),
        ("2026-05-02T00:00:00Z", "2026-05-01T00:00:00Z"),
    ] {
        let file = scratch().join("window.jsonl");
        let export = |env: &[(&str, &str)]| {
            let args = [
                "audit",
                "export",
                "--from",
                from,
                "--to",
                to,
                "-o",
                path(&file),
            ];
            workledger_with_env(&db, &args, env)
        };
        let output = export(&[]);
        assert_eq!(output.status.code(), Some(2), "--from {from} --to {to}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("error: --from") && stderr.contains("not before --to"),
            "{stderr}"
        );
        assert!(!file.exists(), "no file");
        assert!(!Path::new(&format!("{}.manifest.json", path(&file))).exists());
        // told before the database is reached: the same answer with no database there
        let unreachable = export(&[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")]);
        assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
        assert!(!file.exists(), "no file");
    }
    // a tenant with no chain is an empty export, and says so
    let file = scratch().join("nobody.jsonl");
    let text = stdout(&workledger_with_env(
        &db,
        &["audit", "export", "--tenant", "initech", "-o", path(&file)],
        &[],
    ));
    assert!(text.contains("exported 0 audit entries"), "{text}");
    assert_eq!(verify(&db, &file, &[]).0, Some(0));
}
