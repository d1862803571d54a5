//! The checks and staging steps commands share, by domain: agents (a heartbeat's event),
//! approvals (who may decide), locks (holder, grant), the queue (enqueue, claim, lease),
//! workflows (running, stages, telemetry).

use fleetlog_ledger::{Batch, Error as LedgerError, Event, Record, Timestamp};

use crate::budgets::{LimitStatus, day_name, day_of};
use crate::command::{CommandError, StageReport, TaskSpec};
use crate::locks::{Lock, SEMAPHORE_SLOTS_MAX, semaphore_of, slot_resource, slots_key};
use crate::queue::{Claimant, TaskState};
use crate::replay::Projection;
use crate::waits::ClaimWant;
use crate::workflows::WorkflowStatus;

use super::*;

impl Machine {
    /// A heartbeat's event: what is left out keeps its last value, and the event records the
    /// whole picture (so replay needs no defaults).
    pub(super) fn heartbeat(
        &self,
        agent: &str,
        status: Option<String>,
        progress: Option<f64>,
        current_task: Option<String>,
        metadata: Option<fleetlog_ledger::Json>,
        ttl_ms: u64,
    ) -> Event {
        let last = self.state.agents.get(agent);
        Event::AgentHeartbeat {
            status: status
                .or_else(|| last.map(|last| last.status.clone()))
                .unwrap_or_default(),
            progress: progress.or_else(|| last.and_then(|last| last.progress)),
            current_task: match current_task {
                Some(task) if task.is_empty() => None,
                Some(task) => Some(task),
                None => last.and_then(|last| last.current_task.clone()),
            },
            metadata: metadata
                .or_else(|| last.map(|last| last.metadata.clone()))
                .unwrap_or_else(fleetlog_ledger::Json::null),
            ttl_ms,
        }
    }

    /// Whether `agent` may decide `approval` at `now`: pending, and a named approver (or, with
    /// none named, anyone but the requester).
    pub(super) fn check_decider(
        &self,
        agent: &str,
        approval: u64,
        now: Timestamp,
    ) -> Result<(), CommandError> {
        let found = self
            .state
            .approvals
            .get(approval)
            .ok_or(CommandError::UnknownApproval { approval })?;
        match found.state_at(now) {
            ApprovalState::Pending => {}
            ApprovalState::Expired => {
                return Err(CommandError::ApprovalExpired {
                    approval,
                    deadline: found.deadline(),
                });
            }
            ApprovalState::Approved | ApprovalState::Rejected => {
                return Err(CommandError::AlreadyDecided { approval });
            }
        }
        if found.approvers.is_empty() && agent == found.requested_by {
            return Err(CommandError::SelfApproval { approval });
        }
        if !found.may_decide(agent) {
            return Err(CommandError::NotAnApprover {
                approval,
                approvers: found.approvers.clone(),
            });
        }
        Ok(())
    }

    /// Telemetry may only carry workflow history, must start each workflow once (and not one
    /// that exists), and may only continue workflows it starts or that exist.
    pub(super) fn check_telemetry(&self, events: &[Event]) -> Result<(), CommandError> {
        if events.is_empty() {
            return Err(invalid("events", "there is nothing to import"));
        }
        let mut started = std::collections::BTreeSet::new();
        for (index, event) in events.iter().enumerate() {
            let refused = |problem: String| invalid("events", format!("event {index}: {problem}"));
            match event {
                Event::WorkflowStarted { workflow_id, .. } => {
                    if self.state.workflows.get(workflow_id).is_some()
                        || !started.insert(workflow_id.as_str())
                    {
                        return Err(refused(format!(
                            "workflow {workflow_id:?} already exists; was this telemetry imported before?"
                        )));
                    }
                }
                Event::StageStarted { .. } | Event::StageCompleted { .. } => {}
                Event::Handoff { workflow_id, .. }
                | Event::WorkflowCompleted { workflow_id, .. } => {
                    if self.state.workflows.get(workflow_id).is_none()
                        && !started.contains(workflow_id.as_str())
                    {
                        return Err(refused(format!(
                            "workflow {workflow_id:?} is neither imported nor known"
                        )));
                    }
                }
                other => {
                    return Err(refused(format!(
                        "{} events cannot be imported as telemetry",
                        other.kind()
                    )));
                }
            }
        }
        Ok(())
    }

