//! Inbox queries at a fixed rate: `GET /api/v1/tasks` as members (what is assigned to me, what
//! my groups are offered, what is overdue, the next page) and as operators (everything
//! overdue), open-loop from this process.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::client::{self, Api};
use crate::load::{Samples, open_loop};

/// One kind of inbox request.
#[derive(Debug, Clone)]
struct Query {
    kind: &'static str,
    api: Api,
    path: String,
}

/// The requests of one run, in the order they are sent (repeated).
async fn queries(
    login: &str,
    tenants: usize,
    members: usize,
    query_base: &str,
) -> anyhow::Result<Vec<Query>> {
    let http = Api::client()?;
    let mut queries = Vec::new();
    for t in 0..tenants {
        let tenant = client::tenant(t);
        let operator = Api::login(
            &http,
            login,
            &client::operator_email(&tenant),
            client::PASSWORD,
            Some(&tenant),
        )
        .await?;
        for m in 0..members {
            let member = Api::login(
                &http,
                login,
                &client::member_email(&tenant, m),
                client::PASSWORD,
                Some(&tenant),
            )
            .await?;
            let [group, _] = client::member_groups(m);
            let first = "/api/v1/tasks?status=open";
            let page: Value = member.get(query_base, first).await?;
            let mut add = |kind, api: &Api, path: String| {
                queries.push(Query {
                    kind,
                    api: api.clone(),
                    path,
                })
            };
            add("my inbox: open tasks for me", &member, first.to_owned());
            add(
                "assigned to me",
                &member,
                "/api/v1/tasks?assignee=me&status=open".into(),
            );
            add(
                "offered to one of my groups",
                &member,
                format!("/api/v1/tasks?candidate_group={group}&status=open"),
            );
            add(
                "my overdue tasks",
                &member,
                "/api/v1/tasks?status=open&overdue=true".into(),
            );
            if let Some(cursor) = page["next_cursor"].as_str() {
                add(
                    "my inbox, page 2",
                    &member,
                    format!("/api/v1/tasks?status=open&cursor={cursor}"),
                );
            }
            add(
                "everything I worked on",
                &member,
                "/api/v1/tasks?assignee=me".into(),
            );
            add(
                "operator: overdue in the tenant",
                &operator,
                "/api/v1/tasks?status=open&overdue=true".into(),
            );
        }
    }
    Ok(queries)
}

/// Logs in, warms up, then sends the queries at `rate` per second for `seconds` and prints a
/// markdown table.
pub async fn run(
    login: &str,
    query_base: &str,
    tenants: usize,
    members: usize,
    rate: f64,
    seconds: u64,
    warmup: u64,
) -> anyhow::Result<()> {
    let queries = Arc::new(queries(login, tenants, members, query_base).await?);
    anyhow::ensure!(!queries.is_empty(), "no queries");
    let base: Arc<str> = Arc::from(query_base);
    let send = {
        let (queries, base) = (queries.clone(), base.clone());
        move |n: u64| {
            let query = queries[(n as usize) % queries.len()].clone();
            let base = base.clone();
            async move {
                let page = query.api.get(&base, &query.path).await?;
                let items = page["items"].as_array().context("items")?.len();
                anyhow::Ok((query.kind, items))
            }
        }
    };
    open_loop(&send, rate, Duration::from_secs(warmup), 64).await;
    let mut samples = open_loop(&send, rate, Duration::from_secs(seconds), 64).await;
    println!(
        "## Inbox queries: `GET /api/v1/tasks`, open loop at {rate:.0} req/s for {seconds} s\n"
    );
    println!("| requests | sent/s | errors | p50 | p99 | max |\n|---:|---:|---:|---:|---:|---:|");
    let all = samples.all();
    println!(
        "| {} | {:.0} | {} | {:.2} ms | {:.2} ms | {:.2} ms |\n",
        all.len(),
        samples.rate(),
        samples.errors,
        Samples::ms(&all, 0.5),
        Samples::ms(&all, 0.99),
        Samples::ms(&all, 1.0),
    );
    println!(
        "| query | requests | items per page | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|"
    );
    for (kind, latencies, items) in samples.by_kind() {
        println!(
            "| {kind} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |",
            latencies.len(),
            items,
            Samples::ms(&latencies, 0.5),
            Samples::ms(&latencies, 0.99),
            Samples::ms(&latencies, 1.0),
        );
    }
    Ok(())
}
