//! The email notifier against a real SMTP relay on loopback (a small one of the test's own,
//! speaking the protocol over TCP) and the real Postgres.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_schemas::LogPosition;
use projections::Projections;
use projections::email::{EmailNotifier, EmailSettings};
use projections::names::EMAIL_NOTIFICATIONS;
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::support::{
    CLERK, MANAGERS, Po, TENANT, eventually, last_appended, member, project_with, setup, user,
};

/// A message the relay accepted.
#[derive(Debug, Clone)]
struct Mail {
    to: Vec<String>,
    data: String,
}

impl Mail {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.data
            .split("\r\n")
            .take_while(|line| !line.is_empty())
            .find_map(|line| line.strip_prefix(prefix.as_str()))
    }
}

/// An SMTP relay: keeps what it accepts, refuses the addresses in `refused` for good (550),
/// and answers "try later" (451) to every message after the first `accept` ones.
#[derive(Clone)]
struct Relay {
    accepted: Arc<Mutex<Vec<Mail>>>,
    refused: Arc<Mutex<Vec<String>>>,
    accept: Arc<AtomicUsize>,
}

impl Relay {
    async fn start() -> (Self, String) {
        let relay = Relay {
            accepted: Arc::default(),
            refused: Arc::default(),
            accept: Arc::new(AtomicUsize::new(usize::MAX)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let serving = relay.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let relay = serving.clone();
                tokio::spawn(async move {
                    let _ = relay.session(stream).await;
                });
            }
        });
        (relay, url)
    }

    fn mails(&self) -> Vec<Mail> {
        self.accepted.lock().unwrap().clone()
    }

    async fn session(self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 relay.test ESMTP\r\n").await?;
        let mut to = Vec::new();
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_ascii_uppercase();
            let reply: &[u8] = if command.starts_with("EHLO") {
                b"250-relay.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
            } else if command.starts_with("HELO") || command.starts_with("NOOP") {
                b"250 OK\r\n"
            } else if command.starts_with("MAIL FROM") || command.starts_with("RSET") {
                to.clear();
                b"250 OK\r\n"
            } else if command.starts_with("RCPT TO") {
                let address = line.split(['<', '>']).nth(1).unwrap_or_default().to_owned();
                if self.refused.lock().unwrap().contains(&address) {
                    b"550 5.1.1 no such mailbox\r\n"
                } else {
                    to.push(address);
                    b"250 OK\r\n"
                }
            } else if command == "DATA" {
                if self.accepted.lock().unwrap().len() >= self.accept.load(Ordering::SeqCst) {
                    write.write_all(b"451 4.3.0 try again later\r\n").await?;
                    continue;
                }
                write.write_all(b"354 go ahead\r\n").await?;
                let mut data = String::new();
                loop {
                    let mut line = String::new();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                self.accepted.lock().unwrap().push(Mail {
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 2.0.0 queued\r\n"
            } else if command.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                b"500 unknown command\r\n"
            };
            write.write_all(reply).await?;
        }
    }
}

/// A row of the identity read model, as the identity projector writes it.
async fn add_user(
    pool: &PgPool,
    tenant: &str,
    n: u128,
    email: &str,
    groups: &[&str],
    status: &str,
) {
    sqlx::query(
        "insert into identity_users (user_id, tenant_id, email, email_key, display_name, roles, \
         groups, status, version, created_at, updated_at) \
         values ($1, $2, $3, lower($3), 'User ' || $3, '{member}', $4, $5, 1, now(), now())",
    )
    .bind(user(n))
    .bind(tenant)
    .bind(email)
    .bind(groups)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
}

/// Two active clerks, a deactivated one, another tenant's "clerk", and the two managers.
async fn people(pool: &PgPool) {
    add_user(pool, TENANT, CLERK, "carl@acme.test", &["clerks"], "active").await;
    add_user(
        pool,
        TENANT,
        0xC2,
        "cleo@acme.test",
        &["clerks", "night"],
        "active",
    )
    .await;
    add_user(
        pool,
        TENANT,
        0xC3,
        "gone@acme.test",
        &["clerks"],
        "deactivated",
    )
    .await;
    add_user(
        pool,
        "globex",
        0xC4,
        "carl@globex.test",
        &["clerks"],
        "active",
    )
    .await;
    add_user(pool, TENANT, MANAGERS[0], "mia@acme.test", &[], "active").await;
    add_user(
        pool,
        TENANT,
        MANAGERS[1],
        "max@acme.test",
        &["managers"],
        "active",
    )
    .await;
}

