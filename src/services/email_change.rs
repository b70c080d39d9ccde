//! Moving an account to another address, undoing that, and deleting an account.
//!
//! - The signed-in owner asks with the password (throttled like a sign-in). The new address
//!   gets a link; the address changes only when the link is used. If the new address has a
//!   confirmed account, the answer is the same and that address gets a short notice instead.
//!   An unconfirmed account on it (nobody proved that inbox) gives way when the link is used.
//! - Once changed, the old address gets a notice with a link that undoes the change: it
//!   restores the old address (if still free), ends every session, and mails a password reset
//!   link there, since whoever made the change may know the password. A later change does not
//!   end an earlier change's revert link (a thief moving the account on must not cut the owner
//!   off), and using a revert link ends the revert links of every later change (which would
//!   hand the account back to the thief).
//! - Two accounts claiming one address end with one winner: the unique address key decides,
//!   and the other gets `AddressTaken`.
//! - Deleting removes the account, its sessions, links and waiting mail, and mails a notice.
//! - Asking for a change and deleting are refused if the request's session ended, or the
//!   password changed, while the password was being checked (a reset by the owner wins).
//!
//! Rows are locked user rows first (in id order when two accounts are involved), then links.

use entity::{outbox_messages, resend_requests, users, verification_tokens};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, SqlErr, TransactionTrait,
};
use uuid::Uuid;

use super::{
    accounts::{Accounts, link},
    client_budget, links,
    recovery::{PURPOSE_PASSWORD_RESET, mailbox},
    sessions::{self, Authenticated},
    sign_in,
    throttle::{self, RateLimited},
};
use crate::{
    db::begin_write,
    domain::{ClientNetwork, ConfirmationToken, EmailAddress, Password},
};

/// What `verification_tokens.purpose` holds for links that confirm a new address.
pub const PURPOSE_EMAIL_CHANGE: &str = "email_change";
/// What `verification_tokens.purpose` holds for links that undo an address change.
pub const PURPOSE_EMAIL_REVERT: &str = "email_revert";

