//! Workledger's query API (DESIGN §4): read models only, scoped to the caller's tenant.
//!
//! [`router`] answers every `GET` of `/api/v1` that reads projections: definitions, instances,
//! the task inbox, approvals, documents (with their content), reports, the audit trail (with its streamed export) and the
//! tenant's users. Lists are
//! keyset-paged (`limit`, opaque `cursor`, `{items, next_cursor}`); single resources carry an
//! `ETag` of their version; `X-Consistency-Token` makes a request wait, bounded, until the
//! projections behind it have passed the token.
//!
//! Who may read what (admins may read everything of their tenant):
//!
//! | resource | roles |
//! |---|---|
//! | definitions, instances | every role |
//! | tasks | operators and auditors: all; everyone else: tasks assigned or offered to them |
//! | approvals | operators and auditors: all; everyone else: approvals they hold or held a vote on |
//! | documents | whoever sees the task or instance they are attached to |
//! | reports | operators, designers, auditors |
//! | audit trail, export | auditors |
//! | users | admins; everyone: themselves (`/api/v1/users/me`) |
//! | directory (colleagues' names, emails, groups) | everyone |
//! | tenants | admins of the default tenant |

// `ApiError` (api-common's one problem type) is large; it only travels on the cold path and
// boxing it would cost every `?` a conversion.
#![allow(clippy::result_large_err)]

mod access;
mod consistency;
mod page;
mod params;
mod routes;
mod state;

use utoipa_axum::router::OpenApiRouter;

pub use consistency::CONSISTENCY_HEADER;
pub use routes::tenants::{Tenant, all_tenants};
pub use state::{QuerySettings, QueryState};

/// Every query route, documented, with its state applied.
pub fn router(state: QueryState) -> OpenApiRouter {
    OpenApiRouter::new()
        .merge(routes::definitions::router())
        .merge(routes::instances::router())
        .merge(routes::tasks::router())
        .merge(routes::approvals::router())
        .merge(routes::documents::router())
        .merge(routes::reports::router())
        .merge(routes::audit::router())
        .merge(routes::export::router())
        .merge(routes::users::router())
        .merge(routes::directory::router())
        .merge(routes::tenants::router())
        .with_state(state)
}
