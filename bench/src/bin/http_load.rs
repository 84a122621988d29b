//! Load on the HTTP API from a second process (issue 4): one-event commands (comments on
//! tasks) closed-loop at each concurrency and open-loop at half the measured maximum, beside
//! pgbench's single-insert TPS on the same database; and purchase orders end to end.
//!
//! Start `workledger serve` with WORKLEDGER_ADMIN_EMAIL/PASSWORD first; `bench/command_api.sh`
//! does all of it.

#![allow(clippy::print_stdout)] // printing the figures is this binary's purpose

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand};
use domain::examples::purchase_order_json;
use domain::ids::step_child_id;
use reqwest::{Client, Method};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;
use workledger_bench::pgbench::{self, EVENTS_SCRIPT};
use workledger_bench::quantile;

#[derive(Debug, Parser)]
#[command(about = "HTTP load on a running Workledger")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base: String,
    #[arg(long, default_value = "admin@example.com")]
    email: String,
    #[arg(long, env = "WORKLEDGER_ADMIN_PASSWORD")]
    password: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// One-event commands: `POST /api/v1/tasks/{id}/comments`.
    Comment {
        #[arg(long, value_delimiter = ',', default_value = "16,64")]
        connections: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Tasks the comments are spread over.
        #[arg(long, default_value_t = 512)]
        tasks: usize,
        /// pgbench's single-insert TPS per connection count, measured in the same run
        /// (`16=11496,64=13002`, from the `pgbench` subcommand).
        #[arg(long, value_delimiter = ',', value_parser = parse_baseline)]
        pgbench: Vec<(usize, f64)>,
        /// Drive the closed loop with `wrk` (from Debian; much lighter on a shared machine
        /// than this process) instead of this process's own client.
        #[arg(long)]
        wrk: bool,
        /// Only the open loop, at this many requests per second, and the slowest answer of
        /// each second of its schedule (to find stalls).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// pgbench's single-insert TPS (the event row into `events`) at each connection count,
    /// printed as `16=TPS,64=TPS`: run it before the server holds its connections.
    Pgbench {
        #[arg(long, value_delimiter = ',', default_value = "16,64")]
        connections: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        database_url: String,
    },
    /// Purchase orders (DESIGN §3) end to end: start, review, manager approval, both checks,
    /// archive: nine commands each, every one answered with its cascade done.
    PurchaseOrder {
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
}

/// A logged-in client.
#[derive(Debug, Clone)]
struct Api {
    client: Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(
        client: &Client,
        base: &str,
        email: &str,
        password: &str,
    ) -> anyhow::Result<Self> {
        let body: Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?
            .error_for_status()
            .context("login")?
            .json()
            .await?;
        Ok(Self {
            client: client.clone(),
            base: base.to_owned(),
            token: body["access_token"]
                .as_str()
                .context("no access token")?
                .to_owned(),
        })
    }

    async fn send(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(Method::POST, path, body).await
    }

    /// Creates a member in `groups` and logs in as them.
    async fn member(&self, name: &str, groups: &[&str]) -> anyhow::Result<(Uuid, Api)> {
        let email = format!("{name}-{}@bench.example", Uuid::now_v7().simple());
        let password = "benchmark password";
        let created = self
            .post(
                "/api/v1/users",
                json!({"email": email, "display_name": name, "password": password,
                       "roles": ["member"], "groups": groups}),
            )
            .await?;
        let id = Uuid::parse_str(created["id"].as_str().context("user id")?)?;
        Ok((
            id,
            Api::login(&self.client, &self.base, &email, password).await?,
        ))
    }
}

#[derive(Debug, Default)]
struct Samples {
    latencies: Vec<Duration>,
    errors: u64,
    /// The slowest answer of each second of an open loop's schedule.
    worst: Vec<Duration>,
}

/// What one load run measured.
#[derive(Debug, Clone)]
struct Loop {
    /// Successful requests per second.
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
    /// The slowest answer of each second of an open loop's schedule.
    worst: Vec<Duration>,
}

impl Loop {
    fn of(mut samples: Samples, elapsed: Duration) -> Self {
        Self {
            rate: samples.latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: quantile(&mut samples.latencies, 0.5),
            p99: quantile(&mut samples.latencies, 0.99),
            errors: samples.errors,
            worst: samples.worst,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?;
    if let Scenario::Pgbench {
        connections,
        seconds,
        database_url,
    } = &args.scenario
    {
        let mut figures = Vec::new();
        for &c in connections {
            figures.push(format!(
                "{c}={:.0}",
                pgbench::tps(database_url, c, *seconds, EVENTS_SCRIPT)?
            ));
        }
        println!("{}", figures.join(","));
        return Ok(());
    }
    let admin = Api::login(&client, &args.base, &args.email, &args.password).await?;
    match args.scenario {
        Scenario::Pgbench { .. } => Ok(()),
        Scenario::Comment {
            connections,
            seconds,
            tasks,
            pgbench,
            wrk,
            rate,
        } => match rate {
            Some(rate) => open_only(&admin, &connections, seconds, tasks, rate).await,
            None => comments(&admin, &connections, seconds, tasks, &pgbench, wrk).await,
        },
        Scenario::PurchaseOrder {
            connections,
            seconds,
        } => purchase_orders(&admin, connections, seconds).await,
    }
}

async fn comments(
    admin: &Api,
    connections: &[usize],
    seconds: u64,
    tasks: usize,
    baseline: &[(usize, f64)],
    wrk: bool,
) -> anyhow::Result<()> {
    let ids = bench_tasks(admin, tasks).await?;
    let script = if wrk {
        Some(wrk_script(admin, &ids)?)
    } else {
        None
    };
    let ids = Arc::new(ids);
    let generator = if wrk { "wrk" } else { "http_load" };
    println!("## One-event command: `POST /api/v1/tasks/{{id}}/comments`, {seconds} s each\n");
    println!(
        "| connections | pgbench single-insert TPS | closed loop ({generator}) req/s | vs pgbench | p50 | p99 | errors | open loop at half: req/s | p50 | p99 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &c in connections {
        let pg = baseline
            .iter()
            .find(|(n, _)| *n == c)
            .map_or(f64::NAN, |(_, tps)| *tps);
        let duration = Duration::from_secs(seconds);
        let closed = match &script {
            Some(script) => run_wrk(script, &admin.base, c, seconds)?,
            None => closed_loop(admin, &ids, c, duration).await,
        };
        let open = open_loop(admin, &ids, c, closed.rate / 2.0, duration).await;
        println!(
            "| {c} | {pg:.0} | {:.0} | {:.0}% | {:.1} ms | {:.1} ms | {} | {:.0} | {:.1} ms | {:.1} ms |",
            closed.rate,
            100.0 * closed.rate / pg,
            ms(closed.p50),
            ms(closed.p99),
            closed.errors + open.errors,
            open.rate,
            ms(open.p50),
            ms(open.p99),
        );
    }
    if let Some(script) = script {
        let _ = std::fs::remove_file(script);
    }
    Ok(())
}

/// `tasks` new tasks for comments to go to: their ids.
async fn bench_tasks(admin: &Api, tasks: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let task = admin
            .post(
                "/api/v1/tasks",
                json!({"name": format!("bench task {i}"), "candidate_groups": ["clerks"]}),
            )
            .await?;
        ids.push(task["id"].as_str().context("task id")?.to_owned());
    }
    Ok(ids)
}

/// The open loop alone at `rate`, at each concurrency, and the slowest answer of each second
/// of its schedule.
async fn open_only(
    admin: &Api,
    connections: &[usize],
    seconds: u64,
    tasks: usize,
    rate: f64,
) -> anyhow::Result<()> {
    let ids = Arc::new(bench_tasks(admin, tasks).await?);
    let mut stalls = Vec::new();
    println!("| connections | open loop: req/s | p50 | p99 | errors |");
    println!("|---:|---:|---:|---:|---:|");
    for &c in connections {
        let open = open_loop(admin, &ids, c, rate, Duration::from_secs(seconds)).await;
        println!(
            "| {c} | {:.0} | {:.1} ms | {:.1} ms | {} |",
            open.rate,
            ms(open.p50),
            ms(open.p99),
            open.errors
        );
        let worst: Vec<String> = open
            .worst
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect();
        stalls.push(format!("- {c} connections: {}", worst.join(" ")));
    }
    println!(
        "\nThe slowest answer of each second, in ms:\n\n{}",
        stalls.join("\n")
    );
    Ok(())
}

/// Writes a wrk script posting comments round-robin over `ids` with the admin's token; its
/// `done` prints one line: `WRK <requests> <seconds> <p50 µs> <p99 µs> <errors>`.
fn wrk_script(admin: &Api, ids: &[String]) -> anyhow::Result<PathBuf> {
    let list: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    let text = format!(
        r#"local ids = {{ {ids} }}
local n = 0
wrk.method = "POST"
wrk.body = '{{"text": "looks good"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
request = function()
  n = n + 1
  return wrk.format(nil, "/api/v1/tasks/" .. ids[(n % #ids) + 1] .. "/comments")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %f %d %d %d\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#,
        ids = list.join(", "),
        token = admin.token,
    );
    let path = std::env::temp_dir().join(format!("workledger-comments-{}.lua", Uuid::now_v7()));
    std::fs::write(&path, text).context("writing the wrk script")?;
    Ok(path)
}

/// Runs wrk closed-loop over `connections` for `seconds`.
fn run_wrk(script: &Path, base: &str, connections: usize, seconds: u64) -> anyhow::Result<Loop> {
    let output = std::process::Command::new("wrk")
        .args(["-t", "2", "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "-s"])
        .arg(script)
        .arg(base)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    ensure!(
        output.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRK "))
        .context("wrk printed no summary")?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("wrk's summary")?;
    let [requests, seconds, p50, p99, errors] = fields[..] else {
        bail!("wrk's summary has {} fields", fields.len());
    };
    Ok(Loop {
        rate: (requests - errors) / seconds,
        p50: Duration::from_micros(p50 as u64),
        p99: Duration::from_micros(p99 as u64),
        errors: errors as u64,
        worst: Vec::new(),
    })
}

fn parse_baseline(text: &str) -> Result<(usize, f64), String> {
    let (c, tps) = text.split_once('=').ok_or("expected CONNECTIONS=TPS")?;
    Ok((
        c.parse().map_err(|e| format!("{e}"))?,
        tps.parse().map_err(|e| format!("{e}"))?,
    ))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn comment(admin: &Api, ids: &[String], n: u64) -> impl Future<Output = anyhow::Result<Value>> {
    let id = &ids[(n as usize) % ids.len()];
    let path = format!("/api/v1/tasks/{id}/comments");
    let admin = admin.clone();
    async move { admin.post(&path, json!({"text": "looks good"})).await }
}

/// `connections` workers sending back to back for `duration`: the maximum rate.
async fn closed_loop(
    admin: &Api,
    ids: &Arc<Vec<String>>,
    connections: usize,
    duration: Duration,
) -> Loop {
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (admin, ids, counter) = (admin.clone(), ids.clone(), counter.clone());
            tokio::spawn(async move {
                let mut samples = Samples::default();
                while started.elapsed() < duration {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    match comment(&admin, &ids, n).await {
                        Ok(_) => samples.latencies.push(t.elapsed()),
                        Err(_) => samples.errors += 1,
                    }
                }
                samples
            })
        })
        .collect();
    let mut all = Samples::default();
    for worker in workers {
        if let Ok(samples) = worker.await {
            all.latencies.extend(samples.latencies);
            all.errors += samples.errors;
        }
    }
    Loop::of(all, started.elapsed())
}

/// Unmeasured seconds at an open loop's rate before it is measured: the client's connections
/// and the server's (its pool grows with the load) are opened then, as in the steady state a
/// p99 describes (cold, the first second of a run had answers of about 300 ms).
const WARM_UP: Duration = Duration::from_secs(2);

/// [`scheduled`] at `rate` for [`WARM_UP`], then measured for `duration`.
async fn open_loop(
    admin: &Api,
    ids: &Arc<Vec<String>>,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> Loop {
    scheduled(admin, ids, connections, rate, WARM_UP).await;
    scheduled(admin, ids, connections, rate, duration).await
}

/// Requests started on a fixed schedule of `rate` per second (whatever the answers take),
/// latency counted from the scheduled start: no coordinated omission.
async fn scheduled(
    admin: &Api,
    ids: &Arc<Vec<String>>,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> Loop {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let limit = Arc::new(tokio::sync::Semaphore::new(connections * 4));
    let started = Instant::now();
    let mut n = 0u64;
    let mut tasks = Vec::new();
    while started.elapsed() < duration {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let (admin, ids, samples, limit) =
            (admin.clone(), ids.clone(), samples.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = comment(&admin, &ids, n).await;
            let latency = due.elapsed();
            let second = (due - started).as_secs() as usize;
            let mut samples = samples.lock().await;
            match result {
                Ok(_) => samples.latencies.push(latency),
                Err(_) => samples.errors += 1,
            }
            if samples.worst.len() <= second {
                samples.worst.resize(second + 1, Duration::ZERO);
            }
            samples.worst[second] = samples.worst[second].max(latency);
        }));
        n += 1;
    }
    for task in tasks {
        let _ = task.await;
    }
    let samples = std::mem::take(&mut *samples.lock().await);
    Loop::of(samples, started.elapsed())
}

async fn purchase_orders(admin: &Api, connections: usize, seconds: u64) -> anyhow::Result<()> {
    let (_, clerk) = admin.member("clerk", &["clerks"]).await?;
    let (_, manager) = admin.member("manager", &["managers"]).await?;
    let (_, lawyer) = admin.member("lawyer", &["legal"]).await?;
    let (finance_id, finance) = admin.member("finance", &[]).await?;
    let definition: Value = serde_json::from_str(&purchase_order_json(finance_id))?;
    admin
        .post("/api/v1/workflow-definitions", definition)
        .await?;
    let people = Arc::new((admin.clone(), clerk, manager, lawyer, finance));

    let duration = Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let people = people.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                let mut latencies = Vec::new();
                while started.elapsed() < duration {
                    let t = Instant::now();
                    one_order(&people).await?;
                    latencies.push(t.elapsed());
                    done += 1;
                }
                anyhow::Ok((done, latencies))
            })
        })
        .collect();
    let mut done = 0;
    let mut latencies = Vec::new();
    for worker in workers {
        let (n, l) = worker.await??;
        done += n;
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("\n## Purchase orders end to end, {connections} concurrent, {seconds} s\n");
    println!("| instances/s | commands/s | instance p50 | instance p99 |\n|---:|---:|---:|---:|");
    println!(
        "| {:.0} | {:.0} | {:.1} ms | {:.1} ms |",
        done as f64 / elapsed,
        9.0 * done as f64 / elapsed,
        ms(quantile(&mut latencies, 0.5)),
        ms(quantile(&mut latencies, 0.99)),
    );
    Ok(())
}

/// One order of 5,000 (the manager path): nine commands.
async fn one_order(people: &(Api, Api, Api, Api, Api)) -> anyhow::Result<()> {
    let (operator, clerk, manager, lawyer, finance) = people;
    let started = operator
        .post(
            "/api/v1/workflow-instances",
            json!({"definition_key": "purchase-order", "variables": {"amount": 5000}}),
        )
        .await?;
    let id = Uuid::parse_str(started["id"].as_str().context("instance id")?)?;
    let child = |step: &str| step_child_id(id, step, 1);
    let work = |api: &Api, step: &str, claim: bool| {
        let (api, task) = (api.clone(), child(step));
        async move {
            if claim {
                api.post(&format!("/api/v1/tasks/{task}/claim"), json!({}))
                    .await?;
            }
            api.post(
                &format!("/api/v1/tasks/{task}/complete"),
                json!({"output": {}}),
            )
            .await
        }
    };
    work(clerk, "review", true).await?;
    manager
        .post(
            &format!("/api/v1/approvals/{}/decisions", child("manager")),
            json!({"decision": "approve"}),
        )
        .await?;
    work(lawyer, "legal", true).await?;
    work(finance, "finance", false).await?;
    let archived = work(clerk, "archive", true).await?;
    ensure!(!archived.is_null(), "archive answered nothing");
    Ok(())
}
