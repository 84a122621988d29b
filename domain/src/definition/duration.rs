//! ISO-8601 durations (`P2D`, `PT4H`, `P1W`, `P1Y2M3DT4H5M6S`) added to instants on the
//! calendar: `P1M` after January 31st is the last day of February.

use std::fmt;

use chrono::{DateTime, Days, Months, TimeDelta, TimeZone, Utc};
use serde::{Serialize, Serializer};

/// A parsed ISO-8601 duration, kept with its source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoDuration {
    source: String,
    months: u64,
    days: u64,
    millis: u64,
}

impl IsoDuration {
    /// Parses `source`, which must be a complete ISO-8601 duration.
    pub fn parse(source: &str) -> Result<Self, String> {
        let invalid = || format!("{source:?} is not an ISO-8601 duration such as P2D or PT4H");
        // The parser takes "PT" for zero; ISO-8601 wants at least one number.
        let parsed = match iso8601::parsers::parse_duration(source.as_bytes()) {
            Ok((rest, parsed)) if rest.is_empty() && source.bytes().any(|b| b.is_ascii_digit()) => {
                parsed
            }
            _ => return Err(invalid()),
        };
        let duration = match parsed {
            iso8601::Duration::Weeks(weeks) => Self {
                source: source.to_owned(),
                months: 0,
                days: u64::from(weeks) * 7,
                millis: 0,
            },
            iso8601::Duration::YMDHMS {
                year,
                month,
                day,
                hour,
                minute,
                second,
                millisecond,
            } => Self {
                source: source.to_owned(),
                months: u64::from(year) * 12 + u64::from(month),
                days: u64::from(day),
                millis: ((u64::from(hour) * 60 + u64::from(minute)) * 60 + u64::from(second))
                    * 1000
                    + u64::from(millisecond),
            },
        };
        // Anything a real date cannot be moved by is a mistake, not a deadline.
        let reference = Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).single();
        match reference.and_then(|r| duration.after(r)) {
            Some(_) => Ok(duration),
            None => Err(format!("{source:?} is too long")),
        }
    }

    /// No time at all (`PT0S`).
    pub fn zero() -> Self {
        Self {
            source: "PT0S".to_owned(),
            months: 0,
            days: 0,
            millis: 0,
        }
    }

    /// `instant` moved forward by this duration; `None` if it leaves chrono's range.
    pub fn after(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let months = Months::new(u32::try_from(self.months).ok()?);
        let millis = TimeDelta::try_milliseconds(i64::try_from(self.millis).ok()?)?;
        instant
            .checked_add_months(months)?
            .checked_add_days(Days::new(self.days))?
            .checked_add_signed(millis)
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for IsoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn durations_move_instants_on_the_calendar() {
        let start = at("2026-01-31T10:00:00Z");
        let cases = [
            ("P2D", "2026-02-02T10:00:00Z"),
            ("PT4H30M", "2026-01-31T14:30:00Z"),
            ("P1W", "2026-02-07T10:00:00Z"),
            ("P1M", "2026-02-28T10:00:00Z"),
            ("P1Y2M3DT4H5M6S", "2027-04-03T14:05:06Z"),
            ("PT0S", "2026-01-31T10:00:00Z"),
        ];
        for (duration, expected) in cases {
            let d = IsoDuration::parse(duration).unwrap();
            assert_eq!(d.after(start), Some(at(expected)), "{duration}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "2D",
            "P",
            "P2Dx",
            "PT",
            "tomorrow",
            "P-1D",
            "P4000000000Y",
        ] {
            assert!(IsoDuration::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
