//! Removing what is no longer needed: accounts never confirmed, tokens long expired, and idle
//! mail-limit rows. Confirmed accounts are never touched.

use std::time::Duration;

use chrono::TimeDelta;
use entity::{
    client_budgets, mail_throttle_clients, mail_throttles, outbox_messages, sessions,
    sign_in_throttles, users, verification_tokens,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryTrait, Statement,
    sea_query::{Expr, ExprTrait as _, Order, Query},
};
use tokio::sync::watch;

use crate::db::{begin_write, now};

/// What one purge removed, and how long its longest statement took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Accounts never confirmed within the allowed time (tokens of theirs that were still
    /// within their grace went with them).
    pub users: u64,
    /// Tokens that expired longer ago than the allowed time, whoever's they were.
    pub tokens: u64,
    /// Mail-limit and client-budget rows with nothing left to limit.
    pub throttles: u64,
    /// Sent and dead mail older than the mail retention.
    pub mails: u64,
    /// Sessions past their expiry or idle timeout.
    pub sessions: u64,
    /// The longest any one batch took, from its start to its commit: about how long the purge
    /// held the locks a writer may need at once (on SQLite, the whole database).
    pub longest_statement: Duration,
}

impl PurgeReport {
    /// Whether nothing was removed.
    pub fn removed_nothing(&self) -> bool {
        self.users + self.tokens + self.throttles + self.mails + self.sessions == 0
    }
}

/// How long things are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// An account not confirmed this long after sign-up is removed. Tokens are kept this long
    /// past their expiry, so an old link still answers "expired" (with its way out) rather
    /// than "invalid".
    pub unconfirmed: TimeDelta,
    /// The per-address mail cooldown: a limit row is idle once it and the day have passed.
    pub cooldown: TimeDelta,
    /// Sent and dead mail is kept this long (to answer "did it go out?"), then removed.
    pub mail: TimeDelta,
    /// A session unused this long is over (expired ones are over anyway).
    pub session_idle: TimeDelta,
}

/// Rows one purge statement deletes at most. Each batch is its own statement (its own
/// transaction), so that a purge of a million stale rows never holds SQLite's write lock, or
/// PostgreSQL's locks, for more than a moment: sign-ups and confirmations go on between batches.
const BATCH: u64 = 250;

/// Deletes in batches on one database, keeping the longest statement's duration for the
/// report.
struct Batches<'a> {
    db: &'a DatabaseConnection,
    longest: Duration,
}

impl Batches<'_> {
    /// Deletes the rows of `E` matching `stale`, [`BATCH`] at a time, found by the primary key
    /// `key`. Each batch is taken in the order of `along`, a column with an index that `stale`
    /// bounds, so that finding a batch is a walk along that index and the walk stops after a
    /// batch.
    ///
    /// On PostgreSQL the planner is told so for each batch (`SET LOCAL`, gone at its commit).
    /// Left to itself, with statistics from before a flood of stale rows or none yet, it chose
    /// a sequential scan (a first batch is found as fast on a table of stale rows), whose last
    /// statement, finding nothing, read the whole table with its dead rows: 260 ms after a
    /// million purged links; or a bitmap scan of every stale row, sorted for one batch: 500 ms.
    /// A batch also commits without waiting for its WAL to reach the disk: a batch lost to a
    /// crash is deleted again by the next purge, and its row locks are no longer held through
    /// a flush stuck behind a checkpoint (commits of 140 to 220 ms were seen).
    async fn delete<E: EntityTrait>(
        &mut self,
        key: &[E::Column],
        along: E::Column,
        stale: Condition,
    ) -> Result<u64, DbErr> {
        let statement = batch_delete::<E>(self.db.get_database_backend(), key, along, stale)?;
        let mut total = 0;
        loop {
            let started = std::time::Instant::now();
            let txn = begin_write(self.db).await?;
            if txn.get_database_backend() == DbBackend::Postgres {
                txn.execute_unprepared(
                    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
                     SET LOCAL synchronous_commit = off",
                )
                .await?;
            }
            let deleted = txn.execute_raw(statement.clone()).await?.rows_affected();
            txn.commit().await?;
            self.longest = self.longest.max(started.elapsed());
            total += deleted;
            if deleted < BATCH {
                return Ok(total);
            }
        }
    }
}

/// One batch's delete: the rows of `E` matching `stale`, the first [`BATCH`] in the order of
/// `along`, by their key.
///
/// The `LIMIT` is written into the statement's text, not bound as sea-query binds it: the
/// bundled SQLite plans with the stability guarantee (`.cargo/config.toml`), so a bound limit
/// is unknown to its planner, and each batch then took about a fifth longer.
///
/// The batch is locked as it is chosen (`FOR UPDATE`, PostgreSQL only): a row that a
/// transaction changed and committed while the batch waited for it is checked against
/// `stale` again, and left out if no longer stale. Unlocked, the batch came from the
/// statement's snapshot and the delete rechecked only the key list, so an account confirmed
/// at that moment (or a limit row just counted, a session just used) was deleted. (SQLite
/// writes one transaction at a time.)
fn batch_delete<E: EntityTrait>(
    backend: DbBackend,
    key: &[E::Column],
    along: E::Column,
    stale: Condition,
) -> Result<Statement, DbErr> {
    let batch = Query::select()
        .columns(key.iter().copied())
        .from(E::default())
        .cond_where(stale)
        .order_by(along, Order::Asc)
        .to_owned();
    let key = Expr::tuple(key.iter().map(|column| Expr::col(*column)));
    let delete = E::delete_many().filter(key.in_subquery(batch)).into_query();
    let mut statement = backend.build(&delete);
    let lock = if backend == DbBackend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    // The subquery closes the statement.
    let open = statement
        .sql
        .strip_suffix(')')
        .ok_or_else(|| DbErr::Custom(format!("unexpected purge statement: {}", statement.sql)))?;
    statement.sql = format!("{open} LIMIT {BATCH}{lock})");
    Ok(statement)
}

