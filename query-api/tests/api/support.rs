//! A query API served on 127.0.0.1:0 over a fresh database, the workflow runtime to produce
//! events, and tokens for any user.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api_common::auth::{AUDIENCE, ISSUER};
use api_common::layers::{self, HttpSettings};
use api_common::{Claims, TokenKeys};
use chrono::{DateTime, TimeDelta, Utc};
use domain::approval::ApprovalCommand;
use domain::definition::Definition;
use domain::examples::purchase_order_json;
use domain::ids::step_child_id;
use domain::task::TaskCommand;
use domain::{Caller, DocumentCommand, InstanceCommand, Role};
use event_schemas::{ApprovalDecision, DocumentFile, LogPosition};
use event_store::AppendNotifier;
use event_store::testing::TestDatabase;
use orchestrator::{RequestContext, Runtime, StaticDirectory};
use projections::Projections;
use query_api::{QuerySettings, QueryState};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use sha2::Digest as _;
use sqlx::{PgPool, Row};
use uuid::Uuid;

pub const TENANT: &str = "acme";
pub const CLERK: u128 = 0xC1;
pub const MANAGERS: [u128; 2] = [0xA1, 0xA2];
pub const BOARD: [u128; 3] = [0xB1, 0xB2, 0xB3];
pub const LAWYER: u128 = 0x11;
pub const FINANCE: u128 = 0xF1;
pub const OPERATOR: u128 = 0x0F;
pub const AUDITOR: u128 = 0xAD;

