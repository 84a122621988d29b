//! Documents: attaching files to tasks and workflow instances, and removing them.
//!
//! An upload is the file itself as the body (its media type in `Content-Type`, its name in
//! `?name=`), up to `WORKLEDGER_DOCUMENT_LIMIT` bytes. It is answered in three steps:
//! 1. the command is decided against the task or instance as stored, so a caller who may not
//!    attach (or a closed task) is refused before anything is written;
//! 2. the content is stored by tenant and SHA-256 digest (`document_contents`; the same file
//!    twice is stored once, its `stored_at` set anew, so `workledger documents prune` keeps it
//!    through its grace);
//! 3. the command is sent, and its event names the document's file by that digest.
//!
//! So an attached document's content is always stored. A command refused at step 3 (the task
//! closed meanwhile) leaves its content stored and unreferenced.

use api_common::{ApiError, FieldError, Params};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use domain::{DocumentCommand, InstanceCommand, TaskCommand};
use event_schemas::DocumentFile;
use orchestrator::{Outcome, RuntimeError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Applied, OptionalJson, Problems, observe};
use crate::error::{CommandError, Result};
use crate::extract::{Auth, CommandHeaders, IfMatch, path_id};
use crate::response::{Accepted, token};
use crate::state::CommandState;

/// The media type of a body sent without `Content-Type`.
const UNKNOWN_MEDIA_TYPE: &str = "application/octet-stream";

/// This module's routes: uploads take bodies of up to `document_limit` bytes.
pub fn router(document_limit: usize) -> OpenApiRouter<CommandState> {
    let uploads = OpenApiRouter::new()
        .routes(routes!(attach_to_task))
        .routes(routes!(attach_to_instance))
        .layer(DefaultBodyLimit::max(document_limit));
    OpenApiRouter::new()
        .merge(uploads)
        .routes(routes!(remove_from_task))
        .routes(routes!(remove_from_instance))
}

/// Whether a request is an upload (whose body may be up to the document limit).
pub fn is_upload(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST && path.ends_with("/documents")
}

/// What a document is attached to.
#[derive(Debug, Clone, Copy)]
enum Target {
    Task,
    Instance,
}

impl Target {
    fn what(self) -> &'static str {
        match self {
            Target::Task => "task",
            Target::Instance => "workflow instance",
        }
    }

    fn not_found(self) -> &'static str {
        match self {
            Target::Task => "task_not_found",
            Target::Instance => "instance_not_found",
        }
    }

    fn aggregate_type(self) -> &'static str {
        match self {
            Target::Task => event_schemas::task::AGGREGATE_TYPE,
            Target::Instance => event_schemas::workflow_instance::AGGREGATE_TYPE,
        }
    }

    /// Decides `command` against the aggregate as stored: `Err` when it would be refused.
    async fn check(
        self,
        state: &CommandState,
        auth: &Auth,
        id: Uuid,
        command: &DocumentCommand,
    ) -> Result<()> {
        let ctx = auth.context();
        let rejected = match self {
            Target::Task => {
                let (task, _) = state.runtime().load_task(id).await?;
                let command = TaskCommand::Document(command.clone());
                task.decide(domain::Command::new(ctx.caller, ctx.at, command))
                    .err()
                    .map(|e| RuntimeError::Rejected(Box::new(e)))
            }
            Target::Instance => {
                let (instance, _) = state.runtime().load_instance(id).await?;
                let command = InstanceCommand::Document(command.clone());
                instance
                    .decide(domain::Command::new(ctx.caller, ctx.at, command))
                    .err()
                    .map(|e| RuntimeError::Rejected(Box::new(e)))
            }
        };
        match rejected {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    async fn send(
        self,
        state: &CommandState,
        auth: &Auth,
        id: Uuid,
        command: DocumentCommand,
        expected: Option<usize>,
    ) -> Result<Outcome> {
        let ctx = auth.context();
        Ok(match self {
            Target::Task => {
                let command = TaskCommand::Document(command);
                state.runtime().task(&ctx, id, command, expected).await?
            }
            Target::Instance => {
                let command = InstanceCommand::Document(command);
                state
                    .runtime()
                    .instance(&ctx, id, command, expected)
                    .await?
            }
        })
    }
}

/// The file's name (its media type is the request's `Content-Type`).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Upload {
    /// The file name shown to users and offered on download, e.g. `quote-114.pdf`: up to 255
    /// characters, no path separators.
    pub name: String,
}

/// The file's bytes, as they are (not a multipart form).
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct FileBody(Vec<u8>);

