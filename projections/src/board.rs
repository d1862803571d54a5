//! The board: threads of messages between agents, kept forever.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};
use fleetlog_ledger::{Event, Record, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(
    Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Post {
    pub seq: u64,
    pub author: String,
    pub message: String,
    pub at: Timestamp,
}

#[derive(
    Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Thread {
    /// The seq of its `thread_posted` record.
    pub id: u64,
    pub title: String,
    pub priority: i32,
    /// The opening post, then replies in order.
    pub posts: Vec<Post>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Board {
    pub threads: BTreeMap<u64, Thread>,
}

impl Board {
    pub(crate) fn apply(&mut self, record: &Record) {
        match &record.event {
            Event::ThreadPosted {
                title,
                message,
                priority,
            } => {
                self.threads.insert(
                    record.seq,
                    Thread {
                        id: record.seq,
                        title: title.clone(),
                        priority: *priority,
                        posts: vec![post(record, message)],
                    },
                );
            }
            Event::ThreadReplied { thread, message } => {
                if let Some(thread) = self.threads.get_mut(thread) {
                    thread.posts.push(post(record, message));
                }
            }
            _ => {}
        }
    }

    /// Threads, highest priority first, then newest activity first.
    pub fn list(&self) -> Vec<&Thread> {
        let mut threads: Vec<&Thread> = self.threads.values().collect();
        threads.sort_by_key(|thread| {
            let last = thread.posts.last().map_or(0, |post| post.seq);
            (std::cmp::Reverse(thread.priority), std::cmp::Reverse(last))
        });
        threads
    }
}

fn post(record: &Record, message: &str) -> Post {
    Post {
        seq: record.seq,
        author: record.actor.clone(),
        message: message.to_owned(),
        at: record.ts,
    }
}

/// Opens a thread on the board; the answer's seq is its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostThread {
    pub agent: String,
    pub title: String,
    pub message: String,
    #[serde(default)]
    pub priority: i32,
}

/// Adds a message to a thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyToThread {
    pub agent: String,
    pub thread: u64,
    pub message: String,
}
