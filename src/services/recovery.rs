//! Getting back in and changing the password: a reset link by email, and a change by the
//! signed-in owner. Both end sessions and mail the owner a notice that no mail limit drops.
//!
//! - A reset is requested like a new confirmation link: the same answer and the same work for
//!   every address (the limits and one recorded row); the mail-request worker then mails a link
//!   only to an existing account, confirmed or not. A newer link supersedes older ones.
//! - Using a link sets the new password (the password rules apply), ends every session, and
//!   confirms the address if it was not (opening the link proved control of the inbox). It
//!   does not sign in.
//! - A change needs the current password and is throttled like a sign-in; it keeps the
//!   session it was made from and ends the others. It is refused if that session ended, or
//!   the password changed, while the current password was being checked.
//! - A reset or a change also cancels a pending address change: it was asked for with the old
//!   password, perhaps by whoever the owner is shutting out.

use entity::{users, verification_tokens};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
};
use uuid::Uuid;

use super::{
    accounts::{
        Accounts, PURPOSE_ACCOUNT_CONFIRMATION, link, lock_user_by_key, record_mail_request,
    },
    client_budget,
    email_change::PURPOSE_EMAIL_CHANGE,
    links,
    sessions::{self, Authenticated},
    sign_in,
    throttle::RateLimited,
};
use crate::{
    db::{begin_write, now},
    domain::{
        ClientNetwork, ConfirmationToken, EmailAddress, NewPassword, Password, PasswordError,
    },
    mail,
};

/// What `verification_tokens.purpose` holds for password reset links.
pub const PURPOSE_PASSWORD_RESET: &str = "password_reset";

