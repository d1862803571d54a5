//! Task queries. Unfinished tasks are in the state; a finished one is only an id and how it
//! ended there, so what it was is read back from the log ([`archive`]), a page at a time.

use fleetlog_ledger::Reader;
use fleetlog_projections::State;
use fleetlog_projections::queue::{Task, TaskState, archive};

use super::pages::{page_cursor, page_limit};
use super::{QueryError, views};

/// Task `id`, finished or not, as of `state`.
pub fn task(state: &State, log: &Reader, id: u64) -> Result<Option<Task>, QueryError> {
    archive::task(&state.queue, log, id, state.seq).map_err(unreadable)
}

/// Which tasks a list asks for.
pub struct Filter<'a> {
    pub state: Option<TaskState>,
    pub tag: Option<&'a str>,
    pub key: Option<&'a str>,
}

/// One page of the tasks `filter` selects, in id order, after `cursor` (an id).
pub fn page(
    state: &State,
    log: &Reader,
    filter: &Filter<'_>,
    limit: Option<usize>,
    cursor: &Option<String>,
) -> Result<views::TasksPage, QueryError> {
    let limit = page_limit(limit)?;
    let after: Option<u64> = page_cursor(cursor)?;
    let queue = &state.queue;
    let first = after.map_or(0, |after| after.saturating_add(1));
    let wants = |task_state: TaskState| filter.state.is_none_or(|wanted| wanted == task_state);
    let mut live = queue
        .tasks
        .range(first..)
        .filter(|(_, task)| wants(task.state))
        .map(|(id, _)| *id)
        .peekable();
    let mut finished = queue
        .finished
        .after(after)
        .filter(|(_, task_state)| wants(*task_state))
        .map(|(id, _)| id)
        .peekable();
    let keyed = filter.key.map(|key| queue.id_by_key(key));
    // Ids in order, merged from both; a key names at most one.
    let mut candidates = std::iter::from_fn(|| match keyed {
        Some(_) => None,
        None => match (live.peek(), finished.peek()) {
            (Some(a), Some(b)) if a < b => live.next(),
            (Some(_), Some(_)) | (None, Some(_)) => finished.next(),
            (Some(_), None) => live.next(),
            (None, None) => None,
        },
    })
    .chain(
        keyed
            .flatten()
            .filter(|id| *id >= first && queue.state_of(*id).is_some_and(wants)),
    );
    // One more than a page, to know whether another follows.
    let mut tasks: Vec<Task> = Vec::new();
    loop {
        let ids: Vec<u64> = candidates.by_ref().take(limit + 1 - tasks.len()).collect();
        if ids.is_empty() {
            break;
        }
        let (unfinished, done): (Vec<u64>, Vec<u64>) =
            ids.iter().partition(|id| queue.get(**id).is_some());
        let mut batch: Vec<Task> = unfinished
            .iter()
            .filter_map(|id| queue.get(*id).cloned())
            .chain(archived(state, log, &done)?)
            .filter(|task| {
                filter
                    .tag
                    .is_none_or(|tag| task.tags.iter().any(|t| t == tag))
            })
            .collect();
        batch.sort_unstable_by_key(|task| task.id);
        tasks.extend(batch);
        if tasks.len() > limit {
            break;
        }
    }
    let next_cursor = match tasks.len() > limit {
        true => {
            tasks.truncate(limit);
            tasks.last().map(|task| task.id.to_string())
        }
        false => None,
    };
    Ok(views::TasksPage { tasks, next_cursor })
}

fn archived(state: &State, log: &Reader, ids: &[u64]) -> Result<Vec<Task>, QueryError> {
    archive::tasks(log, ids, state.seq).map_err(unreadable)
}

fn unreadable(error: fleetlog_ledger::Error) -> QueryError {
    QueryError::Unreadable(error.to_string())
}
