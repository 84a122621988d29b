//! The notifications reactor: tells people's systems (a mailer, a chat bot, an app's inbox)
//! that someone has work to do, or that an instance they started has ended or waits on an
//! incident, by webhook.
//!
//! A projector of the runtime (checkpoint `notifications`, one active worker by advisory lock,
//! lag and failures in `/metrics` and `workledger status`) that writes no table: the task and
//! approval events of a batch that ask someone to act become `POST`s of
//! `{"notifications": [...]}` to `WORKLEDGER_WEBHOOK_URL`, one after another, and the
//! checkpoint moves only once the receiver answered each with a 2xx ([`Projector::external`]).
//! Anything else (a refusal, a timeout, no answer) fails the batch, which is sent again after
//! a backoff: at least once, in log order; receivers drop repeats by the notification's `id`
//! (the event's id).
//!
//! Each call is signed: `X-Workledger-Timestamp: UNIX_SECONDS` and `X-Workledger-Signature:
//! sha256=HEX`, the HMAC-SHA256 under `WORKLEDGER_WEBHOOK_SECRET` of `TIMESTAMP.BODY`, so a
//! receiver can refuse a replayed call by its age. Calls carry at most
//! [`NOTIFICATIONS_PER_CALL`] notifications; redirects are not followed (a 3xx is a
//! failure: the signed body goes nowhere else). Recipients are user ids and group names,
//! never people's names or emails: the receiver looks people up in its own directory.
//!
//! The notifier starts at the head of the log the first time it runs (turning it on for a
//! system with a history does not announce every task ever opened).

use std::time::Duration;

use event_schemas::{
    Actor, AnyEvent, ApprovalEvent, LogPosition, RecordedEvent, TaskEvent, WorkflowInstanceEvent,
    WorkflowRef, approval, task, workflow_instance,
};
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::names::NOTIFICATIONS;
use crate::projector::{EventFilter, ProjectionError, Projector, decode};

/// The events that can ask someone to act, or tell them how what they started ended or that
/// it waits on an incident.
const NOTIFYING: [&str; 13] = [
    "TaskOpened",
    "TaskAssigned",
    "TaskDelegated",
    "TaskReleased",
    "TaskOverdue",
    "ApprovalOpened",
    "ApprovalDecided",
    "ApprovalDelegated",
    "ApprovalOverdue",
    "InstanceCompleted",
    "InstanceCancelled",
    "InstanceFailed",
    "IncidentRaised",
];

/// Where and how to notify.
#[derive(Clone)]
pub struct WebhookSettings {
    /// `WORKLEDGER_WEBHOOK_URL`: `https://`, or `http://` to this machine ([`is_webhook_url`]).
    pub url: String,
    /// `WORKLEDGER_WEBHOOK_SECRET`: signs each call.
    pub secret: SecretString,
    /// How long the receiver may take to answer.
    pub timeout: Duration,
}

/// Whether `url` can be a webhook: an absolute `https` URL, or `http` to this machine only
/// (the URL's token and the bodies would otherwise travel in the clear).
pub fn is_webhook_url(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    match (url.scheme(), url.host_str()) {
        ("https", Some(_)) => true,
        ("http", Some(host)) => is_this_machine(host),
        _ => false,
    }
}

/// Whether a URL's `host` is this machine (`localhost` or a loopback address).
pub(crate) fn is_this_machine(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The events that make notifications: of tasks and approvals, and of instances ending.
pub(crate) fn notifying_events() -> EventFilter {
    EventFilter::events(
        &[
            task::AGGREGATE_TYPE,
            approval::AGGREGATE_TYPE,
            workflow_instance::AGGREGATE_TYPE,
        ],
        &NOTIFYING,
    )
}

/// `url` as it may be logged: scheme, host and port only (a webhook's path or query often
/// holds a token).
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}/…", u.scheme()),
            (Some(host), None) => format!("{}://{host}/…", u.scheme()),
            _ => "(invalid)".to_owned(),
        },
        Err(_) => "(invalid)".to_owned(),
    }
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &redacted_url(&self.url))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Who is asked to act.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipients {
    pub users: Vec<Uuid>,
    pub groups: Vec<String>,
}

