//! Typed configuration: defaults, then an optional TOML file, then environment variables.
//!
//! A bad value stops start-up with a message naming the variable it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use event_store::master_key::{MasterKey, MasterKeyError, MasterKeys};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use projections::kafka::{KafkaSecurity, SASL_MECHANISMS, SaslLogin, SecurityProtocol};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@localhost:5432/workledger";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines, or readable text when stderr is a terminal.
    #[default]
    Auto,
    Json,
    Text,
}

/// Everything Workledger reads at start.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// `DATABASE_URL`: the Postgres database (created on `serve` when missing).
    pub database_url: SecretString,
    /// `WORKLEDGER_LISTEN`: the address `serve` answers on.
    pub listen: SocketAddr,
    /// `WORKLEDGER_LOG`: a tracing filter (`info`, `workledger=debug,sqlx=warn`, ...).
    pub log: String,
    /// `WORKLEDGER_LOG_FORMAT`: `auto`, `json` or `text`.
    pub log_format: LogFormat,
    /// `WORKLEDGER_DB_MAX_CONNECTIONS`: the pool's size.
    pub db_max_connections: u32,
    /// `WORKLEDGER_DB_COMMAND_CONNECTIONS`: the connections the command path keeps outside the
    /// pool, and so how many statements it runs at once.
    pub db_command_connections: usize,
    /// `WORKLEDGER_DB_APPEND_WRITERS`: how many append statements the command path runs at
    /// once (appends arriving meanwhile go to Postgres together).
    pub db_append_writers: usize,
    /// `WORKLEDGER_REQUEST_TIMEOUT`: e.g. `30s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// `WORKLEDGER_HEADER_TIMEOUT`: how long a client may take to send a request's head, and a
    /// keep-alive connection may sit idle, before its connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// `WORKLEDGER_BODY_LIMIT`: the largest request body, in bytes.
    pub body_limit: usize,
    /// `WORKLEDGER_DOCUMENT_LIMIT`: the largest file a document upload takes, in bytes.
    pub document_limit: usize,
    /// `WORKLEDGER_CORS_ORIGINS`: comma-separated origins allowed to call the API from a browser.
    pub cors_origins: String,
    /// `WORKLEDGER_SHUTDOWN_GRACE`: how long in-flight requests may take after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `WORKLEDGER_POLL_INTERVAL`: how often log readers look for events when no
    /// notification arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// `WORKLEDGER_TIMER_INTERVAL`: how often due timers (SLA, timer steps) are fired.
    #[serde(with = "humantime_serde")]
    pub timer_interval: Duration,
    /// `WORKLEDGER_JWT_SECRET`: signs access tokens (32+ bytes); when unset, a secret is
    /// generated once and kept in the database, shared by every instance.
    pub jwt_secret: Option<SecretString>,
    /// `WORKLEDGER_MASTER_KEY`: 32 bytes in base64 that wrap the secrets stored in Postgres
    /// (personal data keys, two-factor secrets, the generated token signing secret:
    /// `event_store::master_key`); when unset they are stored unwrapped.
    pub master_key: Option<SecretString>,
    /// `WORKLEDGER_MASTER_KEY_PREVIOUS`: other keys (comma-separated) that open what they
    /// wrapped but wrap nothing: the replaced key during a rotation, or the next key while not
    /// every process has it yet (docs/operations.md, "Master key").
    pub master_key_previous: Option<SecretString>,
    /// `WORKLEDGER_ADMIN_EMAIL`: on first start with no users, the admin of tenant `default`.
    pub admin_email: Option<String>,
    /// `WORKLEDGER_ADMIN_PASSWORD`: that admin's password (12 to 256 characters).
    pub admin_password: Option<SecretString>,
    /// `WORKLEDGER_ACCESS_TOKEN_TTL`: lifetime of access tokens.
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// `WORKLEDGER_REFRESH_TOKEN_TTL`: lifetime of a login session's refresh tokens.
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// `WORKLEDGER_IDEMPOTENCY_TTL`: how long an `Idempotency-Key` answer is kept.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// `WORKLEDGER_TRUSTED_PROXY_HOPS`: reverse proxies in front whose `X-Forwarded-For` to
    /// trust for the client address (0: use the peer address).
    pub trusted_proxy_hops: usize,
    /// `WORKLEDGER_LOGIN_MAX_FAILURES_PER_ACCOUNT`: failed logins before an account is locked.
    pub login_max_failures_per_account: u32,
    /// `WORKLEDGER_LOGIN_MAX_FAILURES_PER_ADDRESS`: failed logins before an address is locked.
    pub login_max_failures_per_address: u32,
    /// `WORKLEDGER_LOGIN_FAILURE_WINDOW`: the window failed logins are counted in.
    #[serde(with = "humantime_serde")]
    pub login_failure_window: Duration,
    /// `WORKLEDGER_LOGIN_LOCKOUT`: how long a locked account or address waits.
    #[serde(with = "humantime_serde")]
    pub login_lockout: Duration,
    /// `WORKLEDGER_CONSISTENCY_WAIT`: how long a query with `X-Consistency-Token` waits for
    /// the projections behind it.
    #[serde(with = "humantime_serde")]
    pub consistency_wait: Duration,
    /// `WORKLEDGER_EXPORT_BATCH`: audit entries per database round trip of an export.
    pub export_batch: i64,
    /// `WORKLEDGER_PROJECTOR_BATCH`: events per projector batch (and transaction).
    pub projector_batch: i64,
    /// `WORKLEDGER_PROJECTOR_TAKEOVER`: how often a standby worker tries to take over a
    /// projector whose worker died.
    #[serde(with = "humantime_serde")]
    pub projector_takeover: Duration,
    /// `WORKLEDGER_PROJECTOR_RETRY_MAX`: longest pause between retries of a failing projector.
    #[serde(with = "humantime_serde")]
    pub projector_retry_max: Duration,
    /// `KAFKA_BROKERS`: `host:port,...`; integration events are published to Kafka when set
    /// and not empty (by the workers: `serve` and `project`).
    pub kafka_brokers: Option<String>,
    /// `WORKLEDGER_KAFKA_TOPIC_PREFIX`: topics are this and the aggregate type.
    pub kafka_topic_prefix: String,
    /// `WORKLEDGER_KAFKA_PARTITIONS`: partitions of a topic the publisher creates.
    pub kafka_partitions: i32,
    /// `WORKLEDGER_KAFKA_REPLICATION`: replication factor of a topic the publisher creates.
    pub kafka_replication: i32,
    /// `WORKLEDGER_KAFKA_DELIVERY_TIMEOUT`: how long a message may take to be acknowledged
    /// before its batch is retried.
    #[serde(with = "humantime_serde")]
    pub kafka_delivery_timeout: Duration,
    /// `WORKLEDGER_KAFKA_SECURITY_PROTOCOL`: `plaintext`, `ssl`, `sasl_plaintext` or
    /// `sasl_ssl`.
    pub kafka_security_protocol: String,
    /// `WORKLEDGER_KAFKA_SASL_MECHANISM`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (SASL
    /// protocols only, and required with them).
    pub kafka_sasl_mechanism: Option<String>,
    /// `WORKLEDGER_KAFKA_SASL_USERNAME`.
    pub kafka_sasl_username: Option<String>,
    /// `WORKLEDGER_KAFKA_SASL_PASSWORD`: a secret, never logged.
    pub kafka_sasl_password: Option<SecretString>,
    /// `WORKLEDGER_KAFKA_SSL_CA_LOCATION`: a PEM file of the certificate authorities to trust
    /// (TLS protocols only; the system's when unset).
    pub kafka_ssl_ca_location: Option<PathBuf>,
    /// `WORKLEDGER_METRICS_TOKEN`: the bearer token a scraper sends for `/metrics` (16+
    /// bytes); when unset, `/metrics` answers clients on this machine only. A secret.
    pub metrics_token: Option<SecretString>,
    /// `WORKLEDGER_WEBHOOK_URL`: when set, the workers notify it of work to do (tasks
    /// offered, assigned, overdue; approvals awaiting a decision).
    /// A secret: a webhook's path often holds a token.
    pub webhook_url: Option<SecretString>,
    /// `WORKLEDGER_WEBHOOK_SECRET`: signs each notification call (32+ bytes; required with
    /// the URL).
    pub webhook_secret: Option<SecretString>,
    /// `WORKLEDGER_WEBHOOK_TIMEOUT`: how long the receiver may take to answer.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// `WORKLEDGER_SMTP_URL`: when set, the workers email people the work they have to do.
    /// A secret: it holds the relay's credentials.
    pub smtp_url: Option<SecretString>,
    /// `WORKLEDGER_EMAIL_FROM`: the sender of those emails (required with the URL).
    pub email_from: Option<String>,
    /// `WORKLEDGER_EMAIL_LINK`: a link to the work in your application, with `{kind}` and
    /// `{id}` put in.
    pub email_link: Option<String>,
    /// `WORKLEDGER_SMTP_TIMEOUT`: how long the relay may take to answer.
    #[serde(with = "humantime_serde")]
    pub smtp_timeout: Duration,
}