    pub(super) fn running_workflow(
        &self,
        workflow_id: &str,
    ) -> Result<&crate::workflows::Workflow, CommandError> {
        let workflow =
            self.state
                .workflows
                .get(workflow_id)
                .ok_or_else(|| CommandError::UnknownWorkflow {
                    workflow_id: workflow_id.to_owned(),
                })?;
        match workflow.status {
            WorkflowStatus::Running => Ok(workflow),
            status => Err(CommandError::WorkflowFinished {
                workflow_id: workflow_id.to_owned(),
                status: format!("{status:?}").to_lowercase(),
            }),
        }
    }

    /// The daily limits of `agent` and of the fleet: refused while either is exceeded today.
    pub(super) fn check_spend_limits(
        &self,
        agent: &str,
        now: Timestamp,
    ) -> Result<(), CommandError> {
        let day = day_of(now);
        match self
            .state
            .budgets
            .limits_for(agent, day)
            .into_iter()
            .find(LimitStatus::exceeded)
        {
            None => Ok(()),
            Some(limit) => Err(CommandError::OverSpendLimit {
                spender: limit.spender,
                day: day_name(day),
                limit_usd: limit.limit_usd,
                spent_usd: limit.spent_usd,
            }),
        }
    }

    pub(super) fn complete_stage(
        &self,
        workflow_id: &str,
        report: StageReport,
        now: Timestamp,
    ) -> Result<Vec<Event>, CommandError> {
        let workflow = self.running_workflow(workflow_id)?;
        // Every path that adds cost passes the breaker: once over budget, no stage completes
        // (started or not) until the budget is raised.
        if workflow.over_budget() {
            return Err(CommandError::OverBudget {
                limit_usd: workflow.budget_usd.unwrap_or_default(),
                spent_usd: workflow.spent_usd,
                workflow_id: workflow_id.to_owned(),
            });
        }
        self.check_spend_limits(&report.agent, now)?;
        let day = day_of(now);
        let limits_crossed: Vec<Event> = self
            .state
            .budgets
            .limits_for(&report.agent, day)
            .into_iter()
            .filter(|limit| limit.spent_usd + report.cost_usd > limit.limit_usd)
            .map(|limit| Event::SpendLimitExceeded {
                spent_usd: limit.spent_usd + report.cost_usd,
                spender: limit.spender,
                day: day_name(day),
                limit_usd: limit.limit_usd,
            })
            .collect();
        let spent_usd = workflow.spent_usd + report.cost_usd;
        let crossed = workflow
            .budget_usd
            .filter(|limit| !workflow.over_budget() && spent_usd > *limit);
        let mut events = vec![Event::StageCompleted {
            workflow_id: workflow_id.to_owned(),
            stage: report.stage,
            agent: report.agent,
            tier: report.tier,
            outcome: report.outcome,
            duration_ms: report.duration_ms,
            cost_usd: report.cost_usd,
            tokens: report.tokens,
            description: report.description,
            tags: report.tags,
            quality: report.quality,
            occurred_at: None,
        }];
        if let Some(limit_usd) = crossed {
            events.push(Event::BudgetExceeded {
                workflow_id: workflow_id.to_owned(),
                limit_usd,
                spent_usd,
            });
        }
        events.extend(limits_crossed);
        Ok(events)
    }

    pub(super) fn check_holder(
        &self,
        agent: &str,
        resource: &str,
        token: u64,
        now: Timestamp,
    ) -> Result<(), CommandError> {
        let lock = self
            .state
            .locks
            .live(resource, now)
            .ok_or_else(|| CommandError::NotLocked {
                resource: resource.to_owned(),
            })?;
        if lock.holder != agent {
            return Err(CommandError::NotHolder {
                resource: resource.to_owned(),
                holder: lock.holder.clone(),
            });
        }
        if lock.token != token {
            return Err(CommandError::WrongToken {
                resource: resource.to_owned(),
                given: token,
                current: lock.token,
            });
        }
        Ok(())
    }

