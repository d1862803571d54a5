//! `fleetlog board …`: threads and replies.

use clap::Subcommand;
use fleetlog::wire::views;
use fleetlog_projections::commands::{PostThread, ReplyToThread};

use crate::commands::output::table;

use super::*;
use fleetlog::client::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum BoardCommand {
    /// Start a thread on the board.
    Post {
        #[command(flatten)]
        agent: Agent,
        /// The thread's title.
        #[arg(long)]
        title: String,
        /// The message text.
        #[arg(long)]
        message: String,
        /// A number, or high (10), normal (0), low (-10).
        #[arg(long, default_value = "normal", value_parser = crate::commands::units::priority)]
        priority: i32,
    },
    /// Reply in a thread.
    Reply {
        #[command(flatten)]
        agent: Agent,
        /// The thread id (what `board post` printed).
        id: u64,
        /// The message text.
        #[arg(long)]
        message: String,
    },
    /// Threads, highest priority and most recent activity first.
    List,
    /// One thread with its replies.
    Show {
        /// The thread id (what `board post` printed).
        id: u64,
    },
}

pub(super) fn threads_text(page: &views::ThreadsPage) -> String {
    let rows: Vec<Vec<String>> = page
        .threads
        .iter()
        .map(|thread| {
            vec![
                thread.id.to_string(),
                thread.priority.to_string(),
                thread.title.clone(),
                thread.posts.len().to_string(),
            ]
        })
        .collect();
    table(&["ID", "PRIORITY", "TITLE", "POSTS"], &rows)
}

pub(super) fn thread_text(thread: &fleetlog_projections::board::Thread) -> String {
    let posts: Vec<Vec<String>> = thread
        .posts
        .iter()
        .map(|post| {
            vec![
                post.seq.to_string(),
                cell(post.at),
                post.author.clone(),
                post.message.clone(),
            ]
        })
        .collect();
    format!(
        "{}\n\n{}",
        thread.title,
        table(&["SEQ", "AT", "AUTHOR", "MESSAGE"], &posts)
    )
}

/// Runs one `board` subcommand.
pub(super) fn run(backend: &Backend, command: BoardCommand, out: &Output) -> Result<ExitCode> {
    match command {
        BoardCommand::List => show_view(
            backend,
            Query::Threads {
                limit: None,
                cursor: None,
            },
            out,
            threads_text,
        ),
        BoardCommand::Show { id } => show_view(backend, Query::Thread { id }, out, thread_text),
        BoardCommand::Post {
            agent,
            title,
            message,
            priority,
        } => run_command(
            backend,
            Command::Post(PostThread {
                agent: agent.agent,
                title,
                message,
                priority,
            }),
            out,
        ),
        BoardCommand::Reply { agent, id, message } => run_command(
            backend,
            Command::Reply(ReplyToThread {
                agent: agent.agent,
                thread: id,
                message,
            }),
            out,
        ),
    }
}
