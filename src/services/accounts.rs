//! Registration, confirmation and resending the confirmation link.

use entity::{users, verification_tokens};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    QuerySelect, SqlErr, TransactionTrait, sea_query::Expr,
};
use uuid::Uuid;

use super::{
    client_budget,
    throttle::{self, RateLimited, ThrottlePolicy},
};
use crate::{
    db::{begin_write, now},
    domain::{ClientNetwork, ConfirmationToken, DisplayName, EmailAddress, Password},
    mail,
    state::AppState,
};

/// What `verification_tokens.purpose` holds for account confirmation.
pub const PURPOSE_ACCOUNT_CONFIRMATION: &str = "account_confirmation";

/// A sign-up whose every field has been parsed.
#[derive(Debug)]
pub struct NewAccount {
    /// The address to register.
    pub email: EmailAddress,
    /// The chosen password.
    pub password: Password,
    /// How the person wants to be greeted, if at all.
    pub display_name: Option<DisplayName>,
}

/// Registration did not go through.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The address was sent account mail too recently, or the client made too many costly
    /// requests; nothing changed.
    #[error("rate limited")]
    RateLimited(RateLimited),
    /// Anything unexpected (database down, no randomness, ...); never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A new confirmation link was not sent.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    /// The address was sent account mail too recently, or the client made too many costly
    /// requests.
    #[error("rate limited")]
    RateLimited(RateLimited),
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Why an account could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    /// No such token for account confirmation: never issued, altered or purged.
    #[error("the token is not valid")]
    InvalidToken,
    /// The token was issued but its lifetime is over.
    #[error("the token has expired")]
    ExpiredToken,
    /// A newer link was sent since; only the newest one confirms.
    #[error("the token was superseded by a newer one")]
    SupersededToken,
    /// The client made too many costly requests; nothing was looked up.
    #[error("rate limited")]
    RateLimited(RateLimited),
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

macro_rules! internal_from_db_err {
    ($($error:ty),*) => {$(
        impl From<DbErr> for $error {
            fn from(err: DbErr) -> Self {
                Self::Internal(err.into())
            }
        }
    )*};
}
macro_rules! rate_limited_from {
    ($($error:ty),*) => {$(
        impl From<RateLimited> for $error {
            fn from(limited: RateLimited) -> Self {
                Self::RateLimited(limited)
            }
        }
    )*};
}
internal_from_db_err!(RegisterError, ResendError, ConfirmError);
rate_limited_from!(RegisterError, ResendError, ConfirmError);

/// Registers `account`, or renews an unconfirmed one, and queues the email, in one transaction.
///
/// - A new address gets an unconfirmed account and a confirmation link.
/// - An unconfirmed address gets the new password and display name, a fresh link, and every
///   earlier link is superseded: whoever controls the inbox and registered last decides, which
///   defeats pre-registering someone else's address with a password of one's own.
/// - A confirmed address is left as it is and gets a short notice instead.
///
/// The answer is the same in all three cases (and the Argon2 work is done in all three), so it
/// reveals nothing about which addresses have accounts. The per-address mail limit applies to
/// all three alike.
///
/// The client's budget and the address's limit are checked before hashing: a refused request
/// costs a statement or two, not an Argon2 hash, and its answer is the same for every address.
pub async fn register(
    state: &AppState,
    client: ClientNetwork,
    account: NewAccount,
) -> Result<(), RegisterError> {
    client_budget::take(&state.db, client, state.settings.ip_rate_limit).await??;
    throttle::peek(&state.db, account.email.key(), throttle_policy(state)).await??;
    let password_hash = state
        .hasher
        .hash(account.password)
        .await
        .map_err(anyhow::Error::from)?;
    let token = new_token()?;
    let now = now();
    let display_name = account.display_name.map(String::from);

    let txn = begin_write(&state.db).await?;
    if let Err(limited) = throttle::take(&txn, account.email.key(), throttle_policy(state)).await? {
        txn.rollback().await?;
        return Err(RegisterError::RateLimited(limited));
    }
    let user = users::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(account.email.as_str().to_owned()),
        email_key: Set(account.email.key().to_owned()),
        password_hash: Set(password_hash.clone()),
        display_name: Set(display_name.clone()),
        created_at: Set(now),
        confirmed_at: Set(None),
    };
    // Insert and let the UNIQUE index decide (in a savepoint, so that a violation leaves the
    // transaction usable): checking first would race with a concurrent sign-up.
    let attempt = txn.begin().await?;
    let inserted = users::Entity::insert(user)
        .exec_with_returning(&attempt)
        .await;
    let user = match inserted {
        Ok(user) => {
            attempt.commit().await?;
            user
        }
        Err(err) if is_duplicate_email(&err) => {
            attempt.rollback().await?;
            let existing = users::Entity::find()
                .filter(users::Column::EmailKey.eq(account.email.key()))
                .lock_exclusive()
                .one(&txn)
                .await?
                .ok_or_else(|| anyhow::anyhow!("a duplicate key without its user"))?;
            if existing.confirmed_at.is_some() {
                let notice = state
                    .templates
                    .signup_notice(existing.display_name.as_deref())
                    .map_err(anyhow::Error::from)?;
                let message_id = mail::enqueue(&txn, account.email.deliverable(), notice).await?;
                txn.commit().await?;
                state.outbox.wake();
                tracing::info!(user_id = %existing.id, %message_id, "sign-up attempt for a confirmed account, notice queued");
                return Ok(());
            }
            users::Entity::update(users::ActiveModel {
                id: Set(existing.id),
                email: Set(account.email.as_str().to_owned()),
                password_hash: Set(password_hash),
                display_name: Set(display_name),
                ..Default::default()
            })
            .exec(&txn)
            .await?
        }
        Err(err) => return Err(err.into()),
    };
    let message_id = issue_confirmation(&txn, state, &user, &account.email, &token).await?;
    txn.commit().await?;
    state.outbox.wake();
    tracing::info!(user_id = %user.id, %message_id, "confirmation email queued");
    Ok(())
}

