//! Connecting to the database and running migrations.

use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};

/// Opens a pool on `url` that gives up after `timeout`: waiting for a pooled connection,
/// opening a new one, a PostgreSQL statement, or a SQLite writer waiting for another (WAL and
/// a busy timeout make concurrent writers queue instead of failing with "database is
/// locked"). A database that stops answering then costs a request seconds, not minutes.
pub async fn connect(url: &str, timeout: Duration) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    let statement_timeout = format!("{}ms", timeout.as_millis());
    options
        .sqlx_logging(false)
        .acquire_timeout(timeout)
        .connect_timeout(timeout)
        .map_sqlx_sqlite_opts(move |opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(timeout)
                .foreign_keys(true)
        })
        .map_sqlx_postgres_opts(move |opts| {
            opts.options([("statement_timeout", statement_timeout.as_str())])
        });
    Database::connect(options).await
}

/// Connects with `settings` and applies pending migrations: what every command starts with.
pub async fn open(settings: &crate::settings::Settings) -> anyhow::Result<DatabaseConnection> {
    let database = connect(settings.database_url.expose_secret(), settings.db_timeout)
        .await
        .with_context(|| format!("cannot open the database {}", settings.database_for_log()))?;
    migrate(&database).await.context("migrations failed")?;
    Ok(database)
}

/// Applies pending migrations.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Starts a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`, taking the write
/// lock up front: a deferred transaction that reads first and writes later can fail with
/// SQLITE_BUSY at once, without waiting for the busy timeout.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// The current time in the form the entities store it (UTC).
pub fn now() -> sea_orm::prelude::DateTimeWithTimeZone {
    chrono::Utc::now().fixed_offset()
}
