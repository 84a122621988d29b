//! The command path's kept connections: reused without the pool's release round trip,
//! closed when their statement was cancelled or their connection failed, pinged after sitting
//! idle, and waited for beyond the limit.

use std::time::Duration;

use event_store::connections::{Connections, session_ended};
use event_store::testing::TestDatabase;

async fn backend(lease: &mut event_store::connections::Lease) -> i32 {
    sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut **lease)
        .await
        .unwrap()
}

/// Ends the session `pid` from the server's side, as a restart would; returns once its backend
/// has exited.
async fn end_session(pool: &sqlx::PgPool, pid: i32) {
    let terminated: bool = sqlx::query_scalar("select pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(terminated);
}

#[tokio::test]
async fn a_kept_connection_serves_the_next_statement() {
    let db = TestDatabase::new().await;
    let connections = Connections::with_limit(db.pool.clone(), 1);
    let mut first = connections.acquire().await.unwrap();
    let pid = backend(&mut first).await;
    first.keep();
    let mut second = connections.acquire().await.unwrap();
    assert_eq!(backend(&mut second).await, pid, "the same connection again");
    second.keep();
}

#[tokio::test]
async fn beyond_the_limit_a_caller_waits_for_a_kept_connection() {
    let db = TestDatabase::new().await;
    let connections = Connections::with_limit(db.pool.clone(), 1);
    let mut held = connections.acquire().await.unwrap();
    let pid = backend(&mut held).await;
    let waiting = tokio::spawn({
        let connections = connections.clone();
        async move {
            let mut lease = connections.acquire().await.unwrap();
            backend(&mut lease).await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "no second connection while one is out"
    );
    held.keep();
    assert_eq!(
        waiting.await.unwrap(),
        pid,
        "the kept connection, not a pooled one"
    );
}

#[tokio::test]
async fn a_caller_waits_no_longer_than_the_pools_acquire_timeout() {
    let db = TestDatabase::new().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_with(db.pool.connect_options().as_ref().clone())
        .await
        .unwrap();
    let connections = Connections::with_limit(pool, 1);
    let _held = connections.acquire().await.unwrap();
    let started = std::time::Instant::now();
    let waited = connections.acquire().await;
    assert!(
        matches!(waited, Err(sqlx::Error::PoolTimedOut)),
        "{waited:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn an_error_answer_keeps_the_connection_usable() {
    let db = TestDatabase::new().await;
    let connections = Connections::with_limit(db.pool.clone(), 1);
    let mut lease = connections.acquire().await.unwrap();
    let pid = backend(&mut lease).await;
    let failed = sqlx::query("select 1 / 0").execute(&mut *lease).await;
    assert!(matches!(failed, Err(sqlx::Error::Database(_))));
    lease.keep_after(&failed);
    let mut again = connections.acquire().await.unwrap();
    assert_eq!(backend(&mut again).await, pid);
}

#[tokio::test]
async fn a_cancelled_statement_closes_its_connection_and_frees_its_place() {
    let db = TestDatabase::new().await;
    let connections = Connections::with_limit(db.pool.clone(), 1);
    let mut lease = connections.acquire().await.unwrap();
    let pid = backend(&mut lease).await;
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        sqlx::query("select pg_sleep(5)").execute(&mut *lease),
    )
    .await;
    assert!(cancelled.is_err(), "the statement was cut off");
    drop(lease);
    // with a limit of one, this waits forever unless the closed connection's place was freed
    let mut next = tokio::time::timeout(Duration::from_secs(5), connections.acquire())
        .await
        .expect("the closed connection's place was freed")
        .unwrap();
    assert_ne!(backend(&mut next).await, pid, "a fresh connection");
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&mut *next)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn a_connection_that_failed_is_not_kept() {
    let db = TestDatabase::new().await;
    let connections = Connections::with_limit(db.pool.clone(), 1);
    let mut lease = connections.acquire().await.unwrap();
    let pid = backend(&mut lease).await;
    lease.keep();
    end_session(&db.pool, pid).await;
    let mut broken = connections.acquire().await.unwrap();
    let failed = sqlx::query("select 1").execute(&mut *broken).await;
    assert!(failed.is_err(), "the connection was ended");
    broken.keep_after(&failed);
    let mut next = connections.acquire().await.unwrap();
    assert_ne!(
        backend(&mut next).await,
        pid,
        "a new connection, not the broken one"
    );
}

#[tokio::test]
async fn a_connection_cut_while_idle_is_replaced_before_it_is_handed_out() {
    let db = TestDatabase::new().await;
    let connections = Connections::with_idle_check(db.pool.clone(), 1, Duration::ZERO);
    let mut lease = connections.acquire().await.unwrap();
    let pid = backend(&mut lease).await;
    lease.keep();
    end_session(&db.pool, pid).await;
    // the dead connection is pinged, closed, and its place taken by a new one
    let mut next = connections.acquire().await.unwrap();
    assert_ne!(backend(&mut next).await, pid);
    next.keep();
    // a live one answers its ping and is handed out again
    let mut again = connections.acquire().await.unwrap();
    let live = backend(&mut again).await;
    again.keep();
    assert_eq!(
        backend(&mut connections.acquire().await.unwrap()).await,
        live
    );
}

#[tokio::test]
async fn a_session_ended_under_its_statement_is_told_apart_from_an_error_answer() {
    let db = TestDatabase::new().await;
    let connections = Connections::with_limit(db.pool.clone(), 1);
    let mut lease = connections.acquire().await.unwrap();
    let pid = backend(&mut lease).await;
    let divided = sqlx::query("select 1 / 0").execute(&mut *lease).await;
    assert!(!session_ended(&divided.unwrap_err()));
    let pool = db.pool.clone();
    let terminate = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query("select pg_terminate_backend($1)")
            .bind(pid)
            .execute(&pool)
            .await
            .unwrap();
    });
    let ended = sqlx::query("select pg_sleep(10)")
        .execute(&mut *lease)
        .await
        .unwrap_err();
    terminate.await.unwrap();
    assert!(session_ended(&ended), "{ended:?}");
}
