//! The only module that knows the byte layout of a stored record (and the only user of bincode).
//!
//! ```text
//! offset  size  field
//! 0       32    prev     hash of the previous record (genesis: derived from the ledger id)
//! 32      32    hash     blake3(prev || bytes 64..)
//! 64      1     version  FORMAT_VERSION
//! 65      ..    body     bincode standard config: seq u64, ts i64, actor String, event Event
//! ```
//!
//! The hash covers the version byte and the body, so each record verifies on its own; `prev`
//! links it to the one before. Appenders encode `(actor, event)` on their own thread
//! ([`encode_entry`]); the writer only prefixes seq and ts and hashes ([`seal`]), because
//! bincode encodes a tuple as its fields back to back.

use std::fmt;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::event::{Event, Timestamp};
use crate::limits::{ACTOR_BYTES_MAX, EVENT_BYTES_MAX};

/// Version of the record layout and event vocabulary written by this build.
pub const FORMAT_VERSION: u8 = 1;

const HASH_AT: usize = 32;
const VERSION_AT: usize = 64;
const BODY_AT: usize = 65;

/// Decoding never allocates more than a record may hold, whatever a corrupted length says.
const DECODE_BYTES_MAX: usize = EVENT_BYTES_MAX + 64;

type Config = Configuration<LittleEndian, Varint, Limit<DECODE_BYTES_MAX>>;

fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_BYTES_MAX>()
}

/// A 32-byte blake3 digest in the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Result<Self, hex::FromHexError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)?;
        Ok(ChainHash(bytes))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl schemars::JsonSchema for ChainHash {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ChainHash".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^[0-9a-f]{64}$" })
    }
}

impl Serialize for ChainHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ChainHash::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// One decoded record of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Record {
    pub seq: u64,
    pub ts: Timestamp,
    pub actor: String,
    pub event: Event,
    pub prev: ChainHash,
    pub hash: ChainHash,
}

/// `(actor, event)` encoded and checked against every limit, ready for the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedEntry {
    pub(crate) bytes: Vec<u8>,
    kind: &'static str,
}

impl EncodedEntry {
    /// The event's kind (`"custom"`, `"lock_acquired"` …).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Validates and encodes one entry. Everything that can make an append fail for its content
/// fails here, on the caller's thread, before the writer sees it.
pub fn encode_entry(actor: &str, event: &Event) -> Result<EncodedEntry, Error> {
    check_actor(actor)?;
    event
        .check_fields()
        .map_err(|problem| Error::InvalidEvent {
            kind: event.kind(),
            field: problem.field,
            problem: problem.problem,
        })?;
    let bytes =
        bincode::encode_to_vec((actor, event), config()).map_err(|error| Error::InvalidEvent {
            kind: event.kind(),
            field: "(encoding)",
            problem: error.to_string(),
        })?;
    if bytes.len() > EVENT_BYTES_MAX {
        return Err(Error::EventTooLarge {
            kind: event.kind(),
            bytes: bytes.len(),
            limit: EVENT_BYTES_MAX,
        });
    }
    Ok(EncodedEntry {
        bytes,
        kind: event.kind(),
    })
}

pub(crate) fn check_actor(actor: &str) -> Result<(), Error> {
    if actor.is_empty() {
        return Err(Error::InvalidActor {
            actor: actor.to_owned(),
            problem: "is empty; every event needs the id of the agent that caused it".to_owned(),
        });
    }
    if actor.len() > ACTOR_BYTES_MAX {
        return Err(Error::InvalidActor {
            actor: actor.chars().take(32).collect::<String>() + "…",
            problem: format!(
                "is {} bytes; the limit is {ACTOR_BYTES_MAX} bytes",
                actor.len()
            ),
        });
    }
    if actor.chars().any(char::is_control) {
        return Err(Error::InvalidActor {
            actor: actor.escape_debug().to_string(),
            problem: "contains control characters".to_owned(),
        });
    }
    Ok(())
}

/// Decodes an entry encoded by [`encode_entry`] back to its actor and event.
pub(crate) fn decode_entry(entry: &EncodedEntry) -> Result<(String, Event), Malformed> {
    let ((actor, event), read): ((String, Event), usize) =
        bincode::decode_from_slice(&entry.bytes, config())
            .map_err(|error| Malformed::Undecodable(error.to_string()))?;
    match read == entry.bytes.len() {
        true => Ok((actor, event)),
        false => Err(Malformed::TrailingBytes(entry.bytes.len() - read)),
    }
}

/// Builds the stored bytes of record `seq` and returns them with the record's hash.
pub fn seal(
    prev: &ChainHash,
    seq: u64,
    ts: Timestamp,
    entry: &EncodedEntry,
) -> (Vec<u8>, ChainHash) {
    let mut value = Vec::with_capacity(BODY_AT + 20 + entry.bytes.len());
    value.extend_from_slice(&prev.0);
    value.extend_from_slice(&[0u8; 32]);
    value.push(FORMAT_VERSION);
    bincode::encode_into_std_write((seq, ts), &mut value, config())
        .expect("encoding two integers into a Vec cannot fail");
    value.extend_from_slice(&entry.bytes);
    let hash = RecordView::new(&value)
        .expect("a freshly sealed record has a full header")
        .computed_hash();
    value[HASH_AT..VERSION_AT].copy_from_slice(&hash.0);
    (value, hash)
}

/// A stored record, read in place: enough to verify the chain without decoding the event.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    bytes: &'a [u8],
}

