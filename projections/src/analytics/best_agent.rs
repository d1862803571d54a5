//! The best agent for a task: ranked by relevance of past work, success, experience, recency
//! and trend, with the weights named below.

use std::collections::{BTreeMap, BTreeSet};

use fleetlog_ledger::{Outcome, Timestamp};
use serde::{Deserialize, Serialize};

use crate::state::State;

use super::*;

/// How much a candidate's confidence owes to each signal; the weights sum to 1.
pub const RELEVANCE_WEIGHT: f64 = 0.35;
pub const SUCCESS_WEIGHT: f64 = 0.35;
pub const EXPERIENCE_WEIGHT: f64 = 0.2;
pub const RECENCY_WEIGHT: f64 = 0.1;
/// Experience saturates with runs: 1 - e^(-runs / this).
pub const EXPERIENCE_SCALE_RUNS: f64 = 5.0;
/// Recency decays with days since the newest relevant run: e^(-days / this).
pub const RECENCY_SCALE_DAYS: f64 = 30.0;
/// The days of history the trend adjustment looks at.
pub const TREND_WINDOW_DAYS: u64 = 30;
/// Added for an improving agent, taken away for a declining one.
pub const TREND_ADJUSTMENT: f64 = 0.05;

pub(super) const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "of",
    "on", "or", "the", "to", "with", "this", "that", "we", "our", "add", "new",
];

/// Lowercase words of two or more letters or digits, stop words removed.
pub fn keywords(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|word| word.chars().count() >= 2 && !STOP_WORDS.contains(&word.as_str()))
        .collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Candidate {
    pub agent: String,
    /// 0..=1.
    pub confidence: f64,
    pub relevant_tasks: usize,
    /// Relevant tasks whose outcome is known (what `success_rate` is over).
    pub judged_tasks: usize,
    pub success_rate: f64,
    pub duration_ms_mean: Option<f64>,
    pub trend: Trend,
    pub reason: String,
}

pub(super) struct Relevant {
    overlap: f64,
    success: Option<bool>,
    duration_ms: u64,
    at: Timestamp,
    /// Indexes of the query words this work matched.
    matched: BTreeSet<usize>,
}

/// Which query words a piece of text contains; work repeats, so each distinct piece of text is
/// tokenised once (keys borrow from the facts: no allocation per run).
pub(super) struct Matcher<'a> {
    /// The query's words, in order; matches are indexes into it.
    words: Vec<String>,
    memo: std::collections::HashMap<&'a str, Vec<usize>>,
}

impl<'a> Matcher<'a> {
    fn new(query: BTreeSet<String>) -> Self {
        Matcher {
            words: query.into_iter().collect(),
            memo: std::collections::HashMap::new(),
        }
    }

    /// Indexes (into the query's words) found in `pieces`.
    fn matches(&mut self, pieces: impl IntoIterator<Item = &'a str>) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        for piece in pieces {
            let words = &self.words;
            let hits = self.memo.entry(piece).or_insert_with(|| {
                let present = keywords(piece);
                (0..words.len())
                    .filter(|i| present.contains(&words[*i]))
                    .collect()
            });
            found.extend(hits.iter().copied());
        }
        found
    }
}