/// The defaults, in the same shape (a secret cannot be serialized, so they are spelled out).
#[derive(Debug, Serialize)]
struct Defaults {
    database_url: &'static str,
    listen: &'static str,
    log: &'static str,
    log_format: LogFormat,
    db_max_connections: u32,
    db_command_connections: usize,
    db_append_writers: usize,
    request_timeout: &'static str,
    header_timeout: &'static str,
    body_limit: usize,
    document_limit: usize,
    cors_origins: &'static str,
    shutdown_grace: &'static str,
    poll_interval: &'static str,
    timer_interval: &'static str,
    access_token_ttl: &'static str,
    refresh_token_ttl: &'static str,
    idempotency_ttl: &'static str,
    trusted_proxy_hops: usize,
    login_max_failures_per_account: u32,
    login_max_failures_per_address: u32,
    login_failure_window: &'static str,
    login_lockout: &'static str,
    consistency_wait: &'static str,
    export_batch: i64,
    projector_batch: i64,
    projector_takeover: &'static str,
    projector_retry_max: &'static str,
    kafka_topic_prefix: &'static str,
    kafka_partitions: i32,
    kafka_replication: i32,
    kafka_delivery_timeout: &'static str,
    kafka_security_protocol: &'static str,
    webhook_timeout: &'static str,
    smtp_timeout: &'static str,
}