/// What the work is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// `task` or `approval`.
    pub kind: String,
    pub id: String,
    /// Present on the notification of an opened task or approval.
    pub name: Option<String>,
    pub workflow_instance_id: Option<Uuid>,
    pub step_id: Option<String>,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The id of the event it comes from: receivers drop repeats by it.
    pub id: Uuid,
    /// `task.offered`, `task.assigned`, `task.delegated`, `task.overdue`,
    /// `approval.requested` (the approvers who may decide now), `approval.awaiting` (after a
    /// vote or a delegation: who may decide now and could not before), `approval.overdue`, or
    /// `instance.completed`, `instance.cancelled`, `instance.failed`, `instance.incident` (a
    /// decision could not be evaluated: an operator retries it; to whoever started it).
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant_id: Option<String>,
    /// The event's log position (`tx.pos`), a consistency token for the query API.
    pub position: LogPosition,
    pub occurred_at: Option<String>,
    pub subject: Subject,
    pub recipients: Recipients,
    pub due_at: Option<chrono::DateTime<chrono::Utc>>,
    /// An ended instance's outcome (`instance.completed`) or reason (cancelled, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// The body of one webhook call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub notifications: Vec<Notification>,
}

/// The signature header's value for a call made at `timestamp` with `body`: `sha256=HEX` of
/// the HMAC-SHA256 of `TIMESTAMP.BODY`. A receiver recomputes it over the raw bytes, compares
/// in constant time, and refuses a timestamp more than a few minutes away from its clock.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of every length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The header that carries [`signature`].
pub const SIGNATURE_HEADER: &str = "x-workledger-signature";
/// The header that carries the signed time (seconds since the Unix epoch).
pub const TIMESTAMP_HEADER: &str = "x-workledger-timestamp";
/// The most notifications in one call.
pub const NOTIFICATIONS_PER_CALL: usize = 100;

/// Why the notifier could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the webhook client")]
pub struct WebhookSetupError(#[source] reqwest::Error);

/// The notifications reactor (see the module documentation).
#[derive(Clone)]
pub struct WebhookNotifier {
    settings: WebhookSettings,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("url", &redacted_url(&self.settings.url))
            .finish_non_exhaustive()
    }
}

impl WebhookNotifier {
    pub fn new(settings: WebhookSettings) -> Result<Self, WebhookSetupError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            // a redirect would send the signed body (and, as a Referer, the URL) elsewhere
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("workledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebhookSetupError)?;
        Ok(Self { settings, client })
    }

    /// Starts the notifier's checkpoint at the head of the log when it has none: only work
    /// from now on is announced.
    pub async fn start_at_head(pool: &sqlx::PgPool) -> Result<(), event_store::LogError> {
        start_at_head(pool, NOTIFICATIONS).await
    }

    async fn notify(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut notifications = Vec::with_capacity(events.len());
        for event in events {
            let before = Before::load(conn, event).await?;
            if let Some(notification) = notification(event, &before)? {
                notifications.push((*event, notification));
            }
        }
        for chunk in notifications.chunks(NOTIFICATIONS_PER_CALL) {
            self.call(chunk).await?;
        }
        Ok(())
    }

    /// One call with `chunk`; a failure names the chunk's first event.
    async fn call(&self, chunk: &[(&RecordedEvent, Notification)]) -> Result<(), ProjectionError> {
        let first = chunk[0].0;
        let notifications: Vec<&Notification> = chunk.iter().map(|(_, n)| n).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "notifications": notifications }))
            .map_err(|e| ProjectionError::delivery(first, e))?;
        let timestamp = chrono::Utc::now().timestamp();
        let signed = signature(
            self.settings.secret.expose_secret().as_bytes(),
            timestamp,
            &body,
        );
        let response = self
            .client
            .post(&self.settings.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signed)
            .body(body)
            .send()
            .await
            .map_err(|e| ProjectionError::delivery(first, e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ProjectionError::delivery(first, Refused(status.as_u16())));
        }
        metrics::counter!("workledger_notifications_total").increment(chunk.len() as u64);
        Ok(())
    }
}