/// Asking for a new address did not go through.
#[derive(Debug, thiserror::Error)]
pub enum RequestEmailChangeError {
    /// The password is wrong.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The new address is the account's own.
    #[error("the same address")]
    SameAddress,
    /// The session the request came with ended (a reset, a sign-out elsewhere) while the
    /// password was checked: nothing was done.
    #[error("the session ended")]
    SessionEnded,
    /// Too many wrong passwords, too much mail to the new address, or too many requests from
    /// the client: nothing was sent.
    #[error("rate limited")]
    RateLimited(RateLimited),
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A change or revert link did not change the address.
#[derive(Debug, thiserror::Error)]
pub enum ChangeEmailError {
    /// No link of this kind has this token.
    #[error("the token is not valid")]
    InvalidToken,
    /// The link's lifetime is over.
    #[error("the token has expired")]
    ExpiredToken,
    /// A newer link of its kind was sent since.
    #[error("the token was superseded by a newer one")]
    SupersededToken,
    /// The link was used already.
    #[error("the token was used")]
    UsedToken,
    /// The address belongs to another (confirmed) account now.
    #[error("the address belongs to another account")]
    AddressTaken,
    /// The client made too many costly requests; nothing was looked up.
    #[error("rate limited")]
    RateLimited(RateLimited),
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The account was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteAccountError {
    /// The password is wrong.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The session the request came with ended (a reset, a sign-out elsewhere) while the
    /// password was checked: nothing was done.
    #[error("the session ended")]
    SessionEnded,
    /// The client made too many costly requests, or too many wrong passwords came in a row:
    /// nothing was checked.
    #[error("rate limited")]
    RateLimited(RateLimited),
    /// Anything unexpected; never shown to clients.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::use_case_errors!(
    RequestEmailChangeError,
    ChangeEmailError,
    DeleteAccountError
);
super::signed_in_use_case_errors!(RequestEmailChangeError, DeleteAccountError);

impl From<links::Spent> for ChangeEmailError {
    fn from(spent: links::Spent) -> Self {
        match spent {
            links::Spent::Used => Self::UsedToken,
            links::Spent::Superseded => Self::SupersededToken,
            links::Spent::Expired => Self::ExpiredToken,
        }
    }
}

/// Mails a link to `new_email` that moves the signed-in `viewer`'s account there; see the
/// module's description.
pub async fn request_email_change(
    accounts: &Accounts,
    client: ClientNetwork,
    viewer: &Authenticated,
    new_email: EmailAddress,
    password: Password,
) -> Result<(), RequestEmailChangeError> {
    let user = &viewer.user;
    let budget = accounts.budget(client);
    if !sign_in::proves_password(&accounts.db, &accounts.hasher, budget, user, password).await?? {
        tracing::info!(user_id = %user.id, "email change refused: wrong password");
        return Err(RequestEmailChangeError::InvalidCredentials);
    }
    if new_email.key() == user.email_key {
        return Err(RequestEmailChangeError::SameAddress);
    }
    let txn = begin_write(&accounts.db).await?;
    let policy = accounts.settings.mail_limits;
    if let Err(limited) = throttle::take(&txn, new_email.key(), client, policy).await? {
        txn.rollback().await?;
        return Err(limited.into());
    }
    // The limits' rows, then the user rows, as a sign-up takes them.
    let user = &sign_in::still_proved(&txn, user, Some(viewer.session.id)).await??;
    let owner = users::Entity::find()
        .filter(users::Column::EmailKey.eq(new_email.key()))
        .one(&txn)
        .await?;
    let message = if owner.is_some_and(|owner| owner.confirmed_at.is_some()) {
        accounts.templates.email_in_use()
    } else {
        links::supersede(&txn, user.id, PURPOSE_EMAIL_CHANGE, None).await?;
        let token = links::issue(
            &txn,
            user.id,
            PURPOSE_EMAIL_CHANGE,
            accounts.settings.token_ttl.delta(),
            Some(new_email.as_str().to_owned()),
        )
        .await?;
        accounts.templates.email_change(
            &link(&accounts.settings.email_change_url, &token),
            accounts.settings.token_ttl.std(),
        )
    };
    let message_id = accounts
        .commit_with_mail(txn, new_email.deliverable(), message)
        .await?;
    tracing::info!(user_id = %user.id, %message_id, "email change requested");
    Ok(())
}

/// Moves the account to the address a change link was issued for; the old address gets the
/// revert link. Returns the account.
pub async fn confirm_email_change(
    accounts: &Accounts,
    client: ClientNetwork,
    token: ConfirmationToken,
) -> Result<users::Model, ChangeEmailError> {
    client_budget::take(&accounts.db, accounts.budget(client)).await??;
    let txn = begin_write(&accounts.db).await?;
    let (user, record, new_email) = open_link(&txn, &token, PURPOSE_EMAIL_CHANGE).await?;
    let old_email = user.email.clone();
    let user = move_to(&txn, &user, &new_email).await?;
    links::consume(&txn, record.id).await?;
    links::supersede(&txn, user.id, PURPOSE_EMAIL_CHANGE, None).await?;
    let revert = links::issue(
        &txn,
        user.id,
        PURPOSE_EMAIL_REVERT,
        accounts.settings.email_revert_ttl.delta(),
        Some(old_email.clone()),
    )
    .await?;
    let notice = accounts.templates.email_changed(
        new_email.as_str(),
        &link(&accounts.settings.email_revert_url, &revert),
        accounts.settings.email_revert_ttl.std(),
    );
    let old = EmailAddress::parse(&old_email)
        .map_err(|err| anyhow::anyhow!("the old address does not parse: {err}"))?;
    let message_id = accounts
        .commit_with_mail(txn, old.deliverable(), notice)
        .await?;
    tracing::info!(user_id = %user.id, %message_id, "email address changed");
    Ok(user)
}

/// Undoes an address change with the revert link mailed to the old address: the old address
/// again, every session ended, and a password reset link to it. Returns the account.
pub async fn revert_email_change(
    accounts: &Accounts,
    client: ClientNetwork,
    token: ConfirmationToken,
) -> Result<users::Model, ChangeEmailError> {
    client_budget::take(&accounts.db, accounts.budget(client)).await??;
    let txn = begin_write(&accounts.db).await?;
    let (user, record, old_email) = open_link(&txn, &token, PURPOSE_EMAIL_REVERT).await?;
    let user = move_to(&txn, &user, &old_email).await?;
    links::consume(&txn, record.id).await?;
    links::supersede(&txn, user.id, PURPOSE_EMAIL_CHANGE, None).await?;
    // Revert links of later changes would move the account back to an address of whoever made
    // them; earlier ones (closer to the owner's own address) keep working.
    links::supersede_newer(&txn, user.id, PURPOSE_EMAIL_REVERT, &record).await?;
    links::supersede(&txn, user.id, PURPOSE_PASSWORD_RESET, None).await?;
    let ended = sessions::end_all(&txn, user.id, None).await?;
    let reset = links::issue(
        &txn,
        user.id,
        PURPOSE_PASSWORD_RESET,
        accounts.settings.reset_ttl.delta(),
        None,
    )
    .await?;
    let message = accounts.templates.password_reset(
        &link(&accounts.settings.reset_url, &reset),
        accounts.settings.reset_ttl.std(),
    );
    let message_id = accounts
        .commit_with_mail(txn, old_email.deliverable(), message)
        .await?;
    tracing::info!(user_id = %user.id, sessions_ended = ended, %message_id, "email change reverted");
    Ok(user)
}

/// Locks the user row a link belongs to (with the row of whoever holds the link's address, in
/// id order), then the link; checks that it can be used. The user, the link, and the address
/// it is about.
async fn open_link(
    txn: &DatabaseTransaction,
    token: &ConfirmationToken,
    purpose: &str,
) -> Result<(users::Model, verification_tokens::Model, EmailAddress), ChangeEmailError> {
    let hash = token.hash();
    let by_hash = || {
        verification_tokens::Entity::find()
            .filter(verification_tokens::Column::TokenHash.eq(hash.as_str()))
            .filter(verification_tokens::Column::Purpose.eq(purpose))
    };
    let found = by_hash()
        .one(txn)
        .await?
        .ok_or(ChangeEmailError::InvalidToken)?;
    let address = found
        .email
        .as_deref()
        .and_then(|raw| EmailAddress::parse(raw).ok())
        .ok_or(ChangeEmailError::InvalidToken)?;
    let holder = users::Entity::find()
        .filter(users::Column::EmailKey.eq(address.key()))
        .one(txn)
        .await?
        .map(|holder| holder.id);
    let ids: Vec<Uuid> = [Some(found.user_id), holder]
        .into_iter()
        .flatten()
        .collect();
    let locked = users::Entity::find()
        .filter(users::Column::Id.is_in(ids))
        .order_by_asc(users::Column::Id)
        .lock_exclusive()
        .all(txn)
        .await?;
    let user = locked
        .into_iter()
        .find(|user| user.id == found.user_id)
        .ok_or(ChangeEmailError::InvalidToken)?;
    let record = by_hash()
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(ChangeEmailError::InvalidToken)?;
    links::usable(&record)?;
    Ok((user, record, address))
}

/// Gives `user` the address `email`. An unconfirmed account holding it gives way; a confirmed
/// one keeps it (`AddressTaken`), and so does whoever wins a race for it (the unique key).
async fn move_to(
    txn: &DatabaseTransaction,
    user: &users::Model,
    email: &EmailAddress,
) -> Result<users::Model, ChangeEmailError> {
    if let Some(holder) = users::Entity::find()
        .filter(users::Column::EmailKey.eq(email.key()))
        .filter(users::Column::Id.ne(user.id))
        .one(txn)
        .await?
    {
        if holder.confirmed_at.is_some() {
            return Err(ChangeEmailError::AddressTaken);
        }
        users::Entity::delete_by_id(holder.id).exec(txn).await?;
        tracing::info!(user_id = %holder.id, "an unconfirmed account gave way to an address change");
    }
    let attempt = txn.begin().await?;
    let moved = users::Entity::update(users::ActiveModel {
        id: Set(user.id),
        email: Set(email.as_str().to_owned()),
        email_key: Set(email.key().to_owned()),
        ..Default::default()
    })
    .exec(&attempt)
    .await;
    match moved {
        Ok(user) => {
            attempt.commit().await?;
            Ok(user)
        }
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            attempt.rollback().await?;
            Err(ChangeEmailError::AddressTaken)
        }
        Err(err) => Err(err.into()),
    }
}

/// Deletes the signed-in `viewer`'s account, given its password; see the module's
/// description.
pub async fn delete_account(
    accounts: &Accounts,
    client: ClientNetwork,
    viewer: &Authenticated,
    password: Password,
) -> Result<(), DeleteAccountError> {
    let user = &viewer.user;
    let budget = accounts.budget(client);
    if !sign_in::proves_password(&accounts.db, &accounts.hasher, budget, user, password).await?? {
        tracing::info!(user_id = %user.id, "account deletion refused: wrong password");
        return Err(DeleteAccountError::InvalidCredentials);
    }
    let txn = begin_write(&accounts.db).await?;
    // The account as it is now: its address may have changed since the request began.
    let user = &sign_in::still_proved(&txn, user, Some(viewer.session.id)).await??;
    let address = mailbox(user)?;
    let unsent = outbox_messages::Entity::delete_many()
        .filter(outbox_messages::Column::Recipient.eq(address.as_str()))
        .filter(outbox_messages::Column::SentAt.is_null())
        .exec(&txn)
        .await?
        .rows_affected;
    resend_requests::Entity::delete_many()
        .filter(resend_requests::Column::EmailKey.eq(user.email_key.as_str()))
        .exec(&txn)
        .await?;
    // Sessions and links go with the user row (ON DELETE CASCADE).
    users::Entity::delete_by_id(user.id).exec(&txn).await?;
    let notice = accounts.templates.account_deleted();
    let message_id = accounts.commit_with_mail(txn, &address, notice).await?;
    tracing::info!(user_id = %user.id, unsent, %message_id, "account deleted");
    Ok(())
}