const DEFAULTS: Defaults = Defaults {
    database_url: DEFAULT_DATABASE_URL,
    listen: "127.0.0.1:8080",
    log: "info",
    log_format: LogFormat::Auto,
    db_max_connections: 32,
    db_command_connections: event_store::connections::KEPT_CONNECTIONS,
    db_append_writers: event_store::connections::APPEND_WRITERS,
    request_timeout: "30s",
    header_timeout: "75s",
    body_limit: 1024 * 1024,
    document_limit: 25 * 1024 * 1024,
    cors_origins: "",
    shutdown_grace: "20s",
    poll_interval: "500ms",
    timer_interval: "1s",
    access_token_ttl: "15m",
    refresh_token_ttl: "14days",
    idempotency_ttl: "24h",
    trusted_proxy_hops: 0,
    login_max_failures_per_account: 5,
    login_max_failures_per_address: 20,
    login_failure_window: "15m",
    login_lockout: "5m",
    consistency_wait: "5s",
    export_batch: 2000,
    projector_batch: 1000,
    projector_takeover: "1s",
    projector_retry_max: "30s",
    kafka_topic_prefix: "workledger.",
    kafka_partitions: 6,
    kafka_replication: 3,
    kafka_delivery_timeout: "30s",
    kafka_security_protocol: "plaintext",
    webhook_timeout: "10s",
    smtp_timeout: "30s",
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads the configuration: defaults < `file` < environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(DEFAULTS));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "the configuration file {} does not exist (WORKLEDGER_CONFIG / --config)",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        let figment = figment
            .merge(Env::prefixed("WORKLEDGER_").ignore(&["CONFIG"]))
            .merge(Env::raw().only(&["DATABASE_URL", "KAFKA_BROKERS"]));
        Self::from_figment(&figment)
    }

    fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe(&e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database_url.expose_secret();
        let problem = if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            Some("it must start with postgres:// or postgresql://".to_owned())
        } else {
            PgConnectOptions::from_str(url).err().map(|e| e.to_string())
        };
        if let Some(problem) = problem {
            return Err(ConfigError::Invalid(format!(
                "DATABASE_URL is not a Postgres URL ({problem}); expected e.g. {DEFAULT_DATABASE_URL}"
            )));
        }
        if self.db_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_DB_MAX_CONNECTIONS must be at least 1".into(),
            ));
        }
        if !(1..=1000).contains(&self.db_command_connections) {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_DB_COMMAND_CONNECTIONS must be between 1 and 1000".into(),
            ));
        }
        if !(1..=1000).contains(&self.db_append_writers) {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_DB_APPEND_WRITERS must be between 1 and 1000".into(),
            ));
        }
        if self.body_limit < 1024 {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_BODY_LIMIT must be at least 1024 bytes".into(),
            ));
        }
        if self.document_limit < 1024 {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_DOCUMENT_LIMIT must be at least 1024 bytes".into(),
            ));
        }
        self.master_keys()?;
        if let Some(secret) = &self.jwt_secret
            && secret.expose_secret().len() < 32
        {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_JWT_SECRET must be at least 32 bytes".into(),
            ));
        }
        match (&self.admin_email, &self.admin_password) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "set both WORKLEDGER_ADMIN_EMAIL and WORKLEDGER_ADMIN_PASSWORD, or neither"
                        .into(),
                ));
            }
            (Some(_), Some(password))
                if !(12..=256).contains(&password.expose_secret().chars().count()) =>
            {
                return Err(ConfigError::Invalid(
                    "WORKLEDGER_ADMIN_PASSWORD must be 12 to 256 characters".into(),
                ));
            }
            _ => {}
        }
        if self.access_token_ttl.as_secs() < 60 || self.refresh_token_ttl < self.access_token_ttl {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_ACCESS_TOKEN_TTL must be at least 1m and at most WORKLEDGER_REFRESH_TOKEN_TTL"
                    .into(),
            ));
        }
        if self.login_max_failures_per_account == 0 || self.login_max_failures_per_address == 0 {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_LOGIN_MAX_FAILURES_PER_ACCOUNT and _PER_ADDRESS must be at least 1"
                    .into(),
            ));
        }
        if !(1..=100_000).contains(&self.export_batch)
            || !(1..=100_000).contains(&self.projector_batch)
        {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_EXPORT_BATCH and WORKLEDGER_PROJECTOR_BATCH must be 1 to 100000".into(),
            ));
        }
        if self.poll_interval.is_zero() || self.timer_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_POLL_INTERVAL and WORKLEDGER_TIMER_INTERVAL must be longer than zero"
                    .into(),
            ));
        }
        if self.header_timeout < Duration::from_secs(1)
            || self.header_timeout > Duration::from_secs(600)
        {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_HEADER_TIMEOUT must be 1s to 10m".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_REQUEST_TIMEOUT must be longer than zero".into(),
            ));
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().len() < 16)
        {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_METRICS_TOKEN must be at least 16 bytes".into(),
            ));
        }
        self.validate_kafka()?;
        self.validate_webhook()?;
        self.validate_email()?;
        for origin in self.cors_origin_list() {
            if http::HeaderValue::from_str(&origin).is_err() || !origin.contains("://") {
                return Err(ConfigError::Invalid(format!(
                    "WORKLEDGER_CORS_ORIGINS has an invalid origin {origin:?} (expected e.g. https://app.example.com)"
                )));
            }
        }
        Ok(())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        if let Some(brokers) = self
            .kafka_brokers
            .as_deref()
            .filter(|b| !b.trim().is_empty())
        {
            let listed: Vec<&str> = brokers.split(',').map(str::trim).collect();
            if listed.iter().any(|b| b.is_empty() || !b.contains(':')) {
                return Err(ConfigError::Invalid(format!(
                    "KAFKA_BROKERS must list brokers as host:port, separated by commas (got {brokers:?})"
                )));
            }
        }
        // Kafka's topic names: letters, digits, '.', '_' and '-', at most 249 characters
        let prefix = &self.kafka_topic_prefix;
        if prefix.len() > 200
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(ConfigError::Invalid(format!(
                "WORKLEDGER_KAFKA_TOPIC_PREFIX may hold only letters, digits, '.', '_' and '-' (at most 200), got {prefix:?}"
            )));
        }
        if self.kafka_partitions < 1 || self.kafka_replication < 1 {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_KAFKA_PARTITIONS and WORKLEDGER_KAFKA_REPLICATION must be at least 1"
                    .into(),
            ));
        }
        if self.kafka_delivery_timeout < Duration::from_secs(1)
            || self.kafka_delivery_timeout > Duration::from_secs(3600)
        {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_KAFKA_DELIVERY_TIMEOUT must be 1s to 1h".into(),
            ));
        }
        self.kafka_security().map(|_| ())
    }

    /// The publisher's connection security, checked: SASL credentials with SASL protocols
    /// only (and all of them), a CA file with TLS protocols only (and one that exists).
    fn kafka_security(&self) -> Result<KafkaSecurity, ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let name = self.kafka_security_protocol.trim().to_ascii_lowercase();
        let Some(&(_, protocol)) = SecurityProtocol::ALL.iter().find(|(n, _)| *n == name) else {
            return invalid(format!(
                "WORKLEDGER_KAFKA_SECURITY_PROTOCOL must be plaintext, ssl, sasl_plaintext or sasl_ssl (got {:?})",
                self.kafka_security_protocol
            ));
        };
        let sasl = match (
            &self.kafka_sasl_mechanism,
            &self.kafka_sasl_username,
            &self.kafka_sasl_password,
        ) {
            (None, None, None) if !protocol.uses_sasl() => None,
            (Some(mechanism), Some(username), Some(password)) if protocol.uses_sasl() => {
                let mechanism = mechanism.trim().to_ascii_uppercase();
                if !SASL_MECHANISMS.contains(&mechanism.as_str()) {
                    return invalid(format!(
                        "WORKLEDGER_KAFKA_SASL_MECHANISM must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (got {mechanism:?})"
                    ));
                }
                Some(SaslLogin {
                    mechanism,
                    username: username.clone(),
                    password: password.clone(),
                })
            }
            _ if protocol.uses_sasl() => {
                return invalid(format!(
                    "WORKLEDGER_KAFKA_SECURITY_PROTOCOL={name} needs WORKLEDGER_KAFKA_SASL_MECHANISM, WORKLEDGER_KAFKA_SASL_USERNAME and WORKLEDGER_KAFKA_SASL_PASSWORD"
                ));
            }
            _ => {
                return invalid(format!(
                    "WORKLEDGER_KAFKA_SASL_* are for WORKLEDGER_KAFKA_SECURITY_PROTOCOL=sasl_plaintext or sasl_ssl, not {name}"
                ));
            }
        };
        if let Some(ca) = &self.kafka_ssl_ca_location {
            if !matches!(protocol, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl) {
                return invalid(format!(
                    "WORKLEDGER_KAFKA_SSL_CA_LOCATION is for WORKLEDGER_KAFKA_SECURITY_PROTOCOL=ssl or sasl_ssl, not {name}"
                ));
            }
            if !ca.is_file() {
                return invalid(format!(
                    "WORKLEDGER_KAFKA_SSL_CA_LOCATION: no file {}",
                    ca.display()
                ));
            }
        }
        Ok(KafkaSecurity {
            protocol,
            sasl,
            ca_location: self.kafka_ssl_ca_location.clone(),
        })
    }

    fn validate_webhook(&self) -> Result<(), ConfigError> {
        let url = self
            .webhook_url
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .filter(|u| !u.trim().is_empty());
        match (url, &self.webhook_secret) {
            (None, None) => return Ok(()),
            (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "WORKLEDGER_WEBHOOK_SECRET is set without WORKLEDGER_WEBHOOK_URL".into(),
                ));
            }
            (Some(_), None) => {
                return Err(ConfigError::Invalid(
                    "WORKLEDGER_WEBHOOK_URL needs WORKLEDGER_WEBHOOK_SECRET (32+ bytes) to sign its calls"
                        .into(),
                ));
            }
            (Some(url), Some(secret)) => {
                if !projections::notifications::is_webhook_url(url.trim()) {
                    return Err(ConfigError::Invalid(
                        "WORKLEDGER_WEBHOOK_URL must be an absolute http:// or https:// URL".into(),
                    ));
                }
                if secret.expose_secret().len() < 32 {
                    return Err(ConfigError::Invalid(
                        "WORKLEDGER_WEBHOOK_SECRET must be at least 32 bytes".into(),
                    ));
                }
            }
        }
        if self.webhook_timeout < Duration::from_secs(1)
            || self.webhook_timeout > Duration::from_secs(300)
        {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_WEBHOOK_TIMEOUT must be 1s to 5m".into(),
            ));
        }
        Ok(())
    }

    fn validate_email(&self) -> Result<(), ConfigError> {
        let url = self
            .smtp_url
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .filter(|u| !u.trim().is_empty());
        let from = self.email_from.as_deref().filter(|f| !f.trim().is_empty());
        let Some(url) = url else {
            if from.is_some() || self.email_link.is_some() {
                return Err(ConfigError::Invalid(
                    "WORKLEDGER_EMAIL_FROM and WORKLEDGER_EMAIL_LINK are set without WORKLEDGER_SMTP_URL"
                        .into(),
                ));
            }
            return Ok(());
        };
        if !projections::email::is_smtp_url(url.trim()) {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_SMTP_URL must be smtps://HOST, smtp://HOST?tls=required, or plain smtp:// to this machine"
                    .into(),
            ));
        }
        match from.map(|f| f.trim().parse::<lettre::message::Mailbox>()) {
            None => {
                return Err(ConfigError::Invalid(
                    "WORKLEDGER_SMTP_URL needs WORKLEDGER_EMAIL_FROM, the sender (e.g. `Workledger <workledger@example.com>`)"
                        .into(),
                ));
            }
            Some(Err(error)) => {
                return Err(ConfigError::Invalid(format!(
                    "WORKLEDGER_EMAIL_FROM is not an email address ({error})"
                )));
            }
            Some(Ok(_)) => {}
        }
        if let Some(link) = &self.email_link
            && !(link.starts_with("https://") || link.starts_with("http://"))
        {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_EMAIL_LINK must be an http:// or https:// URL (with {kind} and {id})"
                    .into(),
            ));
        }
        if self.smtp_timeout < Duration::from_secs(1)
            || self.smtp_timeout > Duration::from_secs(300)
        {
            return Err(ConfigError::Invalid(
                "WORKLEDGER_SMTP_TIMEOUT must be 1s to 5m".into(),
            ));
        }
        Ok(())
    }

    /// The email notifier's settings, when `WORKLEDGER_SMTP_URL` is set.
    pub fn email(&self) -> Option<projections::email::EmailSettings> {
        let url = self
            .smtp_url
            .as_ref()
            .filter(|u| !u.expose_secret().trim().is_empty())?;
        Some(projections::email::EmailSettings {
            smtp_url: SecretString::from(url.expose_secret().trim().to_owned()),
            from: self.email_from.as_deref()?.trim().parse().ok()?,
            link: self.email_link.clone(),
            timeout: self.smtp_timeout,
        })
    }

    /// The notifier's settings, when `WORKLEDGER_WEBHOOK_URL` is set.
    pub fn webhook(&self) -> Option<projections::notifications::WebhookSettings> {
        let url = self
            .webhook_url
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .filter(|u| !u.trim().is_empty())?;
        Some(projections::notifications::WebhookSettings {
            url: url.trim().to_owned(),
            secret: self.webhook_secret.clone()?,
            timeout: self.webhook_timeout,
        })
    }

    /// The Kafka publisher's settings, when `KAFKA_BROKERS` is set (and not empty).
    pub fn kafka(&self) -> Option<projections::kafka::KafkaSettings> {
        let brokers = self
            .kafka_brokers
            .as_deref()
            .filter(|b| !b.trim().is_empty())?;
        Some(projections::kafka::KafkaSettings {
            brokers: brokers
                .split(',')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(","),
            topic_prefix: self.kafka_topic_prefix.clone(),
            partitions: self.kafka_partitions,
            replication_factor: self.kafka_replication,
            delivery_timeout: self.kafka_delivery_timeout,
            // checked when the configuration was loaded
            security: self.kafka_security().unwrap_or_default(),
        })
    }

    pub fn cors_origin_list(&self) -> Vec<String> {
        self.cors_origins
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The master keys (`WORKLEDGER_MASTER_KEY`, `WORKLEDGER_MASTER_KEY_PREVIOUS`); `None`
    /// when neither is configured.
    pub fn master_keys(&self) -> Result<Option<MasterKeys>, ConfigError> {
        let invalid = |e: MasterKeyError| ConfigError::Invalid(e.to_string());
        // set but empty (`WORKLEDGER_MASTER_KEY=` from a compose file) is unset
        let current = self
            .master_key
            .as_ref()
            .filter(|key| !key.expose_secret().trim().is_empty())
            .map(|key| MasterKey::from_base64(key.expose_secret(), "WORKLEDGER_MASTER_KEY"))
            .transpose()
            .map_err(invalid)?;
        let previous = match &self.master_key_previous {
            Some(keys) => keys
                .expose_secret()
                .split(',')
                .filter(|k| !k.trim().is_empty())
                .map(|k| MasterKey::from_base64(k, "WORKLEDGER_MASTER_KEY_PREVIOUS"))
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid)?,
            None => Vec::new(),
        };
        Ok((current.is_some() || !previous.is_empty()).then(|| MasterKeys::new(current, previous)))
    }

    /// The database, for logs: host and name, never credentials.
    pub fn database_display(&self) -> String {
        match PgConnectOptions::from_str(self.database_url.expose_secret()) {
            Ok(o) => format!(
                "{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            ),
            Err(_) => "(invalid)".into(),
        }
    }
}

