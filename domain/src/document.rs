//! Documents: files attached to a task or a workflow instance (a quote on a purchase order, a
//! signed contract on a review task). The aggregate they belong to records which file is which
//! document and who attached or removed it; the content itself is stored outside the log, by
//! digest, before the command is sent (see the command API).
//!
//! Who may do what (the aggregate decides who may attach):
//! - remove: whoever attached the document, and operators and admins;
//! - a document id is used once per aggregate, even after its document was removed;
//! - at most [`MAX_DOCUMENTS`] documents are attached at a time.

use event_schemas::{Actor, DocumentFile, Role};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::caller::Caller;
use crate::error::{ErrorKind, Issue, IssueCode, Rejection};
use crate::text;

/// The most documents attached to one task or instance at a time.
pub const MAX_DOCUMENTS: usize = 100;
/// The longest file name, in characters.
pub const MAX_FILE_NAME: usize = 255;
/// The longest media type, in characters.
pub const MAX_MEDIA_TYPE: usize = 255;

/// What can be asked of a task's or instance's documents.
#[derive(Debug, Clone, PartialEq)]
pub enum DocumentCommand {
    /// Attach a file whose content is stored already.
    Attach(DocumentFile),
    /// Take a document off; its events and content stay for the audit.
    Remove {
        document_id: Uuid,
        reason: Option<String>,
    },
}

/// Why a document command was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocumentError {
    #[error("document {document_id} is not attached here")]
    NotFound { document_id: Uuid },
    #[error("document id {document_id} is taken; attach with a new id")]
    AlreadyAttached { document_id: Uuid },
    #[error("at most {max} documents may be attached at a time; remove one first")]
    TooMany { max: usize },
    #[error("only whoever attached the document, operators and admins may remove it")]
    NotAttacher,
    #[error("the document is invalid: {}", crate::error::first_issue(.issues))]
    Invalid { issues: Vec<Issue> },
}

impl Rejection for DocumentError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyAttached { .. } | Self::TooMany { .. } => ErrorKind::Conflict,
            Self::NotAttacher => ErrorKind::Forbidden,
            Self::Invalid { .. } => ErrorKind::Validation,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "document_not_found",
            Self::AlreadyAttached { .. } => "document_exists",
            Self::TooMany { .. } => "too_many_documents",
            Self::NotAttacher => "not_attacher",
            Self::Invalid { .. } => "invalid_document",
        }
    }

    fn issues(&self) -> &[Issue] {
        match self {
            Self::Invalid { issues } => issues,
            _ => &[],
        }
    }
}

/// One document of an aggregate, as far as its commands need to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Attached {
    document_id: Uuid,
    attached_by: Actor,
    removed: bool,
}

/// The documents of a task or instance: every id ever attached, and whether it was removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Documents(Vec<Attached>);

impl Documents {
    /// Checks that `file` may be attached (the caller's right to attach is the aggregate's).
    pub fn check_attach(&self, file: &DocumentFile) -> Result<(), DocumentError> {
        let issues = check_file(file);
        if !issues.is_empty() {
            return Err(DocumentError::Invalid { issues });
        }
        if self.0.iter().any(|d| d.document_id == file.document_id) {
            return Err(DocumentError::AlreadyAttached {
                document_id: file.document_id,
            });
        }
        if self.0.iter().filter(|d| !d.removed).count() >= MAX_DOCUMENTS {
            return Err(DocumentError::TooMany { max: MAX_DOCUMENTS });
        }
        Ok(())
    }

    /// Checks that `caller` may remove `document_id` with `reason`.
    pub fn check_remove(
        &self,
        caller: &Caller,
        document_id: Uuid,
        reason: Option<&str>,
    ) -> Result<(), DocumentError> {
        let Some(attached) = self
            .0
            .iter()
            .find(|d| d.document_id == document_id && !d.removed)
        else {
            return Err(DocumentError::NotFound { document_id });
        };
        if attached.attached_by != caller.actor && !caller.acts_as(Role::Operator) {
            return Err(DocumentError::NotAttacher);
        }
        let mut issues = Vec::new();
        if let Some(reason) = reason {
            text::check_name(reason, "reason", &mut issues);
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(DocumentError::Invalid { issues })
        }
    }

    /// Records an attached document.
    pub fn attached(&mut self, file: &DocumentFile, by: &Actor) {
        self.0.push(Attached {
            document_id: file.document_id,
            attached_by: by.clone(),
            removed: false,
        });
    }

    /// Records a removed document.
    pub fn removed(&mut self, document_id: Uuid) {
        if let Some(attached) = self.0.iter_mut().find(|d| d.document_id == document_id) {
            attached.removed = true;
        }
    }

    /// How many are attached now.
    pub fn count(&self) -> usize {
        self.0.iter().filter(|d| !d.removed).count()
    }
}

/// The issues with a file's name, media type and digest.
pub fn check_file(file: &DocumentFile) -> Vec<Issue> {
    let mut issues = Vec::new();
    check_file_name(&file.name, &mut issues);
    if let Err(message) = check_media_type(&file.media_type) {
        issues.push(Issue::field("media_type", IssueCode::InvalidValue, message));
    }
    let hex = file.sha256.len() == 64
        && file
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        issues.push(Issue::field(
            "sha256",
            IssueCode::InvalidValue,
            "the digest is not 64 lowercase hex digits",
        ));
    }
    issues
}

