//! Workflow and task reports over HTTP.

use event_schemas::ApprovalDecision;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn the_workflow_report_counts_instances_by_day_and_week_with_exact_cycle_times() {
    let app = TestApp::spawn().await;
    app.publish().await;
    // two approved orders (10 and 40 minutes), one rejected (15), one cancelled, one running
    let mut fast = app.start(json!(5000), "PO-1", 0).await;
    fast.approve_all(10).await;
    let mut slow = app.start(json!(5000), "PO-2", 0).await;
    slow.approve_all(40).await;
    let mut declined = app.start(json!(5000), "PO-3", 0).await;
    declined
        .work("review", &member(CLERK, &["clerks"]), json!({}), 5)
        .await;
    declined
        .vote("manager", MANAGERS[0], ApprovalDecision::Reject, 15)
        .await;
    let cancelled = app.start(json!(5000), "PO-4", 0).await;
    app.rt
        .instance(
            &orchestrator::RequestContext {
                caller: operator(),
                at: t0() + chrono::TimeDelta::days(1),
                correlation_id: uuid::Uuid::now_v7(),
                request_id: "r".into(),
            },
            cancelled.id,
            domain::InstanceCommand::Cancel {
                reason: "duplicate".into(),
            },
            None,
        )
        .await
        .unwrap();
    let _running = app.start(json!(5000), "PO-5", 0).await;
    app.project().await;
    let operator = app.operator_token();

    let report = app
        .ok(
            "/api/v1/reports/workflows?from=2026-03-01&to=2026-03-08",
            &operator,
        )
        .await;
    assert_eq!(report["bucket"], "day");
    let items = report["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{report}");
    let monday = &items[0];
    assert_eq!(monday["bucket_start"], "2026-03-02");
    assert_eq!(monday["started"], 5);
    assert_eq!(monday["completed"], 3);
    assert_eq!(
        monday["completed_by_outcome"],
        json!({"approved": 2, "rejected": 1})
    );
    assert_eq!(monday["cancelled"], 0);
    // cycle times 600, 900, 2400 s: exact percentiles
    assert_eq!(monday["cycle_time_p50_seconds"], 900.0);
    let p95 = monday["cycle_time_p95_seconds"].as_f64().unwrap();
    assert!((p95 - 2250.0).abs() < 1e-6, "{p95}");
    assert_eq!(monday["cycle_time_avg_seconds"], 1300.0);
    let tuesday = &items[1];
    assert_eq!(tuesday["bucket_start"], "2026-03-03");
    assert_eq!(tuesday["cancelled"], 1);
    assert_eq!(tuesday["started"], 0);

    let weekly = app
        .ok(
            "/api/v1/reports/workflows?from=2026-03-01&to=2026-03-15&bucket=week&definition_key=purchase-order",
            &operator,
        )
        .await;
    let weeks = weekly["items"].as_array().unwrap();
    assert_eq!(weeks.len(), 1);
    assert_eq!(weeks[0]["bucket_start"], "2026-03-02");
    assert_eq!(weeks[0]["started"], 5);
    assert_eq!(weeks[0]["completed"], 3);
    assert_eq!(weeks[0]["cancelled"], 1);
    assert_eq!(weeks[0]["cycle_time_p50_seconds"], 900.0);

    let problem = app
        .problem(
            "/api/v1/reports/workflows",
            &app.member_token(CLERK, &["clerks"]),
            StatusCode::FORBIDDEN,
        )
        .await;
    assert_eq!(problem["code"], "forbidden");
}

#[tokio::test]
async fn the_task_report_groups_open_overdue_and_completed_tasks_by_assignee_and_group() {
    let app = TestApp::spawn().await;
    app.publish().await;
    let mut done = app.start(json!(5000), "PO-1", 0).await;
    done.work("review", &member(CLERK, &["clerks"]), json!({}), 30)
        .await;
    let mut claimed = app.start(json!(5000), "PO-2", 0).await;
    claimed
        .claim("review", &member(CLERK, &["clerks"]), 1)
        .await;
    let _open = app.start(json!(5000), "PO-3", 0).await;
    app.project().await;
    let operator = app.operator_token();

    let by_assignee = app
        .ok(
            "/api/v1/reports/tasks?from=2026-03-01&to=2026-03-08",
            &operator,
        )
        .await;
    let items = by_assignee["items"].as_array().unwrap();
    let unassigned = items.iter().find(|i| i["key"].is_null()).unwrap();
    // PO-3's review
    assert_eq!(unassigned["open"], 1);
    let clerk = items
        .iter()
        .find(|i| i["key"] == user(CLERK).to_string())
        .unwrap();
    assert_eq!(clerk["open"], 1);
    assert_eq!(clerk["completed"], 1);
    assert_eq!(clerk["handling_time_p50_seconds"], 1800.0);
    assert_eq!(clerk["overdue"], 0);

    let by_group = app
        .ok(
            "/api/v1/reports/tasks?group_by=group&from=2026-03-01&to=2026-03-08",
            &operator,
        )
        .await;
    let clerks = by_group["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == "clerks")
        .unwrap()
        .clone();
    assert_eq!(clerks["open"], 2);
    assert_eq!(clerks["completed"], 1);

    let outside = app
        .ok(
            "/api/v1/reports/tasks?from=2026-04-01&to=2026-04-08",
            &operator,
        )
        .await;
    let completed: i64 = outside["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["completed"].as_i64().unwrap())
        .sum();
    assert_eq!(completed, 0, "completed counts only the range");
}
