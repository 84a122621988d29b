//! Data for the query benchmarks.
//!
//! Tasks: the people through the command API (tenants, members, an operator and an auditor per
//! tenant), then a million tasks' events appended to the log in bulk, as the command path
//! stores them (`TaskOpened`, and `TaskOverdue`, `TaskCompleted` or `TaskCancelled` as their
//! lives went), for `workledger replay --projection tasks` to project. Creating a million
//! tasks through HTTP would take the best part of an hour on this machine; the events and the
//! read model are the same either way.
//!
//! Audit entries: `bench/sql/audit_entries.sql`, chained onto a tenant's chain a million at a
//! time.

use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Duration, Utc};
use cqrs_es::DomainEvent as _;
use event_schemas::task::{AGGREGATE_TYPE, TaskEvent};
use event_schemas::{Actor, EventMetadata};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::client::{self, Api, GROUPS};

/// Assignees per tenant: the logged-in members first, then people who never log in here.
const ASSIGNEES: usize = 200;
/// Days over which the tasks were opened, up to now.
const DAYS: i64 = 120;
/// Due this long after opening.
const DUE_AFTER_DAYS: i64 = 10;

/// splitmix64: reproducible data without a dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Creates the tenants and their people, then appends the tasks' events.
pub async fn tasks(
    admin: &Api,
    pool: &PgPool,
    tenants: usize,
    tasks: usize,
    members: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut assignees_by_tenant = Vec::new();
    for t in 0..tenants {
        let name = client::tenant(t);
        let tenant_admin = if t == 0 {
            admin.clone()
        } else {
            let email = format!("admin@{name}.bench.example");
            admin
                .post(
                    "/api/v1/tenants",
                    json!({"id": name, "name": format!("Bench {name}"),
                           "admin_email": email, "admin_password": client::PASSWORD}),
                )
                .await?;
            Api::login(
                &admin.client,
                &admin.base,
                &email,
                client::PASSWORD,
                Some(&name),
            )
            .await?
        };
        let mut assignees = Vec::with_capacity(ASSIGNEES);
        for m in 0..members {
            let email = client::member_email(&name, m);
            let groups = client::member_groups(m);
            assignees.push(
                tenant_admin
                    .create_user(&email, &["member"], &groups)
                    .await?,
            );
        }
        tenant_admin
            .create_user(&client::operator_email(&name), &["operator"], &[])
            .await?;
        tenant_admin
            .create_user(&client::auditor_email(&name), &["auditor"], &[])
            .await?;
        while assignees.len() < ASSIGNEES {
            assignees.push(Uuid::now_v7());
        }
        assignees_by_tenant.push((name, assignees));
    }
    eprintln!(
        "{} tenants with {members} members each in {:.1} s",
        tenants,
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let now = Utc::now();
    let per_tenant = tasks / tenants;
    let mut rng = Rng(7);
    let mut batch = Batch::default();
    let mut appended = 0usize;
    for (name, assignees) in &assignees_by_tenant {
        for i in 0..per_tenant {
            let opened_at = now - Duration::days(DAYS)
                + Duration::milliseconds((DAYS * 86_400_000) * i as i64 / per_tenant as i64);
            task_events(&mut rng, &mut batch, name, assignees, opened_at, now);
            if batch.len() >= 5000 {
                appended += batch.append(pool).await?;
            }
        }
    }
    appended += batch.append(pool).await?;
    sqlx::query("analyze events").execute(pool).await?;
    eprintln!(
        "{appended} events of {} tasks appended in {:.1} s",
        per_tenant * tenants,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One task's life: open tasks are mostly recent, overdue once past their due time.
fn task_events(
    rng: &mut Rng,
    batch: &mut Batch,
    tenant: &str,
    assignees: &[Uuid],
    opened_at: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    let id = Uuid::now_v7();
    let opener = Actor::User(assignees[rng.below(assignees.len())]);
    let mut candidate_groups = vec![client::group(rng.below(GROUPS))];
    if rng.chance(0.3) {
        let second = client::group(rng.below(GROUPS));
        if second != candidate_groups[0] {
            candidate_groups.push(second);
        }
    }
    let assignee = rng
        .chance(0.4)
        .then(|| assignees[rng.below(assignees.len())]);
    let candidate_users = if rng.chance(0.05) {
        vec![assignees[rng.below(assignees.len())]]
    } else {
        Vec::new()
    };
    let due_at = opened_at + Duration::days(DUE_AFTER_DAYS);
    let number = rng.below(1_000_000);
    let mut events = vec![(
        TaskEvent::TaskOpened {
            task_id: id,
            tenant_id: tenant.to_owned(),
            workflow: None,
            name: format!("Review invoice INV-{number:06}"),
            description: Some("Check the invoice against the purchase order".into()),
            assignee,
            candidate_users,
            candidate_groups,
            form: Vec::new(),
            due_at: Some(due_at),
            escalation: None,
            opened_by: opener.clone(),
            opened_at,
        },
        opened_at,
    )];
    let young = now - opened_at < Duration::days(DUE_AFTER_DAYS);
    let open = rng.chance(if young { 0.6 } else { 0.03 });
    if open {
        if due_at < now {
            events.push((
                TaskEvent::TaskOverdue {
                    due_at,
                    escalation: None,
                    marked_at: due_at,
                },
                due_at,
            ));
        }
    } else {
        let closed_at = opened_at + Duration::minutes(10 + rng.below(7 * 24 * 60) as i64);
        let closed_at = closed_at.min(now);
        let by = Actor::User(assignee.unwrap_or(assignees[rng.below(assignees.len())]));
        events.push((
            if rng.chance(0.95) {
                TaskEvent::TaskCompleted {
                    workflow: None,
                    output: serde_json::Map::from_iter([("approved".to_owned(), json!(true))]),
                    completed_by: by,
                    completed_at: closed_at,
                }
            } else {
                TaskEvent::TaskCancelled {
                    reason: "duplicate".into(),
                    cancelled_by: by,
                    cancelled_at: closed_at,
                }
            },
            closed_at,
        ));
    }
    for (sequence, (event, at)) in events.into_iter().enumerate() {
        batch.push(tenant, id, sequence as i64 + 1, &event, &opener, at);
    }
}

/// Events to append, column by column.
#[derive(Debug, Default)]
struct Batch {
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<String>,
    event_version: Vec<String>,
    payload: Vec<Value>,
    metadata: Vec<Value>,
}

impl Batch {
    fn len(&self) -> usize {
        self.sequence.len()
    }

    fn push(
        &mut self,
        tenant: &str,
        id: Uuid,
        sequence: i64,
        event: &TaskEvent,
        actor: &Actor,
        at: DateTime<Utc>,
    ) {
        let metadata = EventMetadata {
            event_id: Uuid::now_v7(),
            tenant_id: tenant.to_owned(),
            actor: actor.clone(),
            correlation_id: Uuid::now_v7(),
            causation_id: "bench".into(),
            request_id: "bench".into(),
            occurred_at: at,
        }
        .to_map(true);
        self.aggregate_id.push(id.to_string());
        self.sequence.push(sequence);
        self.event_type.push(event.event_type());
        self.event_version.push(event.event_version());
        self.payload
            .push(serde_json::to_value(event).unwrap_or(Value::Null));
        self.metadata
            .push(serde_json::to_value(metadata).unwrap_or(Value::Null));
    }

    /// Appends the batch in one statement (as the repository appends) and empties it.
    async fn append(&mut self, pool: &PgPool) -> anyhow::Result<usize> {
        let n = self.len();
        if n == 0 {
            return Ok(0);
        }
        sqlx::query(
            "insert into events \
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             select $1, * from unnest($2::text[], $3::bigint[], $4::text[], $5::text[], \
                                      $6::jsonb[], $7::jsonb[])",
        )
        .bind(AGGREGATE_TYPE)
        .bind(&self.aggregate_id)
        .bind(&self.sequence)
        .bind(&self.event_type)
        .bind(&self.event_version)
        .bind(&self.payload)
        .bind(&self.metadata)
        .execute(pool)
        .await
        .context("appending task events")?;
        *self = Batch::default();
        Ok(n)
    }
}

/// The bulk audit-entry generator (see the file's comment).
pub const AUDIT_ENTRIES_SQL: &str = include_str!("../../../sql/audit_entries.sql");

/// `entries` more entries on `tenant`'s audit chain, 20,000 per statement: a long transaction
/// would hold back every log reader of the cluster (they read below the oldest running one).
pub async fn audit(pool: &PgPool, tenant: &str, entries: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    let epoch: DateTime<Utc> = Utc::now() - Duration::days(DAYS);
    let mut done = 0;
    while done < entries {
        let n = (entries - done).min(20_000);
        sqlx::query(AUDIT_ENTRIES_SQL)
            .bind(tenant)
            .bind(0i32)
            .bind(1i32)
            .bind(n)
            .bind(epoch)
            .execute(pool)
            .await
            .context("generating audit entries")?;
        done += n;
        if done % 1_000_000 == 0 || done == entries {
            eprintln!(
                "{done} audit entries of {tenant} in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    sqlx::query("analyze audit_entries").execute(pool).await?;
    Ok(())
}
