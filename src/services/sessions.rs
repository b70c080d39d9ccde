//! Sessions: what a sign-in creates and every signed-in request presents. The client holds a
//! random token; the database holds its SHA-256 with the session's owner and deadlines: an
//! absolute expiry and an idle timeout. Revoking a session deletes its row.
//!
//! Rows are locked the account's first, then its sessions, here as in every use case.

use std::sync::Arc;

use chrono::TimeDelta;
use entity::{sessions, users};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    prelude::DateTimeWithTimeZone, sea_query::Expr,
};
use uuid::Uuid;

use super::PasswordHasher;
use crate::{
    db::{begin_write, now},
    domain::{Lifetime, SessionToken},
};

/// `lastSeenAt` is written at most this often per session: a busy client costs one write a
/// minute, not one a request.
const LAST_SEEN_RESOLUTION: TimeDelta = TimeDelta::minutes(1);
/// Most characters of a `User-Agent` kept: enough to tell devices apart.
const USER_AGENT_CHARS: usize = 256;

/// What the session use cases need: the database, the hasher (for sign-in) and their policy.
#[derive(Clone)]
pub struct Sessions {
    pub(super) db: DatabaseConnection,
    pub(super) hasher: PasswordHasher,
    pub(super) policy: Arc<SessionPolicy>,
}

/// How long sessions last and what a sign-in costs a client.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// A session ends this long after sign-in, however active.
    pub ttl: Lifetime,
    /// A session ends when unused this long.
    pub idle_timeout: Lifetime,
    /// Costly requests per client network and minute (0: no budget); sign-ins count.
    pub ip_rate_limit: u32,
}

/// A request's valid session and its owner.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The account signed in.
    pub user: users::Model,
    /// The session the request presented.
    pub session: sessions::Model,
}

/// A session to end was not found among the viewer's own.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No session of the viewer has that id (another account's sessions are not told apart
    /// from ones that never existed).
    #[error("no such session")]
    NotFound,
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for RevokeError {
    fn from(err: DbErr) -> Self {
        Self::Internal(err.into())
    }
}

impl Sessions {
    /// The session use cases over `db`, hashing with `hasher`.
    pub fn new(db: DatabaseConnection, hasher: PasswordHasher, policy: SessionPolicy) -> Self {
        Self {
            db,
            hasher,
            policy: Arc::new(policy),
        }
    }

    /// How long a new session lasts at most, for the cookie's `Max-Age`.
    pub fn ttl(&self) -> Lifetime {
        self.policy.ttl
    }
}

/// Starts a session of at most `ttl` for `user` (in the caller's transaction, where the
/// account's row is locked); returns it with the token to hand to the client once.
pub(super) async fn create<C: ConnectionTrait>(
    db: &C,
    ttl: Lifetime,
    user: &users::Model,
    user_agent: Option<&str>,
) -> anyhow::Result<(sessions::Model, SessionToken)> {
    let token = SessionToken::generate().map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    let now = now();
    let session = sessions::Entity::insert(sessions::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user.id),
        token_hash: Set(token.hash().as_str().to_owned()),
        created_at: Set(now),
        last_seen_at: Set(now),
        expires_at: Set(now + ttl.delta()),
        user_agent: Set(user_agent.and_then(clean_user_agent)),
    })
    .exec_with_returning(db)
    .await?;
    Ok((session, token))
}

/// The session `token` opens, with its owner, if it exists and has neither expired nor been
/// idle too long. Marks it seen (at most once a minute).
pub async fn authenticate(
    sessions: &Sessions,
    token: &SessionToken,
) -> anyhow::Result<Option<Authenticated>> {
    let now = now();
    let found = sessions::Entity::find()
        .filter(sessions::Column::TokenHash.eq(token.hash().as_str()))
        .filter(live(sessions, now))
        .find_also_related(users::Entity)
        .one(&sessions.db)
        .await?;
    let Some((mut session, Some(user))) = found else {
        return Ok(None);
    };
    if session.last_seen_at <= now - LAST_SEEN_RESOLUTION {
        // Conditional, so that concurrent requests of one session write once.
        sessions::Entity::update_many()
            .col_expr(sessions::Column::LastSeenAt, Expr::value(now))
            .filter(sessions::Column::Id.eq(session.id))
            .filter(sessions::Column::LastSeenAt.lte(now - LAST_SEEN_RESOLUTION))
            .exec(&sessions.db)
            .await?;
        session.last_seen_at = now;
    }
    Ok(Some(Authenticated { user, session }))
}

