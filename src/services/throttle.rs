//! Limits on account mail (confirmation links and notices) to one address, stored in the
//! database so that they hold across restarts and across instances. They apply to every address
//! alike, known or not, so that being limited reveals nothing about accounts.
//!
//! Per address: a short cooldown between two mails, and a daily cap (the bound on mail bombing).
//! Per address and client network: an hourly limit and at most half of the daily cap. So one
//! client cannot silence an address: its owner, from another network, is served once the
//! cooldown has passed; using up an address's daily cap takes at least two networks.

use std::time::Duration;

use chrono::TimeDelta;
use entity::{mail_throttle_clients, mail_throttles};
use sea_orm::{
    ActiveValue::Set,
    Condition, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, IdenStatic, Iterable,
    prelude::DateTimeWithTimeZone,
    sea_query::{Alias, Expr, OnConflict, Query, SelectStatement},
};

use crate::{db::now, domain::ClientNetwork};

const HOUR: TimeDelta = TimeDelta::hours(1);
const DAY: TimeDelta = TimeDelta::days(1);

/// How often one address may be sent account mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Least time between two mails to the address.
    pub cooldown: TimeDelta,
    /// Most mails to the address an hour, per client network.
    pub hourly_limit: u32,
    /// Most mails to the address a day, all networks together; one network may use half.
    pub daily_limit: u32,
}

impl ThrottlePolicy {
    fn daily_share(&self) -> u32 {
        (self.daily_limit / 2).max(1)
    }
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
    /// Failed sign-ins to one address.
    SignIn,
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

/// A fixed window: when it started and how much was counted in it.
#[derive(Debug, Clone, Copy)]
struct Window {
    started_at: DateTimeWithTimeZone,
    count: i32,
}

impl Window {
    /// The window as it stands at `now`: a fresh one once `length` has passed.
    fn at(self, now: DateTimeWithTimeZone, length: TimeDelta) -> Self {
        if self.started_at + length <= now {
            Self {
                started_at: now,
                count: 0,
            }
        } else {
            self
        }
    }

    /// How long until one more fits under `limit`; zero when it fits now.
    fn wait(self, now: DateTimeWithTimeZone, length: TimeDelta, limit: u32) -> TimeDelta {
        if i64::from(self.count) >= i64::from(limit) {
            self.started_at + length - now
        } else {
            TimeDelta::zero()
        }
    }