fn check_file_name(name: &str, issues: &mut Vec<Issue>) {
    let message = if name.trim().is_empty() {
        Some("the file name is empty".to_owned())
    } else if name.chars().count() > MAX_FILE_NAME {
        Some(format!(
            "the file name is longer than {MAX_FILE_NAME} characters"
        ))
    } else if name
        .chars()
        .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        Some("the file name has a control character or a path separator".to_owned())
    } else if name == "." || name == ".." {
        Some("the file name is not a name".to_owned())
    } else {
        None
    };
    if let Some(message) = message {
        let code = if name.trim().is_empty() {
            IssueCode::Empty
        } else {
            IssueCode::InvalidValue
        };
        issues.push(Issue::field("name", code, message));
    }
}

/// A media type as RFC 6838 names them (`type/subtype`), with optional `; parameter=value`s.
pub fn check_media_type(value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_MEDIA_TYPE {
        return Err(format!(
            "the media type is longer than {MAX_MEDIA_TYPE} characters"
        ));
    }
    let essence = value.split(';').next().unwrap_or_default().trim();
    let restricted = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, subtype)) if restricted(kind) && restricted(subtype) => {}
        _ => {
            return Err(format!(
                "{value:?} is not a media type like application/pdf"
            ));
        }
    }
    if value.chars().any(|c| c.is_control()) {
        return Err("the media type has a control character".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, media_type: &str) -> DocumentFile {
        DocumentFile {
            document_id: Uuid::now_v7(),
            name: name.to_owned(),
            media_type: media_type.to_owned(),
            size: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_owned(),
        }
    }

    fn person(role: Role) -> Caller {
        Caller::user("acme", Uuid::now_v7(), [role], Vec::<String>::new())
    }

    fn fields(issues: &[Issue]) -> Vec<&str> {
        issues.iter().filter_map(|i| i.field.as_deref()).collect()
    }

    #[test]
    fn files_need_a_plain_name_a_media_type_and_a_digest() {
        assert!(check_file(&file("quote 114.pdf", "application/pdf")).is_empty());
        assert!(check_file(&file("notes.txt", "text/plain; charset=utf-8")).is_empty());
        assert!(check_file(&file("x.svg", "image/svg+xml")).is_empty());
        for name in ["", "  ", "../etc/passwd", "a\\b", "a\nb", ".."] {
            assert_eq!(
                fields(&check_file(&file(name, "text/plain"))),
                ["name"],
                "{name:?}"
            );
        }
        let long = "n".repeat(MAX_FILE_NAME + 1);
        assert_eq!(fields(&check_file(&file(&long, "text/plain"))), ["name"]);
        for media_type in ["", "pdf", "text/", "/plain", "text/pl ain", "a/b/c"] {
            assert_eq!(
                fields(&check_file(&file("a", media_type))),
                ["media_type"],
                "{media_type:?}"
            );
        }
        let mut bad = file("a", "text/plain");
        bad.sha256 = bad.sha256.to_uppercase();
        assert_eq!(fields(&check_file(&bad)), ["sha256"]);
    }

    #[test]
    fn an_id_is_used_once_and_removal_is_for_the_attacher_or_operators() {
        let uploader = person(Role::Member);
        let colleague = person(Role::Member);
        let operator = person(Role::Operator);
        let mut documents = Documents::default();
        let quote = file("quote.pdf", "application/pdf");
        documents.check_attach(&quote).unwrap();
        documents.attached(&quote, &uploader.actor);
        assert_eq!(
            documents.check_attach(&quote),
            Err(DocumentError::AlreadyAttached {
                document_id: quote.document_id
            })
        );
        let id = quote.document_id;
        assert_eq!(
            documents.check_remove(&colleague, id, None),
            Err(DocumentError::NotAttacher)
        );
        documents
            .check_remove(&uploader, id, Some("wrong file"))
            .unwrap();
        documents.check_remove(&operator, id, None).unwrap();
        let blank = documents.check_remove(&uploader, id, Some(" "));
        assert!(matches!(blank, Err(DocumentError::Invalid { .. })));
        documents.removed(id);
        assert_eq!(documents.count(), 0);
        assert_eq!(
            documents.check_remove(&operator, id, None),
            Err(DocumentError::NotFound { document_id: id })
        );
        // removed, the id stays taken
        assert!(documents.check_attach(&quote).is_err());
    }

    #[test]
    fn at_most_the_limit_is_attached_at_a_time() {
        let uploader = person(Role::Member);
        let mut documents = Documents::default();
        for _ in 0..MAX_DOCUMENTS {
            let f = file("a.txt", "text/plain");
            documents.check_attach(&f).unwrap();
            documents.attached(&f, &uploader.actor);
        }
        let one_more = file("b.txt", "text/plain");
        assert_eq!(
            documents.check_attach(&one_more),
            Err(DocumentError::TooMany { max: MAX_DOCUMENTS })
        );
        let first = documents.0[0].document_id;
        documents.removed(first);
        documents.check_attach(&one_more).unwrap();
    }
}
