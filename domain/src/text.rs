//! Limits on the free text commands carry.

use crate::error::{Issue, IssueCode};

pub(crate) const MAX_NAME: usize = 200;
pub(crate) const MAX_DESCRIPTION: usize = 4000;
pub(crate) const MAX_REASON: usize = 1000;
pub(crate) const MAX_COMMENT: usize = 10_000;

/// A required short text: not blank, at most [`MAX_NAME`] characters.
pub(crate) fn check_name(value: &str, field: &str, issues: &mut Vec<Issue>) {
    if value.trim().is_empty() {
        issues.push(Issue::field(
            field,
            IssueCode::Empty,
            format!("{field} is empty"),
        ));
    } else {
        check_length(value, field, MAX_NAME, issues);
    }
}

/// At most `max` characters.
pub(crate) fn check_length(value: &str, field: &str, max: usize, issues: &mut Vec<Issue>) {
    if value.chars().count() > max {
        issues.push(Issue::field(
            field,
            IssueCode::TooLong,
            format!("{field} is longer than {max} characters"),
        ));
    }
}

/// A comment: not blank, at most [`MAX_COMMENT`] characters.
pub(crate) fn check_comment(text: &str, issues: &mut Vec<Issue>) {
    if text.trim().is_empty() {
        issues.push(Issue::field(
            "text",
            IssueCode::Empty,
            "the comment is empty",
        ));
    } else {
        check_length(text, "text", MAX_COMMENT, issues);
    }
}
