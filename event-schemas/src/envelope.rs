//! An event as the global log delivers it: its place in the log and everything stored with it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A place in the global log: `(tx_id, global_position)`, compared in that order.
///
/// Positions are handed out at insert, not at commit, so the transaction id comes first: a
/// reader that has passed `(tx, pos)` has seen every event of every transaction below `tx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition {
    pub tx_id: u64,
    pub global_position: i64,
}

impl LogPosition {
    /// Before the first event.
    pub const START: LogPosition = LogPosition {
        tx_id: 0,
        global_position: 0,
    };
}

/// Written as `tx_id.global_position`: the consistency token clients carry between a command
/// and the query that should see it.
impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tx_id, self.global_position)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a log position (expected `TX.POSITION`, two whole numbers): {0:?}")]
pub struct ParsePositionError(String);

impl FromStr for LogPosition {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError(s.to_owned());
        let (tx, pos) = s.split_once('.').ok_or_else(err)?;
        Ok(Self {
            tx_id: tx.parse().map_err(|_| err())?,
            global_position: pos.parse().map_err(|_| err())?,
        })
    }
}

impl Serialize for LogPosition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogPosition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One event read from the global log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub position: LogPosition,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The aggregate's version after this event (1 for its first event).
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    /// Stored metadata as written (see [`crate::EventMetadata`] for the typed view).
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_transaction_first() {
        let early_tx_late_pos = LogPosition {
            tx_id: 10,
            global_position: 99,
        };
        let late_tx_early_pos = LogPosition {
            tx_id: 11,
            global_position: 1,
        };
        assert!(early_tx_late_pos < late_tx_early_pos);
    }

    #[test]
    fn positions_round_trip_as_tokens() {
        let p = LogPosition {
            tx_id: 7_000_000_001,
            global_position: 42,
        };
        assert_eq!(p.to_string(), "7000000001.42");
        assert_eq!("7000000001.42".parse::<LogPosition>().unwrap(), p);
        assert!("42".parse::<LogPosition>().is_err());
        assert!("a.b".parse::<LogPosition>().is_err());
    }
}
