//! Analytics over the whole history: workflow statistics, coordination overhead with its
//! breakdown, agent performance trends, best-agent recommendation, and cost. Pure functions of a
//! [`State`] (live, or rebuilt as of any seq or time), a [`Window`] and `now`.

mod best_agent;
mod costs;
mod overhead;
mod staffing;
mod trends;
mod workflow_stats;

use fleetlog_ledger::Timestamp;
use serde::{Deserialize, Serialize};

use crate::workflows::{Workflow, WorkflowStatus};

pub use best_agent::*;
pub use costs::*;
pub use overhead::*;
pub use staffing::*;
pub use trends::*;
pub use workflow_stats::*;

const DAY_MS: u64 = 24 * 3_600_000;

/// Overhead below this share of wall time is efficient.
pub const OVERHEAD_EFFICIENT_BELOW: f64 = 0.15;
/// Overhead above this share of wall time is high.
pub const OVERHEAD_HIGH_ABOVE: f64 = 0.30;
/// A change in success rate beyond this many percentage points is a trend.
pub const TREND_THRESHOLD_POINTS_DEFAULT: f64 = 5.0;
/// Fewer samples than this in either period is "insufficient data".
pub const TREND_SAMPLES_MIN: usize = 3;
/// The recent period of a trend, in days.
pub const TREND_RECENT_DAYS: u64 = 7;

/// Which part of history an analytic looks at: `from <= time < to`, and optionally one project.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub project: Option<String>,
}

impl Window {
    pub fn contains(&self, at: Timestamp) -> bool {
        self.from.is_none_or(|from| at >= from) && self.to.is_none_or(|to| at < to)
    }

    fn workflow(&self, workflow: &Workflow) -> bool {
        self.contains(workflow.started_at)
            && self
                .project
                .as_ref()
                .is_none_or(|project| *project == workflow.project)
    }
}

/// Nearest-rank percentile of sorted values (`fraction` in 0..=1).
fn percentile(sorted: &[f64], fraction: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (fraction * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Summary of a set of numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Distribution {
    pub count: usize,
    pub total: f64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
}

impl Distribution {
    pub fn of(values: Vec<f64>) -> Self {
        let values = sorted(values);
        Distribution {
            count: values.len(),
            total: values.iter().sum(),
            mean: mean(&values),
            p50: percentile(&values, 0.5),
            p90: percentile(&values, 0.9),
        }
    }
}

/// Wall time of a finished workflow, in milliseconds.
pub fn wall_ms(workflow: &Workflow) -> Option<u64> {
    workflow.duration_ms.or_else(|| {
        let finished = workflow.finished_at?;
        u64::try_from(finished.as_micros() - workflow.started_at.as_micros())
            .ok()
            .map(|micros| micros / 1000)
    })
}

fn finished(workflow: &Workflow) -> bool {
    matches!(
        workflow.status,
        WorkflowStatus::Completed | WorkflowStatus::Failed
    )
}
