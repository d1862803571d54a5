//! Time in the ledger: [`Timestamp`], microseconds since the Unix epoch in UTC, written as RFC
//! 3339 in JSON and as an `i64` on disk.

use std::fmt;

use bincode::{Decode, Encode};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time: microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// 0001-01-01T00:00:00Z: the earliest time RFC 3339 (and so a JSON export) can express.
    pub const MIN: Timestamp = Timestamp(-62_135_596_800_000_000);
    /// 9999-12-31T23:59:59.999999Z: the latest.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);

    /// The wall clock now. Only the writer calls this: projections take time from events.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_micros())
    }

    pub fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// Whether the time lies in `MIN..=MAX`; events may only carry such times.
    pub fn is_representable(self) -> bool {
        (Self::MIN..=Self::MAX).contains(&self)
    }

    /// The time as a chrono value; `None` outside `MIN..=MAX`.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        match self.is_representable() {
            true => Utc.timestamp_micros(self.0).single(),
            false => None,
        }
    }

    /// Parses RFC 3339 (`2026-11-23T10:00:00.123456Z`).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed = DateTime::parse_from_rfc3339(text).map_err(|error| {
            TimestampError(format!("{text:?} is not an RFC 3339 time: {error}"))
        })?;
        let ts = Timestamp(parsed.with_timezone(&Utc).timestamp_micros());
        match ts.is_representable() {
            true => Ok(ts),
            false => Err(TimestampError(format!(
                "{text:?} is outside years 1 to 9999"
            ))),
        }
    }

    /// `self - millis`, saturating at [`Timestamp::MIN`].
    pub fn minus_millis(self, millis: u64) -> Self {
        let micros = i64::try_from(millis.saturating_mul(1000)).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(micros)).max(Self::MIN)
    }

    /// `self + millis`, saturating at [`Timestamp::MAX`] instead of leaving the representable
    /// range on absurd TTLs.
    pub fn plus_millis(self, millis: u64) -> Self {
        let micros = i64::try_from(millis.saturating_mul(1000)).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(micros)).min(Self::MAX)
    }
}

/// A time that cannot be parsed or represented.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimestampError(String);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(time) => f.write_str(&time.to_rfc3339_opts(SecondsFormat::Micros, true)),
            None => write!(f, "<unrepresentable time: {} µs since 1970>", self.0),
        }
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339, UTC, microseconds",
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.is_representable() {
            return Err(serde::ser::Error::custom(format!(
                "time {} µs since 1970 is outside years 1 to 9999",
                self.0
            )));
        }
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}
