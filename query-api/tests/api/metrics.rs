//! Projector lag and positions on `/metrics`.

use std::time::{Duration, Instant};

use projections::{Projections, RunSettings};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[tokio::test]
async fn running_projectors_report_their_position_lag_and_activity_on_metrics() {
    let handle = api_common::ops::metrics_handle();
    let app = TestApp::spawn().await;
    app.publish().await;
    app.start(json!(5000), "PO-1", 0).await;
    let stop = CancellationToken::new();
    let running = tokio::spawn(
        Projections::all()
            .with_settings(RunSettings {
                heartbeat: Duration::from_millis(20),
                poll_interval: Duration::from_millis(20),
                ..RunSettings::default()
            })
            .run(app.pool().clone(), stop.clone()),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let wanted = [
        "workledger_projector_position{projector=\"tasks\"}",
        "workledger_projector_lag_events{projector=\"audit\"} 0",
        "workledger_projector_lag_seconds{projector=\"instances\"} 0",
        "workledger_projector_active{projector=\"approvals\"} 1",
        "workledger_projector_events_total{projector=\"definitions\"} 1",
    ];
    loop {
        let text = handle.render();
        if wanted.iter().all(|w| text.contains(w)) {
            break;
        }
        assert!(Instant::now() < deadline, "missing metrics in:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // served on /metrics by the operations router
    let access = api_common::ops::MetricsAccess::with_token("scraper's token".into());
    let body = api_common::ops::router(app.pool().clone(), access)
        .split_for_parts()
        .0;
    let response = tower::ServiceExt::oneshot(
        body,
        axum::http::Request::get("/metrics")
            .header("authorization", "Bearer scraper's token")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    let text = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&text).contains("workledger_projector_lag_seconds"));
    stop.cancel();
    running.await.unwrap();
}
