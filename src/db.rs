//! Connecting to the database and running migrations.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

/// Opens a pool on `url` that gives up after `timeout`: waiting for a pooled connection,
/// opening a new one, a PostgreSQL statement, or a SQLite writer waiting for another (WAL and
/// a busy timeout make concurrent writers queue instead of failing with "database is
/// locked"). A database that stops answering then costs a request seconds, not minutes.
///
/// A SQLite file is created readable by its owner only (SQLite gives its `-wal` and `-shm`
/// files the same mode), an existing one is made so, and deleted content is overwritten
/// (`secure_delete`) rather than left in free pages.
///
/// At most `connections` are open at once; `None`: 10 on PostgreSQL, 1 on SQLite. An
/// in-memory SQLite database always has exactly one, held for the life of the pool.
pub async fn connect(
    url: &str,
    timeout: Duration,
    connections: Option<u32>,
) -> Result<DatabaseConnection, DbErr> {
    let store = sqlite_store(url);
    match &store {
        Some(SqliteStore::File(file)) => make_private(file)
            .map_err(|err| DbErr::Custom(format!("cannot secure {}: {err}", file.display())))?,
        Some(SqliteStore::Memory) => tracing::warn!(
            "the SQLite database is in memory: every account is lost when admit stops"
        ),
        None => {}
    }
    Database::connect(options(url, store.as_ref(), timeout, connections)).await
}

fn options(
    url: &str,
    store: Option<&SqliteStore>,
    timeout: Duration,
    connections: Option<u32>,
) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    let statement_timeout = format!("{}ms", timeout.as_millis());
    options
        .sqlx_logging(false)
        // A ping on every checkout was a round trip per request; a connection that sat idle
        // long enough for a server, proxy or firewall to drop it is still checked first.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        .acquire_timeout(timeout)
        .connect_timeout(timeout)
        .map_sqlx_sqlite_opts(move |opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(timeout)
                .foreign_keys(true)
                .pragma("secure_delete", "ON")
        })
        .map_sqlx_postgres_opts(move |opts| {
            opts.options([("statement_timeout", statement_timeout.as_str())])
        });
    if let Some(connections) = connections {
        options.max_connections(connections);
    }
    if store == Some(&SqliteStore::Memory) {
        // The database lives only as long as one of its connections: the pool must never let
        // its last one go, idle or old. Connections sharing it would fail on each other's
        // table locks at once (a shared cache does not wait out a busy timeout), so there is
        // one.
        options
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None::<Duration>)
            .max_lifetime(None::<Duration>);
    }
    options
}

/// Where a SQLite URL keeps its data, as sqlx reads the URL.
#[derive(Debug, PartialEq, Eq)]
pub enum SqliteStore {
    /// A file on disk.
    File(PathBuf),
    /// Memory only (`sqlite::memory:` or `mode=memory`): gone with its last connection.
    Memory,
}

/// Where the SQLite URL `url` keeps its data; `None` for other databases and unreadable URLs
/// (connecting then reports what is wrong).
pub fn sqlite_store(url: &str) -> Option<SqliteStore> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    // sqlx keeps whether the database is in memory to itself (its `to_url_lossy` would say, but
    // panics on the name it gives `:memory:`: transact-rs/sqlx#4327, fix in #4329, unreleased),
    // so the URL is read again the way sqlx reads it.
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, parameters) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = database == ":memory:"
        || url::form_urlencoded::parse(parameters.as_bytes())
            .any(|(key, value)| key == "mode" && value == "memory");
    let file = options.get_filename();
    if in_memory {
        Some(SqliteStore::Memory)
    } else if file.as_os_str().is_empty() {
        None
    } else {
        Some(SqliteStore::File(file.to_owned()))
    }
}

/// The file of a SQLite URL (`sqlite://FILE?...`); `None` for other databases and in-memory ones.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    match sqlite_store(url)? {
        SqliteStore::File(file) => Some(file),
        SqliteStore::Memory => None,
    }
}

/// Creates `file` with mode 0600 if it is missing, and sets 0600 on it and its `-wal` and
/// `-shm` companions if they exist.
fn make_private(file: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(file)?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = file.as_os_str().to_owned();
            path.push(suffix);
            let path = PathBuf::from(path);
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

/// Connects to `url` (see [`connect`]) and applies pending migrations: what every command
/// starts with.
pub async fn open(
    url: &SecretString,
    timeout: Duration,
    connections: Option<u32>,
) -> anyhow::Result<DatabaseConnection> {
    let database = connect(url.expose_secret(), timeout, connections).await?;
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

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    use super::*;

    #[test]
    fn a_sqlite_url_names_its_file_or_memory() {
        let file = |name: &str| Some(SqliteStore::File(PathBuf::from(name)));
        assert_eq!(sqlite_store("sqlite://admit.db?mode=rwc"), file("admit.db"));
        assert_eq!(sqlite_store("sqlite:data/a.db"), file("data/a.db"));
        assert_eq!(sqlite_store("sqlite::memory:"), Some(SqliteStore::Memory));
        assert_eq!(sqlite_store("sqlite://:memory:"), Some(SqliteStore::Memory));
        assert_eq!(
            sqlite_store("sqlite://a.db?mode=memory"),
            Some(SqliteStore::Memory)
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_store("sqlite://a.db?mode=sideways"), None);
        assert_eq!(sqlite_store("postgres://admit@localhost/admit"), None);
    }

    #[test]
    fn an_in_memory_database_keeps_one_connection_for_the_life_of_the_pool() {
        let memory = options(
            "sqlite::memory:",
            Some(&SqliteStore::Memory),
            Duration::from_secs(5),
            Some(4),
        );
        assert_eq!(memory.get_min_connections(), Some(1));
        assert_eq!(memory.get_max_connections(), Some(1));
        assert_eq!(memory.get_idle_timeout(), Some(None));
        assert_eq!(memory.get_max_lifetime(), Some(None));
        let file = options(
            "sqlite://a.db",
            Some(&SqliteStore::File(PathBuf::from("a.db"))),
            Duration::from_secs(5),
            Some(4),
        );
        assert_eq!(file.get_max_connections(), Some(4));
        assert_eq!(file.get_idle_timeout(), None);
    }

    /// `.cargo/config.toml` asks for it: without it, every statement with a bound `LIMIT` is
    /// parsed and planned again each time it runs.
    #[tokio::test]
    async fn the_bundled_sqlite_keeps_a_statements_plan_whatever_its_limit() {
        let dir = tempfile::tempdir().expect("a folder");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let db = connect(&url, Duration::from_secs(5), None)
            .await
            .expect("a database");
        let rows = db
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA compile_options",
            ))
            .await
            .expect("the compile options");
        let options: Vec<String> = rows
            .iter()
            .map(|row| row.try_get_by_index(0))
            .collect::<Result<_, _>>()
            .expect("text");
        assert!(
            options.iter().any(|option| option == "ENABLE_QPSG"),
            "{options:?}"
        );
    }
}