    /// Grants `resource` to `agent`, recording the takeover of an expired holder first.
    /// A lock: granted when free, else refused or parked (FIFO) on the resource.
    pub(super) fn acquire_lock(
        &mut self,
        batch: &mut Batch<'_, '_>,
        reply: &mut Option<Reply>,
        agent: String,
        resource: String,
        wait_ms: Option<u64>,
        wants: LockWant,
    ) -> Result<Step, CommandError> {
        if resource.ends_with("/slot-*") {
            // That is where waits for a semaphore's slots queue, not a lockable name.
            return Err(invalid(
                "resource",
                "a lock's name must not end in /slot-* (reserved for semaphore waits)",
            ));
        }
        let now = batch.now();
        match self.state.locks.live(&resource, now).cloned() {
            None => {
                let lock =
                    self.grant_lock(batch, &agent, &resource, wants.ttl_ms, wants.intent, now)?;
                Ok(done_with(Outcome::Lock { lock }))
            }
            Some(lock) if lock.holder == agent => Err(CommandError::AlreadyHeld {
                resource,
                token: lock.token,
            }),
            Some(lock) => match wait_ms {
                None => Err(CommandError::LockHeld {
                    resource,
                    holder: lock.holder,
                    token: lock.token,
                    expires_at: lock.expires_at,
                }),
                Some(wait_ms) => {
                    let reply = take_reply(reply);
                    self.park(|waits| waits.park(resource, agent, now, wait_ms, reply, wants))
                }
            },
        }
    }

