//! Signing in: an address and a password become a session, but only for a confirmed account,
//! and without telling anyone who lacks the password whether the address has an account.
//!
//! - An unknown address and a wrong password get the same answer, after the same work: the
//!   password is checked against a dummy hash when there is no account.
//! - Failed attempts are counted per address (known or not). After [`FREE_FAILURES`] in a row,
//!   each further attempt must wait, starting at one second and doubling up to
//!   [`LONGEST_WAIT`]; while it waits, no password is checked at all, so a right password
//!   cannot be told apart from a wrong one. The attempt is counted before the password is
//!   checked (and forgotten when it was right), so concurrent guesses cannot slip past the
//!   count. The trade-off: whoever hammers an address makes its owner wait too, at most
//!   [`LONGEST_WAIT`] after the attacker stops.
//! - Every attempt also counts against the client network's budget of costly requests.
//! - The session is created only if the password is still the account's once its row is
//!   locked: a reset that commits while the old password is being checked wins
//!   ([`still_proved`]).

use chrono::TimeDelta;
use entity::{sessions, sign_in_throttles, users};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, QueryFilter, QuerySelect, sea_query::OnConflict,
};
use uuid::Uuid;

use super::{
    PasswordHasher, Verification, client_budget,
    sessions::{self as session_store, Sessions},
    throttle::{LimitScope, RateLimited},
};
use crate::{
    db::{begin_write, now},
    domain::{ClientNetwork, EmailAddress, Password, SessionToken},
};

/// Failed attempts in a row that cost nothing.
pub const FREE_FAILURES: i32 = 5;
/// The wait after the first failure past the free ones; it doubles with each further one.
const FIRST_WAIT: TimeDelta = TimeDelta::seconds(1);
/// The longest wait between two attempts.
pub const LONGEST_WAIT: TimeDelta = TimeDelta::minutes(15);

/// A sign-in attempt, parsed.
#[derive(Debug)]
pub struct SignInRequest {
    /// The address typed.
    pub email: EmailAddress,
    /// The password typed.
    pub password: Password,
    /// The client's `User-Agent`, to tell sessions apart in a list.
    pub user_agent: Option<String>,
}

/// A new session.
#[derive(Debug)]
pub struct SignedIn {
    /// The account now signed in.
    pub user: users::Model,
    /// The session created.
    pub session: sessions::Model,
    /// The session's token, to hand to the client once.
    pub token: SessionToken,
}

/// Signing in did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// No account with that address and password (which of the two is not said).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The password is right but the address was never confirmed.
    #[error("email not confirmed")]
    EmailNotConfirmed,
    /// Too many failures for the address, or too many requests from the client: nothing was
    /// checked.
    #[error("rate limited")]
    RateLimited(RateLimited),
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for SignInError {
    fn from(err: DbErr) -> Self {
        Self::Internal(err.into())
    }
}

impl From<RateLimited> for SignInError {
    fn from(limited: RateLimited) -> Self {
        Self::RateLimited(limited)
    }
}

/// Signs in with `request`; see the module's description for the rules.
pub async fn sign_in(
    sessions: &Sessions,
    client: ClientNetwork,
    request: SignInRequest,
) -> Result<SignedIn, SignInError> {
    client_budget::take(
        &sessions.db,
        client_budget::Budget {
            client,
            per_minute: sessions.policy.ip_rate_limit,
        },
    )
    .await??;
    let key = request.email.key();
    count_attempt(&sessions.db, key).await??;
    let user = users::Entity::find()
        .filter(users::Column::EmailKey.eq(key))
        .one(&sessions.db)
        .await?;
    let verification = sessions
        .hasher
        .verify(
            client,
            request.password.clone(),
            user.as_ref().map(|user| user.password_hash.clone()),
        )
        .await
        .map_err(anyhow::Error::from)?;
    let (Some(user), Verification::Match { rehash }) = (user, verification) else {
        tracing::info!("sign-in refused: invalid credentials");
        return Err(SignInError::InvalidCredentials);
    };
    // Hashed before the transaction, so that no row stays locked while it is.
    let renewed = if rehash {
        Some(
            sessions
                .hasher
                .hash(client, request.password)
                .await
                .map_err(anyhow::Error::from)?,
        )
    } else {
        None
    };
    let txn = begin_write(&sessions.db).await?;
    let Ok(user) = still_proved(&txn, &user, None).await? else {
        tracing::info!(user_id = %user.id, "sign-in refused: the password changed while it was checked");
        return Err(SignInError::InvalidCredentials);
    };
    forget_failures(&txn, key).await?;
    if let Some(renewed) = renewed {
        users::Entity::update(users::ActiveModel {
            id: Set(user.id),
            password_hash: Set(renewed),
            ..Default::default()
        })
        .exec(&txn)
        .await?;
        tracing::info!(user_id = %user.id, "password hash renewed with current parameters");
    }
    if user.confirmed_at.is_none() {
        txn.commit().await?;
        tracing::info!(user_id = %user.id, "sign-in refused: email not confirmed");
        return Err(SignInError::EmailNotConfirmed);
    }
    let (session, token) =
        session_store::create(&txn, sessions.ttl(), &user, request.user_agent.as_deref()).await?;
    txn.commit().await?;
    metrics::counter!(crate::metrics::SIGN_INS).increment(1);
    tracing::info!(user_id = %user.id, session_id = %session.id, "signed in");
    Ok(SignedIn {
        user,
        session,
        token,
    })
}

/// Why a password or session proved before a write transaction no longer counts in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The account's password changed, or the account went, since the password was checked.
    Password,
    /// The request's session ended since it was looked up.
    Session,
}