/// An attached document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DocumentAttached {
    /// The new document's id: `GET /api/v1/documents/{id}` shows it, `.../content` serves it.
    pub document_id: Uuid,
    /// The task or workflow instance it is attached to.
    pub id: Uuid,
    /// That task's or instance's version afterwards (also the `ETag`).
    pub version: u64,
    /// Send as `X-Consistency-Token` to a query to see the document.
    pub consistency_token: Option<String>,
    pub name: String,
    pub media_type: String,
    /// Bytes.
    pub size: u64,
    /// The content's SHA-256 digest, hex.
    pub sha256: String,
}

/// Successful answers of uploads.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)]
enum Attached {
    /// The document is attached.
    #[response(status = 201, headers(
        ("ETag" = String, description = "The task's or instance's version afterwards"),
        ("X-Consistency-Token" = String, description = "Send to a query to read this write"),
        ("Location" = String, description = "The document in the query API")
    ))]
    Created(DocumentAttached),
    /// The body is larger than `WORKLEDGER_DOCUMENT_LIMIT` (code `body_too_large`).
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(ApiError),
}

/// The file of an upload: its bytes, within the route's limit.
struct File(Bytes);

impl<S: Send + Sync> FromRequest<S> for File {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(File)
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the file is larger than the server accepts (WORKLEDGER_DOCUMENT_LIMIT)",
                ),
                status => ApiError::new(status, "unreadable_body", e.body_text()),
            })
    }
}

/// The document a file becomes: its media type from `Content-Type`, a new id, its digest.
fn document_file(name: String, headers: &HeaderMap, content: &[u8]) -> Result<DocumentFile> {
    let media_type = match headers.get(header::CONTENT_TYPE) {
        None => UNKNOWN_MEDIA_TYPE.to_owned(),
        Some(value) => value
            .to_str()
            .map_err(|_| content_type_error("Content-Type is not ASCII text"))?
            .trim()
            .to_owned(),
    };
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("multipart/form-data")
        || essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return Err(content_type_error(
            "send the file itself as the body, with its own media type \
             (curl: --data-binary @file -H 'Content-Type: application/pdf'), not a form",
        ));
    }
    if let Err(message) = domain::document::check_media_type(&media_type) {
        return Err(content_type_error(&message));
    }
    if content.is_empty() {
        return Err(ApiError::validation(vec![FieldError::new(
            "body",
            "empty",
            "the file is empty",
        )])
        .into());
    }
    Ok(DocumentFile {
        document_id: Uuid::now_v7(),
        name,
        media_type,
        size: content.len() as u64,
        sha256: hex::encode(Sha256::digest(content)),
    })
}

fn content_type_error(message: &str) -> CommandError {
    ApiError::validation(vec![FieldError::new(
        "Content-Type",
        "invalid_media_type",
        message,
    )])
    .into()
}

/// Stores `content` under its tenant and digest (once: the same file again changes nothing).
async fn store_content(
    state: &CommandState,
    tenant_id: &str,
    file: &DocumentFile,
    content: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into document_contents (tenant_id, sha256, size, content) \
         values ($1, $2, $3, $4) \
         on conflict (tenant_id, sha256) do update set stored_at = now()",
    )
    .bind(tenant_id)
    .bind(&file.sha256)
    .bind(file.size as i64)
    .bind(content)
    .execute(state.pool())
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn attach(
    state: &CommandState,
    auth: &Auth,
    target: Target,
    raw_id: &str,
    expected: Option<usize>,
    name: String,
    headers: &HeaderMap,
    content: &[u8],
) -> Result<Accepted<DocumentAttached>> {
    let id = path_id(raw_id, target.what(), target.not_found())?;
    let file = document_file(name, headers, content)?;
    let command = DocumentCommand::Attach(file.clone());
    target.check(state, auth, id, &command).await?;
    store_content(state, &auth.claims.tid, &file, content).await?;
    metrics::histogram!("workledger_document_bytes").record(file.size as f64);
    let outcome = target.send(state, auth, id, command, expected).await?;
    let token = token(
        state.pool(),
        target.aggregate_type(),
        &outcome.id,
        outcome.version,
        outcome.position,
    )
    .await?;
    tracing::info!(document_id = %file.document_id, size = file.size, "document attached");
    let body = DocumentAttached {
        document_id: file.document_id,
        id,
        version: outcome.version as u64,
        consistency_token: token.map(|t| t.to_string()),
        name: file.name,
        media_type: file.media_type,
        size: file.size,
        sha256: file.sha256,
    };
    Ok(Accepted::new(body, outcome.version, token, true)
        .at(format!("/api/v1/documents/{}", file.document_id)))
}