/// What can be wrong with stored bytes, found while decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    TooShort(usize),
    UnknownVersion(u8),
    Undecodable(String),
    TrailingBytes(usize),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::TooShort(len) => write!(f, "record is {len} bytes, shorter than its header"),
            Malformed::UnknownVersion(version) => write!(
                f,
                "record format version {version} is unknown to this build (it reads version {FORMAT_VERSION}); upgrade fleetlog"
            ),
            Malformed::Undecodable(why) => write!(f, "record body does not decode: {why}"),
            Malformed::TrailingBytes(count) => {
                write!(f, "record body has {count} unexpected trailing bytes")
            }
        }
    }
}

impl<'a> RecordView<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, Malformed> {
        if bytes.len() < BODY_AT {
            return Err(Malformed::TooShort(bytes.len()));
        }
        Ok(RecordView { bytes })
    }

    pub fn prev(&self) -> ChainHash {
        ChainHash(
            self.bytes[..HASH_AT]
                .try_into()
                .expect("header length checked in new()"),
        )
    }

    pub fn stored_hash(&self) -> ChainHash {
        ChainHash(
            self.bytes[HASH_AT..VERSION_AT]
                .try_into()
                .expect("header length checked in new()"),
        )
    }

    pub fn version(&self) -> u8 {
        self.bytes[VERSION_AT]
    }

    /// blake3(prev || version || body): what `stored_hash` must equal.
    pub fn computed_hash(&self) -> ChainHash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.bytes[..HASH_AT]);
        hasher.update(&self.bytes[VERSION_AT..]);
        ChainHash(*hasher.finalize().as_bytes())
    }

    fn check_version(&self) -> Result<(), Malformed> {
        match self.version() {
            FORMAT_VERSION => Ok(()),
            other => Err(Malformed::UnknownVersion(other)),
        }
    }

    /// Decodes only `(seq, ts)`: what verify needs beyond the hashes.
    pub fn seq_ts(&self) -> Result<(u64, Timestamp), Malformed> {
        self.check_version()?;
        let ((seq, ts), _): ((u64, Timestamp), usize) =
            bincode::decode_from_slice(&self.bytes[BODY_AT..], config())
                .map_err(|error| Malformed::Undecodable(error.to_string()))?;
        Ok((seq, ts))
    }

    /// Decodes the whole record.
    pub fn decode(&self) -> Result<Record, Malformed> {
        self.check_version()?;
        let body = &self.bytes[BODY_AT..];
        let ((seq, ts, actor, event), read): ((u64, Timestamp, String, Event), usize) =
            bincode::decode_from_slice(body, config())
                .map_err(|error| Malformed::Undecodable(error.to_string()))?;
        if read != body.len() {
            return Err(Malformed::TrailingBytes(body.len() - read));
        }
        Ok(Record {
            seq,
            ts,
            actor,
            event,
            prev: self.prev(),
            hash: self.stored_hash(),
        })
    }
}

