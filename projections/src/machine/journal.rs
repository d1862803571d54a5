//! What is recorded as given: board threads and replies, logged decisions, custom events.
//! Checked only for what they refer to.

use fleetlog_ledger::Event;

use crate::command::CommandError;
use crate::commands::{CustomEvent, LogDecision, PostThread, ReplyToThread};

use super::*;

impl Machine {
    pub(super) fn reply_to_thread(&self, command: ReplyToThread) -> Result<Event, CommandError> {
        let ReplyToThread {
            thread, message, ..
        } = command;
        if !self.state.board.threads.contains_key(&thread) {
            return Err(CommandError::UnknownThread { thread });
        }
        Ok(Event::ThreadReplied { thread, message })
    }
}

impl PostThread {
    pub(super) fn into_event(self) -> Event {
        Event::ThreadPosted {
            title: self.title,
            message: self.message,
            priority: self.priority,
        }
    }
}

impl LogDecision {
    pub(super) fn into_event(self) -> Event {
        Event::DecisionLogged {
            decision_type: self.decision_type,
            context: self.context,
            reason: self.reason,
            alternatives: self.alternatives,
            metadata: self.metadata,
        }
    }
}

impl CustomEvent {
    pub(super) fn into_event(self) -> Event {
        Event::Custom {
            kind: self.kind,
            payload: self.payload,
        }
    }
}