    /// A slot of a counting semaphore: the first free one granted as a lock, else refused or
    /// parked (FIFO) until any slot frees. An agent may hold several slots.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn acquire_slot(
        &mut self,
        batch: &mut Batch<'_, '_>,
        reply: &mut Option<Reply>,
        agent: String,
        resource: String,
        slots: u32,
        wait_ms: Option<u64>,
        wants: LockWant,
    ) -> Result<Step, CommandError> {
        if !(1..=SEMAPHORE_SLOTS_MAX).contains(&slots) {
            return Err(invalid(
                "slots",
                format!("{slots} is outside 1..={SEMAPHORE_SLOTS_MAX}"),
            ));
        }
        if semaphore_of(&resource).is_some() || resource.ends_with("/slot-*") {
            return Err(invalid(
                "resource",
                "a semaphore's name must not end in /slot-<n> (that names one of its slots)",
            ));
        }
        let now = batch.now();
        if let Some(slot) = self.state.locks.free_slot(&resource, slots, now) {
            let lock = self.grant_lock(
                batch,
                &agent,
                &slot_resource(&resource, slot),
                wants.ttl_ms,
                wants.intent,
                now,
            )?;
            return Ok(done_with(Outcome::Lock { lock }));
        }
        match wait_ms {
            None => Err(CommandError::SlotsFull {
                holders: self.state.locks.slot_holders(&resource, slots, now),
                resource,
                slots,
            }),
            Some(wait_ms) => {
                let reply = take_reply(reply);
                let key = slots_key(&resource);
                self.park(|waits| waits.park(key, agent, now, wait_ms, reply, wants))
            }
        }
    }

    pub(super) fn grant_lock(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        resource: &str,
        ttl_ms: u64,
        intent: String,
        requested_at: Timestamp,
    ) -> Result<Lock, CommandError> {
        let mut events = Vec::new();
        let mut takeover_of = self.state.locks.expired.get(resource).copied();
        if let Some(expired) = self.state.locks.held.get(resource) {
            // Past its deadline but not yet recorded (the tick records it first, normally).
            takeover_of = Some(expired.token);
            events.push((
                SYSTEM_ACTOR,
                Event::LockExpired {
                    resource: resource.to_owned(),
                    token: expired.token,
                    holder: expired.holder.clone(),
                    deadline: expired.expires_at,
                },
            ));
        }
        events.push((
            agent,
            Event::LockAcquired {
                resource: resource.to_owned(),
                intent,
                ttl_ms,
                requested_at,
                takeover_of,
            },
        ));
        let events = events
            .into_iter()
            .map(|(actor, event)| (actor.to_owned(), event))
            .collect();
        self.stage_as(batch, events)?;
        Ok(self
            .state
            .locks
            .held
            .get(resource)
            .cloned()
            .expect("the grant was just applied"))
    }

    /// Stages events, each with its own actor (all or none).
    pub(super) fn stage_as(
        &mut self,
        batch: &mut Batch<'_, '_>,
        events: Vec<(String, Event)>,
    ) -> Result<Vec<Record>, CommandError> {
        let records = batch.append(events).map_err(|error| match error {
            LedgerError::EventTooLarge { .. } | LedgerError::RequestTooLarge { .. } => {
                CommandError::TooLarge(error.to_string())
            }
            other if other.is_bad_input() => CommandError::Rejected(other.to_string()),
            other => CommandError::NotDurable {
                cause: other.to_string(),
            },
        })?;
        for record in &records {
            self.touched.note(record);
            self.state.apply(record);
        }
        Ok(records)
    }

    pub(super) fn enqueue(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        spec: TaskSpec,
    ) -> Result<Vec<Record>, CommandError> {
        if spec.max_attempts == 0 {
            return Err(invalid("max_attempts", "must be at least 1"));
        }
        if spec.title.is_empty() {
            return Err(invalid("title", "must not be empty"));
        }
        let mut doomed_by = None;
        for dependency in &spec.depends_on {
            let found = self
                .state
                .queue
                .get(*dependency)
                .ok_or(CommandError::UnknownTask { task: *dependency })?;
            if found.state.is_final() && found.state != TaskState::Completed {
                doomed_by.get_or_insert(*dependency);
            }
        }
        if let Some(key) = &spec.key {
            if key.is_empty() {
                return Err(invalid("key", "must not be empty (leave it out for none)"));
            }
            if let Some(existing) = self.state.queue.by_key(key) {
                return Err(CommandError::TaskKeyExists {
                    key: key.clone(),
                    task: existing.id,
                });
            }
        }
        let id = batch.next_seq();
        let options = (spec.key.is_some()
            || !spec.required_capabilities.is_empty()
            || spec.escalate_when_exhausted)
            .then_some(Event::TaskOptions {
                task: id,
                key: spec.key,
                capabilities: spec.required_capabilities,
                escalate_when_exhausted: spec.escalate_when_exhausted,
            });
        let mut events = vec![Event::TaskEnqueued {
            title: spec.title,
            description: spec.description,
            priority: spec.priority,
            tags: spec.tags,
            payload: spec.payload,
            max_attempts: spec.max_attempts,
            depends_on: spec.depends_on,
            not_before: spec.not_before,
            workflow_id: spec.workflow_id,
        }];
        events.extend(options);
        if let Some(blocked_by) = doomed_by {
            events.push(Event::TaskSkipped {
                task: id,
                blocked_by,
            });
        }
        self.stage(batch, agent, events)
    }

    /// Claims the best task for `agent`, if one is claimable now.
    pub(super) fn claim(
        &mut self,
        batch: &mut Batch<'_, '_>,
        agent: &str,
        wants: &ClaimWant,
    ) -> Result<Option<crate::queue::Task>, CommandError> {
        let capabilities = self
            .state
            .agents
            .get(agent)
            .map(|found| found.capabilities.clone())
            .unwrap_or_default();
        let claimant = Claimant {
            tags: &wants.tags,
            tag_match: wants.tag_match,
            capabilities: &capabilities,
        };
        let now = batch.now();
        let queue = &self.state.queue;
        let task = match wants.task {
            None => queue.next_claimable(&claimant, now),
            Some(id) => {
                let found = queue
                    .get(id)
                    .ok_or(CommandError::UnknownTask { task: id })?;
                if found.state.is_final() {
                    return Err(finished(id, found.state));
                }
                let missing: Vec<String> = found
                    .required_capabilities
                    .iter()
                    .filter(|needed| !capabilities.contains(needed))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    return Err(CommandError::NotCapable { task: id, missing });
                }
                queue.is_claimable(found, &claimant, now).then_some(found)
            }
        };
        let Some(task) = task else {
            return Ok(None);
        };
        let (id, attempt) = (task.id, task.attempts + 1);
        let event = Event::TaskClaimed {
            task: id,
            lease_ttl_ms: wants.lease_ttl_ms,
            attempt,
        };
        self.stage(batch, agent, vec![event])?;
        Ok(self.state.queue.get(id).cloned())
    }

    pub(super) fn check_lease(&self, agent: &str, task: u64) -> Result<(), CommandError> {
        let found = self
            .state
            .queue
            .get(task)
            .ok_or(CommandError::UnknownTask { task })?;
        match (found.state, found.holder.as_deref()) {
            (TaskState::Claimed, Some(holder)) if holder == agent => Ok(()),
            (TaskState::Claimed, Some(holder)) => Err(CommandError::NotYourTask {
                task,
                holder: holder.to_owned(),
            }),
            (TaskState::Completed, _) => Err(CommandError::AlreadyCompleted { task }),
            (state, _) if state.is_final() => Err(finished(task, state)),
            _ => Err(CommandError::NotClaimed { task }),
        }
    }
}
