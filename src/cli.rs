//! The command line of the `admit` binary: its commands, each taking only the settings it uses
//! (so `admit export-schema --help` lists no SMTP flags).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::settings::{
    DatabaseSettings, LogFormat, MailLimitSettings, RetentionSettings, ServeSettings,
    SessionSettings,
};

/// The command line of the `admit` binary.
#[derive(Debug, Parser)]
#[command(
    name = "admit",
    version,
    about = "A GraphQL identity API",
    // Without a command, the flags are `serve`'s: `admit --listen ...` serves.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
    /// The settings of `serve`, when no command is named.
    #[command(flatten)]
    serve: ServeSettings,
    /// How log lines are written.
    #[arg(
        long,
        env = "ADMIT_LOG_FORMAT",
        default_value = "text",
        global = true,
        help_heading = "Operations"
    )]
    pub log_format: LogFormat,
}

impl Cli {
    /// The command to run, `serve` with its settings when none was named.
    pub fn into_command(self) -> Command {
        self.command
            .unwrap_or_else(|| Command::Serve(Box::new(self.serve)))
    }
}

/// The commands of the `admit` binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve the API (the default).
    Serve(Box<ServeSettings>),
    /// Apply pending migrations and exit.
    Migrate(DatabaseSettings),
    /// Inspect or retry outgoing mail.
    Mail {
        /// What to do with the outbox.
        #[command(subcommand)]
        command: MailCommand,
        /// The database holding the outbox.
        #[command(flatten)]
        database: DatabaseSettings,
    },
    /// Remove what is past its retention now: accounts never confirmed within
    /// ADMIT_UNCONFIRMED_TTL, old tokens, idle limit rows and old mail.
    PurgeUnconfirmed {
        /// The database to purge.
        #[command(flatten)]
        database: DatabaseSettings,
        /// How long things are kept.
        #[command(flatten)]
        retention: RetentionSettings,
        /// The limits whose idle rows may go.
        #[command(flatten)]
        mail_limits: MailLimitSettings,
        /// When sessions end.
        #[command(flatten)]
        sessions: SessionSettings,
    },
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn help(path: &[&str]) -> String {
        let mut command = Cli::command();
        let mut current = &mut command;
        for name in path {
            current = current.find_subcommand_mut(name).expect("a subcommand");
        }
        current.render_long_help().to_string()
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_command_lists_only_the_flags_it_uses() {
        let export = help(&["export-schema"]);
        assert!(export.contains("--out"));
        for flag in ["--smtp-url", "--database-url", "--listen"] {
            assert!(!export.contains(flag), "{flag} in {export}");
        }
        let migrate = help(&["migrate"]);
        assert!(migrate.contains("--database-url"));
        assert!(!migrate.contains("--smtp-url"));
        let purge = help(&["purge-unconfirmed"]);
        assert!(purge.contains("--unconfirmed-ttl") && purge.contains("--resend-cooldown"));
        assert!(!purge.contains("--listen"));
        let serve = help(&["serve"]);
        for heading in ["Database:", "HTTP:", "Mail:", "Accounts:", "Retention:"] {
            assert!(serve.contains(heading), "{heading} missing in {serve}");
        }
    }

    #[test]
    fn no_command_means_serve_with_the_flags_given() {
        let cli = Cli::try_parse_from(["admit", "--listen", "127.0.0.1:9"]).unwrap();
        let Command::Serve(settings) = cli.into_command() else {
            panic!("serve expected")
        };
        assert_eq!(settings.http.listen.port(), 9);
    }

    #[test]
    fn serve_flags_do_not_go_with_another_command() {
        let err = Cli::try_parse_from(["admit", "--listen", "127.0.0.1:9", "migrate"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
