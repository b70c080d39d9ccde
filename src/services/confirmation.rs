//! The persistence of confirming a sign-up's link, in as few round trips as each database
//! allows: the landing page of every new account calls it, so it is admit's hottest write.
//!
//! Both backends first take one request from the client network's budget (see
//! [`client_budget`]), and look at no link when it is spent. Then they make the same decision
//! ([`decide`]) on the link and account as they are once locked, and take the account before
//! the link, as every other use case does:
//! - PostgreSQL runs one statement ([`POSTGRES_CONFIRM`]): data-modifying CTEs count the
//!   request in the budget, lock the user row, then the link, consume it, supersede the
//!   account's other pending links and confirm the account, returning what the decision needs.
//!   Row locks keep concurrent confirmations, sign-ups and resends of the address one after
//!   the other.
//! - SQLite has no data-modifying CTEs, but a write transaction holds the whole database, so
//!   no row needs locking: the budget's upsert, one read of the link with its account, one
//!   update that consumes the link and supersedes the others, one update of the account.

use entity::{users, verification_tokens};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DatabaseConnection, DatabaseConnectionType, DatabaseTransaction, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, QueryResult, RuntimeErr,
    prelude::DateTimeWithTimeZone,
    sea_query::{Expr, ExprTrait as _},
    sqlx::{self, PgPool, Postgres, Row as _, postgres::PgRow},
};

use super::{
    accounts::PURPOSE_ACCOUNT_CONFIRMATION,
    client_budget::{self, Budget},
    throttle::RateLimited,
};
use crate::db::begin_write;

/// The whole confirmation on PostgreSQL. `$1` is the token's hash, `$2` the purpose
/// (`account_confirmation`), `$3` the current time, `$4` the client network's key, `$5` the
/// start of a budget window that is over by now, `$6` the requests a network may make a
/// minute (0: no budget). One row: the budget as counted (`budget_*`, null without a budget),
/// whether a link was found (`link_found`: none is looked for once the budget is spent), the
/// link's and account's state as locked (`link_*`, `account_was_confirmed`), whether this
/// statement confirmed the account (`confirmed_now`), and the account's columns after it.
///
/// `budget` counts as [`client_budget::take`] does, in the same upsert. `account` locks the
/// user row before `link` locks the link, because `link` joins `account` and a row lock is
/// taken above its join. The conditions of `consumed` are [`decide`]'s.
pub const POSTGRES_CONFIRM: &str = r#"
WITH budget AS (
    INSERT INTO client_budgets AS b (client_key, window_started_at, used)
    SELECT $4, $3, 1 WHERE $6 > 0
    ON CONFLICT (client_key) DO UPDATE SET
        window_started_at = CASE WHEN b.window_started_at <= $5 THEN $3
                                 ELSE b.window_started_at END,
        used = CASE WHEN b.window_started_at <= $5 THEN 1 ELSE b.used + 1 END
    RETURNING used, window_started_at
), token AS (
    SELECT user_id FROM verification_tokens WHERE token_hash = $1 AND purpose = $2
        AND NOT EXISTS (SELECT FROM budget WHERE used > $6)
), account AS (
    SELECT u.* FROM users u WHERE u.id = (SELECT user_id FROM token) FOR UPDATE
), link AS (
    SELECT v.id, v.user_id, v.consumed_at, v.superseded_at, v.expires_at
    FROM verification_tokens v JOIN account a ON a.id = v.user_id
    WHERE v.token_hash = $1 AND v.purpose = $2
    FOR UPDATE OF v
), consumed AS (
    UPDATE verification_tokens v SET consumed_at = $3
    FROM link l JOIN account a ON a.id = l.user_id
    WHERE v.id = l.id AND l.superseded_at IS NULL AND l.expires_at > $3
      AND l.consumed_at IS NULL AND a.confirmed_at IS NULL
    RETURNING v.id, v.user_id, v.password_hash, v.display_name
), superseded AS (
    UPDATE verification_tokens v SET superseded_at = $3
    FROM consumed c
    WHERE v.user_id = c.user_id AND v.purpose = $2 AND v.id <> c.id
      AND v.consumed_at IS NULL AND v.superseded_at IS NULL
), confirmed AS (
    UPDATE users u SET confirmed_at = $3,
        password_hash = COALESCE(c.password_hash, u.password_hash),
        display_name = CASE WHEN c.password_hash IS NULL THEN u.display_name
                            ELSE c.display_name END
    FROM consumed c WHERE u.id = c.user_id
    RETURNING u.*
)
SELECT b.used AS budget_used,
    b.window_started_at AS budget_window_started_at,
    l.id IS NOT NULL AS link_found,
    l.consumed_at IS NOT NULL AS link_used,
    l.superseded_at IS NOT NULL AS link_superseded,
    l.expires_at AS link_expires_at,
    a.confirmed_at IS NOT NULL AS account_was_confirmed,
    c.id IS NOT NULL AS confirmed_now,
    CASE WHEN c.id IS NULL THEN a.id ELSE c.id END AS id,
    CASE WHEN c.id IS NULL THEN a.email ELSE c.email END AS email,
    CASE WHEN c.id IS NULL THEN a.email_key ELSE c.email_key END AS email_key,
    CASE WHEN c.id IS NULL THEN a.password_hash ELSE c.password_hash END AS password_hash,
    CASE WHEN c.id IS NULL THEN a.display_name ELSE c.display_name END AS display_name,
    CASE WHEN c.id IS NULL THEN a.created_at ELSE c.created_at END AS created_at,
    CASE WHEN c.id IS NULL THEN a.confirmed_at ELSE c.confirmed_at END AS confirmed_at
