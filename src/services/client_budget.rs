//! A budget of costly requests (sign-ups, resends, confirmations) per client network and minute,
//! kept in the database so that it holds across restarts and instances. It runs before any
//! costly work, so a client over its budget costs one statement, not a hash.

use chrono::TimeDelta;
use entity::client_budgets::{self, Column, Entity};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use super::throttle::{LimitScope, RateLimited};
use crate::{db::now, domain::ClientNetwork};

/// The window the budget counts in.
const WINDOW: TimeDelta = TimeDelta::minutes(1);

/// Counts one costly request from `client` and refuses it when the client has made more than
/// `per_minute` in the current window; `per_minute == 0` turns the budget off.
///
/// One upsert does the counting, so concurrent requests from one client are counted exactly,
/// on SQLite and PostgreSQL alike, without a transaction of their own.
pub async fn take<C: ConnectionTrait>(
    db: &C,
    client: ClientNetwork,
    per_minute: u32,
) -> Result<Result<(), RateLimited>, DbErr> {
    if per_minute == 0 {
        return Ok(Ok(()));
    }
    let now = now();
    let stale = Expr::col((Entity, Column::WindowStartedAt)).lte(now - WINDOW);
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
    if i64::from(row.used) <= i64::from(per_minute) {
        return Ok(Ok(()));
    }
    Ok(Err(RateLimited::after(
        row.window_started_at + WINDOW - now,
        LimitScope::Client,
    )))
}

/// The budgets whose window is over, for the purge.
pub(super) fn stale() -> Condition {
    Condition::all().add(Column::WindowStartedAt.lt(now() - WINDOW))
}
