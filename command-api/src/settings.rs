//! What the command API can be configured with. The binary reads these from its configuration
//! (environment variables named in each field's docs) and passes them to
//! [`CommandApi::build`](crate::CommandApi::build).

use std::time::Duration;

use secrecy::SecretString;

/// Settings of the command API.
#[derive(Debug, Clone)]
pub struct CommandSettings {
    /// `WORKLEDGER_JWT_SECRET`: the access-token signing secret (at least 32 bytes). When
    /// unset, a random secret is generated on first start and kept in the database, so every
    /// instance signs with the same key and tokens survive restarts.
    pub jwt_secret: Option<SecretString>,
    /// `WORKLEDGER_ACCESS_TOKEN_TTL`: how long an access token is valid (default 15 min).
    pub access_token_ttl: Duration,
    /// `WORKLEDGER_REFRESH_TOKEN_TTL`: how long an unused refresh token is valid (default 14 d).
    pub refresh_token_ttl: Duration,
    /// `WORKLEDGER_IDEMPOTENCY_TTL`: how long an `Idempotency-Key` and its first response are
    /// kept (default 24 h).
    pub idempotency_ttl: Duration,
    /// How long a request that holds an `Idempotency-Key` may run before a retry with the same
    /// key may take over (a crashed process leaves its key behind). Its command runs to its
    /// end even when the request is given up, but is stopped after three quarters of this
    /// (default 2 min: longer than the request timeout).
    pub idempotency_lease: Duration,
    /// `WORKLEDGER_BODY_LIMIT`: the largest request body buffered for idempotency checks.
    pub body_limit: usize,
    /// `WORKLEDGER_DOCUMENT_LIMIT`: the largest file a document upload takes, in bytes
    /// (default 25 MiB).
    pub document_limit: usize,
    /// `WORKLEDGER_TRUSTED_PROXY_HOPS`: how many proxies in front of Workledger append to
    /// `X-Forwarded-For`. 0 (default): the header is ignored and the peer address is the
    /// client's; 1: the last entry is the client's (one nginx in front), and so on.
    pub trusted_proxy_hops: usize,
    /// Login throttling.
    pub login_throttle: ThrottleSettings,
    /// Password hashing cost.
    pub password_hashing: PasswordHashing,
    /// How long a command on users or tenants waits for the identity read model to show its
    /// effect before answering anyway (the background projector catches up).
    pub identity_projection_wait: Duration,
    /// `WORKLEDGER_DB_COMMAND_CONNECTIONS`: the connections the command path keeps outside the
    /// pool (see `event_store::Connections`), and so how many statements it runs at once.
    pub command_connections: usize,
    /// `WORKLEDGER_DB_APPEND_WRITERS`: how many append statements the command path runs at
    /// once; appends arriving meanwhile go to Postgres together (`event_store::group`).
    pub append_writers: usize,
}

impl Default for CommandSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(14 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            idempotency_lease: Duration::from_secs(120),
            body_limit: 1024 * 1024,
            document_limit: 25 * 1024 * 1024,
            trusted_proxy_hops: 0,
            login_throttle: ThrottleSettings::default(),
            password_hashing: PasswordHashing::default(),
            identity_projection_wait: Duration::from_secs(5),
            command_connections: event_store::connections::KEPT_CONNECTIONS,
            append_writers: event_store::connections::APPEND_WRITERS,
        }
    }
}

/// Failed sign-ins allowed before further attempts are refused with 429 for a while.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// `WORKLEDGER_LOGIN_MAX_FAILURES_PER_ACCOUNT`: failures per email address (and tenant)
    /// within `window` (default 5).
    pub max_failures_per_account: u32,
    /// `WORKLEDGER_LOGIN_MAX_FAILURES_PER_ADDRESS`: failures per client address within
    /// `window` (default 20).
    pub max_failures_per_address: u32,
    /// `WORKLEDGER_LOGIN_FAILURE_WINDOW`: how long failures are counted (default 15 min).
    pub window: Duration,
    /// `WORKLEDGER_LOGIN_LOCKOUT`: how long sign-in is refused once the limit is reached
    /// (default 5 min; each further failure starts it again).
    pub lockout: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            max_failures_per_account: 5,
            max_failures_per_address: 20,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(5 * 60),
        }
    }
}

/// argon2id cost parameters for new password hashes. Stored hashes carry their own
/// parameters, so changing these affects new and changed passwords only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordHashing {
    /// Memory in KiB (OWASP: 19456, i.e. 19 MiB).
    pub memory_kib: u32,
    /// Passes (OWASP: 2).
    pub iterations: u32,
    /// Lanes (OWASP: 1).
    pub parallelism: u32,
}

impl PasswordHashing {
    /// The OWASP Password Storage Cheat Sheet's argon2id configuration.
    pub const OWASP: PasswordHashing = PasswordHashing {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
}

impl Default for PasswordHashing {
    fn default() -> Self {
        Self::OWASP
    }
}
