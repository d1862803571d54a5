//! Who may act as whom. Every command acts as its `agent`; in authenticated mode the daemon
//! (and the embedded CLI) accept it only with that agent's credential or the operator's.
//!
//! Credentials are derived, not stored: an agent's is a keyed blake3 hash of its id and the seq
//! of the `agent_registered` record that made its current registration, under a secret key
//! kept beside the database (`<db>.keys/daemon.key`, 0600). So registering again rotates it,
//! deregistering voids it, a retried registration answers the same one, and nothing secret
//! enters the ledger or the projections. The operator's credential is derived from the same key.
//!
//! Clients keep what they were issued in `<db>.keys/agents/<agent>` (0600), and the CLI sends
//! it without the user copying secrets; `FLEETLOG_CREDENTIAL` overrides the files.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use fleetlog_projections::{Command, State};
use subtle::ConstantTimeEq;

/// The request header that carries a credential.
pub const CREDENTIAL_HEADER: &str = "fleetlog-credential";
/// The environment variable a credential may come from instead of the files.
pub const CREDENTIAL_ENV: &str = "FLEETLOG_CREDENTIAL";

const AGENT_PREFIX: &str = "fla_";
const OPERATOR_PREFIX: &str = "flo_";

/// A refused identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "this command acts as agent {agent:?} but carries no credential: send the one issued when {agent:?} registered in the Fleetlog-Credential header (the CLI reads {stored}, or FLEETLOG_CREDENTIAL), or the operator's"
    )]
    CredentialRequired { agent: String, stored: String },
    #[error(
        "the credential sent is not agent {agent:?}'s (nor the operator's): an agent may act only as itself. Use {agent:?}'s own credential ({stored}); it changes each time {agent:?} registers"
    )]
    WrongCredential { agent: String, stored: String },
    #[error("the identity files at {path}: {cause}")]
    Files { path: PathBuf, cause: String },
}

impl IdentityError {
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::CredentialRequired { .. } => "credential_required",
            IdentityError::WrongCredential { .. } => "wrong_credential",
            IdentityError::Files { .. } => "identity_files",
        }
    }

    pub fn agent(&self) -> Option<&str> {
        match self {
            IdentityError::CredentialRequired { agent, .. }
            | IdentityError::WrongCredential { agent, .. } => Some(agent),
            IdentityError::Files { .. } => None,
        }
    }
}

/// Where a database's identity files live: `<db>.keys/`.
pub fn keys_dir(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".keys");
    db.with_file_name(name)
}

/// The file an agent's credential is kept in. Ids are percent-encoded so any id is one safe
/// file name.
pub fn agent_file(db: &Path, agent: &str) -> PathBuf {
    let mut name = String::with_capacity(agent.len());
    for byte in agent.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => name.push(byte as char),
            b'.' if !name.is_empty() => name.push('.'),
            _ => name.push_str(&format!("%{byte:02X}")),
        }
    }
    keys_dir(db).join("agents").join(name)
}

pub fn operator_file(db: &Path) -> PathBuf {
    keys_dir(db).join("operator")
}

/// The secret key credentials are derived from.
#[derive(Clone)]
pub struct Keys {
    key: [u8; 32],
    db: PathBuf,
}

