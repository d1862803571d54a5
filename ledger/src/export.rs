//! JSON Lines export and import. The first line is a header naming the ledger; every other line
//! is one record with its hashes. Import re-encodes each record, recomputes its hash and link,
//! and refuses the whole file at the first line that does not verify: a tampered, reordered or
//! truncated export never becomes a ledger.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use redb::Durability;
use serde::{Deserialize, Serialize};

use crate::chain::{Checkpoint, LedgerId};
use crate::codec::{Record, reseal};
use crate::error::Error;
use crate::event::Timestamp;
use crate::reader::{Reader, decode};
use crate::storage::{self, EVENTS, Head, META, META_HEAD, encode_head};

/// Marks line 1 of an export; its value is the export format version.
pub const EXPORT_FORMAT_VERSION: u32 = 1;

/// Records per import transaction: bounds memory, and each commit is cheap (not durable until
/// the last one, since an interrupted import leaves no ledger behind).
const IMPORT_COMMIT_RECORDS: u64 = 50_000;

/// Line 1 of an export.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExportHeader {
    pub fleetlog_export: u32,
    pub ledger_id: LedgerId,
    pub record_format_version: u8,
    /// The newest record exported: the import must end exactly here.
    pub head: Checkpoint,
}

pub(crate) fn export(
    reader: &Reader,
    out: impl Write,
    progress: &dyn Fn(u64),
) -> Result<Checkpoint, Error> {
    // One snapshot for header and body: the head written is the last record written.
    let meta = reader.meta()?;
    let mut export = ExportWriter::new(
        out,
        ExportHeader {
            fleetlog_export: EXPORT_FORMAT_VERSION,
            ledger_id: meta.ledger_id,
            record_format_version: crate::codec::FORMAT_VERSION,
            head: meta.head.checkpoint(),
        },
        progress,
    )?;
    reader.scan_raw(1..=meta.head.seq, |seq, bytes| {
        export.record(&decode(seq, bytes)?)?;
        Ok(ControlFlow::Continue(()))
    })?;
    export.finish()
}

/// Writes an export: the header line, then every record from seq 1 to the header's head, in
/// order. For an export made from something other than this process's file (a daemon's pages);
/// the lines are exactly those [`crate::Ledger::export_jsonl`] writes.
pub struct ExportWriter<'p, W: Write> {
    out: W,
    head: Checkpoint,
    written: u64,
    /// Called with the records written so far, now and then and at the end.
    progress: &'p dyn Fn(u64),
}

impl<'p, W: Write> ExportWriter<'p, W> {
    /// Writes `header`'s line.
    pub fn new(mut out: W, header: ExportHeader, progress: &'p dyn Fn(u64)) -> Result<Self, Error> {
        serde_json::to_writer(&mut out, &header).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        Ok(ExportWriter {
            out,
            head: header.head,
            written: 0,
            progress,
        })
    }

    /// Writes the next record's line; it must be the next seq, up to the head.
    pub fn record(&mut self, record: &Record) -> Result<(), Error> {
        let expected = self.written + 1;
        if record.seq != expected || expected > self.head.seq {
            return Err(Error::Corrupted {
                seq: expected,
                problem: format!(
                    "the record is missing from the ledger being exported (got seq {} of {})",
                    record.seq, self.head.seq
                ),
            });
        }
        serde_json::to_writer(&mut self.out, record).map_err(std::io::Error::from)?;
        self.out.write_all(b"\n")?;
        self.written = expected;
        if self.written.is_multiple_of(65_536) {
            (self.progress)(self.written);
        }
        Ok(())
    }

    /// Checks every record up to the head was written and flushes; the head exported.
    pub fn finish(mut self) -> Result<Checkpoint, Error> {
        if self.written != self.head.seq {
            return Err(Error::Corrupted {
                seq: self.written + 1,
                problem: "the record is missing from the ledger being exported".to_owned(),
            });
        }
        self.out.flush()?;
        (self.progress)(self.written);
        Ok(self.head)
    }
}