/// Attach a document to a task
///
/// The file is the body, as it is. Those who may comment on the task may attach to it while
/// it is open (its assignee, candidates, operators and admins); at most 100 documents at a
/// time. A workflow task's documents are listed with its instance's too.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/documents", operation_id = "attach_task_document", tag = "documents",
    request_body(content = FileBody, content_type = "*/*",
        description = "The file's bytes; its media type in `Content-Type` (default `application/octet-stream`)"),
    params(("id" = Uuid, Path, description = "The task"), Upload, CommandHeaders),
    responses(Attached, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(task_id = %id))]
async fn attach_to_task(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Params(upload): Params<Upload>,
    headers: HeaderMap,
    File(content): File,
) -> Result<Accepted<DocumentAttached>> {
    let result = attach(
        &state,
        &auth,
        Target::Task,
        &id,
        expected,
        upload.name,
        &headers,
        &content,
    )
    .await;
    observe("attach_task_document", &result);
    result
}

/// Attach a document to a workflow instance
///
/// The file is the body, as it is. The instance's starter, operators and admins may attach
/// while it runs; at most 100 documents at a time.
#[utoipa::path(post, path = "/api/v1/workflow-instances/{id}/documents", operation_id = "attach_instance_document", tag = "documents",
    request_body(content = FileBody, content_type = "*/*",
        description = "The file's bytes; its media type in `Content-Type` (default `application/octet-stream`)"),
    params(("id" = Uuid, Path, description = "The workflow instance"), Upload, CommandHeaders),
    responses(Attached, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(instance_id = %id))]
async fn attach_to_instance(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(id): Path<String>,
    Params(upload): Params<Upload>,
    headers: HeaderMap,
    File(content): File,
) -> Result<Accepted<DocumentAttached>> {
    let result = attach(
        &state,
        &auth,
        Target::Instance,
        &id,
        expected,
        upload.name,
        &headers,
        &content,
    )
    .await;
    observe("attach_instance_document", &result);
    result
}

/// Why a document is removed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveDocument {
    /// Up to 200 characters.
    pub reason: Option<String>,
}

async fn remove(
    state: &CommandState,
    auth: &Auth,
    target: Target,
    (raw_id, raw_document_id): (String, String),
    expected: Option<usize>,
    body: Option<RemoveDocument>,
) -> Result<Accepted> {
    let id = path_id(&raw_id, target.what(), target.not_found())?;
    let document_id = path_id(&raw_document_id, "document", "document_not_found")?;
    let command = DocumentCommand::Remove {
        document_id,
        reason: body.and_then(|b| b.reason),
    };
    let outcome = target.send(state, auth, id, command, expected).await?;
    Ok(Accepted::of(state.pool(), target.aggregate_type(), outcome, false).await?)
}

/// Remove a task's document
///
/// Whoever attached it, operators and admins, while the task is open. The document is no
/// longer listed; its events and content stay for the audit trail.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/documents/{document_id}/remove", operation_id = "remove_task_document", tag = "documents",
    request_body(content = Option<RemoveDocument>, description = "Optional: `{\"reason\": ...}`"),
    params(("id" = Uuid, Path, description = "The task"),
        ("document_id" = Uuid, Path, description = "The document"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(task_id = %ids.0, document_id = %ids.1))]
async fn remove_from_task(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(ids): Path<(String, String)>,
    OptionalJson(body): OptionalJson<RemoveDocument>,
) -> Result<Accepted> {
    let result = remove(&state, &auth, Target::Task, ids, expected, body).await;
    observe("remove_task_document", &result);
    result
}

/// Remove a workflow instance's document
///
/// Whoever attached it, operators and admins, while the instance runs. The document is no
/// longer listed; its events and content stay for the audit trail.
#[utoipa::path(post, path = "/api/v1/workflow-instances/{id}/documents/{document_id}/remove", operation_id = "remove_instance_document", tag = "documents",
    request_body(content = Option<RemoveDocument>, description = "Optional: `{\"reason\": ...}`"),
    params(("id" = Uuid, Path, description = "The workflow instance"),
        ("document_id" = Uuid, Path, description = "The document"), CommandHeaders),
    responses(Applied, Problems), security(("bearer" = [])))]
#[instrument(skip_all, fields(instance_id = %ids.0, document_id = %ids.1))]
async fn remove_from_instance(
    State(state): State<CommandState>,
    auth: Auth,
    IfMatch(expected): IfMatch,
    Path(ids): Path<(String, String)>,
    OptionalJson(body): OptionalJson<RemoveDocument>,
) -> Result<Accepted> {
    let result = remove(&state, &auth, Target::Instance, ids, expected, body).await;
    observe("remove_instance_document", &result);
    result
}