impl Keys {
    /// Reads the database's key, creating it (and the operator's credential file) on first use.
    /// Concurrent first users race safely: one creates the file, the others read it.
    pub fn load_or_create(db: &Path) -> Result<Keys, IdentityError> {
        let dir = keys_dir(db);
        let files = |cause: std::io::Error| IdentityError::Files {
            path: dir.clone(),
            cause: cause.to_string(),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("agents"))
            .map_err(files)?;
        let path = dir.join("daemon.key");
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|error| IdentityError::Files {
            path: path.clone(),
            cause: format!("no randomness for a new key: {error}"),
        })?;
        let written = write_new(&path, hex::encode(fresh).as_bytes());
        match written {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(files(error)),
        }
        let text = std::fs::read_to_string(&path).map_err(files)?;
        let key = hex::decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| IdentityError::Files {
                path: path.clone(),
                cause: "not a 64-digit hex key: restore it from a backup, or delete it to issue new credentials to every agent (they must register again)".to_owned(),
            })?;
        let keys = Keys {
            key,
            db: db.to_owned(),
        };
        let operator = operator_file(db);
        match write_new(&operator, keys.operator_credential().as_bytes()) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(files(error)),
        }
        Ok(keys)
    }

    /// The credential of `agent` as registered by the record at `registered_seq`.
    pub fn agent_credential(&self, agent: &str, registered_seq: u64) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(b"fleetlog agent credential v1\0");
        hasher.update(&(agent.len() as u64).to_le_bytes());
        hasher.update(agent.as_bytes());
        hasher.update(&registered_seq.to_le_bytes());
        format!("{AGENT_PREFIX}{}", hasher.finalize().to_hex())
    }

    pub fn operator_credential(&self) -> String {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(b"fleetlog operator credential v1\0");
        format!("{OPERATOR_PREFIX}{}", hasher.finalize().to_hex())
    }

    /// Whether `presented` may run `command` against `state`. A command for an agent that is
    /// not registered passes (it is refused as `unknown_agent`, or, for `register`, makes a new
    /// identity); a registered agent's commands, re-registration included, need its credential.
    pub fn check(
        &self,
        state: &State,
        command: &Command,
        presented: Option<&str>,
    ) -> Result<(), IdentityError> {
        let agent = command.agent();
        let Some(registered_seq) = state
            .agents
            .by_id
            .get(agent)
            .filter(|_| state.agents.is_member(agent))
            .map(|registered| registered.registered_seq)
        else {
            return Ok(());
        };
        let stored = agent_file(&self.db, agent).display().to_string();
        let Some(presented) = presented else {
            return Err(IdentityError::CredentialRequired {
                agent: agent.to_owned(),
                stored,
            });
        };
        let same = |expected: String| bool::from(expected.as_bytes().ct_eq(presented.as_bytes()));
        match same(self.agent_credential(agent, registered_seq)) || same(self.operator_credential())
        {
            true => Ok(()),
            false => Err(IdentityError::WrongCredential {
                agent: agent.to_owned(),
                stored,
            }),
        }
    }
}

/// Creates `path` with mode 0600 and `contents`; fails with `AlreadyExists` if it is there.
fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Keeps an issued credential where the CLI and clients look for it (0600, replacing any
/// older one atomically).
pub fn store_agent_credential(db: &Path, agent: &str, credential: &str) -> std::io::Result<()> {
    let path = agent_file(db, agent);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut temporary = path.clone().into_os_string();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    write_new(&temporary, credential.as_bytes())?;
    std::fs::rename(&temporary, &path)
}

/// The credential to act as `agent`: `FLEETLOG_CREDENTIAL` if set, else the operator's with
/// `as_operator`, else the one stored for `agent`.
pub fn credential_for(db: Option<&Path>, agent: &str, as_operator: bool) -> Option<String> {
    if let Some(credential) = std::env::var(CREDENTIAL_ENV)
        .ok()
        .filter(|credential| !credential.trim().is_empty())
    {
        return Some(credential.trim().to_owned());
    }
    let db = db?;
    let path = match as_operator {
        true => operator_file(db),
        false => agent_file(db, agent),
    };
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_differ_by_agent_registration_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fleet.redb");
        let keys = Keys::load_or_create(&db).expect("keys");
        let again = Keys::load_or_create(&db).expect("the same keys");
        assert_eq!(
            keys.agent_credential("a", 3),
            again.agent_credential("a", 3)
        );
        assert_ne!(keys.agent_credential("a", 3), keys.agent_credential("a", 4));
        assert_ne!(keys.agent_credential("a", 3), keys.agent_credential("b", 3));
        let other = Keys::load_or_create(&dir.path().join("other.redb")).expect("keys");
        assert_ne!(
            keys.agent_credential("a", 3),
            other.agent_credential("a", 3)
        );
        use std::os::unix::fs::PermissionsExt;
        for file in [keys_dir(&db).join("daemon.key"), operator_file(&db)] {
            let mode = std::fs::metadata(&file).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        assert_eq!(
            std::fs::read_to_string(operator_file(&db)).expect("operator file"),
            keys.operator_credential()
        );
    }

    #[test]
    fn agent_file_names_are_safe_for_any_id() {
        let db = Path::new("/x/fleet.redb");
        assert_eq!(
            agent_file(db, "../etc/passwd"),
            Path::new("/x/fleet.redb.keys/agents/%2E.%2Fetc%2Fpasswd")
        );
        assert_eq!(
            agent_file(db, "worker-1.a"),
            Path::new("/x/fleet.redb.keys/agents/worker-1.a")
        );
    }
}
