//! `workledger documents prune`: stored contents no document needs are deleted, the others
//! kept, deciding from the log.

mod support;

use domain::task::TaskCommand;
use domain::{Caller, DocumentCommand, Role};
use event_schemas::DocumentFile;
use event_store::testing::TestDatabase;
use orchestrator::Runtime;
use uuid::Uuid;

use support::{ctx, populated, runtime, stdout, workledger};

fn digest(n: u8) -> String {
    format!("{n:064x}")
}

fn clerk() -> Caller {
    Caller::user("acme", Uuid::now_v7(), [Role::Member], ["clerks"])
}

/// Attaches a file with content `n` to `task`; the document's id.
async fn attach(rt: &Runtime, task: Uuid, n: u8) -> Uuid {
    let document = DocumentFile {
        document_id: Uuid::now_v7(),
        name: format!("file-{n}.txt"),
        media_type: "text/plain".to_owned(),
        size: 10,
        sha256: digest(n),
    };
    let id = document.document_id;
    let mut request = ctx("acme", vec![], &[]);
    request.caller = clerk();
    rt.task(
        &request,
        task,
        TaskCommand::Document(DocumentCommand::Attach(document)),
        None,
    )
    .await
    .unwrap();
    id
}

async fn remove(rt: &Runtime, task: Uuid, document_id: Uuid) {
    let mut request = ctx("acme", vec![Role::Operator], &[]);
    request.caller = Caller::user(
        "acme",
        Uuid::now_v7(),
        [Role::Operator],
        Vec::<String>::new(),
    );
    rt.task(
        &request,
        task,
        TaskCommand::Document(DocumentCommand::Remove {
            document_id,
            reason: None,
        }),
        None,
    )
    .await
    .unwrap();
}

/// Stores content `n` for `tenant`, uploaded `minutes` ago.
async fn store(db: &TestDatabase, tenant: &str, n: u8, minutes: i32) {
    sqlx::query(
        "insert into document_contents (tenant_id, sha256, size, content, stored_at) \
         values ($1, $2, 10, 'ten bytes.', now() - make_interval(mins => $3))",
    )
    .bind(tenant)
    .bind(digest(n))
    .bind(minutes)
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn stored(db: &TestDatabase) -> Vec<(String, String)> {
    sqlx::query_as("select tenant_id, sha256 from document_contents order by 1, 2")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

fn contents(list: &[(&str, u8)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(t, n)| ((*t).to_owned(), digest(*n)))
        .collect()
}

#[tokio::test]
async fn contents_no_document_needs_are_deleted_and_removed_ones_after_their_retention() {
    let db = populated(&["acme"], 1).await;
    let rt = runtime(&db);
    let task: String = sqlx::query_scalar(
        "select aggregate_id from events where event_type = 'TaskOpened' limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let task: Uuid = task.parse().unwrap();
    attach(&rt, task, 1).await;
    let removed = attach(&rt, task, 2).await;
    remove(&rt, task, removed).await;
    // the same content, once removed and once still attached
    let removed_twin = attach(&rt, task, 3).await;
    remove(&rt, task, removed_twin).await;
    attach(&rt, task, 3).await;
    for n in [1, 2, 3] {
        store(&db, "acme", n, 120).await;
    }
    store(&db, "acme", 4, 120).await; // its command was refused: no document
    store(&db, "acme", 5, 1).await; // an upload whose command is on its way
    store(&db, "globex", 1, 120).await; // acme's file, not globex's

    let dry = stdout(&workledger(&db, &["documents", "prune", "--dry-run"]));
    assert!(
        dry.contains(&format!("acme {} 10 bytes unreferenced", digest(4))),
        "{dry}"
    );
    assert!(
        dry.contains(&format!("globex {} 10 bytes unreferenced", digest(1))),
        "{dry}"
    );
    assert!(
        dry.ends_with("would delete 2 contents (20 bytes)\n"),
        "{dry}"
    );
    assert_eq!(stored(&db).await.len(), 6, "a dry run deletes nothing");

    let pruned = stdout(&workledger(&db, &["documents", "prune"]));
    assert!(
        pruned.ends_with("deleted 2 contents (20 bytes)\n"),
        "{pruned}"
    );
    assert_eq!(
        stored(&db).await,
        contents(&[("acme", 1), ("acme", 2), ("acme", 3), ("acme", 5)])
    );

    // removed today: a cut-off before that keeps them, one after deletes the removed-only one
    let yesterday = (chrono::Utc::now() - chrono::TimeDelta::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let kept = stdout(&workledger(
        &db,
        &["documents", "prune", "--removed-before", &yesterday],
    ));
    assert!(kept.ends_with("deleted 0 contents (0 bytes)\n"), "{kept}");
    let tomorrow = (chrono::Utc::now() + chrono::TimeDelta::days(1)).to_rfc3339();
    let retention = stdout(&workledger(
        &db,
        &["documents", "prune", "--removed-before", &tomorrow],
    ));
    assert!(
        retention.contains(&format!("acme {} 10 bytes removed", digest(2))),
        "{retention}"
    );
    assert_eq!(
        stored(&db).await,
        contents(&[("acme", 1), ("acme", 3), ("acme", 5)])
    );

    // no grace: the fresh unreferenced upload goes too
    stdout(&workledger(&db, &["documents", "prune", "--grace", "0s"]));
    assert_eq!(stored(&db).await, contents(&[("acme", 1), ("acme", 3)]));

    let bad = workledger(&db, &["documents", "prune", "--removed-before", "January"]);
    assert_eq!(bad.status.code(), Some(2));
}
