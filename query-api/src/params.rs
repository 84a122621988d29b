//! Query-string parameters: the [`Params`] extractor (api-common's: a bad or unknown one is a
//! 422 naming it), page sizes, ids, instants and user filters.

use std::fmt;
use std::str::FromStr;

use api_common::{ApiError, FieldError};
use chrono::{DateTime, Datelike as _, NaiveDate, NaiveTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

pub(crate) use api_common::Params;

/// A 422 naming `field`.
pub(crate) fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(vec![FieldError::new(field, "invalid", message)])
}

/// The default and largest page sizes.
pub(crate) const DEFAULT_LIMIT: u32 = 50;
pub(crate) const MAX_LIMIT: u32 = 500;

/// The page size asked for, checked.
pub(crate) fn limit(limit: Option<u32>) -> Result<i64, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n.into()),
        n => Err(invalid(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}, not {n}"),
        )),
    }
}

/// A resource id from the path.
pub(crate) fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| invalid("id", format!("{id:?} is not a UUID")))
}

/// `me` (the caller) or a user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserFilter {
    Me,
    User(Uuid),
}

impl UserFilter {
    pub fn resolve(self, me: Uuid) -> Uuid {
        match self {
            UserFilter::Me => me,
            UserFilter::User(id) => id,
        }
    }
}

impl<'de> Deserialize<'de> for UserFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "me" {
            return Ok(UserFilter::Me);
        }
        Uuid::parse_str(&s)
            .map(UserFilter::User)
            .map_err(|_| D::Error::custom(format!("expected `me` or a user id, not {s:?}")))
    }
}

/// An instant: RFC 3339 (`2026-03-02T09:00:00Z`; a `+` offset must be sent as `%2B`) or a
/// date (`2026-03-02`, midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Instant(pub DateTime<Utc>);

impl FromStr for Instant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // an unescaped `+` arrives as a space
        let s = s.trim().replace(' ', "+");
        let at = match DateTime::parse_from_rfc3339(&s) {
            Ok(at) => at.with_timezone(&Utc),
            Err(_) => NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .map(|d| d.and_time(NaiveTime::MIN).and_utc())
                .map_err(|_| {
                    format!("expected an RFC 3339 time or a date (YYYY-MM-DD), not {s:?}")
                })?,
        };
        // chrono reads signed years of any width; Postgres keeps 4713 BC to 294276 AD
        if !(1..=9999).contains(&at.year()) {
            return Err(format!("{s:?} is not in the years 1 to 9999"));
        }
        Ok(Instant(at))
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_rfc3339())
    }
}
