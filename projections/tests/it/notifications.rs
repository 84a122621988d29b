//! The webhook notifier against a real HTTP receiver on loopback and the real Postgres.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use event_schemas::LogPosition;
use projections::Projections;
use projections::names::NOTIFICATIONS;
use projections::notifications::{
    Delivery, Notification, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookNotifier, WebhookSettings,
    signature,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{
    CLERK, MANAGERS, Po, eventually, last_appended, member, project_with, setup, user,
};

const SECRET: &str = "the webhook secret, 32 bytes or more";

/// A webhook receiver: keeps what it was sent and answers `status`.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start() -> (Self, String) {
        let receiver = Receiver::default();
        receiver.answer(StatusCode::NO_CONTENT);
        let app = Router::new()
            .route("/hooks/workledger", post(receive))
            .route("/moved", post(moved))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/workledger", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn answer(&self, status: StatusCode) {
        self.status.store(status.as_u16(), Ordering::SeqCst);
    }

    /// Every notification received, in order, after checking each body's signature.
    fn notifications(&self) -> Vec<Notification> {
        let received = self.received.lock().unwrap();
        let mut out = Vec::new();
        for (headers, body) in received.iter() {
            let timestamp: i64 = headers[TIMESTAMP_HEADER].to_str().unwrap().parse().unwrap();
            assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 300);
            assert_eq!(
                headers[SIGNATURE_HEADER].to_str().unwrap(),
                signature(SECRET.as_bytes(), timestamp, body),
                "every call is signed, with its time"
            );
            assert_eq!(headers["content-type"], "application/json");
            let delivery: Delivery = serde_json::from_slice(body).unwrap();
            out.extend(delivery.notifications);
        }
        out
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = StatusCode::from_u16(receiver.status.load(Ordering::SeqCst)).unwrap();
    if status.is_success() {
        receiver.received.lock().unwrap().push((headers, body));
    }
    status
}

/// Sends its caller on to the receiving route.
async fn moved() -> (StatusCode, [(&'static str, &'static str); 1]) {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [("location", "/hooks/workledger")],
    )
}

