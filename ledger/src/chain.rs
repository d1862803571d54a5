//! The hash chain's anchors: the ledger id, the genesis link derived from it, and the `seq:hash`
//! checkpoints a user keeps to detect truncation or rewriting later.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::ChainHash;
use crate::error::Error;

/// blake3 `derive_key` context for the genesis link. Part of the format: never change it.
pub const GENESIS_CONTEXT: &str = "fleetlog 2026-11 genesis prev v1";

/// A random 16-byte id made when a ledger is created, so two ledgers never share a chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LedgerId(
    #[serde(with = "hex_16")]
    #[schemars(with = "String")]
    pub [u8; 16],
);

impl LedgerId {
    pub fn random() -> Result<Self, Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|error| {
            Error::Io(std::io::Error::other(format!(
                "the OS random source failed: {error}"
            )))
        })?;
        Ok(LedgerId(bytes))
    }

    /// The `prev` of record 1.
    pub fn genesis_prev(&self) -> ChainHash {
        ChainHash(blake3::derive_key(GENESIS_CONTEXT, &self.0))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for LedgerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LedgerId({})", self.to_hex())
    }
}

impl fmt::Display for LedgerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

mod hex_16 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 16], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 16], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(&text, &mut bytes).map_err(serde::de::Error::custom)?;
        Ok(bytes)
    }
}

/// A position in the chain: the hash of record `seq`. `seq` 0 means "empty ledger", whose hash
/// is the genesis link. Printed and parsed as `seq:hexhash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: ChainHash,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl FromStr for Checkpoint {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::BadCheckpoint {
            text: text.to_owned(),
            problem: why.to_owned(),
        };
        let (seq, hash) = text
            .split_once(':')
            .ok_or_else(|| bad("expected SEQ:HASH, as printed by `fleetlog head`"))?;
        let seq = seq.parse().map_err(|_| bad("SEQ is not a whole number"))?;
        let hash =
            ChainHash::from_hex(hash).map_err(|_| bad("HASH is not 64 hexadecimal digits"))?;
        Ok(Checkpoint { seq, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_differs_per_ledger_and_is_stable() {
        let a = LedgerId([1; 16]);
        let b = LedgerId([2; 16]);
        assert_ne!(a.genesis_prev(), b.genesis_prev());
        assert_eq!(a.genesis_prev(), LedgerId([1; 16]).genesis_prev());
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_garbage() {
        let checkpoint = Checkpoint {
            seq: 77,
            hash: ChainHash([0xab; 32]),
        };
        let text = checkpoint.to_string();
        assert_eq!(text.parse::<Checkpoint>().expect("round trip"), checkpoint);
        for bad in ["", "77", "x:ab", "77:abc", "77:zz"] {
            assert!(bad.parse::<Checkpoint>().is_err(), "{bad:?} parsed");
        }
    }
}