/// The live sessions of `user_id`, newest first.
pub async fn list(sessions: &Sessions, user_id: Uuid) -> anyhow::Result<Vec<sessions::Model>> {
    Ok(sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(live(sessions, now()))
        .order_by_desc(sessions::Column::CreatedAt)
        .order_by_desc(sessions::Column::Id)
        .all(&sessions.db)
        .await?)
}

/// Sessions that have neither expired nor been idle past the timeout at `now`.
fn live(sessions: &Sessions, now: DateTimeWithTimeZone) -> Condition {
    Condition::all()
        .add(sessions::Column::ExpiresAt.gt(now))
        .add(sessions::Column::LastSeenAt.gt(now - sessions.policy.idle_timeout.delta()))
}

/// Ends the session `session_id` of `user_id`; `NotFound` when the account has none such.
pub async fn revoke(
    sessions: &Sessions,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<(), RevokeError> {
    let txn = lock_owner(sessions, user_id).await?;
    let deleted = sessions::Entity::delete_many()
        .filter(sessions::Column::Id.eq(session_id))
        .filter(sessions::Column::UserId.eq(user_id))
        .exec(&txn)
        .await?
        .rows_affected;
    if deleted == 0 {
        return Err(RevokeError::NotFound);
    }
    txn.commit().await?;
    tracing::info!(%user_id, %session_id, "session revoked");
    Ok(())
}

/// Ends every session of `user_id` but `keep`; returns how many ended.
pub async fn revoke_others(sessions: &Sessions, user_id: Uuid, keep: Uuid) -> anyhow::Result<u64> {
    let txn = lock_owner(sessions, user_id).await?;
    let deleted = end_all(&txn, user_id, Some(keep)).await?;
    txn.commit().await?;
    tracing::info!(%user_id, ended = deleted, "other sessions revoked");
    Ok(deleted)
}

/// A write transaction holding the row of the account `user_id`. Sessions are locked after
/// their account's row, as every use case that ends them does: a password change holds the
/// account and its own session while it ends the others, and a sign-out elsewhere that took
/// sessions first could wait for it while holding one it wants (a deadlock).
async fn lock_owner(sessions: &Sessions, user_id: Uuid) -> Result<DatabaseTransaction, DbErr> {
    let txn = begin_write(&sessions.db).await?;
    users::Entity::find_by_id(user_id)
        .lock_exclusive()
        .one(&txn)
        .await?;
    Ok(txn)
}

/// Ends every session of `user_id` but `keep`, inside the caller's transaction when there is
/// one (a password change ends sessions in the same commit); returns how many ended.
pub(super) async fn end_all<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    keep: Option<Uuid>,
) -> Result<u64, DbErr> {
    let mut delete = sessions::Entity::delete_many().filter(sessions::Column::UserId.eq(user_id));
    if let Some(keep) = keep {
        delete = delete.filter(sessions::Column::Id.ne(keep));
    }
    Ok(delete.exec(db).await?.rows_affected)
}

/// The `User-Agent` as kept: printable characters only, at most [`USER_AGENT_CHARS`] of them;
/// nothing when that leaves nothing.
fn clean_user_agent(raw: &str) -> Option<String> {
    let kept: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(USER_AGENT_CHARS)
        .collect();
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_are_cleaned_and_truncated() {
        assert_eq!(clean_user_agent("  \u{0}\n "), None);
        assert_eq!(
            clean_user_agent("Mozilla/5.0\r\nX-Injected: 1").as_deref(),
            Some("Mozilla/5.0X-Injected: 1")
        );
        let long = "a".repeat(1_000);
        assert_eq!(
            clean_user_agent(&long).map(|kept| kept.chars().count()),
            Some(USER_AGENT_CHARS)
        );
    }
}
