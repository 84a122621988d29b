//! `/api/v1/tasks`: ad-hoc tasks, and claiming, releasing, assigning, delegating, completing
//! and commenting on any task.

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use domain::TaskCommand;
use domain::definition::IsoDuration;
use domain::task::OpenTask;
use event_schemas::{Escalation, FormField};
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use api_common::{ApiError, FieldError, Json};

use super::{Applied, Created, OptionalJson, Problems, ensure_users, observe};
use crate::error::{CommandError, Result};
use crate::extract::{Auth, CommandHeaders, IfMatch, path_id};
use crate::response::Accepted;
use crate::state::CommandState;

const AGGREGATE: &str = event_schemas::task::AGGREGATE_TYPE;

/// This module's routes.
pub fn router() -> OpenApiRouter<CommandState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(claim))
        .routes(routes!(release))
        .routes(routes!(assign))
        .routes(routes!(delegate))
        .routes(routes!(complete))
        .routes(routes!(comment))
}

/// An ad-hoc task: not part of a workflow, opened by an operator.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// The task's id, a UUID v7; chosen by the server when left out (a retry with the same id
    /// is a 409, not a second task). Other versions are refused: workflow tasks have
    /// name-based ids (v5) that an ad-hoc task must not take.
    pub id: Option<Uuid>,
    pub name: String,
    pub description: Option<String>,
    /// Assign it right away.
    pub assignee: Option<Uuid>,
    /// Offer it to these users...
    #[serde(default)]
    pub candidate_users: Vec<Uuid>,
    /// ...and to the members of these groups.
    #[serde(default)]
    pub candidate_groups: Vec<String>,
    /// Fields its output is checked against on completion
    /// (`[{"id": "amount", "type": "number", "required": true}]`).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub form: Vec<FormField>,
    /// When it becomes overdue (RFC 3339); or give `due`.
    pub due_at: Option<DateTime<Utc>>,
    /// When it becomes overdue, from now (ISO 8601 duration such as `P2D`); or give `due_at`.
    pub due: Option<String>,
    /// Who else is offered the task once it is overdue: `{"candidate_users": [], "candidate_groups": []}`.
    #[schema(value_type = Option<Object>)]
    pub escalation: Option<Escalation>,
}

/// Open an ad-hoc task
///
/// Operators and admins. The task belongs to no workflow.
#[utoipa::path(post, path = "/api/v1/tasks", operation_id = "create_task", tag = "tasks",
    request_body = CreateTask, params(CommandHeaders),
    responses(Created, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(task_id))]
async fn create(
    State(state): State<CommandState>,
    auth: Auth,
    Json(body): Json<CreateTask>,
) -> Result<Accepted> {
    let result = async {
        let ctx = auth.context();
        let due_at = match (body.due_at, body.due.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(vec![FieldError::new(
                    "due",
                    "invalid_value",
                    "give either due_at or due, not both",
                )])
                .into());
            }
            (Some(at), None) => Some(at),
            (None, Some(due)) => Some(
                IsoDuration::parse(due)
                    .ok()
                    .and_then(|d| d.after(ctx.at))
                    .ok_or_else(|| {
                        ApiError::validation(vec![FieldError::new(
                            "due",
                            "invalid_duration",
                            "an ISO 8601 duration such as P2D or PT4H",
                        )])
                    })?,
            ),
            (None, None) => None,
        };
        let mut users: Vec<(String, Uuid)> = body
            .candidate_users
            .iter()
            .enumerate()
            .map(|(i, u)| (format!("candidate_users[{i}]"), *u))
            .collect();
        if let Some(assignee) = body.assignee {
            users.push(("assignee".to_owned(), assignee));
        }
        ensure_users(&state, &ctx.caller, &users).await?;
        if body.id.is_some_and(|id| id.get_version_num() != 7) {
            return Err(ApiError::validation(vec![FieldError::new(
                "id",
                "invalid_id",
                "a UUID v7 (or leave it out)",
            )])
            .into());
        }
        let task_id = body.id.unwrap_or_else(Uuid::now_v7);
        tracing::Span::current().record("task_id", tracing::field::display(task_id));
        let open = OpenTask {
            task_id,
            workflow: None,
            name: body.name,
            description: body.description,
            assignee: body.assignee,
            candidate_users: body.candidate_users,
            candidate_groups: body.candidate_groups,
            form: body.form,
            due_at,
            escalation: body.escalation,
        };
        let outcome = state
            .runtime()
            .task(&ctx, task_id, TaskCommand::from(open), None)
            .await?;
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, true)
            .await?
            .at(format!("/api/v1/tasks/{task_id}")))
    }
    .await;
    observe("create_task", &result);
    result
}

