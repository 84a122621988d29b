//! Load on the HTTP API from a second process (issue 4): one-event commands (comments on
//! tasks) closed-loop at each concurrency and open-loop at half the measured maximum, beside
//! pgbench's single-insert TPS on the same database; and purchase orders end to end.
//!
//! Start `workledger serve` with WORKLEDGER_ADMIN_EMAIL/PASSWORD first; `bench/command_api.sh`
//! does all of it.

#![allow(clippy::print_stdout)] // printing the figures is this binary's purpose

use std::net::{SocketAddr, ToSocketAddrs as _};
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
use uuid::Uuid;
use workledger_bench::http1::{self, Answer, Connection};
use workledger_bench::pgbench::{self, EVENTS_SCRIPT};
use workledger_bench::{median, quantile};

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
        /// Runs pgbench's single insert (the event row into `events`) on this database just
        /// before each closed loop, at the same concurrency.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        /// Rounds of the whole sequence (pgbench, closed loop, open loop at each concurrency),
        /// followed by the medians: on a shared machine one round is not a figure.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Drive the closed loop with `wrk` (from Debian; much lighter on a shared machine
        /// than this process) instead of this process's own client.
        #[arg(long)]
        wrk: bool,
        /// Only the open loop, at this many requests per second, and the slowest answer of
        /// each second of its schedule (to find stalls).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Purchase orders (DESIGN §3) end to end: start, review, manager approval, both checks,
    /// archive: nine commands each, every one answered with its cascade done.
    PurchaseOrder {
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Runs, followed by the median.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
}

