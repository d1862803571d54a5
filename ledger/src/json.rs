//! Canonical JSON payloads: [`Json`] holds a payload as its compact text, so the bytes hashed into
//! the chain are the bytes stored and the bytes served.

use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Free-form JSON, stored as compact canonical text (object keys sorted), because bincode cannot
/// encode `serde_json::Value`. Canonical text makes a JSON Lines export re-encode to the exact
/// bytes that were hashed, so an import can re-verify the chain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Json(String);

impl Json {
    pub fn null() -> Self {
        Json("null".to_owned())
    }

    /// Parses JSON text and stores it canonically.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        Ok(Self::from_value(&value))
    }

    pub fn from_value(value: &serde_json::Value) -> Self {
        Json(value.to_string())
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).expect("Json always holds valid JSON text")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Json {
    fn default() -> Self {
        Json::null()
    }
}

impl Encode for Json {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode(encoder)
    }
}

impl<Context> Decode<Context> for Json {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        // The chain hash already vouches for these bytes; re-parsing here would double the cost
        // of replay for no gain.
        Ok(Json(String::decode(decoder)?))
    }
}
bincode::impl_borrow_decode!(Json);

impl schemars::JsonSchema for Json {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Json".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "description": "any JSON value" })
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Json::from_value(&value))
    }
}