/// Sends a fresh confirmation link to `email` if it belongs to an unconfirmed account,
/// superseding earlier links. Unknown and confirmed addresses get the same answer and no mail.
pub async fn resend_confirmation(
    state: &AppState,
    client: ClientNetwork,
    email: EmailAddress,
) -> Result<(), ResendError> {
    client_budget::take(&state.db, client, state.settings.ip_rate_limit).await??;
    let token = new_token()?;
    let txn = begin_write(&state.db).await?;
    if let Err(limited) = throttle::take(&txn, email.key(), throttle_policy(state)).await? {
        txn.rollback().await?;
        return Err(ResendError::RateLimited(limited));
    }
    let user = users::Entity::find()
        .filter(users::Column::EmailKey.eq(email.key()))
        .lock_exclusive()
        .one(&txn)
        .await?;
    match user {
        Some(user) if user.confirmed_at.is_none() => {
            let message_id = issue_confirmation(&txn, state, &user, &email, &token).await?;
            txn.commit().await?;
            state.outbox.wake();
            tracing::info!(user_id = %user.id, %message_id, "confirmation email resent");
        }
        // Still committed: the limit counts this request like any other.
        _ => txn.commit().await?,
    }
    Ok(())
}

/// Confirms the account `token` was issued for and returns it. Presenting a token that was
/// already used, while it is still unexpired, returns the same confirmed account again.
pub async fn confirm_account(
    state: &AppState,
    client: ClientNetwork,
    token: ConfirmationToken,
) -> Result<users::Model, ConfirmError> {
    client_budget::take(&state.db, client, state.settings.ip_rate_limit).await??;
    let hash = token.hash();
    let txn = begin_write(&state.db).await?;
    let record = verification_tokens::Entity::find()
        .filter(verification_tokens::Column::TokenHash.eq(hash.as_str()))
        .filter(verification_tokens::Column::Purpose.eq(PURPOSE_ACCOUNT_CONFIRMATION))
        .one(&txn)
        .await?
        .ok_or(ConfirmError::InvalidToken)?;
    let now = now();
    if record.superseded_at.is_some() {
        return Err(ConfirmError::SupersededToken);
    }
    if record.expires_at <= now {
        return Err(ConfirmError::ExpiredToken);
    }
    if record.consumed_at.is_none() {
        // Both updates are guarded by IS NULL: of two confirmations racing on PostgreSQL the
        // second re-checks after the first commits and changes nothing, so `confirmed_at` is
        // written exactly once.
        verification_tokens::Entity::update_many()
            .col_expr(verification_tokens::Column::ConsumedAt, Expr::value(now))
            .filter(verification_tokens::Column::Id.eq(record.id))
            .filter(verification_tokens::Column::ConsumedAt.is_null())
            .exec(&txn)
            .await?;
        users::Entity::update_many()
            .col_expr(users::Column::ConfirmedAt, Expr::value(now))
            .filter(users::Column::Id.eq(record.user_id))
            .filter(users::Column::ConfirmedAt.is_null())
            .exec(&txn)
            .await?;
    }
    let user = users::Entity::find_by_id(record.user_id)
        .one(&txn)
        .await?
        .ok_or(ConfirmError::InvalidToken)?;
    txn.commit().await?;
    Ok(user)
}

/// Supersedes the user's open confirmation tokens, stores `token` in their place and queues
/// the email carrying it. Returns the outbox id.
async fn issue_confirmation(
    txn: &DatabaseTransaction,
    state: &AppState,
    user: &users::Model,
    email: &EmailAddress,
    token: &ConfirmationToken,
) -> anyhow::Result<Uuid> {
    let now = now();
    verification_tokens::Entity::update_many()
        .col_expr(verification_tokens::Column::SupersededAt, Expr::value(now))
        .filter(verification_tokens::Column::UserId.eq(user.id))
        .filter(verification_tokens::Column::Purpose.eq(PURPOSE_ACCOUNT_CONFIRMATION))
        .filter(verification_tokens::Column::ConsumedAt.is_null())
        .filter(verification_tokens::Column::SupersededAt.is_null())
        .exec(txn)
        .await?;
    verification_tokens::Entity::insert(verification_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user.id),
        purpose: Set(PURPOSE_ACCOUNT_CONFIRMATION.to_owned()),
        token_hash: Set(token.hash().as_str().to_owned()),
        created_at: Set(now),
        expires_at: Set(now + state.settings.token_lifetime()),
        consumed_at: Set(None),
        superseded_at: Set(None),
    })
    .exec_without_returning(txn)
    .await?;
    let message = state
        .templates
        .confirmation(&state.confirmation_link(token), state.settings.token_ttl)?;
    Ok(mail::enqueue(txn, email.deliverable(), message).await?)
}

fn new_token() -> anyhow::Result<ConfirmationToken> {
    ConfirmationToken::generate().map_err(|err| anyhow::anyhow!("no randomness: {err}"))
}

fn throttle_policy(state: &AppState) -> ThrottlePolicy {
    ThrottlePolicy {
        cooldown: state.settings.resend_cooldown,
        hourly_limit: state.settings.resend_hourly_limit,
    }
}

fn is_duplicate_email(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(detail)) if detail.contains("email_key"))
}
