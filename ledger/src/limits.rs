//! Every bound the ledger enforces, in one place. Exceeding one is an [`crate::Error`] naming the
//! limit, never unbounded memory or a silently truncated record.

/// Largest encoded event body (actor + event), in bytes.
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;

/// Longest actor (agent id), in bytes of UTF-8.
pub const ACTOR_BYTES_MAX: usize = 128;

/// Longest identifier inside an event (workflow id, resource name, signal type, tag …), in bytes.
pub const ID_BYTES_MAX: usize = 256;

/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// How long a command's idempotency key and its answer are kept after first use: a retry
/// within it gets the first answer; after it the key is free again.
pub const COMMAND_KEY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Most expired command keys one batch removes, so pruning never stalls a commit.
pub const COMMAND_KEYS_PRUNED_PER_BATCH_MAX: usize = 256;

/// Most events one append request may carry (they commit atomically together).
pub const REQUEST_EVENTS_MAX: usize = 4096;

/// Most events the writer puts in one transaction. Bounds commit latency under load.
pub const BATCH_EVENTS_MAX: usize = 8192;

/// Most encoded bytes the writer puts in one transaction.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Requests waiting for the writer. A full channel blocks appenders: back-pressure, not memory.
pub const WRITER_QUEUE_REQUESTS_MAX: usize = 16 * 1024;

/// Bytes of file pages redb keeps in memory (its default is 1 GiB). Reads past it go to the
/// OS page cache, so this bounds the daemon's memory without bounding what it can read.
pub const STORE_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Page cache of the read-only handle that verifies the whole chain when a writer opens: one
/// sequential pass gains nothing from a cache, and the writer's stays for what it reads again.
pub const ONE_PASS_CACHE_BYTES: usize = 1024 * 1024;

/// Size of the write-ahead log of a ledger held exclusively (`serve`, unless `--shared`), written
/// once when it is created: the largest batch (`BATCH_BYTES_MAX` plus its keys) fits in it.
pub const WAL_BYTES: usize = 32 * 1024 * 1024;

/// For a ledger held exclusively: the first batch this long after the last durable redb
/// commit is one (a checkpoint); batches in between are durable in the write-ahead log. Bounds
/// how much a crash recovery re-applies and how much redb holds only in memory.
pub const WAL_CHECKPOINT_INTERVAL_MS: u64 = 1_000;

/// Records checked by the tail check that runs on every open.
pub const OPEN_CHECK_RECORDS: u64 = 64;

/// How far the newest record's time may lie ahead of the wall clock when a writer opens before
/// it is reported: ledger time never goes back, so it resumes from the head and TTLs run from
/// there until the wall catches up.
pub const HEAD_AHEAD_OF_WALL_MS_MAX: u64 = 60_000;