/// Ranks agents for `task` (and an optional `domain`) from their history: relevance of past
/// work (keyword overlap), success on relevant work, experience, recency and trend. Returns at
/// most `top` candidates with confidence at least `min_confidence`, best first.
pub fn best_agents(
    state: &State,
    task: &str,
    domain: Option<&str>,
    now: Timestamp,
    min_confidence: f64,
    top: usize,
) -> Vec<Candidate> {
    let query = keywords(&format!("{task} {}", domain.unwrap_or_default()));
    if query.is_empty() {
        return Vec::new();
    }
    let query_len = query.len() as f64;
    let mut matcher = Matcher::new(query);
    let mut relevant: BTreeMap<String, Vec<Relevant>> = BTreeMap::new();
    let mut consider = |agent: &str,
                        matched: BTreeSet<usize>,
                        success: Option<bool>,
                        duration_ms: u64,
                        at: Timestamp| {
        if !matched.is_empty() {
            let overlap = matched.len() as f64 / query_len;
            relevant
                .entry(agent.to_owned())
                .or_default()
                .push(Relevant {
                    overlap,
                    success,
                    duration_ms,
                    at,
                    matched,
                });
        }
    };
    for run in &state.facts.stage_runs {
        let pieces = [
            run.description.as_str(),
            run.stage.as_str(),
            run.tier.as_str(),
        ]
        .into_iter()
        .chain(run.tags.iter().map(String::as_str));
        let success = match run.outcome {
            Outcome::Unknown => None,
            outcome => Some(outcome == Outcome::Success),
        };
        consider(
            &run.agent,
            matcher.matches(pieces),
            success,
            run.duration_ms,
            run.at,
        );
    }
    for run in &state.facts.task_runs {
        let pieces = [run.title.as_str(), run.description.as_str()]
            .into_iter()
            .chain(run.tags.iter().map(String::as_str));
        consider(
            &run.agent,
            matcher.matches(pieces),
            Some(run.success),
            run.duration_ms,
            run.at,
        );
    }
    let samples = samples_by_agent(state);
    let mut candidates: Vec<Candidate> = relevant
        .into_iter()
        .map(|(agent, items)| {
            let n = items.len();
            let relevance = items.iter().map(|i| i.overlap).sum::<f64>() / n as f64;
            let judged: Vec<bool> = items.iter().filter_map(|i| i.success).collect();
            let success_rate = match judged.is_empty() {
                true => 0.0,
                false => judged.iter().filter(|s| **s).count() as f64 / judged.len() as f64,
            };
            let experience = 1.0 - (-(n as f64) / EXPERIENCE_SCALE_RUNS).exp();
            let newest = items.iter().map(|i| i.at).max().unwrap_or(now);
            let days_since = u64::try_from(now.as_micros() - newest.as_micros()).unwrap_or(0)
                as f64
                / (DAY_MS as f64 * 1000.0);
            let recency = (-days_since / RECENCY_SCALE_DAYS).exp();
            let history = samples
                .get(agent.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let trend = trend_from(
                &agent,
                history,
                TREND_WINDOW_DAYS,
                now,
                TREND_THRESHOLD_POINTS_DEFAULT,
            )
            .trend;
            let trend_adjustment = match trend {
                Trend::Improving => TREND_ADJUSTMENT,
                Trend::Declining => -TREND_ADJUSTMENT,
                Trend::Stable | Trend::InsufficientData => 0.0,
            };
            let confidence = (RELEVANCE_WEIGHT * relevance
                + SUCCESS_WEIGHT * success_rate
                + EXPERIENCE_WEIGHT * experience
                + RECENCY_WEIGHT * recency
                + trend_adjustment)
                .clamp(0.0, 1.0);
            let matched: BTreeSet<usize> = items
                .iter()
                .flat_map(|i| i.matched.iter().copied())
                .collect();
            let words: Vec<&str> = matched
                .iter()
                .take(4)
                .map(|i| matcher.words[*i].as_str())
                .collect();
            let reason = format!(
                "{n} relevant task{} ({}), {:.0}% success, {}",
                if n == 1 { "" } else { "s" },
                words.join(", "),
                success_rate * 100.0,
                match trend {
                    Trend::Improving => "improving",
                    Trend::Declining => "declining",
                    Trend::Stable => "stable",
                    Trend::InsufficientData => "too little history for a trend",
                }
            );
            Candidate {
                agent,
                confidence,
                relevant_tasks: n,
                judged_tasks: judged.len(),
                success_rate,
                duration_ms_mean: mean(
                    &items
                        .iter()
                        .map(|i| i.duration_ms as f64)
                        .collect::<Vec<_>>(),
                ),
                trend,
                reason,
            }
        })
        .filter(|candidate| candidate.confidence >= min_confidence)
        // An agent that failed every relevant task it finished is not a recommendation.
        .filter(|candidate| candidate.judged_tasks == 0 || candidate.success_rate > 0.0)
        .collect();
    candidates.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(a.agent.cmp(&b.agent))
    });
    candidates.truncate(top);
    candidates
}