    fn counted(self) -> Self {
        Self {
            count: self.count.saturating_add(1),
            ..self
        }
    }
}

/// The state of the limits for one address and client, as stored.
struct Rows {
    address: mail_throttles::Model,
    client: mail_throttle_clients::Model,
}

impl Rows {
    /// The windows at `now`, or how long to wait.
    fn decide(
        &self,
        now: DateTimeWithTimeZone,
        policy: ThrottlePolicy,
    ) -> Result<(Window, Window, Window), RateLimited> {
        let daily = Window {
            started_at: self.address.window_started_at,
            count: self.address.sent_in_window,
        }
        .at(now, DAY);
        let hourly = Window {
            started_at: self.client.hour_started_at,
            count: self.client.sent_in_hour,
        }
        .at(now, HOUR);
        let share = Window {
            started_at: self.client.day_started_at,
            count: self.client.sent_in_day,
        }
        .at(now, DAY);
        let cooldown = policy.cooldown;
        let waits = [
            self.address
                .last_sent_at
                .map_or(TimeDelta::zero(), |last| last + cooldown - now),
            daily.wait(now, DAY, policy.daily_limit),
            hourly.wait(now, HOUR, policy.hourly_limit),
            share.wait(now, DAY, policy.daily_share()),
        ];
        let wait = waits.into_iter().max().unwrap_or_default();
        if wait > TimeDelta::zero() {
            return Err(RateLimited::after(wait, LimitScope::Address));
        }
        Ok((daily, hourly, share))
    }
}

/// Whether a mail to the address with key `key` from `client` would be refused now, without
/// recording anything: lets a request that would be refused skip its costly work. The answer
/// is advisory (a concurrent request may change it); [`take`] decides.
pub async fn peek<C: ConnectionTrait>(
    db: &C,
    key: &str,
    client: ClientNetwork,
    policy: ThrottlePolicy,
) -> Result<Result<(), RateLimited>, DbErr> {
    // The statement always answers one row (its `FROM` is a one-row subquery).
    let (address, client_row) = match db.query_one(&both_rows(key, client)).await? {
        Some(row) => (
            mail_throttles::Model::from_query_result_optional(&row, ADDRESS)?,
            mail_throttle_clients::Model::from_query_result_optional(&row, CLIENT)?,
        ),
        None => (None, None),
    };
    // The clock after the reads: a mail recorded meanwhile must not look like it is from the
    // future (which would ask for more than the cooldown).
    let now = now();
    let rows = Rows {
        address: address.unwrap_or_else(|| fresh_address(key, now)),
        client: client_row.unwrap_or_else(|| fresh_client(key, client, now)),
    };
    Ok(rows.decide(now, policy).map(drop))
}

/// Column prefixes of [`both_rows`]'s answer.
const ADDRESS: &str = "address_";
const CLIENT: &str = "client_";

/// The address's row and the address and client's row, each `NULL` where missing, in one row
/// of one statement: a sign-up's check before hashing is one round trip to the database (and on
/// SQLite one trip to its thread and one ping of the pool), not two.
fn both_rows(key: &str, client: ClientNetwork) -> SelectStatement {
    // Here only: its `max` would shadow the integers' in the rest of the module.
    use sea_orm::sea_query::ExprTrait as _;
    let wanted = Alias::new("wanted");
    let key_column = Alias::new("email_key");
    let wanted_key = || Expr::col((wanted.clone(), key_column.clone()));
    let mut select = Query::select();
    select
        .from_subquery(
            Query::select()
                .expr_as(Expr::val(key), key_column.clone())
                .to_owned(),
            wanted.clone(),
        )
        .left_join(
            mail_throttles::Entity,
            Expr::col((mail_throttles::Entity, mail_throttles::Column::EmailKey)).eq(wanted_key()),
        )
        .left_join(
            mail_throttle_clients::Entity,
            Condition::all()
                .add(
                    Expr::col((
                        mail_throttle_clients::Entity,
                        mail_throttle_clients::Column::EmailKey,
                    ))
                    .eq(wanted_key()),
                )
                .add(
                    Expr::col((
                        mail_throttle_clients::Entity,
                        mail_throttle_clients::Column::ClientKey,
                    ))
                    .eq(client.key()),
                ),
        );
    select_prefixed::<mail_throttles::Entity>(&mut select, ADDRESS);
    select_prefixed::<mail_throttle_clients::Entity>(&mut select, CLIENT);
    select
}

/// Selects every column of `E` as `prefix` + its name, as a model's `from_query_result` with
/// that prefix reads them.
fn select_prefixed<E: EntityTrait>(select: &mut SelectStatement, prefix: &str) {
    for column in E::Column::iter() {
        select.expr_as(
            Expr::col((E::default(), column)),
            Alias::new(format!("{prefix}{}", column.as_str())),
        );
    }
}

/// Records one mail to the address with key `key` for `client` if the limits allow it now.
///
/// Call inside the write transaction that queues the mail: the rows are locked (the address's,
/// then the client's, always in that order) until it commits, so concurrent requests for one
/// address are decided one after the other, and a rollback forgets the mail.
pub async fn take<C: ConnectionTrait>(
    txn: &C,
    key: &str,
    client: ClientNetwork,
    policy: ThrottlePolicy,
) -> Result<Result<(), RateLimited>, DbErr> {
    let started = now();
    // Each row is created if missing and locked in one statement: an upsert whose update
    // changes nothing returns the row as it stands, locked on PostgreSQL as `FOR UPDATE`
    // would lock it (SQLite's write transaction already excludes every other writer).
    let address = mail_throttles::Entity::insert(mail_throttles::ActiveModel::from(fresh_address(
        key, started,
    )))
    .on_conflict(
        OnConflict::column(mail_throttles::Column::EmailKey)
            .value(
                mail_throttles::Column::SentInWindow,
                Expr::col((mail_throttles::Entity, mail_throttles::Column::SentInWindow)),
            )
            .to_owned(),
    )
    .exec_with_returning(txn)
    .await?;
    let client_row = mail_throttle_clients::Entity::insert(
        mail_throttle_clients::ActiveModel::from(fresh_client(key, client, started)),
    )
    .on_conflict(
        OnConflict::columns([
            mail_throttle_clients::Column::EmailKey,
            mail_throttle_clients::Column::ClientKey,
        ])
        .value(
            mail_throttle_clients::Column::SentInHour,
            Expr::col((
                mail_throttle_clients::Entity,
                mail_throttle_clients::Column::SentInHour,
            )),
        )
        .to_owned(),
    )
    .exec_with_returning(txn)
    .await?;
    // Read the clock only once the rows are ours: a request that waited for the lock must not
    // judge by a time from before the mail that made it wait.
    let now = now();
    let rows = Rows {
        address,
        client: client_row,
    };
    let (daily, hourly, share) = match rows.decide(now, policy) {
        Ok(windows) => windows,
        Err(limited) => return Ok(Err(limited)),
    };
    let (daily, hourly, share) = (daily.counted(), hourly.counted(), share.counted());
    mail_throttles::Entity::update(mail_throttles::ActiveModel {
        email_key: Set(rows.address.email_key),
        window_started_at: Set(daily.started_at),
        sent_in_window: Set(daily.count),
        last_sent_at: Set(Some(now)),
    })
    .exec(txn)
    .await?;
    mail_throttle_clients::Entity::update(mail_throttle_clients::ActiveModel {
        email_key: Set(rows.client.email_key),
        client_key: Set(rows.client.client_key),
        hour_started_at: Set(hourly.started_at),
        sent_in_hour: Set(hourly.count),
        day_started_at: Set(share.started_at),
        sent_in_day: Set(share.count),
    })
    .exec(txn)
    .await?;
    Ok(Ok(()))
}

fn fresh_address(key: &str, now: DateTimeWithTimeZone) -> mail_throttles::Model {
    mail_throttles::Model {
        email_key: key.to_owned(),
        window_started_at: now,
        sent_in_window: 0,
        last_sent_at: None,
    }
}

fn fresh_client(
    key: &str,
    client: ClientNetwork,
    now: DateTimeWithTimeZone,
) -> mail_throttle_clients::Model {
    mail_throttle_clients::Model {
        email_key: key.to_owned(),
        client_key: client.key(),
        hour_started_at: now,
        sent_in_hour: 0,
        day_started_at: now,
        sent_in_day: 0,
    }
}