/// A reset link was not requested.
#[derive(Debug, thiserror::Error)]
pub enum RequestResetError {
    /// The address was sent account mail too recently, or the client made too many costly
    /// requests.
    #[error("rate limited")]
    RateLimited(RateLimited),
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The password was not reset.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// No reset link has this token (never issued, altered, purged, or issued for another
    /// purpose).
    #[error("the token is not valid")]
    InvalidToken,
    /// The link's lifetime is over.
    #[error("the token has expired")]
    ExpiredToken,
    /// A newer reset link was sent since.
    #[error("the token was superseded by a newer one")]
    SupersededToken,
    /// The link was used already.
    #[error("the token was used")]
    UsedToken,
    /// The new password breaks a rule.
    #[error("the new password is not acceptable")]
    InvalidPassword(PasswordError),
    /// The client made too many costly requests; nothing was looked up.
    #[error("rate limited")]
    RateLimited(RateLimited),
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The password was not changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangePasswordError {
    /// The current password is wrong.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The session the request came with ended (a reset, a sign-out elsewhere) while the
    /// password was checked: nothing was done.
    #[error("the session ended")]
    SessionEnded,
    /// The client made too many costly requests, or too many wrong current passwords came in
    /// a row: nothing was checked.
    #[error("rate limited")]
    RateLimited(RateLimited),
    /// The new password breaks a rule.
    #[error("the new password is not acceptable")]
    InvalidPassword(PasswordError),
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::use_case_errors!(RequestResetError, ResetError, ChangePasswordError);
super::signed_in_use_case_errors!(ChangePasswordError);

impl From<links::Spent> for ResetError {
    fn from(spent: links::Spent) -> Self {
        match spent {
            links::Spent::Used => Self::UsedToken,
            links::Spent::Superseded => Self::SupersededToken,
            links::Spent::Expired => Self::ExpiredToken,
        }
    }
}

/// Records a request for a reset link to `email`; see the module's description.
pub async fn request_password_reset(
    accounts: &Accounts,
    client: ClientNetwork,
    email: EmailAddress,
) -> Result<(), RequestResetError> {
    record_mail_request(accounts, client, &email, PURPOSE_PASSWORD_RESET).await??;
    Ok(())
}

/// The reset link for the account a mail request names, if it exists; the outbox id. Earlier
/// unused reset links of the account are superseded.
pub(super) async fn issue_reset_link(
    txn: &DatabaseTransaction,
    accounts: &Accounts,
    request: &entity::resend_requests::Model,
) -> anyhow::Result<Option<Uuid>> {
    let Some(user) = lock_user_by_key(txn, &request.email_key).await? else {
        return Ok(None);
    };
    links::supersede(txn, user.id, PURPOSE_PASSWORD_RESET, None).await?;
    let token = links::issue(
        txn,
        user.id,
        PURPOSE_PASSWORD_RESET,
        accounts.settings.reset_ttl.delta(),
        None,
    )
    .await?;
    let message = accounts.templates.password_reset(
        &link(&accounts.settings.reset_url, &token),
        accounts.settings.reset_ttl.std(),
    )?;
    let message_id = mail::enqueue(txn, &accounts.secrets, &request.recipient, message).await?;
    tracing::info!(user_id = %user.id, %message_id, "password reset link queued");
    Ok(Some(message_id))
}

/// Sets a new password with a reset link's `token`; see the module's description. Returns the
/// account.
///
/// The link and the password are checked (and the password hashed) before the transaction,
/// which then locks the user row and the token, in that order, and checks the link again.
pub async fn reset_password(
    accounts: &Accounts,
    client: ClientNetwork,
    token: ConfirmationToken,
    new_password: &str,
) -> Result<users::Model, ResetError> {
    client_budget::take(&accounts.db, accounts.budget(client)).await??;
    let hash = token.hash();
    let by_hash = || {
        verification_tokens::Entity::find()
            .filter(verification_tokens::Column::TokenHash.eq(hash.as_str()))
            .filter(verification_tokens::Column::Purpose.eq(PURPOSE_PASSWORD_RESET))
    };
    let record = by_hash()
        .one(&accounts.db)
        .await?
        .ok_or(ResetError::InvalidToken)?;
    links::usable(&record)?;
    let user = users::Entity::find_by_id(record.user_id)
        .one(&accounts.db)
        .await?
        .ok_or(ResetError::InvalidToken)?;
    let password =
        new_account_password(accounts, &user, new_password).map_err(ResetError::InvalidPassword)?;
    let password_hash = accounts
        .hasher
        .judge_and_hash(client, password)
        .await
        .map_err(anyhow::Error::from)?
        .map_err(ResetError::InvalidPassword)?;

    let txn = begin_write(&accounts.db).await?;
    let user = users::Entity::find_by_id(record.user_id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(ResetError::InvalidToken)?;
    let record = by_hash()
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(ResetError::InvalidToken)?;
    links::usable(&record)?;
    let now = now();
    links::consume(&txn, record.id).await?;
    links::supersede(&txn, user.id, PURPOSE_PASSWORD_RESET, Some(record.id)).await?;
    links::supersede(&txn, user.id, PURPOSE_EMAIL_CHANGE, None).await?;
    if user.confirmed_at.is_none() {
        // Pending sign-ups would otherwise set another password when confirmed.
        links::supersede(&txn, user.id, PURPOSE_ACCOUNT_CONFIRMATION, None).await?;
    }
    let user = users::Entity::update(users::ActiveModel {
        id: Set(user.id),
        password_hash: Set(password_hash),
        confirmed_at: Set(Some(user.confirmed_at.unwrap_or(now))),
        ..Default::default()
    })
    .exec(&txn)
    .await?;
    let ended = sessions::end_all(&txn, user.id, None).await?;
    sign_in::forget_failures(&txn, &user.email_key).await?;
    let notice = accounts.templates.password_changed(true);
    let message_id = accounts
        .commit_with_mail(txn, &mailbox(&user)?, notice)
        .await?;
    tracing::info!(user_id = %user.id, sessions_ended = ended, %message_id, "password reset");
    Ok(user)
}

/// Changes the password of the signed-in `viewer` from its session, which stays; see the
/// module's description. Returns the account.
pub async fn change_password(
    accounts: &Accounts,
    client: ClientNetwork,
    viewer: &Authenticated,
    current_password: Password,
    new_password: &str,
) -> Result<users::Model, ChangePasswordError> {
    let user = &viewer.user;
    if !sign_in::proves_password(
        &accounts.db,
        &accounts.hasher,
        accounts.budget(client),
        user,
        current_password,
    )
    .await??
    {
        tracing::info!(user_id = %user.id, "password change refused: wrong current password");
        return Err(ChangePasswordError::InvalidCredentials);
    }
    let password = new_account_password(accounts, user, new_password)
        .map_err(ChangePasswordError::InvalidPassword)?;
    let password_hash = accounts
        .hasher
        .judge_and_hash(client, password)
        .await
        .map_err(anyhow::Error::from)?
        .map_err(ChangePasswordError::InvalidPassword)?;

    let txn = begin_write(&accounts.db).await?;
    let user = sign_in::still_proved(&txn, user, Some(viewer.session.id)).await??;
    let user = users::Entity::update(users::ActiveModel {
        id: Set(user.id),
        password_hash: Set(password_hash),
        ..Default::default()
    })
    .exec(&txn)
    .await?;
    let ended = sessions::end_all(&txn, user.id, Some(viewer.session.id)).await?;
    links::supersede(&txn, user.id, PURPOSE_EMAIL_CHANGE, None).await?;
    let notice = accounts.templates.password_changed(false);
    let message_id = accounts
        .commit_with_mail(txn, &mailbox(&user)?, notice)
        .await?;
    tracing::info!(user_id = %user.id, sessions_ended = ended, %message_id, "password changed");
    Ok(user)
}

/// `raw` as the account's new password: the policy's rules, and not built on the account's
/// own words; judged when it is hashed.
pub(super) fn new_account_password(
    accounts: &Accounts,
    user: &users::Model,
    raw: &str,
) -> Result<NewPassword, PasswordError> {
    let local_part = user.email.rsplit_once('@').map_or("", |(local, _)| local);
    let name = user.display_name.as_deref().unwrap_or_default();
    NewPassword::parse(raw, accounts.password_policy(), &[local_part, name])
}

/// Where notices to the account go: its address with an ASCII domain.
pub(super) fn mailbox(user: &users::Model) -> anyhow::Result<String> {
    EmailAddress::parse(&user.email)
        .map(|email| email.deliverable().to_owned())
        .map_err(|err| anyhow::anyhow!("the stored address of {} does not parse: {err}", user.id))
}
