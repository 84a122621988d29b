//! A spawned command API on a database of its own, and the client side of it.

use std::net::SocketAddr;
use std::time::Duration;

use api_common::layers::{self, HttpSettings};
use command_api::{CommandApi, CommandSettings, PasswordHashing};
use event_store::AppendNotifier;
use event_store::testing::TestDatabase;
use reqwest::{Method, Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin password 1234";
pub const PASSWORD: &str = "a long enough password";
pub const SECRET: &str = "the test signing secret, 32+ bytes long";

/// Cheap hashing: the OWASP parameters cost ~0.35 s per hash in a debug build.
pub const CHEAP: PasswordHashing = PasswordHashing {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub token: String,
    pub refresh_token: String,
}

#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub api: CommandApi,
    pub db: TestDatabase,
    pub admin: User,
}

/// The command API with test settings, its admin signed in.
pub async fn spawn() -> TestApp {
    spawn_with(|_| {}).await
}

/// The command API with test settings changed by `configure`.
pub async fn spawn_with(configure: impl FnOnce(&mut CommandSettings)) -> TestApp {
    let mut settings = CommandSettings {
        jwt_secret: Some(SecretString::from(SECRET)),
        password_hashing: CHEAP,
        identity_projection_wait: Duration::from_secs(10),
        ..CommandSettings::default()
    };
    configure(&mut settings);
    let db = TestDatabase::new().await;
    let api = CommandApi::build(db.pool.clone(), AppendNotifier::disabled(), settings)
        .await
        .expect("the command API builds");
    api.bootstrap_admin(ADMIN_EMAIL, &SecretString::from(ADMIN_PASSWORD))
        .await
        .expect("bootstrap")
        .expect("a first admin");
    let (router, _doc) = api.router().split_for_parts();
    let app = layers::apply(router, &HttpSettings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let client = reqwest::Client::new();
    let mut app = TestApp {
        address,
        client,
        api,
        db,
        admin: User {
            id: Uuid::nil(),
            email: ADMIN_EMAIL.into(),
            token: String::new(),
            refresh_token: String::new(),
        },
    };
    app.admin = app.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD, None).await;
    app
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `method path` with `token` and a JSON `body` (none for `Value::Null`).
    pub async fn send(&self, method: Method, path: &str, token: &str, body: Value) -> Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if !body.is_null() {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.send(Method::POST, path, token, body).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Response {
        self.send(Method::PUT, path, token, body).await
    }

    /// `POST path` with a JSON `body` and no token (sign-in, refresh, enrolment).
    pub async fn post_anonymous(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, email: &str, password: &str, tenant: Option<&str>) -> Response {
        let mut body = json!({"email": email, "password": password});
        if let Some(tenant) = tenant {
            body["tenant"] = json!(tenant);
        }
        self.post_anonymous("/api/v1/auth/login", &body).await
    }

    pub async fn sign_in(&self, email: &str, password: &str, tenant: Option<&str>) -> User {
        let response = self.login(email, password, tenant).await;
        assert_eq!(response.status(), StatusCode::OK, "sign-in of {email}");
        let body: Value = response.json().await.unwrap();
        User {
            id: body["user_id"].as_str().unwrap().parse().unwrap(),
            email: email.to_owned(),
            token: body["access_token"].as_str().unwrap().to_owned(),
            refresh_token: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// A new user of the default tenant with `roles` and `groups`, signed in.
    pub async fn user(&self, roles: &[&str], groups: &[&str]) -> User {
        let email = format!("{}@example.com", Uuid::now_v7().simple());
        let response = self
            .post(
                "/api/v1/users",
                &self.admin.token,
                json!({"email": email, "display_name": "Test User", "password": PASSWORD,
                       "roles": roles, "groups": groups}),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{:?}",
            response.text().await
        );
        self.sign_in(&email, PASSWORD, None).await
    }

    /// Publishes `definition` as the admin; the answer's body.
    pub async fn publish(&self, definition: &Value) -> Value {
        let response = self
            .post(
                "/api/v1/workflow-definitions",
                &self.admin.token,
                definition.clone(),
            )
            .await;
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
        response.json().await.unwrap()
    }

    /// Starts `key` with `variables` as the admin; the instance id.
    pub async fn start(&self, key: &str, variables: Value) -> Uuid {
        let response = self
            .post(
                "/api/v1/workflow-instances",
                &self.admin.token,
                json!({"definition_key": key, "variables": variables}),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{:?}",
            response.text().await
        );
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// An ad-hoc task opened by the admin with `body` (name added); its id.
    pub async fn task(&self, mut body: Value) -> Uuid {
        body["name"] = json!("Check the invoice");
        let response = self.post("/api/v1/tasks", &self.admin.token, body).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{:?}",
            response.text().await
        );
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// The stored events of one aggregate: `[{type, payload, metadata}]`, oldest first.
    pub async fn events(&self, aggregate_type: &str, id: &str) -> Vec<Value> {
        sqlx::query(
            "select event_type, payload, metadata from events \
             where aggregate_type = $1 and aggregate_id = $2 order by sequence",
        )
        .bind(aggregate_type)
        .bind(id)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let event_type: String = row.get("event_type");
            let payload: Value = row.get("payload");
            json!({"type": event_type, "payload": payload[&event_type], "metadata": row.get::<Value, _>("metadata")})
        })
        .collect()
    }

    /// A personal field of a stored event of the default tenant (`payload[...]`), checked to be
    /// sealed, as its person's key opens it (`None` once they were erased).
    pub async fn opened(&self, stored: &Value) -> Option<String> {
        let stored = stored.as_str().expect("a personal field is a string");
        self.db.opened("default", stored).await
    }

    /// The admin of a second tenant, `acme` (created by the default tenant's admin), signed
    /// in: for checking that one tenant's resources are not found from another.
    pub async fn other_tenant_admin(&self) -> User {
        let created = self
            .post(
                "/api/v1/tenants",
                &self.admin.token,
                json!({"id": "acme", "name": "Acme", "admin_email": "boss@acme.test",
                       "admin_password": "acme admin password"}),
            )
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
        self.sign_in("boss@acme.test", "acme admin password", Some("acme"))
            .await
    }

    /// Empties the identity read model and forgets its projector's checkpoint.
    pub async fn forget_identity_read_model(&self) {
        for sql in [
            "delete from identity_users",
            "delete from checkpoints where name = 'identity'",
        ] {
            sqlx::query(sql).execute(&self.db.pool).await.unwrap();
        }
    }

    /// Runs the background identity projector until `done` (a query of one boolean) is true,
    /// at most 10 s.
    pub async fn run_identity_projector_until(&self, done: &str) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let projector = tokio::spawn(command_api::identity::run_projector(
            self.db.pool.clone(),
            event_store::LogWaiter::polling(Duration::from_millis(20)),
            async move {
                let _ = stopped.await;
            },
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !sqlx::query_scalar::<_, bool>(done)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the projector did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(()).unwrap();
        projector.await.unwrap();
    }

    /// How many events of `event_type` are stored.
    pub async fn count_events(&self, event_type: &str) -> i64 {
        sqlx::query_scalar("select count(*) from events where event_type = $1")
            .bind(event_type)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

/// A response's problem body, checking the content type and status.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "{:?}", response.headers());
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}

/// The field names of a problem's `errors`.
pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
