//! `/api/v1/approvals/{id}`: deciding and delegating votes.

use api_common::Json;
use axum::extract::{Path, State};
use domain::ApprovalCommand;
use event_schemas::ApprovalDecision;
use serde::Deserialize;
use tracing::instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Applied, Problems, ensure_users, observe};
use crate::error::Result;
use crate::extract::{Auth, CommandHeaders, IfMatch, path_id};
use crate::response::Accepted;
use crate::state::CommandState;

const AGGREGATE: &str = event_schemas::approval::AGGREGATE_TYPE;

/// This module's routes.
pub fn router() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(decide))
        .routes(routes!(delegate))
}

/// A vote (documentation of `decision`).
#[derive(Debug, ToSchema)]
#[schema(as = Decision)]
#[allow(dead_code)]
enum DecisionSchema {
    #[schema(rename = "approve")]
    Approve,
    #[schema(rename = "reject")]
    Reject,
}

/// The caller's vote.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    #[schema(value_type = DecisionSchema)]
    pub decision: ApprovalDecision,
    /// Recorded with the vote (up to 10,000 characters).
    pub comment: Option<String>,
}

/// Decide an approval
///
/// Casts the caller's vote (an approver whose turn it is). When the vote settles the approval,
/// the workflow moves on before this answers.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/decisions", operation_id = "decide_approval", tag = "approvals",
    request_body = Decide,
    params(("id" = Uuid, Path, description = "The approval"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(approval_id = %id))]
async fn decide(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<Decide>,
) -> Result<Accepted> {
    let command = ApprovalCommand::Decide {
        decision: body.decision,
        comment: body.comment,
    };
    send(&state, &auth, &id, command, expected, "decide_approval").await
}

/// Whom a vote goes to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateVote {
    /// An active user of the tenant who holds no vote on this approval yet.
    pub user_id: Uuid,
    /// Whose open vote moves (admins only; the caller's own when left out).
    pub from_user_id: Option<Uuid>,
}

/// Delegate a vote
///
/// Hands the caller's open vote (admins: anyone's) to another user.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/delegate", operation_id = "delegate_approval", tag = "approvals",
    request_body = DelegateVote,
    params(("id" = Uuid, Path, description = "The approval"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(approval_id = %id))]
async fn delegate(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<DelegateVote>,
) -> Result<Accepted> {
    ensure_users(&state, &auth.caller(), &[("user_id".into(), body.user_id)]).await?;
    let command = ApprovalCommand::Delegate {
        user_id: body.user_id,
        from_user_id: body.from_user_id,
    };
    send(&state, &auth, &id, command, expected, "delegate_approval").await
}

async fn send(
    state: &CommandState,
    auth: &Auth,
    raw_id: &str,
    command: ApprovalCommand,
    expected: Option<usize>,
    name: &'static str,
) -> Result<Accepted> {
    let result = async {
        let id = path_id(raw_id, "approval", "approval_not_found")?;
        let outcome = state
            .runtime()
            .approval(&auth.context(), id, command, expected)
            .await?;
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, false).await?)
    }
    .await;
    observe(name, &result);
    result
}