/// Claim a task
///
/// Takes an unassigned task (a candidate: listed user or member of a candidate group).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/claim", operation_id = "claim_task", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(task_id = %id))]
async fn claim(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
) -> Result<Accepted> {
    send(
        &state,
        &auth,
        &id,
        TaskCommand::Claim,
        expected,
        "claim_task",
    )
    .await
}

/// Release a task
///
/// Gives the task back to its candidates (the assignee, operators).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/release", operation_id = "release_task", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(task_id = %id))]
async fn release(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
) -> Result<Accepted> {
    send(
        &state,
        &auth,
        &id,
        TaskCommand::Release,
        expected,
        "release_task",
    )
    .await
}

/// The user to assign or delegate to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToUser {
    /// An active user of the caller's tenant.
    pub user_id: Uuid,
}

/// Assign a task
///
/// Makes a user the assignee (operators and admins).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/assign", operation_id = "assign_task", tag = "tasks",
    request_body = ToUser,
    params(("id" = Uuid, Path, description = "The task"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(task_id = %id))]
async fn assign(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<ToUser>,
) -> Result<Accepted> {
    ensure_users(&state, &auth.caller(), &[("user_id".into(), body.user_id)]).await?;
    let command = TaskCommand::Assign {
        user_id: body.user_id,
    };
    send(&state, &auth, &id, command, expected, "assign_task").await
}

/// Delegate a task
///
/// Hands the task to another user, who becomes its assignee (the assignee, admins).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/delegate", operation_id = "delegate_task", tag = "tasks",
    request_body = ToUser,
    params(("id" = Uuid, Path, description = "The task"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(task_id = %id))]
async fn delegate(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<ToUser>,
) -> Result<Accepted> {
    ensure_users(&state, &auth.caller(), &[("user_id".into(), body.user_id)]).await?;
    let command = TaskCommand::Delegate {
        user_id: body.user_id,
    };
    send(&state, &auth, &id, command, expected, "delegate_task").await
}

/// The output of a completed task.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTask {
    /// Checked against the task's form; for a workflow task merged into the instance's
    /// variables. The body may be left out for a task without required fields.
    #[serde(default)]
    pub output: Map<String, Value>,
}

/// Complete a task
///
/// The assignee (or an admin), with output valid against the task's form. For a workflow
/// task, the workflow moves on before this answers: the next task or approval exists, and
/// the consistency token covers it.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", operation_id = "complete_task", tag = "tasks",
    request_body(content = Option<CompleteTask>),
    params(("id" = Uuid, Path, description = "The task"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(task_id = %id))]
async fn complete(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CompleteTask>,
) -> Result<Accepted> {
    let command = TaskCommand::Complete {
        output: body.unwrap_or_default().output,
    };
    send(&state, &auth, &id, command, expected, "complete_task")
        .await
        .map_err(|CommandError(mut problem)| {
            // the form's issues name output keys: locate them in the body
            if problem.code == "invalid_command" {
                for error in &mut problem.errors {
                    error.field = format!("output.{}", error.field);
                }
            }
            CommandError(problem)
        })
}

/// A comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Comment {
    /// Up to 10,000 characters.
    pub text: String,
}

/// Comment on a task
///
/// Its assignee, candidates and operators may comment.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/comments", operation_id = "comment_task", tag = "tasks",
    request_body = Comment,
    params(("id" = Uuid, Path, description = "The task"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(task_id = %id))]
async fn comment(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Json(body): Json<Comment>,
) -> Result<Accepted> {
    let command = TaskCommand::Comment { text: body.text };
    send(&state, &auth, &id, command, expected, "comment_task").await
}

async fn send(
    state: &CommandState,
    auth: &Auth,
    raw_id: &str,
    command: TaskCommand,
    expected: Option<usize>,
    name: &'static str,
) -> Result<Accepted> {
    let result = async {
        let id = path_id(raw_id, "task", "task_not_found")?;
        let outcome = state
            .runtime()
            .task(&auth.context(), id, command, expected)
            .await?;
        Ok(Accepted::of(state.pool(), AGGREGATE, outcome, false).await?)
    }
    .await;
    observe(name, &result);
    result
}