/// A logged-in client. Set-up goes through `client`; the load itself through [`Session`]s.
#[derive(Debug, Clone)]
struct Api {
    client: Client,
    base: String,
    token: String,
    /// The server's address and the `host` of its requests, from `base`.
    address: SocketAddr,
    host: String,
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
        let host = base
            .strip_prefix("http://")
            .context("--base must be an http:// address")?
            .trim_end_matches('/')
            .to_owned();
        let address = host
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Self {
            client: client.clone(),
            base: base.to_owned(),
            address,
            host,
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

/// One connection of a load worker (bare HTTP/1.1: `workledger_bench::http1`), sending as
/// whichever caller it is given.
#[derive(Debug)]
struct Session {
    conn: Connection,
    address: SocketAddr,
    host: String,
}

impl Session {
    async fn open(api: &Api) -> anyhow::Result<Self> {
        Ok(Self {
            conn: Connection::open(api.address).await?,
            address: api.address,
            host: api.host.clone(),
        })
    }

    /// Sends prepared bytes; a connection that failed is replaced before the error is
    /// returned.
    async fn send(&mut self, request: &[u8]) -> anyhow::Result<Answer> {
        match self.conn.send(request).await {
            Ok(answer) => Ok(answer),
            Err(error) => {
                self.conn = Connection::open(self.address).await?;
                Err(error)
            }
        }
    }

    /// POSTs `body` as `caller`: the answer's JSON, or an error for any other status.
    async fn post(&mut self, caller: &Api, path: &str, body: &Value) -> anyhow::Result<Value> {
        let request = http1::request(
            "POST",
            &self.host,
            path,
            &caller.token,
            &body.to_string().into_bytes(),
        );
        self.send(&request)
            .await?
            .json()
            .with_context(|| format!("POST {path}"))
    }
}

/// The prepared request of a comment on each of `ids`, as the admin.
fn comment_requests(admin: &Api, ids: &[String]) -> Arc<Vec<Vec<u8>>> {
    Arc::new(
        ids.iter()
            .map(|id| {
                http1::request(
                    "POST",
                    &admin.host,
                    &format!("/api/v1/tasks/{id}/comments"),
                    &admin.token,
                    br#"{"text": "looks good"}"#,
                )
            })
            .collect(),
    )
}

/// Each of `connections` sessions, opened before a loop's clock starts.
async fn sessions(admin: &Api, connections: usize) -> anyhow::Result<Vec<Session>> {
    let mut sessions = Vec::with_capacity(connections);
    for _ in 0..connections {
        sessions.push(Session::open(admin).await?);
    }
    Ok(sessions)
}

fn succeeded(answer: &anyhow::Result<Answer>) -> bool {
    matches!(answer, Ok(answer) if (200..300).contains(&answer.status))
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

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.worst.len() < other.worst.len() {
            self.worst.resize(other.worst.len(), Duration::ZERO);
        }
        for (worst, theirs) in self.worst.iter_mut().zip(other.worst) {
            *worst = (*worst).max(theirs);
        }
    }
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?;
    let admin = Api::login(&client, &args.base, &args.email, &args.password).await?;
    match args.scenario {
        Scenario::Comment {
            connections,
            seconds,
            tasks,
            database_url,
            rounds,
            wrk,
            rate,
        } => match rate {
            Some(rate) => open_only(&admin, &connections, seconds, tasks, rate).await,
            None => {
                let plan = Plan {
                    connections,
                    seconds,
                    rounds,
                    database_url,
                    wrk,
                };
                comments(&admin, &plan, tasks).await
            }
        },
        Scenario::PurchaseOrder {
            connections,
            seconds,
            rounds,
        } => purchase_orders(&admin, connections, seconds, rounds).await,
    }
}

/// What the one-event command benchmark runs.
#[derive(Debug)]
struct Plan {
    connections: Vec<usize>,
    seconds: u64,
    rounds: usize,
    database_url: Option<String>,
    wrk: bool,
}

/// One concurrency of one round.
#[derive(Debug)]
struct Round {
    connections: usize,
    pgbench: f64,
    closed: Loop,
    open: Loop,
}

impl Round {
    fn share(&self) -> f64 {
        100.0 * self.closed.rate / self.pgbench
    }
}

async fn comments(admin: &Api, plan: &Plan, tasks: usize) -> anyhow::Result<()> {
    let ids = bench_tasks(admin, tasks).await?;
    let script = if plan.wrk {
        Some(wrk_script(admin, &ids)?)
    } else {
        None
    };
    let requests = comment_requests(admin, &ids);
    let generator = if plan.wrk { "wrk" } else { "http_load" };
    let seconds = plan.seconds;
    println!("\n## One-event command: `POST /api/v1/tasks/{{id}}/comments`, {seconds} s each\n");
    println!(
        "| round | connections | pgbench single-insert TPS | closed loop ({generator}) req/s | vs pgbench | p50 | p99 | errors | open loop at half: req/s | p50 | p99 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let duration = Duration::from_secs(seconds);
    let mut rounds = Vec::new();
    for round in 1..=plan.rounds {
        for &c in &plan.connections {
            // pgbench just before the closed loop: the same machine, table and minute
            let pgbench = match &plan.database_url {
                Some(url) => pgbench::tps(url, c, seconds, EVENTS_SCRIPT)?,
                None => f64::NAN,
            };
            let closed = match &script {
                Some(script) => run_wrk(script, &admin.base, c, seconds)?,
                None => closed_loop(admin, &requests, c, duration).await?,
            };
            let open = open_loop(admin, &requests, c, closed.rate / 2.0, duration).await?;
            let result = Round {
                connections: c,
                pgbench,
                closed,
                open,
            };
            println!(
                "| {round} | {c} | {:.0} | {:.0} | {:.0}% | {:.1} ms | {:.1} ms | {} | {:.0} | {:.1} ms | {:.1} ms |",
                result.pgbench,
                result.closed.rate,
                result.share(),
                ms(result.closed.p50),
                ms(result.closed.p99),
                result.closed.errors + result.open.errors,
                result.open.rate,
                ms(result.open.p50),
                ms(result.open.p99),
            );
            rounds.push(result);
        }
    }
    if plan.rounds > 1 {
        println!("\nMedians of the {} rounds:\n", plan.rounds);
        println!(
            "| connections | pgbench TPS | closed loop req/s | vs pgbench (median of the rounds' shares) | closed p99 | open loop at half: p99 |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
        for &c in &plan.connections {
            let of = |f: &dyn Fn(&Round) -> f64| {
                median(
                    rounds
                        .iter()
                        .filter(|r| r.connections == c)
                        .map(f)
                        .collect(),
                )
            };
            println!(
                "| {c} | {:.0} | {:.0} | **{:.0}%** | {:.1} ms | **{:.1} ms** |",
                of(&|r| r.pgbench),
                of(&|r| r.closed.rate),
                of(&Round::share),
                of(&|r| ms(r.closed.p99)),
                of(&|r| ms(r.open.p99)),
            );
        }
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
    let requests = comment_requests(admin, &bench_tasks(admin, tasks).await?);
    let mut stalls = Vec::new();
    println!("| connections | open loop: req/s | p50 | p99 | errors |");
    println!("|---:|---:|---:|---:|---:|");
    for &c in connections {
        let open = open_loop(admin, &requests, c, rate, Duration::from_secs(seconds)).await?;
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `connections` sessions sending back to back for `duration`: the maximum rate (without
/// wrk).
async fn closed_loop(
    admin: &Api,
    requests: &Arc<Vec<Vec<u8>>>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Loop> {
    let counter = Arc::new(AtomicU64::new(0));
    let sessions = sessions(admin, connections).await?;
    let started = Instant::now();
    let workers: Vec<_> = sessions
        .into_iter()
        .map(|mut session| {
            let (requests, counter) = (requests.clone(), counter.clone());
            tokio::spawn(async move {
                let mut samples = Samples::default();
                while started.elapsed() < duration {
                    let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
                    let t = Instant::now();
                    if succeeded(&session.send(&requests[n % requests.len()]).await) {
                        samples.latencies.push(t.elapsed());
                    } else {
                        samples.errors += 1;
                    }
                }
                samples
            })
        })
        .collect();
    let mut all = Samples::default();
    for worker in workers {
        all.merge(worker.await?);
    }
    Ok(Loop::of(all, started.elapsed()))
}

/// Unmeasured seconds at an open loop's rate before it is measured: the server's pool grows
/// with the load then, as in the steady state a p99 describes (cold, the first second of a
/// run had answers of about 300 ms).
const WARM_UP: Duration = Duration::from_secs(2);

/// Requests on a fixed schedule of `rate` per second over exactly `connections` connections,
/// each taking every `connections`-th slot of the schedule (wrk2's model): a request whose
/// connection is still waiting for an earlier answer waits too, and its latency counts from
/// its scheduled start whatever it waited for, so a stall is counted for every request it
/// held back (no coordinated omission). The first [`WARM_UP`] of the schedule is not
/// measured.
async fn open_loop(
    admin: &Api,
    requests: &Arc<Vec<Vec<u8>>>,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Loop> {
    let rate = rate.max(1.0);
    let sessions = sessions(admin, connections).await?;
    let started = Instant::now();
    let measured_from = started + WARM_UP;
    let end = measured_from + duration;
    let workers: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, mut session)| {
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut samples = Samples::default();
                for k in 0u64.. {
                    let n = k * connections as u64 + i as u64;
                    let due = started + Duration::from_secs_f64(n as f64 / rate);
                    if due >= end {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let answer = session.send(&requests[n as usize % requests.len()]).await;
                    if due < measured_from {
                        continue;
                    }
                    let latency = due.elapsed();
                    if succeeded(&answer) {
                        samples.latencies.push(latency);
                    } else {
                        samples.errors += 1;
                    }
                    let second = (due - measured_from).as_secs() as usize;
                    if samples.worst.len() <= second {
                        samples.worst.resize(second + 1, Duration::ZERO);
                    }
                    samples.worst[second] = samples.worst[second].max(latency);
                }
                samples
            })
        })
        .collect();
    let mut all = Samples::default();
    for worker in workers {
        all.merge(worker.await?);
    }
    Ok(Loop::of(all, duration))
}

async fn purchase_orders(
    admin: &Api,
    connections: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let (_, clerk) = admin.member("clerk", &["clerks"]).await?;
    let (_, manager) = admin.member("manager", &["managers"]).await?;
    let (_, lawyer) = admin.member("lawyer", &["legal"]).await?;
    let (finance_id, finance) = admin.member("finance", &[]).await?;
    let definition: Value = serde_json::from_str(&purchase_order_json(finance_id))?;
    admin
        .post("/api/v1/workflow-definitions", definition)
        .await?;
    let people = Arc::new((admin.clone(), clerk, manager, lawyer, finance));

    println!("\n## Purchase orders end to end, {connections} concurrent, {seconds} s\n");
    println!(
        "| round | instances/s | commands/s | instance p50 | instance p99 |\n|---:|---:|---:|---:|---:|"
    );
    let mut rates = Vec::new();
    for round in 1..=rounds {
        let duration = Duration::from_secs(seconds);
        let sessions = sessions(admin, connections).await?;
        let started = Instant::now();
        let workers: Vec<_> = sessions
            .into_iter()
            .map(|mut session| {
                let people = people.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while started.elapsed() < duration {
                        let t = Instant::now();
                        one_order(&mut session, &people).await?;
                        latencies.push(t.elapsed());
                    }
                    anyhow::Ok(latencies)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await??);
        }
        let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
        println!(
            "| {round} | {rate:.0} | {:.0} | {:.1} ms | {:.1} ms |",
            9.0 * rate,
            ms(quantile(&mut latencies, 0.5)),
            ms(quantile(&mut latencies, 0.99)),
        );
        rates.push(rate);
    }
    if rounds > 1 {
        println!(
            "\nMedian of the {rounds} rounds: **{:.0}** instances/s",
            median(rates)
        );
    }
    Ok(())
}

/// One order of 5,000 (the manager path): nine commands.
async fn one_order(
    session: &mut Session,
    people: &(Api, Api, Api, Api, Api),
) -> anyhow::Result<()> {
    let (operator, clerk, manager, lawyer, finance) = people;
    let started = session
        .post(
            operator,
            "/api/v1/workflow-instances",
            &json!({"definition_key": "purchase-order", "variables": {"amount": 5000}}),
        )
        .await?;
    let id = Uuid::parse_str(started["id"].as_str().context("instance id")?)?;
    let child = |step: &str| step_child_id(id, step, 1);
    work(session, clerk, child("review"), true).await?;
    session
        .post(
            manager,
            &format!("/api/v1/approvals/{}/decisions", child("manager")),
            &json!({"decision": "approve"}),
        )
        .await?;
    work(session, lawyer, child("legal"), true).await?;
    work(session, finance, child("finance"), false).await?;
    let archived = work(session, clerk, child("archive"), true).await?;
    ensure!(!archived.is_null(), "archive answered nothing");
    Ok(())
}

/// `caller` claims (when `claim`) and completes `task`: the completion's answer.
async fn work(
    session: &mut Session,
    caller: &Api,
    task: Uuid,
    claim: bool,
) -> anyhow::Result<Value> {
    if claim {
        session
            .post(caller, &format!("/api/v1/tasks/{task}/claim"), &json!({}))
            .await?;
    }
    session
        .post(
            caller,
            &format!("/api/v1/tasks/{task}/complete"),
            &json!({"output": {}}),
        )
        .await
}