fn notifier(url: &str) -> EmailNotifier {
    EmailNotifier::new(EmailSettings {
        smtp_url: SecretString::from(url.to_owned()),
        from: "Workledger <workledger@acme.test>".parse().unwrap(),
        link: Some("https://work.acme.test/{kind}s/{id}".to_owned()),
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

/// A purchase order whose review was done: a task offered to the clerks, then an approval
/// for the managers.
async fn reviewed_order(rt: &Arc<orchestrator::Runtime>) -> Po {
    let po = Po::start(rt, json!(1200), "PO-7").await;
    po.work(
        "review",
        &member(CLERK, &["clerks"]),
        json!({"checked": true}),
        5,
    )
    .await;
    po
}

async fn checkpoint(pool: &PgPool) -> LogPosition {
    event_store::Checkpoints::load(pool, EMAIL_NOTIFICATIONS)
        .await
        .unwrap()
}

fn recipients(mails: &[Mail]) -> Vec<String> {
    mails.iter().map(|m| m.to.join(",")).collect()
}

#[tokio::test]
async fn every_active_member_of_the_tenant_asked_to_act_gets_one_email_of_their_own() {
    let (relay, url) = Relay::start().await;
    let (db, rt) = setup().await;
    people(&db.pool).await;
    let po = reviewed_order(&rt).await;
    let projections = Projections::from_projectors(vec![Arc::new(notifier(&url))]);
    project_with(&projections, &db.pool).await;

    let mails = relay.mails();
    // by log order, then by address; not the deactivated clerk, not another tenant's
    assert_eq!(
        recipients(&mails),
        [
            "carl@acme.test",
            "cleo@acme.test",
            "max@acme.test",
            "mia@acme.test"
        ]
    );
    let review = &mails[0];
    assert!(
        review
            .header("Subject")
            .unwrap()
            .starts_with("Task to pick up: "),
        "{}",
        review.data
    );
    assert_eq!(
        review.header("X-Workledger-Notification"),
        Some("task.offered")
    );
    assert_eq!(review.header("Auto-Submitted"), Some("auto-generated"));
    assert_eq!(
        review.header("From"),
        Some("Workledger <workledger@acme.test>")
    );
    let task = po.child("review").to_string();
    assert!(
        review
            .data
            .contains(&format!("https://work.acme.test/tasks/{task}")),
        "{}",
        review.data
    );
    assert!(
        review.data.contains("because you are in clerks."),
        "{}",
        review.data
    );
    assert!(review.data.contains(&po.id.to_string()), "{}", review.data);
    let approval = &mails[2];
    assert!(
        approval
            .header("Subject")
            .unwrap()
            .starts_with("Approval requested: "),
        "{}",
        approval.data
    );
    assert!(
        approval.data.contains("because it is for you."),
        "{}",
        approval.data
    );
    let ids: std::collections::HashSet<_> = mails
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "one message id per notification and person");

    let sent: i64 =
        sqlx::query_scalar("select count(*) from notification_emails where outcome = 'sent'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(sent, 4);
    assert_eq!(checkpoint(&db.pool).await, last_appended(&db.pool).await);
}

#[tokio::test]
async fn a_busy_relay_gets_the_batch_again_without_the_messages_it_already_took() {
    let (relay, url) = Relay::start().await;
    relay.accept.store(1, Ordering::SeqCst);
    let (db, rt) = setup().await;
    people(&db.pool).await;
    reviewed_order(&rt).await;
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
                s.name == EMAIL_NOTIFICATIONS
                    && s.error
                        .as_ref()
                        .is_some_and(|e| e.message.contains("try again later"))
            })
        },
    )
    .await;
    // the batches before the first notification may have gone through, not the one with it
    assert!(checkpoint(&db.pool).await < crate::support::first_of(&db.pool, "TaskOpened").await);
    assert_eq!(recipients(&relay.mails()), ["carl@acme.test"]);

    relay.accept.store(usize::MAX, Ordering::SeqCst);
    eventually(Duration::from_secs(30), "every message", || async {
        relay.mails().len() >= 4
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "the checkpoint at the head",
        || async { checkpoint(&db.pool).await == last_appended(&db.pool).await },
    )
    .await;
    shutdown.cancel();
    running.await.unwrap();
    // Carl's message, accepted before the relay got busy, was not sent again
    assert_eq!(
        recipients(&relay.mails()),
        [
            "carl@acme.test",
            "cleo@acme.test",
            "max@acme.test",
            "mia@acme.test"
        ]
    );
}

#[tokio::test]
async fn an_address_the_relay_refuses_for_good_holds_back_nobody_elses_mail() {
    let (relay, url) = Relay::start().await;
    relay
        .refused
        .lock()
        .unwrap()
        .push("cleo@acme.test".to_owned());
    let (db, rt) = setup().await;
    people(&db.pool).await;
    reviewed_order(&rt).await;
    let projections = Projections::from_projectors(vec![Arc::new(notifier(&url))]);
    project_with(&projections, &db.pool).await;
    assert_eq!(
        recipients(&relay.mails()),
        ["carl@acme.test", "max@acme.test", "mia@acme.test"]
    );
    let refused: Vec<uuid::Uuid> =
        sqlx::query_scalar("select user_id from notification_emails where outcome = 'refused'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(refused, [user(0xC2)]);
    assert_eq!(checkpoint(&db.pool).await, last_appended(&db.pool).await);
}

#[tokio::test]
async fn an_email_notifier_turned_on_later_announces_only_work_from_then_on() {
    let (relay, url) = Relay::start().await;
    let (db, rt) = setup().await;
    people(&db.pool).await;
    Po::start(&rt, json!(700), "PO-9").await;
    crate::support::wait_readable(&db.pool).await;
    EmailNotifier::start_at_head(&db.pool).await.unwrap();
    project_with(
        &Projections::from_projectors(vec![Arc::new(notifier(&url))]),
        &db.pool,
    )
    .await;
    assert!(relay.mails().is_empty());
}

#[tokio::test]
async fn people_who_chose_direct_or_no_email_are_not_told_of_their_groups_work_or_of_any() {
    let (relay, url) = Relay::start().await;
    let (db, rt) = setup().await;
    people(&db.pool).await;
    for (email, choice) in [("cleo@acme.test", "direct"), ("max@acme.test", "none")] {
        sqlx::query("update identity_users set email_notifications = $2 where email = $1")
            .bind(email)
            .bind(choice)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    reviewed_order(&rt).await;
    project_with(
        &Projections::from_projectors(vec![Arc::new(notifier(&url))]),
        &db.pool,
    )
    .await;
    // Cleo's clerks' task is not for her personally; Max wants no email at all; Mia decides
    assert_eq!(
        recipients(&relay.mails()),
        ["carl@acme.test", "mia@acme.test"]
    );
}
