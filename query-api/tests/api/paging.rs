//! Keyset paging stays correct while rows are being inserted.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use domain::Role;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::*;

/// Inserts `n` open tasks offered to `clerks`, ten per opening instant (so the id breaks ties),
/// the instants spread over `minutes_from..` minutes after t0.
async fn insert_tasks(pool: &PgPool, n: i64, minutes_from: i64) -> Vec<Uuid> {
    sqlx::query_scalar(
        "insert into tasks (id, tenant_id, name, status, candidate_users, candidate_groups, form, \
             overdue, opened_at, opened_by, version, updated_at) \
         select gen_random_uuid(), 'acme', 'Task ' || i, 'open', '{}', '{clerks}', '[]', false, \
                $3::timestamptz + ((($2 + i / 10)) * interval '1 minute'), 'service:test', 1, \
                $3::timestamptz \
         from generate_series(0, $1 - 1) as i \
         returning id",
    )
    .bind(n)
    .bind(minutes_from)
    .bind(t0())
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn paging_over_ten_thousand_tasks_under_concurrent_inserts_visits_each_row_exactly_once() {
    let app = TestApp::spawn().await;
    let original: HashSet<Uuid> = insert_tasks(app.pool(), 10_000, 0)
        .await
        .into_iter()
        .collect();
    assert_eq!(original.len(), 10_000);
    // as autovacuum would have by now in a live database
    sqlx::query("analyze tasks")
        .execute(app.pool())
        .await
        .unwrap();

    // meanwhile: new tasks land before, among and after the ones being paged through
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let pool = app.pool().clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut inserted = 0;
            let mut offset = -50;
            while !stop.load(Ordering::SeqCst) && inserted < 20_000 {
                inserted += insert_tasks(&pool, 37, offset).await.len();
                offset = (offset + 97) % 1100;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            inserted
        })
    };

    let token = app.token(TENANT, user(1), &[Role::Member], &["clerks"]);
    let mut seen: Vec<Uuid> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/tasks?status=open&limit=333&cursor={c}"),
            None => "/api/v1/tasks?status=open&limit=333".to_owned(),
        };
        let page = app.ok(&path, &token).await;
        seen.extend(item_ids(&page).iter().map(|id| id.parse::<Uuid>().unwrap()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    stop.store(true, Ordering::SeqCst);
    let inserted = writer.await.unwrap();
    assert!(inserted > 0, "rows were inserted while paging");
    assert!(pages >= 31);

    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no row was visited twice");
    let missing = original.difference(&unique).count();
    assert_eq!(
        missing, 0,
        "every row that existed when paging began was visited"
    );
}