/// Re-encodes a decoded record to its stored bytes: used by import to check that a record read
/// from JSON is exactly the one that was hashed.
pub fn reseal(record: &Record) -> Result<(Vec<u8>, ChainHash), Error> {
    let entry = encode_entry(&record.actor, &record.event)?;
    Ok(seal(&record.prev, record.seq, record.ts, &entry))
}

/// Encodes a small fixed-layout value for the meta and idempotency tables.
pub(crate) fn encode_u64(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Json;

    fn custom(payload: &str) -> Event {
        Event::Custom {
            kind: "note".to_owned(),
            payload: Json::parse(payload).expect("test payload is valid JSON"),
        }
    }

    #[test]
    fn sealed_record_decodes_to_its_fields_and_verifies() {
        let prev = ChainHash([7; 32]);
        let event = custom(r#"{"b":1,"a":[true,null]}"#);
        let entry = encode_entry("agent-1", &event).expect("valid entry");
        let (bytes, hash) = seal(&prev, 42, Timestamp(1_700_000_000_000_123), &entry);
        let view = RecordView::new(&bytes).expect("full header");
        assert_eq!(view.computed_hash(), hash);
        assert_eq!(view.stored_hash(), hash);
        assert_eq!(view.seq_ts(), Ok((42, Timestamp(1_700_000_000_000_123))));
        let record = view.decode().expect("decodes");
        assert_eq!(record.seq, 42);
        assert_eq!(record.actor, "agent-1");
        assert_eq!(record.event, event);
        assert_eq!(record.prev, prev);
        assert_eq!(reseal(&record).expect("reseal").0, bytes);
    }

    #[test]
    fn any_flipped_byte_changes_the_hash_or_breaks_decoding() {
        let entry = encode_entry("a", &custom(r#"{"k":"v"}"#)).expect("valid entry");
        let (bytes, hash) = seal(&ChainHash([1; 32]), 1, Timestamp(5), &entry);
        for at in 0..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[at] ^= 0x01;
            let view = RecordView::new(&tampered).expect("same length");
            let caught = view.computed_hash() != view.stored_hash() || view.stored_hash() != hash;
            assert!(caught, "flip at byte {at} went unnoticed");
        }
    }

    #[test]
    fn unknown_version_is_named() {
        let entry = encode_entry("a", &custom("1")).expect("valid entry");
        let (mut bytes, _) = seal(&ChainHash::default(), 1, Timestamp(1), &entry);
        bytes[VERSION_AT] = 9;
        let error = RecordView::new(&bytes)
            .expect("header")
            .decode()
            .unwrap_err();
        assert_eq!(error, Malformed::UnknownVersion(9));
        assert!(error.to_string().contains("upgrade fleetlog"));
    }

    #[test]
    fn times_outside_years_1_to_9999_are_refused_and_ttls_saturate() {
        let event = Event::LockAcquired {
            resource: "r".to_owned(),
            intent: "edit".to_owned(),
            ttl_ms: 1,
            requested_at: Timestamp(i64::MAX),
            takeover_of: None,
        };
        let error = encode_entry("a", &event).unwrap_err();
        assert!(error.to_string().contains("`requested_at`"), "{error}");
        assert_eq!(Timestamp::MAX.plus_millis(u64::MAX), Timestamp::MAX);
        assert!(Timestamp::parse_rfc3339("+10000-01-01T00:00:00Z").is_err());
        assert!(Timestamp(i64::MIN).to_string().contains("unrepresentable"));
        assert!(serde_json::to_string(&Timestamp(i64::MAX)).is_err());
        let max = Timestamp::MAX.to_string();
        assert_eq!(max, "9999-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp::parse_rfc3339(&max), Ok(Timestamp::MAX));
        assert_eq!(Timestamp::MIN.to_string(), "0001-01-01T00:00:00.000000Z");
    }

    #[test]
    fn oversized_event_and_bad_actors_are_refused() {
        let big = format!("\"{}\"", "x".repeat(EVENT_BYTES_MAX));
        let error = encode_entry("a", &custom(&big)).unwrap_err();
        assert!(matches!(error, Error::EventTooLarge { .. }), "{error}");
        assert!(matches!(
            encode_entry("", &custom("1")),
            Err(Error::InvalidActor { .. })
        ));
        assert!(matches!(
            encode_entry(&"a".repeat(ACTOR_BYTES_MAX + 1), &custom("1")),
            Err(Error::InvalidActor { .. })
        ));
        assert!(matches!(
            encode_entry("a\nb", &custom("1")),
            Err(Error::InvalidActor { .. })
        ));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::event::{Json, Outcome, SignalTarget};

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn event() -> impl Strategy<Value = Event> {
        let text = ".{0,24}";
        prop_oneof![
            (text, json_value()).prop_map(|(kind, payload)| Event::Custom {
                kind,
                payload: Json::from_value(&payload),
            }),
            (text, proptest::option::of(0.0f64..=1.0), any::<u64>()).prop_map(
                |(status, progress, ttl_ms)| Event::AgentHeartbeat {
                    status,
                    progress,
                    current_task: None,
                    metadata: Json::null(),
                    ttl_ms,
                }
            ),
            (
                text,
                proptest::option::of(text),
                json_value(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(kind, target, payload, correlation_id)| {
                    Event::SignalSent {
                        kind,
                        target: target.map_or(SignalTarget::Broadcast, SignalTarget::Agent),
                        payload: Json::from_value(&payload),
                        ttl_ms: 60_000,
                        correlation_id,
                    }
                }),
            (
                text,
                0.0f64..1e9,
                any::<u64>(),
                any::<i32>(),
                prop::collection::vec(text, 0..3)
            )
                .prop_map(|(stage, cost_usd, tokens, priority, tags)| {
                    Event::StageCompleted {
                        workflow_id: format!("wf-{priority}"),
                        stage,
                        agent: "agent".to_owned(),
                        tier: "standard".to_owned(),
                        outcome: Outcome::Partial,
                        duration_ms: tokens / 3,
                        cost_usd,
                        tokens,
                        description: String::new(),
                        tags,
                        quality: None,
                        occurred_at: Some(Timestamp(i64::from(priority) * 1_000_003)),
                    }
                }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip_through_bytes_and_json_with_the_same_hash(
            event in event(),
            actor in "[a-z][a-z0-9-]{0,20}",
            seq in 1u64..u64::MAX,
            ts in Timestamp::MIN.0..=Timestamp::MAX.0,
            prev in any::<[u8; 32]>(),
        ) {
            let entry = encode_entry(&actor, &event).expect("generated events are valid");
            let (bytes, hash) = seal(&ChainHash(prev), seq, Timestamp(ts), &entry);
            let record = RecordView::new(&bytes).expect("header").decode().expect("decodes");
            prop_assert_eq!(&record.event, &event);
            prop_assert_eq!(record.seq, seq);
            prop_assert_eq!(record.hash, hash);

            let line = serde_json::to_string(&record).expect("serialises");
            let parsed: Record = serde_json::from_str(&line).expect("parses back");
            let (again, rehash) = reseal(&parsed).expect("re-encodes");
            prop_assert_eq!(rehash, hash);
            prop_assert_eq!(again, bytes);
        }
    }
}
