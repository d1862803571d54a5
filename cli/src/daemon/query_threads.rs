//! Queries yield the CPU to the writer: threads that answer queries (and read history for
//! `/v1/events` and SSE) run at a lower priority (see [`fleetlog_ledger::priority`]).

pub use fleetlog_ledger::priority::{
    BACKGROUND_THREAD_NICE as QUERY_THREAD_NICE, yield_cpu_to_the_writer,
};
