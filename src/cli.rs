//! The command line of the `admit` binary: its commands, each taking the settings.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::settings::Settings;

/// The command line of the `admit` binary.
#[derive(Debug, Parser)]
#[command(name = "admit", version, about = "A GraphQL identity API")]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: Settings,
}

/// The commands of the `admit` binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve the API (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Inspect or retry outgoing mail.
    Mail {
        /// What to do with the outbox.
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Remove accounts never confirmed within ADMIT_UNCONFIRMED_TTL, and old tokens, now.
    PurgeUnconfirmed,
    /// Print the GraphQL schema (SDL), or write it to a file.
    ExportSchema {
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The `admit mail` commands.
#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Count pending, dead and sent messages.
    Status,
    /// Queue dead messages again with a fresh set of attempts.
    Retry {
        /// Every dead message.
        #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
        all: bool,
        /// Only these messages (outbox ids, as logged).
        ids: Vec<uuid::Uuid>,
    },
}
