//! The notifications reactor: tells people's systems (a mailer, a chat bot, an app's inbox)
//! that someone has work to do, by webhook.
//!
//! A projector of the runtime (checkpoint `notifications`, one active worker by advisory lock,
//! lag and failures in `/metrics` and `workledger status`) that writes no table: each batch of
//! task and approval events that ask someone to act becomes one `POST` of
//! `{"notifications": [...]}` to `WORKLEDGER_WEBHOOK_URL`, and the checkpoint moves only once
//! the receiver answered 2xx ([`Projector::external`]). Anything else (a refusal, a timeout,
//! no answer) fails the batch, which is sent again after a backoff: at least once, in log
//! order; receivers drop repeats by the notification's `id` (the event's id).
//!
//! The body is signed: `X-Workledger-Signature: sha256=HEX`, the HMAC-SHA256 of the body
//! under `WORKLEDGER_WEBHOOK_SECRET`. Recipients are user ids and group names, never names or
//! emails: the receiver looks people up in its own directory.

use std::time::Duration;

use event_schemas::{
    AnyEvent, ApprovalEvent, RecordedEvent, TaskEvent, WorkflowRef, approval, task,
};
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::names::NOTIFICATIONS;
use crate::projector::{EventFilter, EventRef, ProjectionError, Projector, decode};

/// The events that can ask someone to act.
const NOTIFYING: [&str; 7] = [
    "TaskOpened",
    "TaskAssigned",
    "TaskDelegated",
    "TaskOverdue",
    "ApprovalOpened",
    "ApprovalDecided",
    "ApprovalDelegated",
];

/// Where and how to notify.
#[derive(Clone)]
pub struct WebhookSettings {
    /// `WORKLEDGER_WEBHOOK_URL`: `http://` or `https://`.
    pub url: String,
    /// `WORKLEDGER_WEBHOOK_SECRET`: signs each body.
    pub secret: SecretString,
    /// How long the receiver may take to answer.
    pub timeout: Duration,
}

/// Whether `url` can be a webhook: an absolute `http` or `https` URL with a host.
pub fn is_webhook_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
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
    /// `approval.requested` (the approvers who may decide now) or `approval.awaiting` (after
    /// a vote or a delegation: who may decide now).
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant_id: Option<String>,
    /// The event's log position (`tx.pos`), a consistency token for the query API.
    pub position: String,
    pub occurred_at: Option<String>,
    pub subject: Subject,
    pub recipients: Recipients,
    pub due_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The body of one webhook call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub notifications: Vec<Notification>,
}

/// The signature header's value for `body`: `sha256=HEX`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of every length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The header that carries [`signature`].
pub const SIGNATURE_HEADER: &str = "x-workledger-signature";

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
            .user_agent(concat!("workledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebhookSetupError)?;
        Ok(Self { settings, client })
    }

    async fn notify(&self, events: &[&RecordedEvent]) -> Result<(), ProjectionError> {
        let mut notifications = Vec::with_capacity(events.len());
        for event in events {
            notifications.extend(notification(event)?);
        }
        let Some(first) = events.first() else {
            return Ok(());
        };
        if notifications.is_empty() {
            return Ok(());
        }
        let count = notifications.len();
        let body = serde_json::to_vec(&Delivery { notifications })
            .map_err(|e| delivery_error(first, e))?;
        let signed = signature(self.settings.secret.expose_secret().as_bytes(), &body);
        let response = self
            .client
            .post(&self.settings.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signed)
            .body(body)
            .send()
            .await
            .map_err(|e| delivery_error(first, e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(delivery_error(first, Refused(status.as_u16())));
        }
        metrics::counter!("workledger_notifications_total").increment(count as u64);
        Ok(())
    }
}

/// The receiver answered something else than 2xx.
#[derive(Debug, thiserror::Error)]
#[error("the webhook receiver answered {0}")]
struct Refused(u16);

fn delivery_error(
    event: &RecordedEvent,
    source: impl std::error::Error + Send + Sync + 'static,
) -> ProjectionError {
    ProjectionError::Delivery {
        event: Box::new(EventRef::of(event)),
        source: Box::new(source),
    }
}

fn workflow_fields(workflow: Option<&WorkflowRef>) -> (Option<Uuid>, Option<String>) {
    workflow.map_or((None, None), |w| {
        (Some(w.instance_id), Some(w.step_id.clone()))
    })
}

/// The notification an event makes, if any.
pub fn notification(event: &RecordedEvent) -> Result<Option<Notification>, ProjectionError> {
    let mut subject = Subject {
        kind: event.aggregate_type.clone(),
        id: event.aggregate_id.clone(),
        name: None,
        workflow_instance_id: None,
        step_id: None,
    };
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
            TaskEvent::TaskOverdue {
                due_at, escalation, ..
            } => {
                let escalation = escalation.unwrap_or_default();
                (
                    "task.overdue",
                    Recipients {
                        users: escalation.candidate_users,
                        groups: escalation.candidate_groups,
                    },
                    Some(due_at),
                )
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
            ApprovalEvent::ApprovalDecided { awaiting, .. }
            | ApprovalEvent::ApprovalDelegated { awaiting, .. } => {
                ("approval.awaiting", users(awaiting), None)
            }
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
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
        position: event.position.to_string(),
        occurred_at: metadata("occurred_at"),
        subject,
        recipients,
        due_at,
    }))
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
        EventFilter::events(
            &[task::AGGREGATE_TYPE, approval::AGGREGATE_TYPE],
            &NOTIFYING,
        )
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn external(&self) -> bool {
        true
    }

    fn apply<'a>(
        &'a self,
        _conn: &'a mut PgConnection,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(self.notify(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!is_webhook_url("ftp://hooks.example.com/x"));
        assert!(!is_webhook_url("/relative"));
    }
}
