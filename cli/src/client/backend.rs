//! Where a CLI command runs: through the daemon serving the database, if one answers on its
//! socket, or on the file itself (embedded). Both take the same commands and queries and give
//! the same answers.

use std::path::Path;

use fleetlog_projections::{Command, Coordinator, CoordinatorOptions, Outcome};
use serde_json::Value;

use crate::client::BlockingClient;
use crate::error::Error;
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

pub enum Backend {
    Daemon(Box<BlockingClient>),
    Embedded(Coordinator),
}

impl Backend {
    /// The daemon for `db` if one is running, else the file opened here. The file must exist
    /// (`fleetlog init` creates it).
    pub fn connect(db: &Path) -> Result<Backend, Error> {
        if let Some(client) = BlockingClient::for_db(db) {
            return Ok(Backend::Daemon(Box::new(client)));
        }
        if !db.exists() {
            return Err(fleetlog_ledger::Error::NotFound {
                path: db.to_owned(),
            }
            .into());
        }
        let coordinator = Coordinator::open(db, CoordinatorOptions::default())?;
        if let Some(warning) = clock_warning(coordinator.ledger()) {
            eprintln!("warning: {warning}");
        }
        Ok(Backend::Embedded(coordinator))
    }

    pub fn is_daemon(&self) -> bool {
        matches!(self, Backend::Daemon(_))
    }

    pub fn execute(&self, command: &Command) -> Result<Outcome, Error> {
        match self {
            Backend::Daemon(client) => client.execute(command),
            Backend::Embedded(coordinator) => Ok(coordinator.execute(command.clone())?),
        }
    }

    pub fn query(&self, query: &Query) -> Result<Value, Error> {
        match self {
            Backend::Daemon(client) => client.query(query),
            Backend::Embedded(coordinator) => Ok(wire::answer(
                &coordinator.state(),
                coordinator.now(),
                query,
            )?),
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
            (Backend::Embedded(coordinator), Some(as_of)) => {
                let as_of: fleetlog_projections::AsOf = as_of.parse()?;
                wire::answer_at(coordinator, query, Some(as_of))
            }
        }
    }
}
