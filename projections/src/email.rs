//! The email notifier: tells people by email that they have work to do.
//!
//! The same notifications as the webhook's ([`crate::notifications`]: a task offered,
//! assigned, handed on or overdue; an approval requested, awaiting someone's decision or
//! overdue; an instance ended, to its starter), sent over SMTP (`WORKLEDGER_SMTP_URL`) to each recipient's address: the users
//! named and the members of the groups named, active users of the event's tenant only, from the
//! identity read model. One message per person, so nobody sees who else was told.
//!
//! A reactor like the webhook notifier (checkpoint `email_notifications`, started at the head
//! of the log the first time it runs, the checkpoint moved once every message of a batch was
//! accepted). A transient refusal (a 4xx, no answer, a lost connection) fails the batch, which
//! is sent again after a backoff; the messages the relay had already accepted are not sent
//! again: each accepted message is recorded at once in `notification_emails` (a reactor's
//! batch runs with no transaction open: [`Projector::external`]). A permanent refusal of one message (a 5xx: an address the relay does
//! not know) is logged, counted and not retried, so one bad address does not hold back
//! everyone else's mail.

use std::time::Duration;

use chrono::{DateTime, Utc};
use event_schemas::RecordedEvent;
use event_schemas::{task, workflow_instance};
use futures::future::BoxFuture;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::names::EMAIL_NOTIFICATIONS;
use crate::notifications::{
    Before, Notification, is_this_machine, notification, notifying_events, start_at_head,
};
use crate::projector::{EventFilter, ProjectionError, Projector};

/// How long an accepted message is remembered, so a batch sent again does not repeat it.
const REMEMBERED_DAYS: i32 = 14;

/// Where and how to send email.
#[derive(Clone)]
pub struct EmailSettings {
    /// `WORKLEDGER_SMTP_URL`: `smtps://user:password@host[:465]`,
    /// `smtp://user:password@host[:587]?tls=required` (STARTTLS), or plain `smtp://` to a relay
    /// on this machine only ([`is_smtp_url`]).
    pub smtp_url: SecretString,
    /// `WORKLEDGER_EMAIL_FROM`: the sender, e.g. `Workledger <workledger@example.com>`.
    pub from: Mailbox,
    /// `WORKLEDGER_EMAIL_LINK`: a link to the work in your application, with `{kind}`
    /// (`task`, `approval` or `workflow_instance`) and `{id}` put in, e.g.
    /// `https://work.example.com/{kind}s/{id}`.
    pub link: Option<String>,
    /// How long the relay may take to answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSettings")
            .field(
                "smtp_url",
                &redacted_smtp_url(self.smtp_url.expose_secret()),
            )
            .field("from", &self.from.to_string())
            .field("link", &self.link)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Whether `url` can be the SMTP relay: `smtps://`, `smtp://...?tls=required`, or plain
/// `smtp://` to this machine only (credentials and mail would otherwise travel in the clear).
pub fn is_smtp_url(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let tls: Option<String> = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let Some(host) = url.host_str() else {
        return false;
    };
    match (url.scheme(), tls.as_deref()) {
        ("smtps", None) | ("smtp", Some("required")) => true,
        ("smtp", None) => is_this_machine(host),
        _ => false,
    }
}

/// `url` as it may be logged: scheme, host and port (never the credentials).
pub fn redacted_smtp_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", u.scheme()),
            (Some(host), None) => format!("{}://{host}", u.scheme()),
            _ => "(invalid)".to_owned(),
        },
        Err(_) => "(invalid)".to_owned(),
    }
}

/// Why the email notifier could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the SMTP transport for {url}")]
pub struct EmailSetupError {
    url: String,
    #[source]
    source: lettre::transport::smtp::Error,
}

/// The email notifier (see the module documentation).
#[derive(Clone)]
pub struct EmailNotifier {
    settings: EmailSettings,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for EmailNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailNotifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A person to tell.
#[derive(Debug, Clone)]
struct Recipient {
    user_id: Uuid,
    email: String,
    display_name: String,
    /// Named directly (rather than as a member of one of the groups).
    named: bool,
    /// The notification's groups the person is in.
    groups: Vec<String>,
}

impl EmailNotifier {
    pub fn new(settings: EmailSettings) -> Result<Self, EmailSetupError> {
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(settings.smtp_url.expose_secret())
                .map_err(|source| EmailSetupError {
                    url: redacted_smtp_url(settings.smtp_url.expose_secret()),
                    source,
                })?
                .timeout(Some(settings.timeout))
                .build();
        Ok(Self {
            settings,
            transport,
        })
    }

    /// Starts the notifier's checkpoint at the head of the log when it has none: only work
    /// from now on is announced.
    pub async fn start_at_head(pool: &PgPool) -> Result<(), event_store::LogError> {
        start_at_head(pool, EMAIL_NOTIFICATIONS).await
    }

