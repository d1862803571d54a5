//! Sending, receiving (now or by waiting) and acknowledging signals.

use fleetlog_ledger::{Batch, Event, SignalTarget};

use crate::command::{CommandError, Outcome};
use crate::commands::{AckSignal, ReceiveSignal, SendSignal};
use crate::waits::SignalWant;

use super::*;

impl Machine {
    pub(super) fn send_signal(
        &mut self,
        batch: &mut Batch<'_, '_>,
        command: SendSignal,
    ) -> Result<Step, CommandError> {
        if command.kind.trim().is_empty() {
            return Err(invalid(
                "kind",
                "a signal needs a kind (what receivers filter on)",
            ));
        }
        positive("ttl_ms", command.ttl_ms)?;
        if let SignalTarget::Agent(target) = &command.target {
            self.require_member(target)?;
            if self.state.signals.inbox_len(target) >= INBOX_SIGNALS_MAX {
                return Err(CommandError::InboxFull {
                    agent: target.clone(),
                    limit: INBOX_SIGNALS_MAX,
                });
            }
        }
        let event = Event::SignalSent {
            kind: command.kind,
            target: command.target,
            payload: command.payload,
            ttl_ms: command.ttl_ms,
            correlation_id: command.correlation_id,
        };
        self.record_one(batch, &command.agent, event)
    }

    /// Takes (or looks at) the oldest matching signal; with `wait_ms`, parks until one comes.
    pub(super) fn receive_signal(
        &mut self,
        batch: &mut Batch<'_, '_>,
        reply: &mut Option<Reply>,
        command: ReceiveSignal,
    ) -> Result<Step, CommandError> {
        if let Some(ack_ms) = command.ack_ms {
            positive("ack_ms", ack_ms)?;
        }
        let wants = SignalWant {
            filter: command.filter,
            consume: command.consume || command.ack_ms.is_some(),
            ack_ms: command.ack_ms,
        };
        let agent = command.agent;
        if let Some(signal) = self.take_signal(batch, &agent, &wants)? {
            let signal = Some(signal);
            return Ok(done_with(Outcome::Signal { signal }));
        }
        match command.wait_ms {
            None => Ok(done_with(Outcome::Signal { signal: None })),
            Some(wait_ms) => {
                let (reply, now) = (take_reply(reply), batch.now());
                self.park(|waits| waits.park(agent.clone(), agent, now, wait_ms, reply, wants))
            }
        }
    }

    pub(super) fn ack_signal(
        &mut self,
        batch: &mut Batch<'_, '_>,
        command: AckSignal,
    ) -> Result<Step, CommandError> {
        let AckSignal { agent, signal } = command;
        let awaiting = self
            .state
            .signals
            .delivered(signal)
            .any(|(recipient, _)| *recipient == agent);
        if !awaiting {
            return Err(CommandError::NotDelivered { signal });
        }
        self.record_one(batch, &agent, Event::SignalAcked { signal })
    }
}
