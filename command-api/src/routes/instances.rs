//! `/api/v1/workflow-instances`: starting and cancelling workflow instances, and retrying
//! their incidents.

use api_common::Json;
use axum::extract::{Path, State};
use domain::InstanceCommand;
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Applied, Created, OptionalJson, Problems, observe};
use crate::error::Result;
use crate::extract::{Auth, CommandHeaders, IfMatch, path_id};
use crate::response::Accepted;
use crate::state::CommandState;

const AGGREGATE: &str = event_schemas::workflow_instance::AGGREGATE_TYPE;

/// This module's routes.
pub fn router() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(cancel))
        .routes(routes!(retry_incident))
}

/// What to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartInstance {
    #[schema(example = "purchase-order")]
    pub definition_key: String,
    /// A published version; the latest when left out.
    pub version: Option<u32>,
    /// Your reference (an order number, ...), for finding the instance again.
    pub business_key: Option<String>,
    /// The instance's variables, which decisions read and task outputs extend.
    #[serde(default)]
    pub variables: Map<String, Value>,
}

/// Start a workflow instance
///
/// Operators and admins. Its first tasks and approvals exist when this answers.
#[utoipa::path(post, path = "/api/v1/workflow-instances", operation_id = "start_instance", tag = "workflow-instances",
    request_body = StartInstance, params(CommandHeaders),
    responses(Created, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(definition_key = %body.definition_key))]
async fn start(
    State(state): State<CommandState>,
    auth: Auth,
    Json(body): Json<StartInstance>,
) -> Result<Accepted> {
    let result = async {
        let outcome = state
            .runtime()
            .start(
                &auth.context(),
                &body.definition_key,
                body.version,
                body.business_key,
                body.variables,
            )
            .await?;
        let location = format!("/api/v1/workflow-instances/{}", outcome.id);
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, true)
            .await?
            .at(location))
    }
    .await;
    observe("start_instance", &result);
    result
}

/// Why an instance is cancelled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelInstance {
    /// Up to 1,000 characters.
    pub reason: String,
}

/// Cancel a workflow instance
///
/// Cancels a running instance and its open tasks and approvals (operators and admins).
#[utoipa::path(post, path = "/api/v1/workflow-instances/{id}/cancel", operation_id = "cancel_instance", tag = "workflow-instances",
    request_body = CancelInstance,
    params(("id" = Uuid, Path, description = "The instance"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(instance_id = %id))]
async fn cancel(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<CancelInstance>,
) -> Result<Accepted> {
    let result = async {
        let id = path_id(&id, "workflow instance", "instance_not_found")?;
        let command = InstanceCommand::Cancel {
            reason: body.reason,
        };
        let outcome = state
            .runtime()
            .instance(&auth.context(), id, command, expected)
            .await?;
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, false).await?)
    }
    .await;
    observe("cancel_instance", &result);
    result
}

/// What a retry sets first.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryIncident {
    /// Merged into the instance's variables (as a task's output is) before the decision is
    /// evaluated again; the body may be left out to retry on the variables as they are.
    #[serde(default)]
    pub variables: Map<String, Value>,
}

/// Retry an incident
///
/// A decision whose rules could not be evaluated (a variable missing or of the wrong type)
/// raised an incident: that path of the instance waits at the decision while the rest runs on.
/// An operator or admin sets the variables the rules need and evaluates the decision again;
/// the instance goes on from there, its next tasks and approvals open when this answers (or,
/// still not evaluable, a new incident is raised). 409 `no_incident` when none waits at the
/// step, `instance_ended` when the instance is over.
#[utoipa::path(post, path = "/api/v1/workflow-instances/{id}/incidents/{step_id}/retry", operation_id = "retry_incident", tag = "workflow-instances",
    request_body(content = Option<RetryIncident>),
    params(("id" = Uuid, Path, description = "The instance"),
           ("step_id" = String, Path, description = "The decision step the incident waits at"),
           CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(instance_id = %id, step_id = %step_id))]
async fn retry_incident(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path((id, step_id)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<RetryIncident>,
) -> Result<Accepted> {
    let result = async {
        let id = path_id(&id, "workflow instance", "instance_not_found")?;
        let variables = body.unwrap_or_default().variables;
        let outcome = state
            .runtime()
            .retry_incident(&auth.context(), id, step_id, variables, expected)
            .await?;
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, false).await?)
    }
    .await;
    observe("retry_incident", &result);
    result
}
