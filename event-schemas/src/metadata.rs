//! The metadata every stored event carries (DESIGN §2).
//!
//! cqrs-es keeps metadata as `HashMap<String, String>`; [`EventMetadata`] is its typed face.
//! `event_id` is per event: one command's events share the rest of the metadata, and the
//! repository stamps each event with its own id as it appends it.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const EVENT_ID: &str = "event_id";
pub const TENANT_ID: &str = "tenant_id";
pub const ACTOR: &str = "actor";
pub const CORRELATION_ID: &str = "correlation_id";
pub const CAUSATION_ID: &str = "causation_id";
pub const REQUEST_ID: &str = "request_id";
pub const OCCURRED_AT: &str = "occurred_at";

/// Keys that must be present on every stored event (the `events` table checks them too).
pub const REQUIRED_KEYS: [&str; 7] = [
    EVENT_ID,
    TENANT_ID,
    ACTOR,
    CORRELATION_ID,
    CAUSATION_ID,
    REQUEST_ID,
    OCCURRED_AT,
];

/// Who caused an event: a person (by user id, never by name) or one of Workledger's own services.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Actor {
    User(Uuid),
    Service(String),
}

impl schemars::JsonSchema for Actor {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Actor".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|service:.+)$",
            "description": "who caused it: `user:UUID` (a person, by id) or `service:NAME`"
        })
    }
}

impl Actor {
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Actor::User(id) => Some(*id),
            Actor::Service(_) => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::Service(name) => write!(f, "service:{name}"),
        }
    }
}

impl FromStr for Actor {
    type Err = MetadataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || MetadataError::Invalid {
            key: ACTOR,
            value: s.to_owned(),
        };
        match s.split_once(':') {
            Some(("user", id)) => Uuid::parse_str(id).map(Actor::User).map_err(|_| invalid()),
            Some(("service", name)) if !name.is_empty() => Ok(Actor::Service(name.to_owned())),
            _ => Err(invalid()),
        }
    }
}

impl TryFrom<String> for Actor {
    type Error = MetadataError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Actor> for String {
    fn from(actor: Actor) -> Self {
        actor.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("event metadata lacks `{0}`")]
    Missing(&'static str),
    #[error("event metadata `{key}` is not valid: {value:?}")]
    Invalid { key: &'static str, value: String },
}

/// The typed metadata of one stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub event_id: Uuid,
    pub tenant_id: String,
    pub actor: Actor,
    /// Shared by everything one request (and the cascade it triggers) caused.
    pub correlation_id: Uuid,
    /// The event or request that caused this one.
    pub causation_id: String,
    pub request_id: String,
    pub occurred_at: DateTime<Utc>,
}

impl EventMetadata {
    /// The map cqrs-es stores, without `event_id` when `with_event_id` is false (the
    /// repository stamps a fresh one per event).
    pub fn to_map(&self, with_event_id: bool) -> HashMap<String, String> {
        let mut map = HashMap::with_capacity(REQUIRED_KEYS.len());
        if with_event_id {
            map.insert(EVENT_ID.to_owned(), self.event_id.to_string());
        }
        map.insert(TENANT_ID.to_owned(), self.tenant_id.clone());
        map.insert(ACTOR.to_owned(), self.actor.to_string());
        map.insert(CORRELATION_ID.to_owned(), self.correlation_id.to_string());
        map.insert(CAUSATION_ID.to_owned(), self.causation_id.clone());
        map.insert(REQUEST_ID.to_owned(), self.request_id.clone());
        map.insert(
            OCCURRED_AT.to_owned(),
            self.occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        );
        map
    }

    /// Reads the metadata of a stored event.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, MetadataError> {
        let get = |key: &'static str| map.get(key).ok_or(MetadataError::Missing(key));
        let invalid = |key: &'static str, value: &str| MetadataError::Invalid {
            key,
            value: value.to_owned(),
        };
        let uuid = |key: &'static str| {
            let value = get(key)?;
            Uuid::parse_str(value).map_err(|_| invalid(key, value))
        };
        let occurred_at = get(OCCURRED_AT)?;
        Ok(Self {
            event_id: uuid(EVENT_ID)?,
            tenant_id: get(TENANT_ID)?.clone(),
            actor: get(ACTOR)?.parse()?,
            correlation_id: uuid(CORRELATION_ID)?,
            causation_id: get(CAUSATION_ID)?.clone(),
            request_id: get(REQUEST_ID)?.clone(),
            occurred_at: DateTime::parse_from_rfc3339(occurred_at)
                .map_err(|_| invalid(OCCURRED_AT, occurred_at))?
                .with_timezone(&Utc),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventMetadata {
        EventMetadata {
            event_id: Uuid::now_v7(),
            tenant_id: "acme".into(),
            actor: Actor::User(Uuid::now_v7()),
            correlation_id: Uuid::now_v7(),
            causation_id: "req-1".into(),
            request_id: "req-1".into(),
            occurred_at: DateTime::parse_from_rfc3339("2026-11-26T10:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn metadata_survives_the_cqrs_es_map() {
        let meta = sample();
        assert_eq!(EventMetadata::from_map(&meta.to_map(true)).unwrap(), meta);
    }

    #[test]
    fn a_map_without_an_event_id_is_rejected_by_name() {
        let map = sample().to_map(false);
        assert_eq!(
            EventMetadata::from_map(&map),
            Err(MetadataError::Missing(EVENT_ID))
        );
    }

    #[test]
    fn actors_round_trip_and_reject_garbage() {
        let user = Actor::User(Uuid::nil());
        assert_eq!(user.to_string().parse::<Actor>().unwrap(), user);
        assert_eq!(
            "service:orchestrator".parse::<Actor>().unwrap(),
            Actor::Service("orchestrator".into())
        );
        assert!("user:not-a-uuid".parse::<Actor>().is_err());
        assert!("robot".parse::<Actor>().is_err());
        assert!("service:".parse::<Actor>().is_err());
    }
}
