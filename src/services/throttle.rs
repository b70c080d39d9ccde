//! Per-address limits on account mail (confirmation links and notices), stored in the database
//! so that they hold across restarts and across instances. They apply to every address alike,
//! known or not, so that being limited reveals nothing about accounts.

use std::time::Duration;

use chrono::TimeDelta;
use entity::mail_throttles::{self, Column};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait, QuerySelect,
    prelude::DateTimeWithTimeZone, sea_query::OnConflict,
};

use crate::db::now;

/// The fixed window the hourly limit counts in.
const WINDOW: TimeDelta = TimeDelta::hours(1);

/// How often one address may be sent account mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Least time between two mails.
    pub cooldown: Duration,
    /// Most mails in an hour.
    pub hourly_limit: u32,
}

/// Too soon: another request of this kind may succeed after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// How long to wait, rounded up to whole seconds.
    pub retry_after: Duration,
    /// Which limit was reached.
    pub scope: LimitScope,
}

/// The limits a request can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// Account mail to one address.
    Address,
    /// Costly requests from one client network.
    Client,
}

impl RateLimited {
    /// A wait of `wait`, rounded up to whole seconds and at least one.
    pub fn after(wait: TimeDelta, scope: LimitScope) -> Self {
        let seconds =
            u64::try_from(wait.num_seconds()).unwrap_or(0) + u64::from(wait.subsec_nanos() > 0);
        Self {
            retry_after: Duration::from_secs(seconds.max(1)),
            scope,
        }
    }
}

/// Whether a mail to the address with uniqueness key `key` would be refused now, without
/// recording anything: lets a request that would be refused skip its costly work. The answer
/// is advisory (a concurrent request may change it); [`take`] decides.
pub async fn peek<C: ConnectionTrait>(
    db: &C,
    key: &str,
    policy: ThrottlePolicy,
) -> Result<Result<(), RateLimited>, DbErr> {
    let row = mail_throttles::Entity::find_by_id(key.to_owned())
        .one(db)
        .await?;
    Ok(match row {
        Some(row) => decide(&row, now(), policy).map(drop),
        None => Ok(()),
    })
}

/// Records one mail to the address with uniqueness key `key` if the policy allows it now.
///
/// Call inside the write transaction that queues the mail: the row is locked until it commits
/// (on SQLite the immediate transaction already serializes writers), so concurrent requests for
/// one address are decided one after the other, and a rollback forgets the mail.
pub async fn take<C: ConnectionTrait>(
    txn: &C,
    key: &str,
    policy: ThrottlePolicy,
) -> Result<Result<(), RateLimited>, DbErr> {
    let fresh = mail_throttles::ActiveModel {
        email_key: Set(key.to_owned()),
        window_started_at: Set(now()),
        sent_in_window: Set(0),
        last_sent_at: Set(None),
    };
    mail_throttles::Entity::insert(fresh)
        .on_conflict(OnConflict::column(Column::EmailKey).do_nothing().to_owned())
        .exec_without_returning(txn)
        .await?;
    let row = mail_throttles::Entity::find_by_id(key.to_owned())
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("mail throttle for {key}")))?;
    // Read the clock only once the row is ours: a request that waited for the lock must not
    // judge by a time from before the mail that made it wait.
    let now = now();

    let (window_started_at, sent) = match decide(&row, now, policy) {
        Ok(window) => window,
        Err(limited) => return Ok(Err(limited)),
    };
    mail_throttles::Entity::update(mail_throttles::ActiveModel {
        email_key: Set(row.email_key),
        window_started_at: Set(window_started_at),
        sent_in_window: Set(sent.saturating_add(1)),
        last_sent_at: Set(Some(now)),
    })
    .exec(txn)
    .await?;
    Ok(Ok(()))
}

/// The window and count a new mail would be recorded in, or how long to wait.
fn decide(
    row: &mail_throttles::Model,
    now: DateTimeWithTimeZone,
    policy: ThrottlePolicy,
) -> Result<(DateTimeWithTimeZone, i32), RateLimited> {
    let (window_started_at, sent) = if row.window_started_at + WINDOW <= now {
        (now, 0)
    } else {
        (row.window_started_at, row.sent_in_window)
    };
    let cooldown = TimeDelta::from_std(policy.cooldown).unwrap_or(TimeDelta::MAX);
    let mut wait = TimeDelta::zero();
    if let Some(last) = row.last_sent_at {
        wait = wait.max(last + cooldown - now);
    }
    if i64::from(sent) >= i64::from(policy.hourly_limit) {
        wait = wait.max(window_started_at + WINDOW - now);
    }
    if wait > TimeDelta::zero() {
        return Err(RateLimited::after(wait, LimitScope::Address));
    }
    Ok((window_started_at, sent))
}
