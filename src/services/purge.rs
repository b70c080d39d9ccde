//! Removing what is no longer needed: accounts never confirmed, tokens long expired, and idle
//! mail-limit rows. Confirmed accounts are never touched.

use std::time::Duration;

use chrono::TimeDelta;
use entity::{
    mail_throttle_clients, mail_throttles, outbox_messages, sessions, users, verification_tokens,
};
use sea_orm::{ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use tokio::sync::watch;

use crate::db::now;

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Accounts never confirmed within the allowed time (their tokens went with them).
    pub users: u64,
    /// Tokens that expired longer ago than the allowed time.
    pub tokens: u64,
    /// Mail-limit and client-budget rows with nothing left to limit.
    pub throttles: u64,
    /// Sent and dead mail older than the mail retention.
    pub mails: u64,
    /// Sessions past their expiry or idle timeout.
    pub sessions: u64,
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

/// Removes never-confirmed accounts older than the retention, tokens expired longer than it,
/// and idle mail-limit rows.
pub async fn purge(db: &DatabaseConnection, retention: Retention) -> Result<PurgeReport, DbErr> {
    let now = now();
    let cutoff = now - retention.unconfirmed;
    let users = users::Entity::delete_many()
        .filter(users::Column::ConfirmedAt.is_null())
        .filter(users::Column::CreatedAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected;
    let tokens = verification_tokens::Entity::delete_many()
        .filter(verification_tokens::Column::ExpiresAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected;
    let throttles = mail_throttles::Entity::delete_many()
        .filter(mail_throttles::Column::WindowStartedAt.lt(now - TimeDelta::days(1)))
        .filter(
            Condition::any()
                .add(mail_throttles::Column::LastSentAt.is_null())
                .add(mail_throttles::Column::LastSentAt.lt(now - retention.cooldown)),
        )
        .exec(db)
        .await?
        .rows_affected
        + mail_throttle_clients::Entity::delete_many()
            .filter(mail_throttle_clients::Column::DayStartedAt.lt(now - TimeDelta::days(1)))
            .exec(db)
            .await?
            .rows_affected
        + super::client_budget::purge(db).await?
        + super::sign_in::purge(db).await?;
    let sessions = sessions::Entity::delete_many()
        .filter(
            Condition::any()
                .add(sessions::Column::ExpiresAt.lte(now))
                .add(sessions::Column::LastSeenAt.lte(now - retention.session_idle)),
        )
        .exec(db)
        .await?
        .rows_affected;
    let mails = outbox_messages::Entity::delete_many()
        .filter(
            Condition::any()
                .add(outbox_messages::Column::SentAt.lt(now - retention.mail))
                .add(outbox_messages::Column::DeadAt.lt(now - retention.mail)),
        )
        .exec(db)
        .await?
        .rows_affected;
    Ok(PurgeReport {
        users,
        tokens,
        throttles,
        mails,
        sessions,
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
            Ok(report) if report != PurgeReport::default() => {
                tracing::info!(
                    users = report.users,
                    tokens = report.tokens,
                    throttles = report.throttles,
                    mails = report.mails,
                    sessions = report.sessions,
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
