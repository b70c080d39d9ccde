use std::{io::IsTerminal, process::ExitCode};

use admit::{
    cli::{Cli, Command, MailCommand},
    graphql::schema_sdl,
    mail::admin,
    services::purge,
    settings::LogFormat,
    startup::{Application, open_database, purge_retention, shutdown_signal},
};
use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    private_files();
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if cli.log_format == LogFormat::Json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.into_command() {
        Command::Serve(settings) => {
            Application::build(*settings)
                .await?
                .run(shutdown_signal())
                .await
        }
        Command::Migrate(database) => {
            open_database(&database).await?;
            tracing::info!(database = %database.for_log(), "migrations applied");
            Ok(())
        }
        Command::Mail { command, database } => {
            let database = open_database(&database).await?;
            match command {
                MailCommand::Status => {
                    let status = admin::status(&database).await?;
                    println!(
                        "pending: {}\ndead: {}\nsent: {}",
                        status.pending, status.dead, status.sent
                    );
                }
                MailCommand::Retry { ids, .. } => {
                    let revived = admin::retry_dead(&database, &ids).await?;
                    println!("queued again: {revived}");
                }
            }
            Ok(())
        }
        Command::PurgeUnconfirmed {
            database,
            retention,
            mail_limits,
            sessions,
        } => {
            let database = open_database(&database).await?;
            let retention = purge_retention(&retention, &mail_limits, &sessions);
            let report = purge::purge(&database, retention).await?;
            println!(
                "users: {}\ntokens: {}\nthrottles: {}\nmails: {}\nsessions: {}\nlongest statement: {} ms",
                report.users,
                report.tokens,
                report.throttles,
                report.mails,
                report.sessions,
                report.longest_statement.as_millis()
            );
            Ok(())
        }
        Command::ExportSchema { out } => {
            let sdl = schema_sdl();
            match out {
                Some(path) => std::fs::write(&path, sdl)
                    .with_context(|| format!("cannot write {}", path.display())),
                None => {
                    print!("{sdl}");
                    Ok(())
                }
            }
        }
    }
}

/// Everything admit creates (the SQLite database and its journal, the generated secret key, the
/// development mail files, which hold live links) is readable by its owner only.
fn private_files() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail and touches no
    // memory.
    unsafe {
        libc::umask(0o077);
    }
}