FROM (SELECT 1) AS always
    LEFT JOIN budget b ON true
    LEFT JOIN (link l JOIN account a ON a.id = l.user_id) ON true
    LEFT JOIN confirmed c ON c.id = a.id
"#;

/// What presenting a confirmation link did.
#[derive(Debug)]
pub enum Outcome {
    /// The client network's budget is spent: no link was looked at.
    OverBudget(RateLimited),
    /// No link of this purpose has this hash.
    Unknown,
    /// A newer link was sent, or the account was confirmed through another sign-up.
    Superseded,
    /// The link's lifetime is over.
    Expired,
    /// The link was used before; the account as it is.
    AlreadyUsed(users::Model),
    /// The account is confirmed now, with the sign-up's password and display name.
    Confirmed(users::Model),
}

/// The decision on a link, from its state and its account's once both are locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Superseded,
    Expired,
    AlreadyUsed,
    Confirm,
}

/// Superseded before expired before used, so that a used link still answers with its account
/// while it lives. A link whose account was confirmed through another sign-up without ending
/// this one (links from before sign-ups were kept apart) cannot change the account now.
fn decide(
    used: bool,
    superseded: bool,
    expires_at: DateTimeWithTimeZone,
    account_confirmed: bool,
    now: DateTimeWithTimeZone,
) -> Decision {
    if superseded || (!used && account_confirmed && expires_at > now) {
        Decision::Superseded
    } else if expires_at <= now {
        Decision::Expired
    } else if used {
        Decision::AlreadyUsed
    } else {
        Decision::Confirm
    }
}

/// Takes one request from `budget` and, unless it is spent, uses the confirmation link whose
/// token hashes to `hash`, at `now`: the statements alone, without the metrics of
/// [`confirm_account`](super::accounts::confirm_account) (the benchmark runs them directly as
/// the bound of what the API can reach).
pub async fn confirm(
    db: &DatabaseConnection,
    hash: &str,
    now: DateTimeWithTimeZone,
    budget: Budget,
) -> Result<Outcome, DbErr> {
    // The transaction's future is boxed: a future is as large as its largest branch, and each
    // async layer above copies it whole as it starts (a pointer, once boxed). sqlx boxes its
    // own query future, so the statement's branch stays small.
    match &db.inner {
        DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
            confirm_postgres(db.get_postgres_connection_pool(), hash, now, budget).await
        }
        _ => Box::pin(confirm_in_transaction(db, hash, now, budget)).await,
    }
}

/// Runs [`POSTGRES_CONFIRM`] on sqlx itself: the statement is hand-written anyway, and
/// sea-orm's way to it converts every value and moves a future of about 15 KB twice per call
/// (`callgrind`: a seventh of admit's instructions per confirmation).
async fn confirm_postgres(
    pool: &PgPool,
    hash: &str,
    now: DateTimeWithTimeZone,
    budget: Budget,
) -> Result<Outcome, DbErr> {
    let row = sqlx::query(POSTGRES_CONFIRM)
        .bind(hash)
        .bind(PURPOSE_ACCOUNT_CONFIRMATION)
        .bind(now)
        .bind(budget.client.key())
        .bind(client_budget::window_over(now))
        .bind(i64::from(budget.per_minute))
        .fetch_one(pool)
        .await
        .map_err(sqlx_error_to_query_err)?;
    if let Some(used) = column::<Option<i32>>(&row, "budget_used")? {
        let started = column(&row, "budget_window_started_at")?;
        if let Err(limited) = client_budget::judge(used, started, budget.per_minute, now) {
            return Ok(Outcome::OverBudget(limited));
        }
    }
    if !column::<bool>(&row, "link_found")? {
        return Ok(Outcome::Unknown);
    }
    let decision = decide(
        column(&row, "link_used")?,
        column(&row, "link_superseded")?,
        column(&row, "link_expires_at")?,
        column(&row, "account_was_confirmed")?,
        now,
    );
    let confirmed_now: bool = column(&row, "confirmed_now")?;
    if confirmed_now != (decision == Decision::Confirm) {
        return Err(DbErr::Custom(format!(
            "the confirmation statement disagrees with its decision {decision:?}"
        )));
    }
    let user = || users::Model::from_query_result(&QueryResult::from(row), "");
    Ok(match decision {
        Decision::Superseded => Outcome::Superseded,
        Decision::Expired => Outcome::Expired,
        Decision::AlreadyUsed => Outcome::AlreadyUsed(user()?),
        Decision::Confirm => Outcome::Confirmed(user()?),
    })
}