pub fn user(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub fn vars(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

pub fn ctx(caller: Caller, at: DateTime<Utc>) -> RequestContext {
    RequestContext {
        caller,
        at,
        correlation_id: Uuid::now_v7(),
        request_id: Uuid::now_v7().to_string(),
    }
}

pub fn member(n: u128, groups: &[&str]) -> Caller {
    Caller::user(TENANT, user(n), [Role::Member], groups.iter().copied())
}

pub fn operator() -> Caller {
    Caller::user(
        TENANT,
        user(OPERATOR),
        [Role::Operator],
        Vec::<String>::new(),
    )
}

/// The server, its database and the runtime that writes events into it.
pub struct TestApp {
    pub db: TestDatabase,
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub keys: TokenKeys,
    pub rt: Arc<Runtime>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::with_settings(QuerySettings::default()).await
    }

    pub async fn with_settings(settings: QuerySettings) -> Self {
        let db = TestDatabase::new().await;
        let keys = TokenKeys::from_secret(&[42u8; 32]).unwrap();
        // as `serve` does: sessions that end refuse their tokens
        keys.watch_revocations(db.pool.clone(), std::time::Duration::from_secs(900))
            .await
            .unwrap();
        let state = QueryState::new(db.pool.clone(), keys.clone(), settings);
        let (router, _doc) = query_api::router(state).split_for_parts();
        let router = layers::apply(router, &HttpSettings::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let directory = StaticDirectory::new();
        directory.set(TENANT, "managers", MANAGERS.map(user).to_vec());
        directory.set(TENANT, "board", BOARD.map(user).to_vec());
        let rt = Arc::new(Runtime::new(
            db.pool.clone(),
            AppendNotifier::disabled(),
            Arc::new(directory),
        ));
        Self {
            db,
            address,
            client: reqwest::Client::new(),
            keys,
            rt,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// A token for `user` of `tenant`.
    pub fn token(&self, tenant: &str, user: Uuid, roles: &[Role], groups: &[&str]) -> String {
        let now = Utc::now().timestamp();
        self.keys
            .issue(&Claims {
                sub: user,
                tid: tenant.to_owned(),
                roles: roles.to_vec(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                sid: Uuid::now_v7(),
                access_version: 0,
                iat: now,
                exp: now + 900,
                iss: ISSUER.into(),
                aud: AUDIENCE.into(),
            })
            .unwrap()
    }

    pub fn member_token(&self, n: u128, groups: &[&str]) -> String {
        self.token(TENANT, user(n), &[Role::Member], groups)
    }

    pub fn operator_token(&self) -> String {
        self.token(TENANT, user(OPERATOR), &[Role::Operator], &[])
    }

    pub fn auditor_token(&self) -> String {
        self.token(TENANT, user(AUDITOR), &[Role::Auditor], &[])
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// GET answering 200 with a JSON body.
    pub async fn ok(&self, path: &str, token: &str) -> Value {
        let response = self.get(path, token).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// GET answering a problem with `status`.
    pub async fn problem(&self, path: &str, token: &str, status: StatusCode) -> Value {
        let response = self.get(path, token).await;
        assert_eq!(response.status(), status, "GET {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        response.json().await.unwrap()
    }

    /// Publishes the purchase-order definition.
    pub async fn publish(&self) {
        let definition = Definition::from_json(&purchase_order_json(user(FINANCE))).unwrap();
        self.publish_definition(definition).await;
    }

    pub async fn publish_definition(&self, definition: Definition) -> LogPosition {
        let designer = Caller::user(TENANT, user(0xDE), [Role::Designer], Vec::<String>::new());
        self.rt
            .publish(&ctx(designer, t0()), definition)
            .await
            .unwrap()
            .position
            .unwrap()
    }

    /// Starts a purchase order of `amount`, `minutes` after t0.
    pub async fn start(&self, amount: Value, business_key: &str, minutes: i64) -> Po {
        let started = self
            .rt
            .start(
                &ctx(operator(), t0() + TimeDelta::minutes(minutes)),
                "purchase-order",
                None,
                Some(business_key.into()),
                vars(json!({"amount": amount})),
            )
            .await
            .unwrap();
        Po {
            rt: self.rt.clone(),
            id: started.id.parse().unwrap(),
            position: started.position.unwrap(),
        }
    }

    /// Runs every projector until it has passed everything appended so far.
    pub async fn project(&self) {
        let target = last_appended(self.pool()).await;
        Projections::all()
            .catch_up_to(self.pool(), target, Duration::from_secs(20))
            .await
            .unwrap();
    }
}

/// A purchase order driven through the runtime.
pub struct Po {
    pub rt: Arc<Runtime>,
    pub id: Uuid,
    /// The consistency token of the last command sent.
    pub position: LogPosition,
}

impl Po {
    pub fn child(&self, step: &str) -> Uuid {
        step_child_id(self.id, step, 1)
    }

    pub async fn claim(&mut self, step: &str, who: &Caller, minutes: i64) {
        let outcome = self
            .rt
            .task(
                &ctx(who.clone(), t0() + TimeDelta::minutes(minutes)),
                self.child(step),
                TaskCommand::Claim,
                None,
            )
            .await
            .unwrap();
        self.position = outcome.position.unwrap_or(self.position);
    }

    pub async fn work(&mut self, step: &str, who: &Caller, output: Value, minutes: i64) {
        let (state, _) = self.rt.load_task(self.child(step)).await.unwrap();
        if state.assignee().is_none() {
            self.claim(step, who, minutes).await;
        }
        let outcome = self
            .rt
            .task(
                &ctx(who.clone(), t0() + TimeDelta::minutes(minutes)),
                self.child(step),
                TaskCommand::Complete {
                    output: vars(output),
                },
                None,
            )
            .await
            .unwrap();
        self.position = outcome.position.unwrap_or(self.position);
    }

    pub async fn vote(&mut self, step: &str, n: u128, decision: ApprovalDecision, minutes: i64) {
        let outcome = self
            .rt
            .approval(
                &ctx(member(n, &[]), t0() + TimeDelta::minutes(minutes)),
                self.child(step),
                ApprovalCommand::Decide {
                    decision,
                    comment: None,
                },
                None,
            )
            .await
            .unwrap();
        self.position = outcome.position.unwrap_or(self.position);
    }

    /// Attaches `content` as `name` (plain text) to the task of `step`, or to the instance for
    /// `None`, as `who`: stores the content as the command API does, then sends the command.
    /// The document's id.
    pub async fn attach(
        &mut self,
        step: Option<&str>,
        who: &Caller,
        name: &str,
        content: &[u8],
        minutes: i64,
    ) -> Uuid {
        let sha256 = hex::encode(sha2::Sha256::digest(content));
        sqlx::query(
            "insert into document_contents (tenant_id, sha256, size, content) \
             values ($1, $2, $3, $4) on conflict do nothing",
        )
        .bind(TENANT)
        .bind(&sha256)
        .bind(content.len() as i64)
        .bind(content)
        .execute(self.rt.pool())
        .await
        .unwrap();
        let document = DocumentFile {
            document_id: Uuid::now_v7(),
            name: name.to_owned(),
            media_type: "text/plain".to_owned(),
            size: content.len() as u64,
            sha256,
        };
        let id = document.document_id;
        let command = DocumentCommand::Attach(document);
        let at = ctx(who.clone(), t0() + TimeDelta::minutes(minutes));
        let outcome = match step {
            Some(step) => self
                .rt
                .task(&at, self.child(step), TaskCommand::Document(command), None)
                .await
                .unwrap(),
            None => self
                .rt
                .instance(&at, self.id, InstanceCommand::Document(command), None)
                .await
                .unwrap(),
        };
        self.position = outcome.position.unwrap_or(self.position);
        id
    }

    /// Removes document `id` of the task of `step` (or the instance) as `who`.
    pub async fn remove(&mut self, step: Option<&str>, who: &Caller, id: Uuid) {
        let command = DocumentCommand::Remove {
            document_id: id,
            reason: Some("superseded".into()),
        };
        let at = ctx(who.clone(), t0());
        let outcome = match step {
            Some(step) => self
                .rt
                .task(&at, self.child(step), TaskCommand::Document(command), None)
                .await
                .unwrap(),
            None => self
                .rt
                .instance(&at, self.id, InstanceCommand::Document(command), None)
                .await
                .unwrap(),
        };
        self.position = outcome.position.unwrap_or(self.position);
    }

    /// The manager path to the end, approved.
    pub async fn approve_all(&mut self, minutes: i64) {
        let clerk = member(CLERK, &["clerks"]);
        self.work("review", &clerk, json!({}), minutes).await;
        self.vote("manager", MANAGERS[0], ApprovalDecision::Approve, minutes)
            .await;
        self.work("legal", &member(LAWYER, &["legal"]), json!({}), minutes)
            .await;
        self.work("finance", &member(FINANCE, &[]), json!({}), minutes)
            .await;
        self.work("archive", &clerk, json!({}), minutes).await;
    }
}

/// The log position of the last event appended so far, readable or not.
pub async fn last_appended(pool: &PgPool) -> LogPosition {
    let row = sqlx::query(
        "select tx_id::text::bigint as tx_id, global_position from events \
         order by tx_id desc, global_position desc limit 1",
    )
    .fetch_optional(pool)
    .await
    .unwrap();
    row.map_or(LogPosition::START, |row| LogPosition {
        tx_id: row.get::<i64, _>("tx_id") as u64,
        global_position: row.get("global_position"),
    })
}

/// The ids of a page's items.
pub fn item_ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}
