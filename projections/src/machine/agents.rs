//! Joining, signs of life and leaving.

use fleetlog_ledger::{Batch, Event};

use crate::command::CommandError;
use crate::commands::{Deregister, Heartbeat, Register};

use super::*;

impl Machine {
    pub(super) fn register(
        &mut self,
        batch: &mut Batch<'_, '_>,
        command: Register,
    ) -> Result<Step, CommandError> {
        if command.agent == SYSTEM_ACTOR {
            return Err(invalid(
                "agent",
                format!("{SYSTEM_ACTOR:?} is reserved for fleetlog itself"),
            ));
        }
        let event = Event::AgentRegistered {
            role: command.role,
            name: command.name,
            working_on: command.working_on,
            capabilities: command.capabilities,
            metadata: command.metadata,
        };
        self.record_one(batch, &command.agent, event)
    }

    pub(super) fn heartbeat(
        &mut self,
        batch: &mut Batch<'_, '_>,
        command: Heartbeat,
    ) -> Result<Step, CommandError> {
        positive("ttl_ms", command.ttl_ms)?;
        let agent = command.agent.clone();
        let event = self.state.agents.heartbeat_event(command);
        self.record_one(batch, &agent, event)
    }

    /// Leaving releases what the agent holds, each recorded, as expiry would.
    pub(super) fn deregister(
        &mut self,
        batch: &mut Batch<'_, '_>,
        command: Deregister,
    ) -> Result<Step, CommandError> {
        let mut events = self.release_everything_of(&command.agent, batch.now());
        events.insert(
            0,
            Event::AgentDeregistered {
                reason: command.reason,
            },
        );
        self.record_all(batch, &command.agent, events)
    }
}
