//! A budget of costly requests (sign-ups, resends, confirmations) per client network and minute,
//! kept in the database so that it holds across restarts and instances. It runs before any
//! costly work, so a client over its budget costs one statement, not a hash.

use chrono::TimeDelta;
use entity::client_budgets::{self, Column, Entity};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait,
    prelude::DateTimeWithTimeZone,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use super::throttle::{LimitScope, RateLimited};
use crate::{db::now, domain::ClientNetwork};

/// The window the budget counts in.
const WINDOW: TimeDelta = TimeDelta::minutes(1);

/// Whose budget a request takes from, and how large it is.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The network the request came from.
    pub client: ClientNetwork,
    /// Costly requests the network may make a minute (`ADMIT_IP_RATE_LIMIT`); 0 for no limit.
    pub per_minute: u32,
}

/// Counts one costly request in `budget` and refuses it when the client has made more than
/// `per_minute` in the current window; `per_minute == 0` turns the budget off.
///
/// One upsert does the counting, so concurrent requests from one client are counted exactly,
/// on SQLite and PostgreSQL alike, without a transaction of their own.
pub async fn take<C: ConnectionTrait>(
    db: &C,
    Budget { client, per_minute }: Budget,
) -> Result<Result<(), RateLimited>, DbErr> {
    if per_minute == 0 {
        return Ok(Ok(()));
    }
    let now = now();
    let stale = Expr::col((Entity, Column::WindowStartedAt)).lte(window_over(now));
    let row = Entity::insert(client_budgets::ActiveModel {
        client_key: Set(client.key()),
        window_started_at: Set(now),
        used: Set(1),
    })
    .on_conflict(
        OnConflict::column(Column::ClientKey)
            .value(
                Column::WindowStartedAt,
                Expr::case(stale.clone(), now)
                    .finally(Expr::col((Entity, Column::WindowStartedAt))),
            )
            .value(
                Column::Used,
                Expr::case(stale, 1).finally(Expr::col((Entity, Column::Used)).add(1)),
            )
            .to_owned(),
    )
    .exec_with_returning(db)
    .await?;
    Ok(judge(row.used, row.window_started_at, per_minute, now))
}

/// The start of a window that is over at `now`, or earlier: a budget row whose window started
/// then counts afresh.
pub(super) fn window_over(now: DateTimeWithTimeZone) -> DateTimeWithTimeZone {
    now - WINDOW
}

/// Whether the request that made a budget row read `used` requests in the window that started
/// at `window_started_at` may go on at `now`: shared by [`take`] and by statements that take
/// from the budget themselves (the confirmation on PostgreSQL).
pub(super) fn judge(
    used: i32,
    window_started_at: DateTimeWithTimeZone,
    per_minute: u32,
    now: DateTimeWithTimeZone,
) -> Result<(), RateLimited> {
    if i64::from(used) <= i64::from(per_minute) {
        return Ok(());
    }
    Err(RateLimited::after(
        window_started_at + WINDOW - now,
        LimitScope::Client,
    ))
}

/// The budgets whose window is over, for the purge.
pub(super) fn stale() -> Condition {
    Condition::all().add(Column::WindowStartedAt.lt(window_over(now())))
}
