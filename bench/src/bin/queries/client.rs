//! A logged-in HTTP client, and the benchmark's people: named deterministically, so the load
//! phase logs in as the users the seeding phase created without a file between them.

use anyhow::{Context as _, bail};
use reqwest::Client;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;

/// Every benchmark user's password (the bootstrap admin's comes from the environment).
pub const PASSWORD: &str = "benchmark password";

/// Groups tasks are offered to: `group-00` .. `group-19`.
pub const GROUPS: usize = 20;

pub fn group(i: usize) -> String {
    format!("group-{:02}", i % GROUPS)
}

/// Tenant `i`: the bootstrap admin's `default`, then `tenant-1`, `tenant-2`, ...
pub fn tenant(i: usize) -> String {
    if i == 0 {
        "default".to_owned()
    } else {
        format!("tenant-{i}")
    }
}

pub fn member_email(tenant: &str, i: usize) -> String {
    format!("member-{i}@{tenant}.bench.example")
}

pub fn operator_email(tenant: &str) -> String {
    format!("operator@{tenant}.bench.example")
}

pub fn auditor_email(tenant: &str) -> String {
    format!("auditor@{tenant}.bench.example")
}

/// Member `i`'s two groups.
pub fn member_groups(i: usize) -> [String; 2] {
    [group(i), group(i * 7 + 3)]
}

/// A client with a session: one base URL for commands and logins, another for queries (the
/// same for `serve`).
#[derive(Debug, Clone)]
pub struct Api {
    pub client: Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn client() -> anyhow::Result<Client> {
        Ok(Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()?)
    }

    pub async fn login(
        client: &Client,
        base: &str,
        email: &str,
        password: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Self> {
        let body: Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password, "tenant": tenant}))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("login of {email}"))?
            .json()
            .await?;
        Ok(Self {
            client: client.clone(),
            base: base.to_owned(),
            token: body["access_token"]
                .as_str()
                .context("no access token")?
                .to_owned(),
        })
    }

    /// `POST`: the body and the headers of a success.
    pub async fn post_with_headers(
        &self,
        path: &str,
        body: Value,
    ) -> anyhow::Result<(Value, HeaderMap)> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok((serde_json::from_str(&text).unwrap_or(Value::Null), headers))
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self.post_with_headers(path, body).await?.0)
    }

    /// `GET` on `base` (the query API) with this session's token.
    pub async fn get(&self, base: &str, path: &str) -> anyhow::Result<Value> {
        let response = self
            .client
            .get(format!("{base}{path}"))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Creates a user of this session's tenant; their id.
    pub async fn create_user(
        &self,
        email: &str,
        roles: &[&str],
        groups: &[String],
    ) -> anyhow::Result<Uuid> {
        let created = self
            .post(
                "/api/v1/users",
                json!({"email": email, "display_name": email.split('@').next(),
                       "password": PASSWORD, "roles": roles, "groups": groups}),
            )
            .await?;
        Ok(Uuid::parse_str(created["id"].as_str().context("user id")?)?)
    }
}
