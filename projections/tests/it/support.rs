//! Purchase orders driven through the real workflow runtime, raw events for the runtime's
//! tests, and read-model dumps to compare projections.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use domain::approval::ApprovalCommand;
use domain::definition::Definition;
use domain::examples::purchase_order_json;
use domain::ids::step_child_id;
use domain::task::TaskCommand;
use domain::{Caller, DocumentCommand, Role};
use event_schemas::{ApprovalDecision, DocumentFile, LogPosition};
use event_store::AppendNotifier;
use event_store::testing::TestDatabase;
use orchestrator::{RequestContext, Runtime, StaticDirectory};
use projections::Projections;
use serde_json::{Map, Value, json};
use sqlx::{PgPool, Row};
use uuid::Uuid;

pub const TENANT: &str = "acme";
pub const CLERK: u128 = 0xC1;
pub const MANAGERS: [u128; 2] = [0xA1, 0xA2];
pub const BOARD: [u128; 3] = [0xB1, 0xB2, 0xB3];
pub const LAWYER: u128 = 0x11;
pub const FINANCE: u128 = 0xF1;
pub const OPERATOR: u128 = 0x0F;

pub fn user(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub fn member(n: u128, groups: &[&str]) -> Caller {
    Caller::user(TENANT, user(n), [Role::Member], groups.iter().copied())
}

pub fn operator() -> Caller {
    Caller::user(
        TENANT,
        user(OPERATOR),
        [Role::Operator],
        Vec::<String>::new(),
    )
}

pub fn ctx(caller: Caller, at: DateTime<Utc>) -> RequestContext {
    RequestContext {
        caller,
        at,
        correlation_id: Uuid::now_v7(),
        request_id: Uuid::now_v7().to_string(),
    }
}

pub fn vars(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

pub fn runtime(pool: &PgPool) -> Arc<Runtime> {
    let directory = StaticDirectory::new();
    directory.set(TENANT, "managers", MANAGERS.map(user).to_vec());
    directory.set(TENANT, "board", BOARD.map(user).to_vec());
    Arc::new(Runtime::new(
        pool.clone(),
        AppendNotifier::disabled(),
        Arc::new(directory),
    ))
}

/// The fixed instant flows start at (read models keep event times, so tests can name days).
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Publishes the purchase-order definition.
pub async fn publish(rt: &Runtime) {
    let designer = Caller::user(TENANT, user(0xDE), [Role::Designer], Vec::<String>::new());
    let definition = Definition::from_json(&purchase_order_json(user(FINANCE))).unwrap();
    rt.publish(&ctx(designer, t0()), definition).await.unwrap();
}

/// One purchase order on the real runtime (cascade on the command path).
pub struct Po {
    pub rt: Arc<Runtime>,
    pub id: Uuid,
}

impl Po {
    /// Starts an order of `amount` (the definition must be published).
    pub async fn start(rt: &Arc<Runtime>, amount: Value, business_key: &str) -> Self {
        let started = rt
            .start(
                &ctx(operator(), t0()),
                "purchase-order",
                None,
                Some(business_key.into()),
                vars(json!({"amount": amount})),
            )
            .await
            .unwrap();
        Po {
            rt: rt.clone(),
            id: started.id.parse().unwrap(),
        }
    }

    pub fn child(&self, step: &str) -> Uuid {
        step_child_id(self.id, step, 1)
    }

    /// Claims (when unassigned) and completes the task of `step` at `minutes` after t0.
    pub async fn work(&self, step: &str, who: &Caller, output: Value, minutes: i64) {
        let task = self.child(step);
        let at = t0() + TimeDelta::minutes(minutes);
        let (state, _) = self.rt.load_task(task).await.unwrap();
        if state.assignee().is_none() {
            self.rt
                .task(&ctx(who.clone(), at), task, TaskCommand::Claim, None)
                .await
                .unwrap();
        }
        self.rt
            .task(
                &ctx(who.clone(), at),
                task,
                TaskCommand::Complete {
                    output: vars(output),
                },
                None,
            )
            .await
            .unwrap();
    }

    /// Attaches a small text file as `name` to the task of `step` as `who` (the projectors need
    /// only the event, not the stored content).
    pub async fn attach(&self, step: &str, who: &Caller, name: &str, minutes: i64) -> Uuid {
        let document = DocumentFile {
            document_id: Uuid::now_v7(),
            name: name.to_owned(),
            media_type: "text/plain".to_owned(),
            size: 5,
            sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".to_owned(),
        };
        let id = document.document_id;
        let at = t0() + TimeDelta::minutes(minutes);
        let command = TaskCommand::Document(DocumentCommand::Attach(document));
        self.rt
            .task(&ctx(who.clone(), at), self.child(step), command, None)
            .await
            .unwrap();
        id
    }

    pub async fn vote(&self, step: &str, n: u128, decision: ApprovalDecision, minutes: i64) {
        let command = ApprovalCommand::Decide {
            decision,
            comment: None,
        };
        let at = t0() + TimeDelta::minutes(minutes);
        self.rt
            .approval(&ctx(member(n, &[]), at), self.child(step), command, None)
            .await
            .unwrap();
    }
}

/// The log position of the last event appended so far, readable or not.
pub async fn last_appended(pool: &PgPool) -> LogPosition {
    let row = sqlx::query(
        "select tx_id::text::bigint as tx_id, global_position from events \
         order by tx_id desc, global_position desc limit 1",
    )
    .fetch_optional(pool)
    .await
    .unwrap();
    row.map_or(LogPosition::START, |row| LogPosition {
        tx_id: row.get::<i64, _>("tx_id") as u64,
        global_position: row.get("global_position"),
    })
}

/// Waits until everything appended so far is readable (a transaction of another test anywhere
/// in the cluster can hold the log back for a moment).
pub async fn wait_readable(pool: &PgPool) {
    let target = last_appended(pool).await;
    eventually(
        Duration::from_secs(20),
        "the log to be readable",
        || async { event_store::GlobalLog::head(pool).await.unwrap() >= target },
    )
    .await;
}

/// Runs every read-model projector until it has passed everything appended so far.
pub async fn project(pool: &PgPool) {
    project_with(&Projections::all(), pool).await;
}

pub async fn project_with(projections: &Projections, pool: &PgPool) {
    let target = last_appended(pool).await;
    projections
        .catch_up_to(pool, target, Duration::from_secs(20))
        .await
        .unwrap();
}

/// Every row of `table` as JSON, in a stable order.
pub async fn dump(pool: &PgPool, table: &str) -> Vec<Value> {
    sqlx::query_scalar(&format!(
        "select to_jsonb(t) from {table} t order by to_jsonb(t)::text"
    ))
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Every read-model table of every projector, dumped.
pub async fn dump_all(pool: &PgPool) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for projector in Projections::all().projectors() {
        for table in projector.tables() {
            out.push(((*table).to_owned(), dump(pool, table).await));
        }
    }
    out
}

/// Empties every read model and forgets the projectors' checkpoints.
pub async fn reset(pool: &PgPool) {
    for projector in Projections::all().projectors() {
        for table in projector.tables() {
            sqlx::query(&format!("truncate {table}"))
                .execute(pool)
                .await
                .unwrap();
        }
        sqlx::query("delete from checkpoints where name = $1")
            .bind(projector.name())
            .execute(pool)
            .await
            .unwrap();
    }
}

/// Appends `n` events of the aggregate type `test` in one transaction; `poison` marks the
/// payload of the one at index `poison`.
pub async fn append_raw(pool: &PgPool, tenant: &str, n: usize, poison: Option<usize>) -> Vec<Uuid> {
    append_raw_of(pool, "test", tenant, n, poison).await
}

/// [`append_raw`] with another aggregate type.
pub async fn append_raw_of(
    pool: &PgPool,
    aggregate_type: &str,
    tenant: &str,
    n: usize,
    poison: Option<usize>,
) -> Vec<Uuid> {
    let mut tx = pool.begin().await.unwrap();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let event_id = Uuid::now_v7();
        let aggregate_id = Uuid::now_v7().to_string();
        let metadata = json!({
            "event_id": event_id.to_string(), "tenant_id": tenant, "actor": "service:test",
            "correlation_id": Uuid::now_v7().to_string(), "causation_id": "test",
            "request_id": "test", "occurred_at": "2026-03-02T09:00:00.000000Z",
        });
        let payload = json!({"Ping": {"n": i, "poison": poison == Some(i)}});
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) values ($1, $2, 1, 'Ping', '1', $3, $4)",
        )
        .bind(aggregate_type)
        .bind(&aggregate_id)
        .bind(payload)
        .bind(metadata)
        .execute(&mut *tx)
        .await
        .unwrap();
        ids.push(event_id);
    }
    tx.commit().await.unwrap();
    ids
}

/// A fresh database with the purchase-order definition published, and its runtime.
pub async fn setup() -> (TestDatabase, Arc<Runtime>) {
    let db = TestDatabase::new().await;
    let rt = runtime(&db.pool);
    publish(&rt).await;
    (db, rt)
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Worker settings that retry a failed batch within a fraction of a second.
pub fn retrying() -> projections::RunSettings {
    projections::RunSettings {
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(100),
        ..projections::RunSettings::default()
    }
}

/// The log position of the first event of `event_type`.
pub async fn first_of(pool: &PgPool, event_type: &str) -> LogPosition {
    let (tx_id, global_position): (i64, i64) = sqlx::query_as(
        "select tx_id::text::bigint, global_position from events where event_type = $1 \
         order by tx_id, global_position limit 1",
    )
    .bind(event_type)
    .fetch_one(pool)
    .await
    .unwrap();
    LogPosition {
        tx_id: tx_id as u64,
        global_position,
    }
}