/// Removes never-confirmed accounts older than the retention, tokens expired longer than it,
/// idle limit rows, ended sessions and old sent or dead mail, in bounded batches.
pub async fn purge(db: &DatabaseConnection, retention: Retention) -> Result<PurgeReport, DbErr> {
    let now = now();
    let cutoff = now - retention.unconfirmed;
    let mut batches = Batches {
        db,
        longest: Duration::ZERO,
    };
    // Expired links first: when they went with their accounts instead, PostgreSQL's next scan
    // of the expiry index walked over every row the cascade had just removed (300 ms, in one
    // statement, after a million stale accounts).
    let tokens = batches
        .delete::<verification_tokens::Entity>(
            &[verification_tokens::Column::Id],
            verification_tokens::Column::ExpiresAt,
            Condition::all().add(verification_tokens::Column::ExpiresAt.lt(cutoff)),
        )
        .await?;
    // Along the index of unconfirmed accounts only: the confirmed ones, however many and old,
    // are never walked over.
    let users = batches
        .delete::<users::Entity>(
            &[users::Column::Id],
            users::Column::CreatedAt,
            Condition::all()
                .add(users::Column::ConfirmedAt.is_null())
                .add(users::Column::CreatedAt.lt(cutoff)),
        )
        .await?;
    let throttles = batches
        .delete::<mail_throttles::Entity>(
            &[mail_throttles::Column::EmailKey],
            mail_throttles::Column::WindowStartedAt,
            Condition::all()
                .add(mail_throttles::Column::WindowStartedAt.lt(now - TimeDelta::days(1)))
                .add(
                    Condition::any()
                        .add(mail_throttles::Column::LastSentAt.is_null())
                        .add(mail_throttles::Column::LastSentAt.lt(now - retention.cooldown)),
                ),
        )
        .await?
        + batches
            .delete::<mail_throttle_clients::Entity>(
                &[
                    mail_throttle_clients::Column::EmailKey,
                    mail_throttle_clients::Column::ClientKey,
                ],
                mail_throttle_clients::Column::DayStartedAt,
                Condition::all()
                    .add(mail_throttle_clients::Column::DayStartedAt.lt(now - TimeDelta::days(1))),
            )
            .await?
        + batches
            .delete::<client_budgets::Entity>(
                &[client_budgets::Column::ClientKey],
                client_budgets::Column::WindowStartedAt,
                super::client_budget::stale(),
            )
            .await?
        + batches
            .delete::<sign_in_throttles::Entity>(
                &[sign_in_throttles::Column::EmailKey],
                sign_in_throttles::Column::LastAttemptAt,
                super::sign_in::stale(),
            )
            .await?;
    // Two reasons to end, two indexes: one walk along each.
    let sessions = batches
        .delete::<sessions::Entity>(
            &[sessions::Column::Id],
            sessions::Column::ExpiresAt,
            Condition::all().add(sessions::Column::ExpiresAt.lte(now)),
        )
        .await?
        + batches
            .delete::<sessions::Entity>(
                &[sessions::Column::Id],
                sessions::Column::LastSeenAt,
                Condition::all()
                    .add(sessions::Column::LastSeenAt.lte(now - retention.session_idle)),
            )
            .await?;
    let mails = batches
        .delete::<outbox_messages::Entity>(
            &[outbox_messages::Column::Id],
            outbox_messages::Column::SentAt,
            Condition::all().add(outbox_messages::Column::SentAt.lt(now - retention.mail)),
        )
        .await?
        + batches
            .delete::<outbox_messages::Entity>(
                &[outbox_messages::Column::Id],
                outbox_messages::Column::DeadAt,
                Condition::all().add(outbox_messages::Column::DeadAt.lt(now - retention.mail)),
            )
            .await?;
    Ok(PurgeReport {
        users,
        tokens,
        throttles,
        mails,
        sessions,
        longest_statement: batches.longest,
    })
}

/// Purges at start and then every `interval`, until `shutdown` turns true.
pub async fn run_periodically(
    db: DatabaseConnection,
    retention: Retention,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match purge(&db, retention).await {
            Ok(report) if !report.removed_nothing() => {
                tracing::info!(
                    users = report.users,
                    tokens = report.tokens,
                    throttles = report.throttles,
                    mails = report.mails,
                    sessions = report.sessions,
                    longest_statement_ms = report.longest_statement.as_millis(),
                    "purged"
                );
            }
            Ok(_) => {}
            Err(err) => {
                tracing::error!(error = %err, "purge failed; retrying at the next interval")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_names_its_limit_and_locks_its_rows_only_on_postgres() {
        let stale = Condition::all().add(sessions::Column::ExpiresAt.lte(now()));
        let sqlite = batch_delete::<sessions::Entity>(
            DbBackend::Sqlite,
            &[sessions::Column::Id],
            sessions::Column::ExpiresAt,
            stale.clone(),
        )
        .expect("a statement");
        assert!(
            sqlite.sql.ends_with(&format!(" LIMIT {BATCH})")),
            "{}",
            sqlite.sql
        );
        assert_eq!(sqlite.values.map(|values| values.0.len()), Some(1));
        let postgres = batch_delete::<sessions::Entity>(
            DbBackend::Postgres,
            &[sessions::Column::Id],
            sessions::Column::ExpiresAt,
            stale,
        )
        .expect("a statement");
        assert!(
            postgres
                .sql
                .ends_with(&format!(" LIMIT {BATCH} FOR UPDATE)")),
            "{}",
            postgres.sql
        );
    }
}
