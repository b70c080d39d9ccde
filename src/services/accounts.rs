//! Registration and account confirmation.

use entity::{users, verification_tokens};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, SqlErr, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    db::begin_write,
    domain::{ConfirmationToken, DisplayName, EmailAddress, Password},
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

/// Registration failed for a reason that is not the person's input.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Anything unexpected (database down, no randomness, ...); never shown to clients.
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
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<DbErr> for RegisterError {
    fn from(err: DbErr) -> Self {
        Self::Internal(err.into())
    }
}

impl From<DbErr> for ConfirmError {
    fn from(err: DbErr) -> Self {
        Self::Internal(err.into())
    }
}

/// Registers `account` and queues its confirmation email, all in one transaction.
///
/// An address that already has an account gets the same outcome and costs the same hashing
/// work, and nothing is created: the caller cannot tell the two cases apart.
pub async fn register(state: &AppState, account: NewAccount) -> Result<(), RegisterError> {
    let password_hash = state.hasher.hash(account.password).await?;
    let token =
        ConfirmationToken::generate().map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    let now = crate::db::now();
    let user_id = Uuid::now_v7();

    let email = mail::confirmation_email(
        account.display_name.as_ref().map(DisplayName::as_str),
        &state.confirmation_link(&token),
        state.settings.token_ttl,
    );

    let txn = begin_write(&state.db).await?;
    // The email is queued before the user row so that a known address does the same writes as
    // a new one up to the UNIQUE violation, and its rollback discards them all.
    let message_id = mail::enqueue(&txn, account.email.deliverable(), email).await?;
    let user = users::ActiveModel {
        id: Set(user_id),
        email: Set(account.email.as_str().to_owned()),
        email_key: Set(account.email.key().to_owned()),
        password_hash: Set(password_hash),
        display_name: Set(account.display_name.clone().map(String::from)),
        created_at: Set(now),
        confirmed_at: Set(None),
    };
    // Insert and let the UNIQUE index decide: checking first would race with a concurrent sign-up.
    if let Err(err) = users::Entity::insert(user)
        .exec_without_returning(&txn)
        .await
    {
        txn.rollback().await?;
        return if is_duplicate_email(&err) {
            tracing::info!("registration for an address that already has an account");
            Ok(())
        } else {
            Err(err.into())
        };
    }
    let record = verification_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        purpose: Set(PURPOSE_ACCOUNT_CONFIRMATION.to_owned()),
        token_hash: Set(token.hash().as_str().to_owned()),
        created_at: Set(now),
        expires_at: Set(now + state.token_ttl),
        consumed_at: Set(None),
    };
    verification_tokens::Entity::insert(record)
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await?;
    state.outbox.wake();
    tracing::info!(user_id = %user_id, %message_id, "account registered, confirmation email queued");
    Ok(())
}

/// Confirms the account `token` was issued for and returns it. Presenting a token that was
/// already used, while it is still unexpired, returns the same confirmed account again.
pub async fn confirm_account(
    state: &AppState,
    token: ConfirmationToken,
) -> Result<users::Model, ConfirmError> {
    let hash = token.hash();
    let txn = begin_write(&state.db).await?;
    let record = verification_tokens::Entity::find()
        .filter(verification_tokens::Column::TokenHash.eq(hash.as_str()))
        .filter(verification_tokens::Column::Purpose.eq(PURPOSE_ACCOUNT_CONFIRMATION))
        .one(&txn)
        .await?
        .ok_or(ConfirmError::InvalidToken)?;
    let now = crate::db::now();
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

fn is_duplicate_email(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(detail)) if detail.contains("email_key"))
}
