//! Engine-only throughput: purchase-order instances (DESIGN §3) run end to end through the pure
//! aggregates and the orchestrator's reactions in the in-memory runtime. No I/O, one thread:
//! the ceiling the domain puts under the real stack.
//!
//! `cargo run --release -p workledger-bench --bin engine -- --instances 20000`

// Printing the figures is this binary's purpose.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use anyhow::{Context, ensure};
use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use domain::approval::ApprovalCommand;
use domain::definition::Definition;
use domain::examples::purchase_order_json;
use domain::ids::step_child_id;
use domain::runtime::LocalRuntime;
use domain::task::TaskCommand;
use domain::{Caller, Role};
use event_schemas::{ApprovalDecision, InstanceStatus};
use serde_json::{Map, Value, json};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(about = "Engine-only throughput of purchase-order instances (no I/O)")]
struct Args {
    /// How many instances to run end to end.
    #[arg(long, default_value_t = 20_000)]
    instances: u32,
}

const TENANT: &str = "bench";

fn person(n: u128, roles: &[Role], groups: &[&str]) -> Caller {
    Caller::user(
        TENANT,
        Uuid::from_u128(n),
        roles.iter().copied(),
        groups.iter().copied(),
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let t0: DateTime<Utc> = DateTime::from_timestamp(1_800_000_000, 0).context("clock")?;
    let finance = person(0xF1, &[Role::Member], &[]);
    let clerk = person(0xC1, &[Role::Member], &["clerks"]);
    let lawyer = person(0x11, &[Role::Member], &["legal"]);
    let managers = [0xA1, 0xA2].map(|n| person(n, &[Role::Member], &[]));
    let board = [0xB1, 0xB2, 0xB3].map(|n| person(n, &[Role::Member], &[]));
    let operator = person(0x0F, &[Role::Operator], &[]);
    let designer = person(0xDE, &[Role::Designer], &[]);

    let mut rt = LocalRuntime::counting_only();
    let ids = |callers: &[Caller]| callers.iter().filter_map(|c| c.user_id).collect();
    rt.set_group_members(TENANT, "managers", ids(&managers));
    rt.set_group_members(TENANT, "board", ids(&board));
    let definition = Definition::from_json(&purchase_order_json(Uuid::from_u128(0xF1)))?;
    rt.publish(&designer, t0, definition)?;

    let mut commands = 0u64;
    let started = Instant::now();
    for i in 0..args.instances {
        let at = t0 + TimeDelta::seconds(i64::from(i));
        let id = Uuid::from_u128(u128::from(i) + 1);
        let child = |step: &str| step_child_id(id, step, 1);
        // Every fourth order is large and goes to the board.
        let amount = if i % 4 == 0 { 25_000 } else { 800 };
        let variables = vars(json!({"amount": amount, "cost_centre": i % 17}));
        let business_key = Some(format!("PO-{i}"));
        rt.start(
            &operator,
            at,
            id,
            "purchase-order",
            None,
            business_key,
            variables,
        )?;
        let empty = || TaskCommand::Complete { output: Map::new() };

        rt.task_command(&clerk, at, child("review"), TaskCommand::Claim)?;
        let reviewed = vars(json!({"checked": true}));
        rt.task_command(
            &clerk,
            at,
            child("review"),
            TaskCommand::Complete { output: reviewed },
        )?;
        let approve = || ApprovalCommand::Decide {
            decision: ApprovalDecision::Approve,
            comment: None,
        };
        if amount > 10_000 {
            rt.approval_command(&board[0], at, child("board"), approve())?;
            rt.approval_command(&board[2], at, child("board"), approve())?;
            commands += 2;
        } else {
            rt.approval_command(&managers[1], at, child("manager"), approve())?;
            commands += 1;
        }
        rt.task_command(&lawyer, at, child("legal"), TaskCommand::Claim)?;
        rt.task_command(&lawyer, at, child("legal"), empty())?;
        rt.task_command(&finance, at, child("finance"), empty())?;
        rt.task_command(&clerk, at, child("archive"), TaskCommand::Claim)?;
        rt.task_command(&clerk, at, child("archive"), empty())?;
        commands += 8;

        let instance = rt.instance(id).context("instance")?;
        ensure!(
            instance.status() == InstanceStatus::Completed
                && instance.outcome() == Some("approved"),
            "instance {i} did not complete: {:?} {:?}",
            instance.status(),
            instance.failure()
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    ensure!(
        rt.failures().is_empty(),
        "reactions failed: {:?}",
        rt.failures()
    );

    let instances = f64::from(args.instances);
    let events = rt.event_count() as f64;
    println!(
        "engine benchmark: {} purchase-order instances, one thread, no I/O",
        args.instances
    );
    println!("  commands sent      {commands} (+1 publish)");
    println!("  events recorded    {}", rt.event_count());
    println!("  events / instance  {:.1}", events / instances);
    println!("  elapsed            {elapsed:.3} s");
    println!("  instances / s      {:.0}", instances / elapsed);
    println!("  events / s         {:.0}", events / elapsed);
    println!("  commands / s       {:.0}", commands as f64 / elapsed);
    Ok(())
}

fn vars(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}
