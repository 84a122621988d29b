//! Workledger's command API: every command endpoint of DESIGN §4, sign-in and tokens,
//! tenants and users, access control, idempotency and optimistic concurrency.
//!
//! ```text
//! POST /api/v1/auth/login | /refresh | /logout
//! POST /api/v1/tenants                              admins of the default tenant
//! POST /api/v1/users                                admins
//! PUT  /api/v1/users/{id}/groups | /roles | /password
//! POST /api/v1/users/{id}/deactivate | /reactivate | /erase   admins
//! POST /api/v1/workflow-definitions                 designers (JSON or YAML)
//! POST /api/v1/workflow-instances                   operators
//! POST /api/v1/workflow-instances/{id}/cancel       operators
//! POST /api/v1/workflow-instances/{id}/incidents/{step_id}/retry   operators
//! POST /api/v1/tasks                                operators (ad-hoc tasks)
//! POST /api/v1/tasks/{id}/claim | /release | /assign | /delegate | /complete | /comments
//! POST /api/v1/approvals/{id}/decisions | /delegate
//! POST /api/v1/tasks/{id}/documents                 the file as the body (?name=)
//! POST /api/v1/workflow-instances/{id}/documents
//! POST /api/v1/tasks/{id}/documents/{document_id}/remove | /workflow-instances/{id}/...
//! ```
//!
//! Commands answer `{id, version, consistency_token}` with `ETag` and `X-Consistency-Token`,
//! take `If-Match` (stale: 412; a concurrent change: 409) and `Idempotency-Key` (see
//! [`idempotency`]). Rejections are problem+json with the domain's `code` and `errors`.
//!
//! Wiring ([`CommandApi`]): build it from the pool, the append notifier and
//! [`CommandSettings`]; serve [`CommandApi::router`]; hand [`CommandApi::runtime`] to the
//! process manager and timer worker; give [`CommandApi::token_keys`] to the query API; spawn
//! [`identity::run_projector`] and [`maintenance::run_sweeper`]; call
//! [`CommandApi::bootstrap_admin`] with `WORKLEDGER_ADMIN_EMAIL` / `_PASSWORD`.

pub mod auth;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod identity;
pub mod maintenance;
pub mod response;
pub mod routes;
pub mod settings;
pub mod state;

use std::sync::Arc;

use api_common::TokenKeys;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use event_store::AppendNotifier;
use event_store::connections::Connections;
use orchestrator::Runtime;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

pub use auth::{Keys, load_keys};
pub use error::{CommandError, Result};
pub use identity::{Identity, IdentityError, PgDirectory, bootstrap_admin};
pub use response::CommandAccepted;
pub use settings::{CommandSettings, PasswordHashing, ThrottleSettings};
pub use state::CommandState;

/// Every command route, documented, with `state`. Serve it behind
/// `api_common::layers::apply`, with each request's peer as `ConnectInfo<SocketAddr>` (as
/// `workledger serve` does) so sign-in can be throttled per client address.
pub fn router(state: CommandState) -> OpenApiRouter {
    let commands = OpenApiRouter::new()
        .merge(routes::tenants::router())
        .merge(routes::users::router())
        .merge(routes::two_factor::router())
        .merge(routes::definitions::router())
        .merge(routes::instances::router())
        .merge(routes::tasks::router())
        .merge(routes::approvals::router())
        .merge(routes::documents::router(state.settings().document_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::middleware,
        ));
    OpenApiRouter::new()
        .merge(routes::auth::router())
        .merge(commands)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_oversize,
        ))
        .with_state(state)
}

/// A body whose declared `Content-Length` is over the route's limit is a 413 at once, before
/// the server waits for bytes it would refuse anyway (or answers `Expect: 100-continue`).
async fn refuse_declared_oversize(
    State(state): State<CommandState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = if routes::documents::is_upload(request.method(), request.uri().path()) {
        state.settings().document_limit
    } else {
        state.settings().body_limit
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return api_common::ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than this route accepts ({limit} bytes)"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Why the command API could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Keys(#[from] auth::KeyError),
    #[error(transparent)]
    Passwords(#[from] auth::PasswordError),
    #[error("could not load the sessions ended and the access changed lately")]
    Revocations(#[source] sqlx::Error),
}

/// The command API, assembled: its state (with the workflow runtime, whose group directory
/// reads the identity read model) and the pieces `serve` shares with other components.
#[derive(Debug, Clone)]
pub struct CommandApi {
    state: CommandState,
}

impl CommandApi {
    /// Loads (or generates) the token signing keys, prepares password hashing and builds the
    /// workflow [`Runtime`] with a [`PgDirectory`].
    pub async fn build(
        pool: PgPool,
        notifier: AppendNotifier,
        settings: CommandSettings,
    ) -> Result<Self, BuildError> {
        let keys = load_keys(&pool, settings.jwt_secret.as_ref()).await?;
        keys.tokens
            .watch_revocations(pool.clone(), settings.access_token_ttl)
            .await
            .map_err(BuildError::Revocations)?;
        let connections = Connections::with_limits(
            pool.clone(),
            settings.command_connections,
            settings.append_writers,
        );
        let runtime = Arc::new(Runtime::on(
            connections.clone(),
            notifier.clone(),
            Arc::new(PgDirectory::new(connections)),
        ));
        let identity = Identity::new(
            pool.clone(),
            notifier,
            settings.password_hashing,
            settings.identity_projection_wait,
        )
        .await?;
        Ok(Self {
            state: CommandState::new(pool, runtime, identity, keys, settings),
        })
    }

    /// The routes, documented (see [`router`]).
    pub fn router(&self) -> OpenApiRouter {
        router(self.state.clone())
    }

    /// The handlers' state.
    pub fn state(&self) -> &CommandState {
        &self.state
    }

    /// The workflow runtime: give it to the process manager and the timer worker.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.state.runtime().clone()
    }

    /// The commands still running for requests their clients gave up, and any started from
    /// here on: close it and wait for it at shutdown, before the pool closes, so that each of
    /// them stores its answer for its `Idempotency-Key`.
    pub fn detached_commands(&self) -> TaskTracker {
        self.state.detached().clone()
    }

    /// The keys access tokens are signed with: the query API verifies with the same.
    pub fn token_keys(&self) -> TokenKeys {
        self.state.token_keys().clone()
    }

    /// Creates the first admin in the `default` tenant when no user exists (see
    /// [`Identity::bootstrap_admin`]); `Ok(None)` when users exist already.
    pub async fn bootstrap_admin(
        &self,
        email: &str,
        password: &SecretString,
    ) -> Result<Option<Uuid>, IdentityError> {
        self.state.identity().bootstrap_admin(email, password).await
    }
}