fn notifier(url: &str) -> WebhookNotifier {
    WebhookNotifier::new(WebhookSettings {
        url: url.to_owned(),
        secret: SECRET.to_owned().into(),
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

#[tokio::test]
async fn whoever_has_work_to_do_is_notified_with_a_signed_call() {
    let (receiver, url) = Receiver::start().await;
    let (db, rt) = setup().await;
    let po = Po::start(&rt, json!(1200), "PO-7").await;
    po.work(
        "review",
        &member(CLERK, &["clerks"]),
        json!({"checked": true}),
        5,
    )
    .await;
    let projections = Projections::from_projectors(vec![Arc::new(notifier(&url))]);
    project_with(&projections, &db.pool).await;

    let notifications = receiver.notifications();
    let kinds: Vec<&str> = notifications.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["task.offered", "approval.requested"],
        "{notifications:?}"
    );
    let review = &notifications[0];
    assert_eq!(review.subject.kind, "task");
    assert_eq!(review.subject.id, po.child("review").to_string());
    assert_eq!(review.subject.workflow_instance_id, Some(po.id));
    assert_eq!(review.subject.step_id.as_deref(), Some("review"));
    assert!(review.subject.name.is_some());
    assert_eq!(review.recipients.groups, ["clerks"]);
    assert_eq!(review.tenant_id.as_deref(), Some("acme"));
    assert!(review.due_at.is_some());
    let approval = &notifications[1];
    assert_eq!(approval.subject.id, po.child("manager").to_string());
    assert_eq!(approval.recipients.users, MANAGERS.map(user).to_vec());
    // claiming and completing ask nobody to act: no notification
    assert_eq!(
        receiver.received.lock().unwrap().len(),
        1,
        "one call for the batch"
    );
    assert_eq!(checkpoint(&db.pool).await, last_appended(&db.pool).await);
}

#[tokio::test]
async fn a_receiver_that_refuses_gets_the_batch_again_and_nothing_is_skipped() {
    let (receiver, url) = Receiver::start().await;
    receiver.answer(StatusCode::SERVICE_UNAVAILABLE);
    let (db, rt) = setup().await;
    Po::start(&rt, json!(500), "PO-8").await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(
        Projections::from_projectors(vec![Arc::new(notifier(&url))])
            .with_settings(crate::support::retrying())
            .run(db.pool.clone(), shutdown.clone()),
    );
    eventually(
        Duration::from_secs(30),
        "the notifier's failure",
        || async {
            let status = Projections::status(&db.pool).await.unwrap();
            status.iter().any(|s| {
                s.name == NOTIFICATIONS
                    && s.active
                    && s.error
                        .as_ref()
                        .is_some_and(|e| e.message.contains("answered 503"))
            })
        },
    )
    .await;
    // the batches before the first notification may have gone through, not the one with it
    assert!(checkpoint(&db.pool).await < crate::support::first_of(&db.pool, "TaskOpened").await);
    assert!(receiver.notifications().is_empty());

    receiver.answer(StatusCode::OK);
    eventually(Duration::from_secs(30), "the notification", || async {
        !receiver.notifications().is_empty()
    })
    .await;
    assert_eq!(receiver.notifications()[0].kind, "task.offered");
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn a_notifier_turned_on_later_announces_only_work_from_then_on() {
    let (receiver, url) = Receiver::start().await;
    let (db, rt) = setup().await;
    Po::start(&rt, json!(700), "PO-9").await;
    crate::support::wait_readable(&db.pool).await;
    WebhookNotifier::start_at_head(&db.pool).await.unwrap();
    let po = Po::start(&rt, json!(900), "PO-10").await;
    let projections = Projections::from_projectors(vec![Arc::new(notifier(&url))]);
    project_with(&projections, &db.pool).await;
    let notifications = receiver.notifications();
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    assert_eq!(notifications[0].subject.id, po.child("review").to_string());
    // a second start keeps the checkpoint where it is
    WebhookNotifier::start_at_head(&db.pool).await.unwrap();
    assert_eq!(checkpoint(&db.pool).await, last_appended(&db.pool).await);
}

#[tokio::test]
async fn a_redirect_is_not_followed_but_counts_as_a_failure() {
    let (receiver, url) = Receiver::start().await;
    let moved = url.replace("/hooks/workledger", "/moved");
    let (db, rt) = setup().await;
    Po::start(&rt, json!(500), "PO-11").await;
    let projections = Projections::from_projectors(vec![Arc::new(notifier(&moved))]);
    crate::support::wait_readable(&db.pool).await;
    let error = projections.catch_up(&db.pool).await.unwrap_err();
    let message = format!("{:?}", anyhow_chain(&error));
    assert!(message.contains("answered 307"), "{message}");
    assert!(
        receiver.notifications().is_empty(),
        "the signed body went nowhere else"
    );
    assert_eq!(checkpoint(&db.pool).await, LogPosition::START);
}

fn anyhow_chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        out.push(cause.to_string());
        source = cause.source();
    }
    out
}

#[tokio::test]
async fn a_released_task_is_offered_again_to_the_candidates_it_had() {
    use domain::task::TaskCommand;
    let (receiver, url) = Receiver::start().await;
    let (db, rt) = setup().await;
    let po = Po::start(&rt, json!(400), "PO-12").await;
    let clerk = member(CLERK, &["clerks"]);
    let review = po.child("review");
    let at = crate::support::t0() + chrono::TimeDelta::minutes(3);
    rt.task(
        &crate::support::ctx(clerk.clone(), at),
        review,
        TaskCommand::Claim,
        None,
    )
    .await
    .unwrap();
    rt.task(
        &crate::support::ctx(clerk, at),
        review,
        TaskCommand::Release,
        None,
    )
    .await
    .unwrap();
    let projections = Projections::from_projectors(vec![Arc::new(notifier(&url))]);
    project_with(&projections, &db.pool).await;
    let notifications = receiver.notifications();
    let kinds: Vec<&str> = notifications.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(kinds, ["task.offered", "task.offered"], "{notifications:?}");
    assert_eq!(notifications[1].subject.id, review.to_string());
    assert_eq!(notifications[1].recipients.groups, ["clerks"]);
}

/// Where the notifier's checkpoint is.
async fn checkpoint(pool: &sqlx::PgPool) -> LogPosition {
    event_store::Checkpoints::load(pool, NOTIFICATIONS)
        .await
        .unwrap()
}

#[tokio::test]
async fn whoever_started_an_order_is_told_how_it_ended() {
    use event_schemas::ApprovalDecision;
    let (receiver, url) = Receiver::start().await;
    let (db, rt) = setup().await;
    let po = Po::start(&rt, json!(20000), "PO-13").await;
    po.work("review", &member(CLERK, &["clerks"]), json!({}), 5)
        .await;
    po.vote(
        "board",
        crate::support::BOARD[0],
        ApprovalDecision::Reject,
        10,
    )
    .await;
    po.vote(
        "board",
        crate::support::BOARD[2],
        ApprovalDecision::Reject,
        15,
    )
    .await;
    let projections = Projections::from_projectors(vec![Arc::new(notifier(&url))]);
    project_with(&projections, &db.pool).await;
    let notifications = receiver.notifications();
    let ended = notifications.last().unwrap();
    assert_eq!(ended.kind, "instance.completed", "{notifications:?}");
    assert_eq!(ended.outcome.as_deref(), Some("rejected"));
    assert_eq!(ended.recipients.users, [user(crate::support::OPERATOR)]);
    assert_eq!(ended.subject.kind, "workflow_instance");
    assert_eq!(ended.subject.id, po.id.to_string());
    assert_eq!(ended.subject.name.as_deref(), Some("PO-13"));
}