/// Starts the checkpoint `name` at the head of the log when it has none.
pub(crate) async fn start_at_head(
    pool: &sqlx::PgPool,
    name: &str,
) -> Result<(), event_store::LogError> {
    let head = event_store::GlobalLog::head(pool).await?;
    event_store::Checkpoints::start_at(pool, name, head)
        .await
        .map_err(event_store::LogError::Read)?;
    Ok(())
}

/// What an event's notification needs from before the event, when the event alone does not
/// say who is to act: read from the aggregate's earlier events (the log, not a read model,
/// which may be behind or ahead of this reactor).
#[derive(Debug, Clone, Default)]
pub struct Before {
    /// For a vote, a delegation or an overdue approval: who could decide before it.
    pub awaiting: Vec<Uuid>,
    /// For a released or overdue task: the task as it was.
    pub task: Option<domain::task::Task>,
    /// For an instance event (an end, an incident): how the instance started.
    pub started: Option<Started>,
}

/// What an instance's start says of it.
#[derive(Debug, Clone)]
pub struct Started {
    pub started_by: Actor,
    pub definition_key: String,
    pub business_key: Option<String>,
}

impl Before {
    pub(crate) async fn load(
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<Self, ProjectionError> {
        match (event.aggregate_type.as_str(), event.event_type.as_str()) {
            (
                approval::AGGREGATE_TYPE,
                "ApprovalDecided" | "ApprovalDelegated" | "ApprovalOverdue",
            ) => Ok(Self {
                awaiting: awaiting_before(conn, event).await?,
                ..Self::default()
            }),
            (task::AGGREGATE_TYPE, "TaskReleased" | "TaskOverdue") => Ok(Self {
                task: Some(task_before(conn, event).await?),
                ..Self::default()
            }),
            (workflow_instance::AGGREGATE_TYPE, _) => Ok(Self {
                started: Some(started(conn, event).await?),
                ..Self::default()
            }),
            _ => Ok(Self::default()),
        }
    }
}

/// Who could decide on an approval before `event` (the `awaiting` of its latest earlier event
/// that says so).
async fn awaiting_before(
    conn: &mut PgConnection,
    event: &RecordedEvent,
) -> Result<Vec<Uuid>, ProjectionError> {
    let awaiting: Option<serde_json::Value> = sqlx::query_scalar(
        "select coalesce(payload->'ApprovalOpened'->'awaiting', \
                         payload->'ApprovalDecided'->'awaiting', \
                         payload->'ApprovalDelegated'->'awaiting') \
         from events where aggregate_type = $1 and aggregate_id = $2 and sequence < $3 \
           and event_type in ('ApprovalOpened', 'ApprovalDecided', 'ApprovalDelegated') \
         order by sequence desc limit 1",
    )
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.sequence)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    let Some(awaiting) = awaiting else {
        return Err(ProjectionError::inconsistent(
            event,
            "the approval has no earlier event that says who could decide",
        ));
    };
    serde_json::from_value(awaiting).map_err(|_| {
        ProjectionError::inconsistent(event, "an earlier event's `awaiting` is not a list of ids")
    })
}

