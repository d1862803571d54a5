//! Where a CLI command runs: through the daemon serving the database, if one answers on its
//! socket, or on the file itself (embedded). Both take the same commands and queries and give
//! the same answers.

use fleetlog_projections::commands::Register;
use std::path::{Path, PathBuf};

use fleetlog_projections::{Command, Coordinator, CoordinatorOptions, Outcome};
use serde_json::Value;

use crate::client::BlockingClient;
use crate::error::Error;
use crate::identity::{self, Keys};
use crate::wire::{self, Query};

/// What to tell the operator when the newest record lies ahead of the wall clock by more than
/// the bound: ledger time never goes back, so TTLs run from the head's time until the wall
/// catches up.
pub fn clock_warning(ledger: &fleetlog_ledger::Ledger) -> Option<String> {
    let (opened, _) = ledger.clock_report()?;
    let ahead_ms = opened.head_ahead_ms()?;
    Some(format!(
        "the newest record ({}) is {:.1} s ahead of the wall clock ({}); ledger time resumes from it, so records keep that time until the wall catches up. Check the system clock (was it set forward, or is this ledger from another machine?)",
        opened.head,
        ahead_ms as f64 / 1e3,
        opened.wall
    ))
}

/// A daemon elsewhere: `FLEETLOG_URL` (`http://host:port` or `host:port`), with
/// `FLEETLOG_TOKEN` as its bearer token. Credentials are still kept beside `db`.
fn remote(db: &Path) -> Result<Option<BlockingClient>, Error> {
    let Some(url) = std::env::var("FLEETLOG_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
    else {
        return Ok(None);
    };
    let url = url.trim();
    if url.starts_with("https://") {
        return Err(Error::Config(format!(
            "FLEETLOG_URL={url}: the CLI speaks plain HTTP to a daemon; reach a TLS daemon through a local tunnel, or use the Unix socket"
        )));
    }
    let address = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_owned();
    let token = std::env::var("FLEETLOG_TOKEN")
        .ok()
        .filter(|token| !token.is_empty());
    let endpoint = crate::client::Endpoint::Tcp { address, token };
    Ok(Some(BlockingClient::new(endpoint)?.with_db(db)))
}

pub enum Backend {
    Daemon(Box<BlockingClient>),
    Embedded(Box<Embedded>),
}

/// The file, with no daemon serving it yet. Reads replay it read-only (so reading never
/// writes, not even the expiries a writer would record); the first command starts a daemon for
/// it (see [`crate::client::spawn`]), or with `FLEETLOG_NO_DAEMON=1` opens it for writing in
/// this process, with the same identity check the daemon runs.
pub struct Embedded {
    db: PathBuf,
    as_operator: bool,
    /// Check each command's credential (else trusted, like `serve --auth trusted-host`).
    authenticate: bool,
    writer: std::sync::OnceLock<(Coordinator, Keys)>,
    /// The daemon started on demand for the first command (see [`crate::client::spawn`]).
    daemon: std::sync::OnceLock<BlockingClient>,
    /// State replayed read-only for queries, until a writer is open.
    read: std::sync::OnceLock<(
        fleetlog_ledger::Ledger,
        fleetlog_projections::State,
        fleetlog_ledger::Timestamp,
    )>,
}

impl Backend {
    /// The daemon for `db` if one is running, else the file opened here. The file must exist
    /// (`fleetlog init` creates it).
    ///
    /// Commands carry the acting agent's stored credential, or with `as_operator` the
    /// operator's (see [`crate::identity`]).
    pub fn connect(db: &Path, as_operator: bool) -> Result<Backend, Error> {
        if let Some(client) = remote(db)? {
            return Ok(Backend::Daemon(Box::new(client.as_operator(as_operator))));
        }
        if let Some(client) = BlockingClient::for_db(db) {
            return Ok(Backend::Daemon(Box::new(client.as_operator(as_operator))));
        }
        if !db.exists() {
            return Err(fleetlog_ledger::Error::NotFound {
                path: db.to_owned(),
            }
            .into());
        }
        // The file's owner is trusted, as a daemon on loopback is by default; FLEETLOG_AUTH=agents
        // checks credentials here exactly as `serve --auth agents` does.
        let authenticate = std::env::var("FLEETLOG_AUTH").is_ok_and(|mode| mode == "agents");
        Ok(Backend::Embedded(Box::new(Embedded {
            db: db.to_owned(),
            as_operator,
            authenticate,
            writer: std::sync::OnceLock::new(),
            daemon: std::sync::OnceLock::new(),
            read: std::sync::OnceLock::new(),
        })))
    }

    pub fn is_daemon(&self) -> bool {
        matches!(self, Backend::Daemon(_))
    }

    pub fn execute(&self, command: &Command) -> Result<Outcome, Error> {
        match self {
            Backend::Daemon(client) => client.execute(command),
            Backend::Embedded(embedded) if crate::client::spawn::enabled() => {
                embedded.daemon()?.execute(command)
            }
            Backend::Embedded(embedded) => embedded.execute(command),
        }
    }

    /// Runs `command`; its outcome and the answer as the daemon gives it (a create's object,
    /// id and, for a registration, credential).
    pub fn execute_answer(&self, command: &Command) -> Result<(Outcome, Value), Error> {
        match self {
            Backend::Daemon(client) => client.execute_answer(command),
            Backend::Embedded(embedded) if crate::client::spawn::enabled() => {
                embedded.daemon()?.execute_answer(command)
            }
            Backend::Embedded(embedded) => {
                let outcome = embedded.execute(command)?;
                let (coordinator, keys) = embedded.writer()?;
                let created = match &outcome {
                    Outcome::Appended { seq } => {
                        let (state, now) = (coordinator.state(), coordinator.now());
                        let log = coordinator.ledger().reader();
                        wire::created_with_credential(&state, log, now, command, *seq, keys)
                    }
                    _ => None,
                };
                let value = match created {
                    Some(value) => value,
                    None => serde_json::to_value(&outcome)?,
                };
                Ok((outcome, value))
            }
        }
    }

    pub fn query(&self, query: &Query) -> Result<Value, Error> {
        match self {
            Backend::Daemon(client) => client.query(query),
            Backend::Embedded(embedded) => embedded.query(query),
        }
    }

    /// A list query answered in full: pages are fetched, following `next_cursor`, until the
    /// last, and their lists joined. Other queries are answered as by [`Backend::query`].
    pub fn query_all(&self, query: &Query) -> Result<Value, Error> {
        let mut answer = self.query(query)?;
        let mut request = serde_json::to_value(query)?;
        while let Some(cursor) = answer
            .as_object_mut()
            .and_then(|object| object.remove("next_cursor"))
            .filter(|cursor| cursor.is_string())
        {
            request["cursor"] = cursor;
            let next: Query = serde_json::from_value(request.clone())?;
            let mut page = self.query(&next)?;
            for (field, items) in answer.as_object_mut().into_iter().flatten() {
                if let (Some(items), Some(more)) =
                    (items.as_array_mut(), page[field.as_str()].as_array_mut())
                {
                    items.append(more);
                }
            }
            answer["next_cursor"] = page["next_cursor"].take();
        }
        Ok(answer)
    }

    /// A query answered as of a past point (`None`: now).
    pub fn query_as_of(&self, query: &Query, as_of: Option<&str>) -> Result<Value, Error> {
        match (self, as_of) {
            (_, None) => self.query(query),
            (Backend::Daemon(client), Some(as_of)) => client.query_as_of(query, as_of),
            (Backend::Embedded(embedded), Some(text)) => {
                let as_of: fleetlog_projections::AsOf = text.parse()?;
                let ledger = match embedded.open_read_only()? {
                    ReadOnly::File(ledger) => ledger,
                    ReadOnly::Daemon(daemon) => return daemon.query_as_of(query, text),
                };
                let seq = fleetlog_projections::resolve(ledger.reader(), as_of)?;
                let state = fleetlog_projections::rebuild(ledger.reader(), seq)?;
                let now = match as_of {
                    fleetlog_projections::AsOf::Time(ts) => ts,
                    _ => state.ts,
                };
                Ok(wire::answer(&state, ledger.reader(), now, query)?)
            }
        }
    }
}

/// What a read without a daemon found: the file, or a daemon that started meanwhile.
enum ReadOnly<'a> {
    File(fleetlog_ledger::Ledger),
    Daemon(&'a BlockingClient),
}

impl Embedded {
    /// The file opened to read. No daemon answered when this backend was chosen; one that
    /// started since holds the file exclusively, and is waited for (it may still be verifying
    /// the chain) and read through from then on, instead of the read failing.
    fn open_read_only(&self) -> Result<ReadOnly<'_>, Error> {
        match fleetlog_ledger::Ledger::open_read_only(&self.db) {
            Ok(ledger) => Ok(ReadOnly::File(ledger)),
            Err(fleetlog_ledger::Error::HeldExclusively { .. })
                if let Some(client) =
                    BlockingClient::wait_for_db(&self.db, crate::client::spawn::START_TIMEOUT) =>
            {
                let client = client.as_operator(self.as_operator);
                Ok(ReadOnly::Daemon(self.daemon.get_or_init(|| client)))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The file opened for writing (once), with the keys credentials are derived from.
    fn writer(&self) -> Result<&(Coordinator, Keys), Error> {
        if let Some(writer) = self.writer.get() {
            return Ok(writer);
        }
        let coordinator = Coordinator::open(&self.db, CoordinatorOptions::default())?;
        if let Some(warning) = clock_warning(coordinator.ledger()) {
            eprintln!("warning: {warning}");
        }
        let keys = Keys::load_or_create(&self.db)?;
        Ok(self.writer.get_or_init(|| (coordinator, keys)))
    }

    /// The daemon serving the file, started on demand.
    pub fn daemon(&self) -> Result<&BlockingClient, Error> {
        if let Some(daemon) = self.daemon.get() {
            return Ok(daemon);
        }
        let client = crate::client::spawn::ensure(&self.db)?.as_operator(self.as_operator);
        Ok(self.daemon.get_or_init(|| client))
    }

    /// Answers `query` from the writer's state if one is open, else from a read-only replay
    /// (snapshot and tail) judged at `max(wall clock, newest record)`.
    fn query(&self, query: &Query) -> Result<Value, Error> {
        if let Some(daemon) = self.daemon.get() {
            return daemon.query(query);
        }
        if let Some((coordinator, _)) = self.writer.get() {
            return Ok(wire::answer(
                &coordinator.state(),
                coordinator.ledger().reader(),
                coordinator.now(),
                query,
            )?);
        }
        let (ledger, state, now) = match self.read.get() {
            Some(read) => read,
            None => {
                let ledger = match self.open_read_only()? {
                    ReadOnly::File(ledger) => ledger,
                    ReadOnly::Daemon(daemon) => return daemon.query(query),
                };
                let state = fleetlog_projections::rebuild(ledger.reader(), ledger.head()?.seq)?;
                let now = ledger.now();
                self.read.get_or_init(|| (ledger, state, now))
            }
        };
        Ok(wire::answer(state, ledger.reader(), *now, query)?)
    }

    /// Checks the identity as `serve --auth agents` would (when asked to), runs the command,
    /// and keeps the credential a registration issues beside the database.
    fn execute(&self, command: &Command) -> Result<Outcome, Error> {
        let (coordinator, keys) = self.writer()?;
        if self.authenticate {
            let credential =
                identity::credential_for(Some(&self.db), command.agent(), self.as_operator);
            keys.check(&coordinator.state(), command, credential.as_deref())?;
        }
        let outcome = coordinator.execute(command.clone())?;
        if let (Command::Register(Register { agent, .. }), Outcome::Appended { seq }) =
            (command, &outcome)
        {
            let credential = keys.agent_credential(agent, *seq);
            identity::store_agent_credential(&self.db, agent, &credential)?;
        }
        Ok(outcome)
    }

    /// The path of the file.
    pub fn db(&self) -> &Path {
        &self.db
    }
}
