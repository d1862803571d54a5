//! Snapshot encoding of [`State`]: the only place this crate uses bincode (pinned, as in the
//! ledger). A snapshot starts with its own version so an incompatible one is rebuilt from the
//! log instead of misread.

use crate::state::State;

/// Bumped whenever `State`'s shape changes; older snapshots are ignored and the state is
/// rebuilt by full replay.
pub const SNAPSHOT_VERSION: u32 = 8;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn encode(state: &State) -> Vec<u8> {
    let mut bytes = SNAPSHOT_VERSION.to_le_bytes().to_vec();
    bincode::encode_into_std_write(state, &mut bytes, config())
        .expect("encoding into a Vec cannot fail");
    bytes
}

/// `None` when the snapshot is from another version or does not decode.
pub fn decode(bytes: &[u8]) -> Option<State> {
    let version = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    if version != SNAPSHOT_VERSION {
        return None;
    }
    let (state, read): (State, usize) = bincode::decode_from_slice(&bytes[4..], config()).ok()?;
    (read == bytes.len() - 4).then_some(state)
}