/// How the instance of `event` started (its first event).
async fn started(
    conn: &mut PgConnection,
    event: &RecordedEvent,
) -> Result<Started, ProjectionError> {
    let payload: Option<serde_json::Value> = sqlx::query_scalar(
        "select payload->'InstanceStarted' from events \
         where aggregate_type = $1 and aggregate_id = $2 and event_type = 'InstanceStarted' \
         order by sequence limit 1",
    )
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    let field = |payload: &serde_json::Value, key: &str| payload.get(key).cloned();
    let Some(payload) = payload else {
        return Err(ProjectionError::inconsistent(
            event,
            "the instance has no InstanceStarted event",
        ));
    };
    let started_by = field(&payload, "started_by")
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| {
            ProjectionError::inconsistent(event, "the instance's start names no valid starter")
        })?;
    Ok(Started {
        started_by,
        definition_key: payload["definition_key"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        business_key: payload["business_key"].as_str().map(str::to_owned),
    })
}

/// The task as it was before `event`: its earlier events applied in order.
async fn task_before(
    conn: &mut PgConnection,
    event: &RecordedEvent,
) -> Result<domain::task::Task, ProjectionError> {
    use cqrs_es::Aggregate as _;
    use sqlx::Row as _;
    let rows = sqlx::query(
        "select tx_id::text::bigint as tx_id, global_position, event_id, sequence, event_type, \
                event_version, payload, recorded_at \
         from events where aggregate_type = $1 and aggregate_id = $2 and sequence < $3 \
         order by sequence",
    )
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.sequence)
    .fetch_all(&mut *conn)
    .await?;
    let mut task = domain::task::Task::default();
    for row in rows {
        let earlier = RecordedEvent {
            position: LogPosition {
                tx_id: row.try_get::<i64, _>("tx_id")? as u64,
                global_position: row.try_get("global_position")?,
            },
            event_id: row.try_get("event_id")?,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: serde_json::Value::Null,
            recorded_at: row.try_get("recorded_at")?,
        };
        match decode(&earlier)? {
            AnyEvent::Task(earlier) => task.apply(earlier),
            _ => {
                return Err(ProjectionError::inconsistent(
                    event,
                    "an earlier event of the task is not a task event",
                ));
            }
        }
    }
    Ok(task)
}

/// The receiver answered something else than 2xx.
#[derive(Debug, thiserror::Error)]
#[error("the webhook receiver answered {0}")]
struct Refused(u16);

fn workflow_fields(workflow: Option<&WorkflowRef>) -> (Option<Uuid>, Option<String>) {
    workflow.map_or((None, None), |w| {
        (Some(w.instance_id), Some(w.step_id.clone()))
    })
}