/// figment names the key and where it came from; say it with the variable's own name.
fn describe(error: &figment::Error) -> String {
    let mut parts = Vec::new();
    for e in error.clone() {
        let key = e.path.join(".");
        let variable = if key == "database_url" || key == "kafka_brokers" {
            key.to_uppercase()
        } else {
            format!("WORKLEDGER_{}", key.to_uppercase())
        };
        let source = e
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref().map(|s| format!(" (from {} {s})", m.name)))
            .unwrap_or_default();
        parts.push(format!("{variable} is invalid: {}{source}", e.kind));
    }
    parts.join("; ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its own large error type
mod tests {
    use figment::Jail;

    use super::*;

    fn load_in(jail: &Jail) -> Result<Config, ConfigError> {
        let _ = jail;
        Config::load(None)
    }

    #[test]
    fn defaults_run_on_the_local_postgres() {
        Jail::expect_with(|jail| {
            let config = load_in(jail).unwrap();
            assert_eq!(config.database_url.expose_secret(), DEFAULT_DATABASE_URL);
            assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
            assert_eq!(config.request_timeout, Duration::from_secs(30));
            assert_eq!(config.header_timeout, Duration::from_secs(75));
            assert_eq!(config.db_command_connections, 16);
            assert_eq!(config.db_append_writers, 2);
            Ok(())
        });
    }

    #[test]
    fn environment_variables_override_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("wl.toml", "listen = \"0.0.0.0:9000\"\nlog = \"debug\"")?;
            jail.set_env("WORKLEDGER_LOG", "warn");
            jail.set_env("WORKLEDGER_REQUEST_TIMEOUT", "5s");
            jail.set_env("WORKLEDGER_DB_COMMAND_CONNECTIONS", "4");
            jail.set_env("WORKLEDGER_DB_APPEND_WRITERS", "3");
            jail.set_env("DATABASE_URL", "postgres://u@db:5432/wl");
            let config = Config::load(Some(Path::new("wl.toml"))).unwrap();
            assert_eq!(config.db_command_connections, 4);
            assert_eq!(config.db_append_writers, 3);
            assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
            assert_eq!(config.log, "warn");
            assert_eq!(config.request_timeout, Duration::from_secs(5));
            assert_eq!(config.database_display(), "db:5432/wl");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("WORKLEDGER_LISTEN", "not-an-address");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(error.contains("WORKLEDGER_LISTEN"), "{error}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "mysql://nope");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(error.contains("DATABASE_URL"), "{error}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("WORKLEDGER_REQUEST_TIMEOUT", "soon");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(error.contains("WORKLEDGER_REQUEST_TIMEOUT"), "{error}");
            Ok(())
        });
        for variable in [
            "WORKLEDGER_DB_COMMAND_CONNECTIONS",
            "WORKLEDGER_DB_APPEND_WRITERS",
        ] {
            for value in ["0", "1001", "many"] {
                Jail::expect_with(|jail| {
                    jail.set_env(variable, value);
                    let error = load_in(jail).unwrap_err().to_string();
                    assert!(error.contains(variable), "{error}");
                    Ok(())
                });
            }
        }
        Jail::expect_with(|jail| {
            jail.set_env(
                "WORKLEDGER_MASTER_KEY_PREVIOUS",
                "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            );
            // a key that only opens: allowed (the first step of turning one on)
            let keys = load_in(jail).unwrap().master_keys().unwrap().unwrap();
            assert!(!keys.wraps());
            // an empty one is none
            jail.set_env("WORKLEDGER_MASTER_KEY", "");
            jail.set_env("WORKLEDGER_MASTER_KEY_PREVIOUS", " ");
            assert!(load_in(jail).unwrap().master_keys().unwrap().is_none());
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env(
                "WORKLEDGER_MASTER_KEY",
                "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
            );
            jail.set_env(
                "WORKLEDGER_MASTER_KEY_PREVIOUS",
                "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=,short",
            );
            let error = load_in(jail).unwrap_err().to_string();
            assert!(
                error.contains("WORKLEDGER_MASTER_KEY_PREVIOUS must be 32 bytes"),
                "{error}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("WORKLEDGER_CORS_ORIGINS", "example.com");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(error.contains("WORKLEDGER_CORS_ORIGINS"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        Jail::expect_with(|jail| {
            jail.set_env("WORKLEDGER_JWT_SECRET", "short");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(
                error.contains("WORKLEDGER_JWT_SECRET") && !error.contains("short"),
                "{error}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("WORKLEDGER_ADMIN_EMAIL", "admin@example.com");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(error.contains("WORKLEDGER_ADMIN_PASSWORD"), "{error}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("WORKLEDGER_ADMIN_EMAIL", "admin@example.com");
            jail.set_env("WORKLEDGER_ADMIN_PASSWORD", "correct horse battery staple");
            let config = load_in(jail).unwrap();
            assert!(
                !format!("{config:?}").contains("horse"),
                "secrets are redacted"
            );
            Ok(())
        });
    }

    #[test]
    fn kafka_signs_in_over_tls_with_sasl_when_configured_and_refuses_half_a_configuration() {
        Jail::expect_with(|jail| {
            jail.set_env("KAFKA_BROKERS", "kafka-1:9093");
            let plain = load_in(jail).unwrap().kafka().unwrap().security;
            assert_eq!(plain.protocol, SecurityProtocol::Plaintext);
            assert!(plain.sasl.is_none() && plain.ca_location.is_none());

            jail.create_file("ca.pem", "-----BEGIN CERTIFICATE-----")?;
            jail.set_env("WORKLEDGER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL");
            jail.set_env("WORKLEDGER_KAFKA_SASL_MECHANISM", "scram-sha-512");
            jail.set_env("WORKLEDGER_KAFKA_SASL_USERNAME", "workledger");
            jail.set_env("WORKLEDGER_KAFKA_SASL_PASSWORD", "kafka secret");
            jail.set_env("WORKLEDGER_KAFKA_SSL_CA_LOCATION", "ca.pem");
            let config = load_in(jail).unwrap();
            // the password is not in what the configuration prints
            assert!(!format!("{config:?}").contains("kafka secret"));
            let security = config.kafka().unwrap().security;
            assert_eq!(security.protocol, SecurityProtocol::SaslSsl);
            let sasl = security.sasl.unwrap();
            assert_eq!(sasl.mechanism, "SCRAM-SHA-512");
            assert_eq!(sasl.username, "workledger");
            assert_eq!(sasl.password.expose_secret(), "kafka secret");
            assert_eq!(security.ca_location, Some(PathBuf::from("ca.pem")));
            Ok(())
        });
        let sasl = [
            ("WORKLEDGER_KAFKA_SASL_MECHANISM", "PLAIN"),
            ("WORKLEDGER_KAFKA_SASL_USERNAME", "u"),
            ("WORKLEDGER_KAFKA_SASL_PASSWORD", "p"),
        ];
        let refused: [(&[(&str, &str)], &str); 6] = [
            (
                &[("WORKLEDGER_KAFKA_SECURITY_PROTOCOL", "tls")],
                "WORKLEDGER_KAFKA_SECURITY_PROTOCOL must be",
            ),
            (
                &[
                    ("WORKLEDGER_KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                    sasl[0],
                    sasl[1],
                ],
                "needs WORKLEDGER_KAFKA_SASL_MECHANISM",
            ),
            (
                &[sasl[0], sasl[1], sasl[2]],
                "WORKLEDGER_KAFKA_SASL_* are for",
            ),
            (
                &[
                    ("WORKLEDGER_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                    ("WORKLEDGER_KAFKA_SASL_MECHANISM", "GSSAPI"),
                    sasl[1],
                    sasl[2],
                ],
                "WORKLEDGER_KAFKA_SASL_MECHANISM must be",
            ),
            (
                &[("WORKLEDGER_KAFKA_SSL_CA_LOCATION", "/etc/hostname")],
                "WORKLEDGER_KAFKA_SSL_CA_LOCATION is for",
            ),
            (
                &[
                    ("WORKLEDGER_KAFKA_SECURITY_PROTOCOL", "ssl"),
                    ("WORKLEDGER_KAFKA_SSL_CA_LOCATION", "/no/such/ca.pem"),
                ],
                "WORKLEDGER_KAFKA_SSL_CA_LOCATION: no file",
            ),
        ];
        for (variables, expected) in refused {
            Jail::expect_with(|jail| {
                for (variable, value) in variables {
                    jail.set_env(variable, value);
                }
                let error = load_in(jail).unwrap_err().to_string();
                assert!(error.contains(expected), "{variables:?}: {error}");
                assert!(!error.contains("\"p\""), "{error}");
                Ok(())
            });
        }
    }

    #[test]
    fn kafka_is_off_unless_its_brokers_are_set() {
        Jail::expect_with(|jail| {
            assert!(load_in(jail).unwrap().kafka().is_none());
            jail.set_env("KAFKA_BROKERS", "");
            assert!(load_in(jail).unwrap().kafka().is_none());
            jail.set_env("KAFKA_BROKERS", "kafka-1:9092, kafka-2:9092");
            jail.set_env("WORKLEDGER_KAFKA_PARTITIONS", "12");
            let kafka = load_in(jail).unwrap().kafka().unwrap();
            assert_eq!(kafka.brokers, "kafka-1:9092,kafka-2:9092");
            assert_eq!(kafka.partitions, 12);
            assert_eq!(kafka.topic("task"), "workledger.task");
            Ok(())
        });
        for (variable, value) in [
            ("KAFKA_BROKERS", "kafka-1"),
            ("WORKLEDGER_KAFKA_TOPIC_PREFIX", "work ledger/"),
            ("WORKLEDGER_KAFKA_PARTITIONS", "0"),
            ("WORKLEDGER_KAFKA_DELIVERY_TIMEOUT", "10ms"),
            ("WORKLEDGER_KAFKA_DELIVERY_TIMEOUT", "30days"),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env(variable, value);
                let error = load_in(jail).unwrap_err().to_string();
                assert!(error.contains(variable), "{variable}: {error}");
                Ok(())
            });
        }
    }

    #[test]
    fn a_metrics_token_is_long_enough_and_never_printed() {
        Jail::expect_with(|jail| {
            assert!(load_in(jail).unwrap().metrics_token.is_none());
            jail.set_env("WORKLEDGER_METRICS_TOKEN", "short one");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(
                error.contains("WORKLEDGER_METRICS_TOKEN") && !error.contains("short one"),
                "{error}"
            );
            jail.set_env("WORKLEDGER_METRICS_TOKEN", "the scraper's own token");
            let config = load_in(jail).unwrap();
            assert!(config.metrics_token.is_some());
            assert!(!format!("{config:?}").contains("scraper's own"));
            Ok(())
        });
    }

    #[test]
    fn the_webhook_needs_a_url_and_a_secret_never_printed() {
        Jail::expect_with(|jail| {
            assert!(load_in(jail).unwrap().webhook().is_none());
            jail.set_env(
                "WORKLEDGER_WEBHOOK_URL",
                "https://hooks.example.com/workledger",
            );
            let error = load_in(jail).unwrap_err().to_string();
            assert!(error.contains("WORKLEDGER_WEBHOOK_SECRET"), "{error}");
            jail.set_env("WORKLEDGER_WEBHOOK_SECRET", "tiny secret");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(
                error.contains("WORKLEDGER_WEBHOOK_SECRET") && !error.contains("tiny"),
                "{error}"
            );
            jail.set_env(
                "WORKLEDGER_WEBHOOK_SECRET",
                "a webhook secret of 32 bytes or more",
            );
            let config = load_in(jail).unwrap();
            let webhook = config.webhook().unwrap();
            assert_eq!(webhook.url, "https://hooks.example.com/workledger");
            let printed = format!("{config:?}");
            assert!(!printed.contains("32 bytes or more") && !printed.contains("hooks.example"));
            jail.set_env("WORKLEDGER_WEBHOOK_URL", "ftp://hooks.example.com");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(error.contains("WORKLEDGER_WEBHOOK_URL"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn email_needs_a_relay_that_keeps_credentials_safe_and_a_sender() {
        Jail::expect_with(|jail| {
            assert!(load_in(jail).unwrap().email().is_none());
            jail.set_env("WORKLEDGER_EMAIL_FROM", "workledger@example.com");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(error.contains("WORKLEDGER_SMTP_URL"), "{error}");
            jail.set_env(
                "WORKLEDGER_SMTP_URL",
                "smtp://mailer:s3cret@mail.example.com",
            );
            let error = load_in(jail).unwrap_err().to_string();
            assert!(
                error.contains("WORKLEDGER_SMTP_URL") && !error.contains("s3cret"),
                "{error}"
            );
            jail.set_env(
                "WORKLEDGER_SMTP_URL",
                "smtp://mailer:s3cret@mail.example.com:587?tls=required",
            );
            jail.set_env("WORKLEDGER_EMAIL_FROM", "not an address");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(error.contains("WORKLEDGER_EMAIL_FROM"), "{error}");
            jail.set_env(
                "WORKLEDGER_EMAIL_FROM",
                "Workledger <workledger@example.com>",
            );
            jail.set_env("WORKLEDGER_EMAIL_LINK", "work.example.com/{kind}s/{id}");
            let error = load_in(jail).unwrap_err().to_string();
            assert!(error.contains("WORKLEDGER_EMAIL_LINK"), "{error}");
            jail.set_env(
                "WORKLEDGER_EMAIL_LINK",
                "https://work.example.com/{kind}s/{id}",
            );
            let config = load_in(jail).unwrap();
            let email = config.email().unwrap();
            assert_eq!(email.from.email.to_string(), "workledger@example.com");
            assert_eq!(email.timeout, Duration::from_secs(30));
            let printed = format!("{config:?} {email:?}");
            assert!(!printed.contains("s3cret"), "{printed}");
            jail.set_env("WORKLEDGER_SMTP_URL", "smtp://127.0.0.1:2525");
            assert!(load_in(jail).unwrap().email().is_some());
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        Jail::expect_with(|_| {
            let error = Config::load(Some(Path::new("absent.toml")))
                .unwrap_err()
                .to_string();
            assert!(error.contains("absent.toml"), "{error}");
            Ok(())
        });
    }
}
