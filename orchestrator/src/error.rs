//! Why a command (or a step of its cascade) did not take effect.

use domain::{ErrorKind, Issue, Rejection};
use event_store::ExecuteError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The domain refused the command; [`Rejection::kind`] says how to answer.
    #[error("{0}")]
    Rejected(Box<dyn Rejection + Send + Sync>),
    /// A definition (or the requested version of it) does not exist in the caller's tenant.
    #[error("workflow definition {key:?}{} does not exist", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    DefinitionNotFound { key: String, version: Option<u32> },
    /// The caller expected another version of the aggregate (`If-Match`).
    #[error("the resource is at version {actual}, not the expected {expected}")]
    VersionMismatch { expected: usize, actual: usize },
    /// Another command changed the aggregate at the same time.
    #[error("another command changed the resource at the same time; retry")]
    Conflict,
    /// A group could not be resolved to its members.
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
    /// The event store or the database failed.
    #[error("the event store failed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RuntimeError {
    /// How an API should answer: rejections by their kind, races as conflicts; `None` for a
    /// failure of ours (500/503).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            RuntimeError::Rejected(r) => Some(r.kind()),
            RuntimeError::DefinitionNotFound { .. } => Some(ErrorKind::NotFound),
            RuntimeError::VersionMismatch { .. } | RuntimeError::Conflict => {
                Some(ErrorKind::Conflict)
            }
            RuntimeError::Directory(_) | RuntimeError::Store(_) => None,
        }
    }

    /// The stable machine code of a rejection.
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::Rejected(r) => r.code(),
            RuntimeError::DefinitionNotFound { .. } => "definition_not_found",
            RuntimeError::VersionMismatch { .. } => "version_mismatch",
            RuntimeError::Conflict => "concurrent_modification",
            RuntimeError::Directory(_) => "directory_unavailable",
            RuntimeError::Store(_) => "store_failed",
        }
    }

    /// Field- or step-level issues of a rejection.
    pub fn issues(&self) -> &[Issue] {
        match self {
            RuntimeError::Rejected(r) => r.issues(),
            _ => &[],
        }
    }

    /// Whether trying again later may succeed (infrastructure), as opposed to a decision.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RuntimeError::Store(_) | RuntimeError::Directory(_) | RuntimeError::Conflict
        )
    }
}

impl<E> From<ExecuteError<E>> for RuntimeError
where
    E: Rejection + Send + Sync + 'static,
{
    fn from(error: ExecuteError<E>) -> Self {
        match error {
            ExecuteError::Rejected(e) => RuntimeError::Rejected(Box::new(e)),
            ExecuteError::VersionMismatch { expected, actual } => {
                RuntimeError::VersionMismatch { expected, actual }
            }
            ExecuteError::Conflict => RuntimeError::Conflict,
            ExecuteError::Store(e) => RuntimeError::Store(e),
        }
    }
}