    async fn notify(
        &self,
        conn: &mut PgConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut pending = Vec::new();
        for event in events {
            let before = Before::load(conn, event).await?;
            if let Some(notification) = notification(event, &before)? {
                pending.push((*event, notification));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = pending.iter().map(|(_, n)| n.id).collect();
        let sent: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "select event_id, user_id from notification_emails where event_id = any($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for (event, notification) in &pending {
            let name = match &notification.subject.name {
                Some(name) => Some(name.clone()),
                None => opened_name(conn, event).await?,
            };
            for recipient in recipients(conn, notification).await? {
                if sent.contains(&(notification.id, recipient.user_id)) {
                    continue;
                }
                self.send(conn, event, notification, name.as_deref(), &recipient)
                    .await?;
            }
        }
        sqlx::query(
            "delete from notification_emails where sent_at < now() - make_interval(days => $1)",
        )
        .bind(REMEMBERED_DAYS)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Sends one message and records it; a transient refusal fails the batch (named by
    /// `event`), a permanent one is logged and recorded as refused.
    async fn send(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
        notification: &Notification,
        name: Option<&str>,
        recipient: &Recipient,
    ) -> Result<(), ProjectionError> {
        let to = match recipient.email.parse::<lettre::Address>() {
            Ok(address) => Mailbox::new(Some(recipient.display_name.clone()), address),
            Err(error) => {
                tracing::warn!(user_id = %recipient.user_id, error = %error,
                    "a user's email address is not one a message can be sent to");
                return record(conn, notification, recipient, "refused").await;
            }
        };
        let message = compose(&self.settings, notification, name, recipient, to)
            .map_err(|e| ProjectionError::delivery(event, e))?;
        let outcome = match self.transport.send(message).await {
            Ok(_) => "sent",
            Err(error) if error.is_permanent() => {
                tracing::warn!(user_id = %recipient.user_id, notification = %notification.id,
                    error = %error, "the mail relay refused a notification for good; not retried");
                "refused"
            }
            Err(error) => return Err(ProjectionError::delivery(event, error)),
        };
        record(conn, notification, recipient, outcome).await
    }
}

/// Records what became of the message for `recipient`, at once (committed on its own).
async fn record(
    conn: &mut PgConnection,
    notification: &Notification,
    recipient: &Recipient,
    outcome: &'static str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "insert into notification_emails (event_id, user_id, outcome) values ($1, $2, $3) \
         on conflict do nothing",
    )
    .bind(notification.id)
    .bind(recipient.user_id)
    .bind(outcome)
    .execute(&mut *conn)
    .await?;
    metrics::counter!("workledger_emails_total", "outcome" => outcome).increment(1);
    Ok(())
}

/// The name of the task or approval `event` belongs to, from its opening event.
async fn opened_name(
    conn: &mut PgConnection,
    event: &RecordedEvent,
) -> Result<Option<String>, ProjectionError> {
    let name: Option<Option<String>> = sqlx::query_scalar(
        "select coalesce(payload->'TaskOpened'->>'name', payload->'ApprovalOpened'->>'name') \
         from events where aggregate_type = $1 and aggregate_id = $2 \
           and event_type in ('TaskOpened', 'ApprovalOpened') \
         order by sequence limit 1",
    )
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(name.flatten())
}

/// The active users of the notification's tenant it names, directly or by group, who want it
/// by email: those who chose `direct` only when it names them, none who chose `none`.
async fn recipients(
    conn: &mut PgConnection,
    notification: &Notification,
) -> Result<Vec<Recipient>, ProjectionError> {
    let Some(tenant_id) = &notification.tenant_id else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query(
        "select user_id, email, display_name, user_id = any($2) as named, \
                array(select unnest(groups) intersect select unnest($3::text[])) as via \
         from identity_users \
         where tenant_id = $1 and status = 'active' \
           and (email_notifications = 'all' and (user_id = any($2) or groups && $3) \
                or email_notifications = 'direct' and user_id = any($2)) \
         order by email_key, user_id",
    )
    .bind(tenant_id)
    .bind(&notification.recipients.users)
    .bind(&notification.recipients.groups)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let mut groups: Vec<String> = row.try_get("via")?;
            groups.sort();
            Ok(Recipient {
                user_id: row.try_get("user_id")?,
                email: row.try_get("email")?,
                display_name: row.try_get("display_name")?,
                named: row.try_get("named")?,
                groups,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Free text of the designer's (a task's name) made fit for a subject line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The message telling `recipient` of `notification`.
fn compose(
    settings: &EmailSettings,
    notification: &Notification,
    name: Option<&str>,
    recipient: &Recipient,
    to: Mailbox,
) -> Result<Message, lettre::error::Error> {
    let (noun, label) = match notification.subject.kind.as_str() {
        task::AGGREGATE_TYPE => ("task", "Task"),
        workflow_instance::AGGREGATE_TYPE => ("workflow", "Workflow"),
        _ => ("approval", "Approval"),
    };
    let name = name.map(one_line).filter(|n| !n.is_empty());
    let title = name.clone().unwrap_or_else(|| format!("a {noun}"));
    let outcome = notification.outcome.as_deref().map(one_line);
    let said = outcome.clone().unwrap_or_default();
    let (subject, sentence) = match notification.kind.as_str() {
        "task.offered" => (
            format!("Task to pick up: {title}"),
            "A task is waiting for someone to claim it.",
        ),
        "task.assigned" => (
            format!("Task assigned to you: {title}"),
            "A task was assigned to you.",
        ),
        "task.delegated" => (
            format!("Task handed to you: {title}"),
            "A task was handed on to you.",
        ),
        "task.overdue" => (
            format!("Task overdue: {title}"),
            "A task is past its due time.",
        ),
        "approval.requested" => (
            format!("Approval requested: {title}"),
            "Your decision is requested.",
        ),
        "approval.awaiting" => (
            format!("Your decision is awaited: {title}"),
            "It is your turn to decide.",
        ),
        "approval.overdue" => (
            format!("Approval overdue: {title}"),
            "An approval you have not decided is past its due time.",
        ),
        "instance.completed" => (
            format!("Finished: {title} ({said})"),
            "A workflow you started has finished.",
        ),
        "instance.cancelled" => (
            format!("Cancelled: {title}"),
            "A workflow you started was cancelled.",
        ),
        "instance.failed" => (
            format!("Failed: {title}"),
            "A workflow you started cannot go on; an operator has to look at it.",
        ),
        "instance.incident" => (
            format!("Waiting for an operator: {title}"),
            "A decision of a workflow you started could not be made on its data; an operator \
             has to correct it and retry.",
        ),
        other => (format!("Workledger: {other}"), "There is work for you."),
    };
    let mut body = format!(
        "Hello {},\n\n{sentence}\n\n",
        one_line(&recipient.display_name)
    );
    body.push_str(&format!(
        "  {label}: {}\n",
        name.as_deref().unwrap_or(&notification.subject.id)
    ));
    if let Some(outcome) = &outcome {
        let what = if notification.kind == "instance.completed" {
            "Outcome"
        } else {
            "Reason"
        };
        body.push_str(&format!("  {what}: {outcome}\n"));
    }
    if let Some(due_at) = notification.due_at {
        body.push_str(&format!("  Due: {}\n", when(due_at)));
    }
    // an incident names its instance and step: what the retry needs
    if let Some(instance) = notification
        .subject
        .workflow_instance_id
        .filter(|_| noun != "workflow" || notification.kind == "instance.incident")
    {
        body.push_str(&format!("  Workflow instance: {instance}"));
        if let Some(step) = &notification.subject.step_id {
            body.push_str(&format!(" (step {step})"));
        }
        body.push('\n');
    }
    body.push_str(&format!("  Id: {}\n", notification.subject.id));
    if let Some(template) = &settings.link {
        let link = template
            .replace("{kind}", &notification.subject.kind)
            .replace("{id}", &notification.subject.id);
        body.push_str(&format!("\n{link}\n"));
    }
    let reason = if recipient.named || recipient.groups.is_empty() {
        "it is for you".to_owned()
    } else {
        format!("you are in {}", recipient.groups.join(", "))
    };
    body.push_str(&format!(
        "\nYou get this message because {reason}.\n-- \nWorkledger\n"
    ));
    Message::builder()
        .from(settings.from.clone())
        .to(to)
        .subject(subject)
        // a repeat (a batch sent again after a crash) has the same id: mail clients drop it
        .message_id(Some(format!(
            "<{}.{}@workledger>",
            notification.id, recipient.user_id
        )))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Workledger-Notification"),
            notification.kind.clone(),
        ))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
}

impl Projector for EmailNotifier {
    fn name(&self) -> &'static str {
        EMAIL_NOTIFICATIONS
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
    use event_schemas::LogPosition;

    use super::*;
    use crate::notifications::{Recipients, Subject};

    fn settings(link: Option<&str>) -> EmailSettings {
        EmailSettings {
            smtp_url: SecretString::from("smtps://mailer:p4ssw0rd@mail.example.com"),
            from: "Workledger <workledger@example.com>".parse().unwrap(),
            link: link.map(str::to_owned),
            timeout: Duration::from_secs(10),
        }
    }

    fn offered() -> Notification {
        Notification {
            id: Uuid::from_u128(0xE1),
            kind: "task.offered".into(),
            tenant_id: Some("acme".into()),
            position: LogPosition::START,
            occurred_at: None,
            subject: Subject {
                kind: "task".into(),
                id: Uuid::from_u128(0x7).to_string(),
                name: Some("Review\r\nBcc: evil@example.com".into()),
                workflow_instance_id: Some(Uuid::from_u128(0x1)),
                step_id: Some("review".into()),
            },
            recipients: Recipients {
                users: vec![],
                groups: vec!["clerks".into()],
            },
            due_at: Some("2026-12-05T17:00:00Z".parse().unwrap()),
            outcome: None,
        }
    }

    fn clerk() -> Recipient {
        Recipient {
            user_id: Uuid::from_u128(0xC1),
            email: "carl@example.com".into(),
            display_name: "Carl Clerk".into(),
            named: false,
            groups: vec!["clerks".into()],
        }
    }

    #[test]
    fn a_message_names_the_work_why_it_was_sent_and_cannot_be_given_headers_by_a_name() {
        let n = offered();
        let to = Mailbox::new(
            Some("Carl Clerk".into()),
            "carl@example.com".parse().unwrap(),
        );
        let message = compose(
            &settings(Some("https://work.example.com/{kind}s/{id}")),
            &n,
            n.subject.name.as_deref(),
            &clerk(),
            to,
        )
        .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(
            text.contains("Subject: Task to pick up: Review  Bcc: evil@example.com"),
            "{text}"
        );
        assert!(!text.contains("\r\nBcc:"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-generated"), "{text}");
        assert!(text.contains(&format!(
            "Message-ID: <{}.{}@workledger>",
            n.id,
            clerk().user_id
        )));
        assert!(text.contains("Due: 2026-12-05 17:00 UTC"), "{text}");
        assert!(text.contains("(step review)"), "{text}");
        assert!(
            text.contains(&format!("https://work.example.com/tasks/{}", n.subject.id)),
            "{text}"
        );
        assert!(text.contains("because you are in clerks."), "{text}");
        assert_eq!(
            message.envelope().to(),
            ["carl@example.com".parse().unwrap()]
        );
    }

    #[test]
    fn the_starter_of_an_order_reads_its_outcome_in_the_subject() {
        let mut n = offered();
        n.kind = "instance.completed".into();
        n.subject.kind = "workflow_instance".into();
        n.subject.name = Some("PO-7".into());
        n.outcome = Some("approved".into());
        n.due_at = None;
        let mut starter = clerk();
        starter.named = true;
        let to = Mailbox::new(None, "carl@example.com".parse().unwrap());
        let message = compose(
            &settings(Some("https://work.example.com/{kind}s/{id}")),
            &n,
            Some("PO-7"),
            &starter,
            to,
        )
        .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(
            text.contains("Subject: Finished: PO-7 (approved)"),
            "{text}"
        );
        assert!(text.contains("Outcome: approved"), "{text}");
        assert!(
            text.contains("https://work.example.com/workflow_instances/"),
            "{text}"
        );
        assert!(!text.contains("Workflow instance:"), "{text}");

        // an incident names the decision an operator retries
        n.kind = "instance.incident".into();
        n.outcome = Some("decision route: rule 0 could not be evaluated".into());
        n.subject.step_id = Some("route".into());
        let to = Mailbox::new(None, "carl@example.com".parse().unwrap());
        let message = compose(&settings(None), &n, Some("PO-7"), &starter, to).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(
            text.contains("Subject: Waiting for an operator: PO-7"),
            "{text}"
        );
        assert!(
            text.contains("Reason: decision route: rule 0 could not be evaluated"),
            "{text}"
        );
        assert!(text.contains("(step route)"), "{text}");
    }

    #[test]
    fn plain_smtp_stays_on_this_machine_and_credentials_are_never_printed() {
        assert!(is_smtp_url("smtps://u:p@mail.example.com"));
        assert!(is_smtp_url("smtp://u:p@mail.example.com:587?tls=required"));
        assert!(is_smtp_url("smtp://127.0.0.1:2525"));
        assert!(is_smtp_url("smtp://localhost"));
        assert!(!is_smtp_url("smtp://mail.example.com"), "in the clear");
        assert!(!is_smtp_url("smtp://mail.example.com?tls=opportunistic"));
        assert!(!is_smtp_url("https://mail.example.com"));
        assert!(!is_smtp_url("not a url"));
        let printed = format!("{:?}", settings(None));
        assert!(
            !printed.contains("p4ssw0rd") && !printed.contains("mailer"),
            "{printed}"
        );
        assert!(printed.contains("smtps://mail.example.com"), "{printed}");
    }
}