/// Imports into a new file at `path`. Writes to a temporary file beside it and renames it into
/// place only after every line verified, so a refused import leaves nothing behind.
pub(crate) fn import(
    path: &Path,
    input: impl BufRead,
    progress: &dyn Fn(u64),
) -> Result<Checkpoint, Error> {
    if path.exists() {
        return Err(Error::AlreadyExists {
            path: path.to_owned(),
        });
    }
    let temporary = temporary_path(path);
    let result = import_into(&temporary, input, progress);
    match result {
        Ok(head) => {
            std::fs::rename(&temporary, path)?;
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(head)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&temporary);
            Err(error)
        }
    }
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".importing");
    path.with_file_name(name)
}

/// Reads one line into `line`; a line that is not UTF-8 is an import error naming it.
fn read_line(input: &mut impl BufRead, line: &mut String, number: u64) -> Result<usize, Error> {
    let mut bytes = Vec::new();
    let read = input.read_until(b'\n', &mut bytes)?;
    match String::from_utf8(bytes) {
        Ok(text) => {
            line.push_str(&text);
            Ok(read)
        }
        Err(error) => Err(Error::Import {
            line: number,
            problem: format!(
                "the line is not UTF-8 (invalid byte at offset {})",
                error.utf8_error().valid_up_to()
            ),
        }),
    }
}

fn import_into(
    temporary: &Path,
    mut input: impl BufRead,
    progress: &dyn Fn(u64),
) -> Result<Checkpoint, Error> {
    let mut line = String::new();
    let bad = |line: u64, problem: String| Error::Import { line, problem };
    if read_line(&mut input, &mut line, 1)? == 0 {
        return Err(bad(
            1,
            "the file is empty; expected an export header".to_owned(),
        ));
    }
    let header: ExportHeader = serde_json::from_str(&line)
        .map_err(|error| bad(1, format!("not a fleetlog export header: {error}")))?;
    if header.fleetlog_export != EXPORT_FORMAT_VERSION {
        return Err(bad(
            1,
            format!(
                "export format {} is not supported (this build reads {EXPORT_FORMAT_VERSION})",
                header.fleetlog_export
            ),
        ));
    }
    let _ = std::fs::remove_file(temporary);
    // Private until renamed into place, so it may use cheap non-durable commits.
    let db = storage::create(temporary, header.ledger_id, storage::Sharing::Private)?;
    let mut head = Head {
        seq: 0,
        hash: header.ledger_id.genesis_prev(),
        ts: Timestamp(0),
    };
    let mut line_number = 1u64;
    let mut txn = db.begin_write()?;
    loop {
        line.clear();
        if read_line(&mut input, &mut line, line_number + 1)? == 0 {
            break;
        }
        line_number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line)
            .map_err(|error| bad(line_number, format!("not a record: {error}")))?;
        let problem = check_next(&head, &record);
        if let Some(problem) = problem {
            return Err(bad(line_number, problem));
        }
        let (bytes, hash) = reseal(&record).map_err(|error| bad(line_number, error.to_string()))?;
        if hash != record.hash {
            return Err(bad(
                line_number,
                format!(
                    "seq {}: the content does not match its hash; the export was altered",
                    record.seq
                ),
            ));
        }
        txn.open_table(EVENTS)?
            .insert(record.seq, bytes.as_slice())?;
        head = Head {
            seq: record.seq,
            hash,
            ts: record.ts,
        };
        if head.seq.is_multiple_of(IMPORT_COMMIT_RECORDS) {
            txn.set_durability(Durability::None)?;
            txn.commit()?;
            txn = db.begin_write()?;
            progress(head.seq);
        }
    }
    if head.checkpoint() != header.head {
        return Err(bad(
            line_number,
            format!(
                "the export ends at {} but its header says it ends at {}; it was truncated",
                head.checkpoint(),
                header.head
            ),
        ));
    }
    txn.open_table(META)?
        .insert(META_HEAD, encode_head(&head).as_slice())?;
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    drop(db);
    progress(head.seq);
    Ok(head.checkpoint())
}

fn check_next(head: &Head, record: &Record) -> Option<String> {
    let expected = head.seq + 1;
    if record.seq != expected {
        return Some(format!(
            "expected seq {expected} but found seq {}: lines are missing or out of order",
            record.seq
        ));
    }
    if record.prev != head.hash {
        return Some(format!(
            "seq {}: its prev does not match the previous record's hash; the chain is broken",
            record.seq
        ));
    }
    if record.ts < head.ts {
        return Some(format!(
            "seq {}: its time {} is before the previous record's {}",
            record.seq, record.ts, head.ts
        ));
    }
    None
}
