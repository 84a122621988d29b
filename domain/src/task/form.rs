//! Checking a task's output against its form.

use chrono::{DateTime, NaiveDate};
use event_schemas::{FieldType, FormField};
use serde_json::{Map, Value};

use crate::error::{Issue, IssueCode};

/// Every problem of `output` against `form`, one per field. Keys the form does not name are
/// allowed: they become instance variables like the others.
pub fn check_output(form: &[FormField], output: &Map<String, Value>) -> Vec<Issue> {
    let mut issues = Vec::new();
    for field in form {
        match output.get(&field.id) {
            None | Some(Value::Null) => {
                if field.required {
                    issues.push(Issue::field(
                        &field.id,
                        IssueCode::Required,
                        format!("{} is required", field.id),
                    ));
                }
            }
            Some(value) if !fits(field.field_type, value) => issues.push(Issue::field(
                &field.id,
                IssueCode::InvalidType,
                format!("{} must be {}", field.id, describe(field.field_type)),
            )),
            Some(_) => {}
        }
    }
    issues
}

fn fits(field_type: FieldType, value: &Value) -> bool {
    match field_type {
        FieldType::String => value.is_string(),
        FieldType::Number => value.is_number(),
        FieldType::Integer => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        FieldType::Boolean => value.is_boolean(),
        FieldType::Date => value
            .as_str()
            .is_some_and(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
        FieldType::Datetime => value
            .as_str()
            .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok()),
        FieldType::Object => value.is_object(),
        FieldType::Array => value.is_array(),
    }
}

fn describe(field_type: FieldType) -> &'static str {
    match field_type {
        FieldType::String => "a string",
        FieldType::Number => "a number",
        FieldType::Integer => "a whole number",
        FieldType::Boolean => "true or false",
        FieldType::Date => "a date YYYY-MM-DD",
        FieldType::Datetime => "an RFC 3339 timestamp",
        FieldType::Object => "an object",
        FieldType::Array => "a list",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(id: &str, field_type: FieldType, required: bool) -> FormField {
        FormField {
            id: id.into(),
            field_type,
            required,
            label: None,
        }
    }

    #[test]
    fn output_is_checked_field_by_field() {
        let form = vec![
            field("amount", FieldType::Number, true),
            field("count", FieldType::Integer, false),
            field("ok", FieldType::Boolean, true),
            field("day", FieldType::Date, false),
            field("at", FieldType::Datetime, false),
            field("note", FieldType::String, false),
        ];
        let good = json!({"amount": 1.5, "count": 3, "ok": false, "day": "2026-02-28",
                          "at": "2026-02-28T10:00:00+01:00", "note": null, "extra": [1]});
        assert!(check_output(&form, good.as_object().unwrap()).is_empty());
        let bad = json!({"count": 1.5, "ok": "yes", "day": "28.02.2026", "at": "noon"});
        let issues = check_output(&form, bad.as_object().unwrap());
        let found: Vec<_> = issues
            .iter()
            .map(|i| (i.field.as_deref().unwrap(), i.code))
            .collect();
        assert_eq!(
            found,
            vec![
                ("amount", IssueCode::Required),
                ("count", IssueCode::InvalidType),
                ("ok", IssueCode::InvalidType),
                ("day", IssueCode::InvalidType),
                ("at", IssueCode::InvalidType),
            ]
        );
    }
}