/// A failure of sqlx as sea-orm reports a failed query, so that callers tell an unavailable
/// database apart the same way on every path.
fn sqlx_error_to_query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(err.into()))
}

/// The value of `name` in a row of [`POSTGRES_CONFIRM`].
fn column<'r, T>(row: &'r PgRow, name: &str) -> Result<T, DbErr>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name).map_err(sqlx_error_to_query_err)
}

/// On SQLite the budget's count and the confirmation are one write transaction, committed
/// whatever the outcome, so that a refused or unknown link is counted too.
async fn confirm_in_transaction(
    db: &DatabaseConnection,
    hash: &str,
    now: DateTimeWithTimeZone,
    budget: Budget,
) -> Result<Outcome, DbErr> {
    let txn = begin_write(db).await?;
    let outcome = match client_budget::take(&txn, budget).await? {
        Err(limited) => Outcome::OverBudget(limited),
        Ok(()) => confirm_locked(&txn, hash, now).await?,
    };
    txn.commit().await?;
    Ok(outcome)
}

/// The confirmation in a write transaction that holds the database.
async fn confirm_locked(
    txn: &DatabaseTransaction,
    hash: &str,
    now: DateTimeWithTimeZone,
) -> Result<Outcome, DbErr> {
    use verification_tokens::Column;
    let found = verification_tokens::Entity::find()
        .filter(Column::TokenHash.eq(hash))
        .filter(Column::Purpose.eq(PURPOSE_ACCOUNT_CONFIRMATION))
        .find_also_related(users::Entity)
        .one(txn)
        .await?;
    let Some((link, Some(user))) = found else {
        return Ok(Outcome::Unknown);
    };
    let decision = decide(
        link.consumed_at.is_some(),
        link.superseded_at.is_some(),
        link.expires_at,
        user.confirmed_at.is_some(),
        now,
    );
    match decision {
        Decision::Superseded => return Ok(Outcome::Superseded),
        Decision::Expired => return Ok(Outcome::Expired),
        Decision::AlreadyUsed => return Ok(Outcome::AlreadyUsed(user)),
        Decision::Confirm => {}
    }
    let this_link = Expr::col(Column::Id).eq(link.id);
    verification_tokens::Entity::update_many()
        .col_expr(
            Column::ConsumedAt,
            Expr::case(this_link.clone(), Expr::val(now))
                .finally(Expr::col(Column::ConsumedAt))
                .into(),
        )
        .col_expr(
            Column::SupersededAt,
            Expr::case(this_link, Expr::col(Column::SupersededAt))
                .finally(Expr::val(now))
                .into(),
        )
        .filter(Column::UserId.eq(user.id))
        .filter(Column::Purpose.eq(PURPOSE_ACCOUNT_CONFIRMATION))
        .filter(Column::ConsumedAt.is_null())
        .filter(Column::SupersededAt.is_null())
        .exec(txn)
        .await?;
    let mut confirmed = users::ActiveModel {
        id: Set(user.id),
        confirmed_at: Set(Some(now)),
        ..Default::default()
    };
    if let Some(password_hash) = link.password_hash {
        confirmed.password_hash = Set(password_hash);
        confirmed.display_name = Set(link.display_name);
    }
    let user = users::Entity::update(confirmed).exec(txn).await?;
    Ok(Outcome::Confirmed(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_judged_superseded_then_expired_then_used() {
        let now = crate::db::now();
        let live = now + chrono::TimeDelta::hours(1);
        let dead = now - chrono::TimeDelta::hours(1);
        for (used, superseded, expires, confirmed, expected) in [
            (false, false, live, false, Decision::Confirm),
            (true, false, live, true, Decision::AlreadyUsed),
            (true, false, dead, true, Decision::Expired),
            (false, true, live, false, Decision::Superseded),
            (true, true, dead, true, Decision::Superseded),
            (false, false, live, true, Decision::Superseded),
            (false, false, dead, true, Decision::Expired),
            (false, false, now, false, Decision::Expired),
        ] {
            assert_eq!(
                decide(used, superseded, expires, confirmed, now),
                expected,
                "used {used}, superseded {superseded}, expires {expires}, confirmed {confirmed}"
            );
        }
    }
}
