//! `/api/v1/workflow-definitions`: publishing definitions (JSON, or YAML).

use api_common::ApiError;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use domain::Role;
use domain::definition::Definition;
use domain::workflow_definition::WorkflowDefinitionError;
use orchestrator::RuntimeError;
use tracing::instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Created, Problems, observe};
use crate::error::{CommandError, Result};
use crate::extract::{Auth, CommandHeaders};
use crate::response::{self, Accepted};
use crate::state::CommandState;

const AGGREGATE: &str = event_schemas::workflow_definition::AGGREGATE_TYPE;

/// This module's routes.
pub fn router() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new().routes(routes!(publish))
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Json,
    Yaml,
}

fn format(headers: &HeaderMap) -> Option<Format> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(Format::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Some(Format::Yaml)
        }
        other if other.starts_with("application/") && other.ends_with("+json") => {
            Some(Format::Json)
        }
        _ => None,
    }
}

/// Publish a workflow definition
///
/// Designers and admins. A new key becomes version 1, a known key its next version; content
/// identical to the latest version changes nothing (200, same version). The whole graph is
/// validated first; every problem is answered in `errors`, located as
/// `steps.<step id>[.<field>]`. Send JSON, or YAML with `Content-Type: application/yaml`.
/// The answer's `id` is the definition key, `version` its published version.
#[utoipa::path(post, path = "/api/v1/workflow-definitions", operation_id = "publish_definition", tag = "workflow-definitions",
    request_body(content(
        (Object = "application/json", example = json!({
            "key": "hello", "name": "Hello", "start": "greet",
            "steps": {
                "greet": {"type": "task", "name": "Say hello", "candidate_groups": ["staff"], "next": "done"},
                "done": {"type": "end", "outcome": "greeted"}
            }
        })),
        (String = "application/yaml")
    )),
    params(CommandHeaders),
    responses(
        (status = 200, description = "The latest version already has this content", body = crate::response::CommandAccepted),
        Created, Problems,
        (status = 415, description = "Neither JSON nor YAML", body = ApiError, content_type = "application/problem+json")
    ),
    security(("bearer" = [])))]
#[instrument(skip_all, fields(definition_key))]
async fn publish(
    State(state): State<CommandState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Accepted> {
    let result = async {
        let ctx = auth.context();
        if !ctx.caller.acts_as(Role::Designer) {
            return Err(rejected(WorkflowDefinitionError::Forbidden));
        }
        let format = format(&headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the definition as JSON (`Content-Type: application/json`) or YAML \
                 (`Content-Type: application/yaml`)",
            )
        })?;
        let source = std::str::from_utf8(&body).map_err(|_| {
            ApiError::bad_request("unreadable_body", "the definition is not UTF-8 text")
        })?;
        let definition = match format {
            Format::Json => Definition::from_json(source),
            Format::Yaml => Definition::from_yaml(source),
        }
        .map_err(rejected)?;
        let key = definition.key().to_owned();
        tracing::Span::current().record("definition_key", key.as_str());
        let outcome = state.runtime().publish(&ctx, definition).await?;
        let created = outcome.appended > 0;
        let token = response::token(
            state.pool(),
            AGGREGATE,
            &outcome.id,
            outcome.version,
            outcome.position,
        )
        .await?;
        let location = format!(
            "/api/v1/workflow-definitions/{key}/versions/{}",
            outcome.version
        );
        Ok(Accepted::with_token(key, outcome.version, token, created).at(location))
    }
    .await;
    observe("publish_definition", &result);
    result
}

fn rejected(error: impl domain::Rejection + Send + Sync + 'static) -> CommandError {
    RuntimeError::Rejected(Box::new(error)).into()
}