/// The notification an event makes, if any: none when it asks nobody new to act. `before` is
/// what it needs from before the event ([`Before`]).
pub fn notification(
    event: &RecordedEvent,
    before: &Before,
) -> Result<Option<Notification>, ProjectionError> {
    let mut subject = Subject {
        kind: event.aggregate_type.clone(),
        id: event.aggregate_id.clone(),
        name: None,
        workflow_instance_id: None,
        step_id: None,
    };
    let mut outcome = None;
    // older versions are upcast: a notification is made from the event as it is now
    let (kind, recipients, due_at) = match decode(event)? {
        AnyEvent::Task(task) => match task {
            TaskEvent::TaskOpened {
                workflow,
                name,
                assignee,
                candidate_users,
                candidate_groups,
                due_at,
                ..
            } => {
                (subject.workflow_instance_id, subject.step_id) =
                    workflow_fields(workflow.as_ref());
                subject.name = Some(name);
                match assignee {
                    Some(user) => ("task.assigned", users([user]), due_at),
                    None => (
                        "task.offered",
                        Recipients {
                            users: candidate_users,
                            groups: candidate_groups,
                        },
                        due_at,
                    ),
                }
            }
            TaskEvent::TaskAssigned { user_id, .. } => ("task.assigned", users([user_id]), None),
            TaskEvent::TaskDelegated { to_user_id, .. } => {
                ("task.delegated", users([to_user_id]), None)
            }
            // the task is offered to its candidates again
            TaskEvent::TaskReleased { .. } => {
                let task = before.task.as_ref();
                (
                    "task.offered",
                    candidates(task),
                    task.and_then(|t| t.due_at()),
                )
            }
            // its assignee should hurry; an unassigned task is offered to its candidates and
            // the escalation's (who could not claim a task someone holds)
            TaskEvent::TaskOverdue {
                due_at, escalation, ..
            } => {
                let task = before.task.as_ref();
                let recipients = match task.and_then(|t| t.assignee()) {
                    Some(assignee) => users([assignee]),
                    None => {
                        let escalation = escalation.unwrap_or_default();
                        let mut recipients = candidates(task);
                        for user in escalation.candidate_users {
                            if !recipients.users.contains(&user) {
                                recipients.users.push(user);
                            }
                        }
                        for group in escalation.candidate_groups {
                            if !recipients.groups.contains(&group) {
                                recipients.groups.push(group);
                            }
                        }
                        recipients
                    }
                };
                ("task.overdue", recipients, Some(due_at))
            }
            _ => return Ok(None),
        },
        AnyEvent::Approval(approval) => match approval {
            ApprovalEvent::ApprovalOpened {
                workflow,
                name,
                due_at,
                awaiting,
                ..
            } => {
                (subject.workflow_instance_id, subject.step_id) =
                    workflow_fields(workflow.as_ref());
                subject.name = Some(name);
                ("approval.requested", users(awaiting), due_at)
            }
            // under `all` and `quorum` everyone still voting could vote before: only those
            // who can now and could not (the next one, for `sequential`) are told
            ApprovalEvent::ApprovalDecided { awaiting, .. } => {
                let new = awaiting
                    .into_iter()
                    .filter(|u| !before.awaiting.contains(u));
                ("approval.awaiting", users(new), None)
            }
            // who could decide and has not: the approval is past its due time
            ApprovalEvent::ApprovalOverdue { due_at, .. } => (
                "approval.overdue",
                users(before.awaiting.iter().copied()),
                Some(due_at),
            ),
            // the vote's new holder, when it is theirs to cast now
            ApprovalEvent::ApprovalDelegated {
                to_user_id,
                awaiting,
                ..
            } => {
                let now = awaiting.contains(&to_user_id).then_some(to_user_id);
                ("approval.awaiting", users(now), None)
            }
            _ => return Ok(None),
        },
        // whoever started an instance is told how it ended (unless they ended it themself), and
        // when a path of it waits for an operator
        AnyEvent::WorkflowInstance(instance) => {
            let Some(started) = &before.started else {
                return Ok(None);
            };
            let (kind, ended_by, said) = match instance {
                WorkflowInstanceEvent::InstanceCompleted { outcome, .. } => {
                    ("instance.completed", None, outcome)
                }
                WorkflowInstanceEvent::InstanceCancelled {
                    reason,
                    cancelled_by,
                    ..
                } => ("instance.cancelled", Some(cancelled_by), reason),
                WorkflowInstanceEvent::InstanceFailed { reason, .. } => {
                    ("instance.failed", None, reason)
                }
                WorkflowInstanceEvent::IncidentRaised {
                    reason, step_id, ..
                } => {
                    subject.step_id = Some(step_id);
                    ("instance.incident", None, reason)
                }
                _ => return Ok(None),
            };
            let starter = match &started.started_by {
                Actor::User(user) if ended_by.as_ref() != Some(&started.started_by) => *user,
                _ => return Ok(None),
            };
            subject.name = Some(
                started
                    .business_key
                    .clone()
                    .unwrap_or_else(|| started.definition_key.clone()),
            );
            subject.workflow_instance_id = event.aggregate_id.parse().ok();
            outcome = Some(said);
            (kind, users([starter]), None)
        }
        _ => return Ok(None),
    };
    if recipients.users.is_empty() && recipients.groups.is_empty() {
        return Ok(None);
    }
    let metadata = |key: &str| {
        event
            .metadata
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    Ok(Some(Notification {
        id: event.event_id,
        kind: kind.to_owned(),
        tenant_id: metadata("tenant_id"),
        position: event.position,
        occurred_at: metadata("occurred_at"),
        subject,
        recipients,
        due_at,
        outcome,
    }))
}

/// A task's candidate users and groups.
fn candidates(task: Option<&domain::task::Task>) -> Recipients {
    task.map_or_else(Recipients::default, |t| Recipients {
        users: t.candidate_users().to_vec(),
        groups: t.candidate_groups().to_vec(),
    })
}

fn users(ids: impl IntoIterator<Item = Uuid>) -> Recipients {
    Recipients {
        users: ids.into_iter().collect(),
        groups: Vec::new(),
    }
}

impl Projector for WebhookNotifier {
    fn name(&self) -> &'static str {
        NOTIFICATIONS
    }

    fn filter(&self) -> EventFilter {
        notifying_events()
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn external(&self) -> bool {
        true
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(self.notify(conn, events))
    }
}

#[cfg(test)]
mod tests {
    use event_schemas::ApprovalDecision;
    use serde_json::json;

    use super::*;

    fn recorded(aggregate_type: &str, payload: serde_json::Value) -> RecordedEvent {
        let event_type = payload.as_object().unwrap().keys().next().unwrap().clone();
        RecordedEvent {
            position: LogPosition {
                tx_id: 10,
                global_position: 3,
            },
            event_id: Uuid::now_v7(),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: Uuid::nil().to_string(),
            sequence: 2,
            event_type,
            event_version: "1".to_owned(),
            payload,
            metadata: json!({"tenant_id": "acme", "occurred_at": "2026-11-26T10:00:00Z"}),
            recorded_at: chrono::Utc::now(),
        }
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn awaiting(users: &[Uuid]) -> Before {
        Before {
            awaiting: users.to_vec(),
            ..Before::default()
        }
    }

    /// A task offered to user 7 and the clerks, held by `assignee`.
    fn task_with(assignee: Option<Uuid>) -> Before {
        use cqrs_es::Aggregate as _;
        let opened: TaskEvent = serde_json::from_value(json!({"TaskOpened": {
            "task_id": Uuid::nil(), "tenant_id": "acme", "workflow": null, "name": "Check",
            "description": null, "assignee": null, "candidate_users": [id(7)],
            "candidate_groups": ["clerks"], "form": [], "due_at": "2026-11-26T09:00:00Z",
            "escalation": null, "opened_by": "service:test", "opened_at": "2026-11-26T08:00:00Z"}}))
        .unwrap();
        let mut task = domain::task::Task::default();
        task.apply(opened);
        if let Some(user) = assignee {
            task.apply(TaskEvent::TaskClaimed {
                user_id: user,
                claimed_at: chrono::Utc::now(),
            });
        }
        Before {
            task: Some(task),
            ..Before::default()
        }
    }

    fn decided(awaiting: &[Uuid]) -> RecordedEvent {
        recorded(
            approval::AGGREGATE_TYPE,
            json!({"ApprovalDecided": {"approver": id(1), "decided_by": id(1),
                   "decision": ApprovalDecision::Approve, "awaiting": awaiting,
                   "decided_at": "2026-11-26T10:00:00Z"}}),
        )
    }

    #[test]
    fn a_vote_tells_only_who_can_decide_now_and_could_not_before() {
        // `sequential`: the next approver's turn
        let next = notification(&decided(&[id(2)]), &awaiting(&[id(1), id(3)]))
            .unwrap()
            .unwrap();
        assert_eq!(next.kind, "approval.awaiting");
        assert_eq!(next.recipients.users, [id(2)]);
        // `all`: the others could vote already; the last vote leaves nobody
        assert!(
            notification(&decided(&[id(2), id(3)]), &awaiting(&[id(1), id(2), id(3)]))
                .unwrap()
                .is_none()
        );
        assert!(
            notification(&decided(&[]), &awaiting(&[id(1)]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn an_overdue_approval_tells_who_has_not_decided_yet() {
        let overdue = recorded(
            approval::AGGREGATE_TYPE,
            json!({"ApprovalOverdue": {"due_at": "2026-11-26T09:00:00Z",
                   "marked_at": "2026-11-26T10:00:00Z"}}),
        );
        let n = notification(&overdue, &awaiting(&[id(3)]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (n.kind.as_str(), n.recipients.users.as_slice()),
            ("approval.overdue", &[id(3)][..])
        );
    }

    #[test]
    fn a_delegated_vote_tells_its_new_holder_when_it_is_theirs_to_cast() {
        let delegated = |awaiting: &[Uuid]| {
            recorded(
                approval::AGGREGATE_TYPE,
                json!({"ApprovalDelegated": {"approver": id(1), "from_user_id": id(1),
                       "to_user_id": id(9), "delegated_by": "service:test", "awaiting": awaiting,
                       "delegated_at": "2026-11-26T10:00:00Z"}}),
            )
        };
        let now = notification(&delegated(&[id(9)]), &awaiting(&[id(1)]))
            .unwrap()
            .unwrap();
        assert_eq!(now.recipients.users, [id(9)]);
        // a later turn of a `sequential` approval: nobody new can act yet
        assert!(
            notification(&delegated(&[id(2)]), &awaiting(&[id(2)]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn tasks_assigned_delegated_and_overdue_name_who_acts() {
        let assigned = recorded(
            task::AGGREGATE_TYPE,
            json!({"TaskAssigned": {"user_id": id(5), "previous_assignee": null,
                   "assigned_by": "service:test", "assigned_at": "2026-11-26T10:00:00Z"}}),
        );
        let n = notification(&assigned, &Before::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            (n.kind.as_str(), n.recipients.users.as_slice()),
            ("task.assigned", &[id(5)][..])
        );
        let delegated = recorded(
            task::AGGREGATE_TYPE,
            json!({"TaskDelegated": {"from_user_id": id(5), "to_user_id": id(6),
                   "delegated_by": "service:test", "delegated_at": "2026-11-26T10:00:00Z"}}),
        );
        let n = notification(&delegated, &Before::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            (n.kind.as_str(), n.recipients.users.as_slice()),
            ("task.delegated", &[id(6)][..])
        );
        let overdue = |escalation: serde_json::Value| {
            recorded(
                task::AGGREGATE_TYPE,
                json!({"TaskOverdue": {"due_at": "2026-11-26T09:00:00Z", "escalation": escalation,
                       "marked_at": "2026-11-26T10:00:00Z"}}),
            )
        };
        let unassigned = task_with(None);
        let n = notification(
            &overdue(json!({"candidate_users": [], "candidate_groups": ["supervisors"]})),
            &unassigned,
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.kind, "task.overdue");
        assert_eq!(n.recipients.groups, ["clerks", "supervisors"]);
        assert_eq!(n.recipients.users, [id(7)]);
        assert!(n.due_at.is_some());
        // an assigned task: its assignee, not people who could not claim it
        let n = notification(
            &overdue(json!({"candidate_users": [], "candidate_groups": ["supervisors"]})),
            &task_with(Some(id(5))),
        )
        .unwrap()
        .unwrap();
        assert_eq!(n.recipients.users, [id(5)]);
        assert!(n.recipients.groups.is_empty());
        // released: offered to its candidates again
        let released = recorded(
            task::AGGREGATE_TYPE,
            json!({"TaskReleased": {"user_id": id(5), "released_by": "service:test",
                   "released_at": "2026-11-26T10:00:00Z"}}),
        );
        let n = notification(&released, &task_with(Some(id(5))))
            .unwrap()
            .unwrap();
        assert_eq!(n.kind, "task.offered");
        assert_eq!(
            (
                n.recipients.users.as_slice(),
                n.recipients.groups.as_slice()
            ),
            (&[id(7)][..], &["clerks".to_owned()][..])
        );
        // nobody to tell: no notification
        let nobody = Before {
            task: Some(domain::task::Task::default()),
            ..Before::default()
        };
        assert!(
            notification(&overdue(json!(null)), &nobody)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn whoever_started_an_instance_is_told_how_it_ended_unless_they_ended_it() {
        let started = |by: Actor| Before {
            started: Some(Started {
                started_by: by,
                definition_key: "purchase-order".into(),
                business_key: Some("PO-7".into()),
            }),
            ..Before::default()
        };
        let completed = recorded(
            workflow_instance::AGGREGATE_TYPE,
            json!({"InstanceCompleted": {"outcome": "approved", "end_step_id": "approved",
                   "cancelled_children": [], "completed_at": "2026-11-26T10:00:00Z"}}),
        );
        let n = notification(&completed, &started(Actor::User(id(3))))
            .unwrap()
            .unwrap();
        assert_eq!(n.kind, "instance.completed");
        assert_eq!(n.recipients.users, [id(3)]);
        assert_eq!(n.outcome.as_deref(), Some("approved"));
        assert_eq!(n.subject.name.as_deref(), Some("PO-7"));
        assert_eq!(n.subject.workflow_instance_id, Some(Uuid::nil()));
        let cancelled = |by: &str| {
            recorded(
                workflow_instance::AGGREGATE_TYPE,
                json!({"InstanceCancelled": {"reason": "duplicate", "open_children": [],
                       "cancelled_by": by, "cancelled_at": "2026-11-26T10:00:00Z"}}),
            )
        };
        let by_operator = notification(
            &cancelled(&format!("user:{}", id(4))),
            &started(Actor::User(id(3))),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (by_operator.kind.as_str(), by_operator.outcome.as_deref()),
            ("instance.cancelled", Some("duplicate"))
        );
        assert!(
            notification(
                &cancelled(&format!("user:{}", id(3))),
                &started(Actor::User(id(3)))
            )
            .unwrap()
            .is_none(),
            "they cancelled it themself"
        );
        assert!(
            notification(&completed, &started(Actor::Service("importer".into())))
                .unwrap()
                .is_none(),
            "a service started it: nobody to tell"
        );
        let incident = recorded(
            workflow_instance::AGGREGATE_TYPE,
            json!({"IncidentRaised": {"step_id": "route", "activation": 1,
                   "reason": "decision route: rule 0 could not be evaluated", "scope": [],
                   "raised_at": "2026-11-26T10:00:00Z"}}),
        );
        let n = notification(&incident, &started(Actor::User(id(3))))
            .unwrap()
            .unwrap();
        assert_eq!(n.kind, "instance.incident");
        assert_eq!(n.recipients.users, [id(3)]);
        assert_eq!(n.subject.step_id.as_deref(), Some("route"));
        assert!(n.outcome.unwrap().contains("could not be evaluated"));
    }

    #[test]
    fn a_webhook_url_is_logged_without_its_path() {
        let url = "https://hooks.example.com/services/T000/B000/XXXXSECRET";
        assert_eq!(redacted_url(url), "https://hooks.example.com/…");
        assert_eq!(
            redacted_url("http://127.0.0.1:9000/x?token=1"),
            "http://127.0.0.1:9000/…"
        );
        let settings = WebhookSettings {
            url: url.to_owned(),
            secret: "a secret of thirty-two bytes, at least".to_owned().into(),
            timeout: Duration::from_secs(1),
        };
        let printed = format!(
            "{settings:?} {:?}",
            WebhookNotifier::new(settings.clone()).unwrap()
        );
        assert!(
            !printed.contains("SECRET") && !printed.contains("thirty-two"),
            "{printed}"
        );
        assert!(is_webhook_url(url));
        assert!(is_webhook_url("http://127.0.0.1:9000/hook"));
        assert!(is_webhook_url("http://localhost/hook"));
        assert!(
            !is_webhook_url("http://hooks.example.com/x"),
            "plain http leaves the machine"
        );
        assert!(!is_webhook_url("ftp://hooks.example.com/x"));
        assert!(!is_webhook_url("/relative"));
    }
}