/// Locks the account's row in `txn`, then `session`'s when given, and returns the account as
/// it is now, if the password checked before the transaction (against `proved`'s hash) is
/// still its password and the session is still open.
///
/// A password is checked outside any transaction because hashing takes milliseconds (seconds
/// when the hashing queue is long), and holding a row that long would stall everyone. A reset,
/// change, revert, sign-out or deletion that commits in that time must still win: whoever knew
/// the old password, or held the session, must not get a session, set a password, ask for an
/// address change or delete the account on its strength afterwards. Each of those takes the
/// account's row first, so whichever commits second sees what the first did.
pub(super) async fn still_proved(
    txn: &DatabaseTransaction,
    proved: &users::Model,
    session: Option<Uuid>,
) -> Result<Result<users::Model, Stale>, DbErr> {
    let user = users::Entity::find_by_id(proved.id)
        .lock_exclusive()
        .one(txn)
        .await?;
    if let Some(session) = session {
        let open = sessions::Entity::find_by_id(session)
            .lock_exclusive()
            .one(txn)
            .await?;
        if open.is_none() {
            return Ok(Err(Stale::Session));
        }
    }
    Ok(user
        .filter(|user| user.password_hash == proved.password_hash)
        .ok_or(Stale::Password))
}

/// Counts one attempt for the address with key `key`, unless it must wait: then the attempt is
/// refused and not counted (so the owner can get in once the wait is over).
async fn count_attempt(
    db: &DatabaseConnection,
    key: &str,
) -> Result<Result<(), RateLimited>, DbErr> {
    let txn = begin_write(db).await?;
    sign_in_throttles::Entity::insert(sign_in_throttles::ActiveModel {
        email_key: Set(key.to_owned()),
        failures: Set(0),
        last_attempt_at: Set(now()),
        blocked_until: Set(None),
    })
    .on_conflict(
        OnConflict::column(sign_in_throttles::Column::EmailKey)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&txn)
    .await?;
    let row = sign_in_throttles::Entity::find_by_id(key.to_owned())
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("sign-in throttle for {key}")))?;
    // The clock once the row is ours: an attempt that waited for the lock judges by now.
    let now = now();
    if let Some(until) = row.blocked_until.filter(|until| *until > now) {
        txn.rollback().await?;
        return Ok(Err(RateLimited::after(until - now, LimitScope::SignIn)));
    }
    let failures = row.failures.saturating_add(1);
    sign_in_throttles::Entity::update(sign_in_throttles::ActiveModel {
        email_key: Set(row.email_key),
        failures: Set(failures),
        last_attempt_at: Set(now),
        blocked_until: Set(wait_after(failures).map(|wait| now + wait)),
    })
    .exec(&txn)
    .await?;
    txn.commit().await?;
    Ok(Ok(()))
}

/// The wait before the next attempt after `failures` in a row: none for the free ones, then
/// doubling from [`FIRST_WAIT`] up to [`LONGEST_WAIT`].
fn wait_after(failures: i32) -> Option<TimeDelta> {
    let past_free = failures.checked_sub(FREE_FAILURES)?;
    let doublings = u32::try_from(past_free).ok()?.min(20);
    Some((FIRST_WAIT * (1 << doublings)).min(LONGEST_WAIT))
}

/// Whether the signed-in `user` typed their password (changing the password or the address,
/// deleting the account): like a sign-in, it takes from the client's `budget` first (a hash
/// costs, and a session is no way around the budget), and it is counted and forgotten like a
/// sign-in attempt for the account's address, so guessing here meets the same waits.
pub(super) async fn proves_password(
    db: &DatabaseConnection,
    hasher: &PasswordHasher,
    budget: client_budget::Budget,
    user: &users::Model,
    password: Password,
) -> anyhow::Result<Result<bool, RateLimited>> {
    let client = budget.client;
    if let Err(limited) = client_budget::take(db, budget).await? {
        return Ok(Err(limited));
    }
    if let Err(limited) = count_attempt(db, &user.email_key).await? {
        return Ok(Err(limited));
    }
    let verified = hasher
        .verify(client, password, Some(user.password_hash.clone()))
        .await?;
    if verified == Verification::Mismatch {
        return Ok(Ok(false));
    }
    forget_failures(db, &user.email_key).await?;
    Ok(Ok(true))
}

/// A right password: the count starts again.
pub(super) async fn forget_failures<C: ConnectionTrait>(db: &C, key: &str) -> Result<(), DbErr> {
    sign_in_throttles::Entity::delete_by_id(key.to_owned())
        .exec(db)
        .await?;
    Ok(())
}

/// The throttles whose last attempt is older than the longest wait (and an hour), for the
/// purge: nothing is left for them to slow down.
pub(super) fn stale() -> sea_orm::Condition {
    sea_orm::Condition::all().add(
        sign_in_throttles::Column::LastAttemptAt.lt(now() - LONGEST_WAIT - TimeDelta::hours(1)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_the_free_failures_and_double_up_to_the_cap() {
        assert_eq!(wait_after(0), None);
        assert_eq!(wait_after(FREE_FAILURES - 1), None);
        assert_eq!(wait_after(FREE_FAILURES), Some(TimeDelta::seconds(1)));
        assert_eq!(wait_after(FREE_FAILURES + 1), Some(TimeDelta::seconds(2)));
        assert_eq!(wait_after(FREE_FAILURES + 3), Some(TimeDelta::seconds(8)));
        assert_eq!(wait_after(FREE_FAILURES + 10), Some(LONGEST_WAIT));
        assert_eq!(wait_after(i32::MAX), Some(LONGEST_WAIT));
    }
}
