//! Registration, confirmation and resending the confirmation link.

use entity::{resend_requests, users, verification_tokens};
use sea_orm::DatabaseConnection;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TryIntoModel as _,
    sea_query::{Expr, LockBehavior, LockType, OnConflict},
};
use std::sync::Arc;
use tokio::sync::watch;
use url::Url;
use uuid::Uuid;

use super::PasswordHasher;
use super::{
    client_budget,
    confirmation::{self, Outcome},
    throttle::{self, RateLimited, ThrottlePolicy},
};
use crate::{
    db::{begin_write, now},
    domain::{
        ClientNetwork, ConfirmationToken, DisplayName, EmailAddress, Lifetime, NewPassword,
        PasswordError, PasswordPolicy,
    },
    mail::{self, OutboxSignal, Templates},
    secrets::SecretKeys,
};

/// What `verification_tokens.purpose` holds for account confirmation.
pub const PURPOSE_ACCOUNT_CONFIRMATION: &str = "account_confirmation";

/// What the account use cases need, and nothing more: the database, the hasher, the emails,
/// the keys that seal mail, the signals that wake the workers, and their own settings.
#[derive(Clone)]
pub struct Accounts {
    pub(super) db: DatabaseConnection,
    pub(super) hasher: PasswordHasher,
    pub(super) templates: Templates,
    pub(super) secrets: SecretKeys,
    pub(super) outbox: OutboxSignal,
    resend_signal: OutboxSignal,
    pub(super) settings: Arc<AccountPolicy>,
}

/// What the account use cases run with.
#[derive(Debug, Clone)]
pub struct AccountPolicy {
    /// Costly requests per client network and minute (0: no budget).
    pub ip_rate_limit: u32,
    /// How often one address may be sent account mail.
    pub mail_limits: ThrottlePolicy,
    /// How long a confirmation link stays valid.
    pub token_ttl: Lifetime,
    /// The rule new passwords must meet.
    pub password: PasswordPolicy,
    /// The page confirmation links point at, without fragment.
    pub confirm_url: Url,
    /// How long a password reset link stays valid.
    pub reset_ttl: Lifetime,
    /// The page password reset links point at, without fragment.
    pub reset_url: Url,
    /// The page email change links (to the new address) point at, without fragment.
    pub email_change_url: Url,
    /// The page revert links (to the old address) point at, without fragment.
    pub email_revert_url: Url,
    /// How long a revert link stays valid.
    pub email_revert_ttl: Lifetime,
}

impl Accounts {
    /// The account use cases over `db`, mailing through the outbox that `outbox` wakes.
    pub fn new(
        db: DatabaseConnection,
        hasher: PasswordHasher,
        templates: Templates,
        secrets: SecretKeys,
        outbox: OutboxSignal,
        settings: AccountPolicy,
    ) -> Self {
        Self {
            db,
            hasher,
            templates,
            secrets,
            outbox,
            resend_signal: OutboxSignal::default(),
            settings: Arc::new(settings),
        }
    }

    /// The rule new passwords must meet, for forms and for parsing input.
    pub fn password_policy(&self) -> PasswordPolicy {
        self.settings.password
    }

    /// The password hasher, whose count of hashes tests and metrics read.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The link mailed for `token`. The token rides in the fragment, which browsers never send
    /// to a server, so it stays out of access logs and Referer headers.
    fn confirmation_link(&self, token: &ConfirmationToken) -> String {
        link(&self.settings.confirm_url, token)
    }
}

impl Accounts {
    /// Queues `message` to `recipient` in `txn`, commits, then wakes the dispatcher: the mail
    /// exists exactly when the change it tells of does. The outbox id.
    pub(super) async fn commit_with_mail(
        &self,
        txn: DatabaseTransaction,
        recipient: &str,
        message: Result<mail::OutgoingEmail, mail::TemplateError>,
    ) -> anyhow::Result<Uuid> {
        let message_id = mail::enqueue(&txn, &self.secrets, recipient, message?).await?;
        txn.commit().await?;
        self.outbox.wake();
        Ok(message_id)
    }

    /// The budget of costly requests that `client`'s requests take from.
    pub(super) fn budget(&self, client: ClientNetwork) -> client_budget::Budget {
        client_budget::Budget {
            client,
            per_minute: self.settings.ip_rate_limit,
        }
    }
}

/// `page#token=...`: the token rides in the fragment, which browsers never send to a server.
pub(super) fn link(page: &Url, token: &ConfirmationToken) -> String {
    let mut url = page.clone();
    url.set_fragment(Some(&format!("token={}", token.expose())));
    url.to_string()
}

/// A sign-up whose every field has been parsed.
#[derive(Debug)]
pub struct NewAccount {
    /// The address to register.
    pub email: EmailAddress,
    /// The chosen password, judged when it is hashed.
    pub password: NewPassword,
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
    /// The password is too easy to guess (judged after the limits, in the client's turn for
    /// the hashing threads); nothing changed.
    #[error("the password does not meet the policy")]
    InvalidPassword(PasswordError),
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

super::use_case_errors!(RegisterError, ResendError, ConfirmError);

/// Registers `account` and queues the email, in one transaction.
///
/// - A new address gets an unconfirmed account and a confirmation link.
/// - An unconfirmed address gets another sign-up: its own link, carrying its own password and
///   display name, mailed with words that say the address was signed up again. Earlier links
///   keep working: each confirms the sign-up that sent it, so whoever signs up later cannot
///   change what the owner's link activates (see [`confirm_account`]).
/// - A confirmed address is left as it is and gets a short notice instead.
///
/// The answer is the same in all three cases (and the Argon2 work is done in all three), so it
/// reveals nothing about which addresses have accounts. The per-address mail limit applies to
/// all three alike.
///
/// The client's budget and the address's limit are checked before hashing: a refused request
/// costs a statement or two, not an Argon2 hash, and its answer is the same for every address.
pub async fn register(
    state: &Accounts,
    client: ClientNetwork,
    account: NewAccount,
) -> Result<(), RegisterError> {
    client_budget::take(&state.db, state.budget(client)).await??;
    throttle::peek(
        &state.db,
        account.email.key(),
        client,
        throttle_policy(state),
    )
    .await??;
    let password_hash = state
        .hasher
        .judge_and_hash(client, account.password)
        .await
        .map_err(anyhow::Error::from)?
        .map_err(RegisterError::InvalidPassword)?;
    let token = new_token()?;
    let now = now();
    let signup = SignUp {
        id: Uuid::now_v7(),
        password_hash,
        display_name: account.display_name.map(String::from),
    };

    let txn = begin_write(&state.db).await?;
    if let Err(limited) =
        throttle::take(&txn, account.email.key(), client, throttle_policy(state)).await?
    {
        txn.rollback().await?;
        return Err(RegisterError::RateLimited(limited));
    }
    let user = users::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(account.email.as_str().to_owned()),
        email_key: Set(account.email.key().to_owned()),
        password_hash: Set(signup.password_hash.clone()),
        display_name: Set(signup.display_name.clone()),
        created_at: Set(now),
        confirmed_at: Set(None),
    };
    // Insert and let the UNIQUE index decide: checking first would race with a concurrent
    // sign-up. ON CONFLICT DO NOTHING keeps the transaction usable without a savepoint (on
    // PostgreSQL it waits for a concurrent insert of the address to commit or roll back).
    let inserted = users::Entity::insert(user.clone())
        .on_conflict(
            OnConflict::column(users::Column::EmailKey)
                .do_nothing()
                .to_owned(),
        )
        .exec(&txn)
        .await;
    let (user, again) = match inserted {
        Ok(_) => (user.try_into_model()?, false),
        Err(DbErr::RecordNotInserted) => {
            // The user row first, then tokens: the order every use case locks in.
            let existing = lock_user_by_key(&txn, account.email.key())
                .await?
                .ok_or_else(|| anyhow::anyhow!("a duplicate key without its user"))?;
            if existing.confirmed_at.is_some() {
                let notice = state
                    .templates
                    .signup_notice(existing.display_name.as_deref())
                    .map_err(anyhow::Error::from)?;
                let message_id =
                    mail::enqueue(&txn, &state.secrets, account.email.deliverable(), notice)
                        .await
                        .map_err(anyhow::Error::from)?;
                txn.commit().await?;
                state.outbox.wake();
                tracing::info!(user_id = %existing.id, %message_id, "sign-up attempt for a confirmed account, notice queued");
                return Ok(());
            }
            (existing, true)
        }
        Err(err) => return Err(err.into()),
    };
    let message_id = issue_link(
        &txn,
        state,
        &user,
        account.email.deliverable(),
        &signup,
        &token,
        again,
    )
    .await?;
    txn.commit().await?;
    state.outbox.wake();
    metrics::counter!(crate::metrics::SIGNUPS).increment(1);
    tracing::info!(user_id = %user.id, %message_id, again, "confirmation email queued");
    Ok(())
}

/// Records a request for a new confirmation link to `email`. The request does the same work
/// for every address (the limits, one row recorded), so neither its answer nor its timing
/// tells whether the address has an unconfirmed account; [`process_resend_requests`] decides
/// afterwards whether a link goes out.
pub async fn resend_confirmation(
    state: &Accounts,
    client: ClientNetwork,
    email: EmailAddress,
) -> Result<(), ResendError> {
    record_mail_request(state, client, &email, PURPOSE_ACCOUNT_CONFIRMATION).await??;
    Ok(())
}

/// Records a request for account mail of `purpose` to `email`, within the client's budget and
/// the address's mail limits; a worker decides afterwards whether a mail goes out.
pub(super) async fn record_mail_request(
    state: &Accounts,
    client: ClientNetwork,
    email: &EmailAddress,
    purpose: &str,
) -> anyhow::Result<Result<(), RateLimited>> {
    if let Err(limited) = client_budget::take(&state.db, state.budget(client)).await? {
        return Ok(Err(limited));
    }
    let txn = begin_write(&state.db).await?;
    if let Err(limited) = throttle::take(&txn, email.key(), client, throttle_policy(state)).await? {
        txn.rollback().await?;
        return Ok(Err(limited));
    }
    resend_requests::Entity::insert(resend_requests::ActiveModel {
        id: Set(Uuid::now_v7()),
        email_key: Set(email.key().to_owned()),
        recipient: Set(email.deliverable().to_owned()),
        requested_at: Set(now()),
        purpose: Set(purpose.to_owned()),
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    state.resend_signal.wake();
    Ok(Ok(()))
}

/// Handles recorded mail requests, oldest first, until none is left; returns how many. A new
/// confirmation link: for an unconfirmed account, a fresh link for its most recent pending
/// sign-up (that sign-up's earlier links are superseded, other sign-ups' links are not); for
/// anything else, nothing. A password reset: see [`super::recovery::issue_reset_link`].
/// Each request is handled in its own transaction, and concurrent workers (several processes
/// on one PostgreSQL database) skip the requests another one holds.
pub async fn process_resend_requests(state: &Accounts) -> anyhow::Result<usize> {
    let mut handled = 0;
    loop {
        let txn = begin_write(&state.db).await?;
        let Some(request) = resend_requests::Entity::find()
            .order_by_asc(resend_requests::Column::RequestedAt)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .one(&txn)
            .await?
        else {
            txn.commit().await?;
            return Ok(handled);
        };
        resend_requests::Entity::delete_by_id(request.id)
            .exec(&txn)
            .await?;
        let message_id = match request.purpose.as_str() {
            PURPOSE_ACCOUNT_CONFIRMATION => renew_link(&txn, state, &request).await?,
            super::recovery::PURPOSE_PASSWORD_RESET => {
                super::recovery::issue_reset_link(&txn, state, &request).await?
            }
            other => {
                tracing::warn!(
                    purpose = other,
                    "a mail request of an unknown purpose, dropped"
                );
                None
            }
        };
        txn.commit().await?;
        handled += 1;
        if let Some(message_id) = message_id {
            state.outbox.wake();
            tracing::info!(%message_id, purpose = %request.purpose, "requested email queued");
        }
    }
}

/// Handles resend requests whenever one is recorded (and every second, for requests another
/// process recorded), until `shutdown` turns true.
pub async fn run_resend_worker(state: Accounts, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(err) = process_resend_requests(&state).await {
            tracing::error!(error = %format_args!("{err:#}"), "resend requests: cannot handle them now");
        }
        tokio::select! {
            () = state.resend_signal.woken() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

/// The new link for the account a resend request names, if it is unconfirmed; the outbox id.
async fn renew_link(
    txn: &DatabaseTransaction,
    state: &Accounts,
    request: &resend_requests::Model,
) -> anyhow::Result<Option<Uuid>> {
    let Some(user) = lock_user_by_key(txn, &request.email_key).await? else {
        return Ok(None);
    };
    if user.confirmed_at.is_some() {
        return Ok(None);
    }
    let pending = pending_links(txn, user.id).await?;
    let signup = pending.first().map_or_else(
        // Links from before sign-ups carried their own password: the account's.
        || SignUp {
            id: Uuid::now_v7(),
            password_hash: user.password_hash.clone(),
            display_name: user.display_name.clone(),
        },
        SignUp::of,
    );
    // Mailed like a repeated sign-up whenever another sign-up is pending: a resend must not
    // dress up someone else's sign-up as the owner's own link.
    let again = pending.iter().any(|link| link.signup_id != Some(signup.id));
    verification_tokens::Entity::update_many()
        .col_expr(
            verification_tokens::Column::SupersededAt,
            Expr::value(now()),
        )
        .filter(verification_tokens::Column::UserId.eq(user.id))
        .filter(verification_tokens::Column::Purpose.eq(PURPOSE_ACCOUNT_CONFIRMATION))
        .filter(verification_tokens::Column::SignupId.eq(signup.id))
        .filter(verification_tokens::Column::ConsumedAt.is_null())
        .filter(verification_tokens::Column::SupersededAt.is_null())
        .exec(txn)
        .await?;
    let token = new_token()?;
    let message_id = issue_link(
        txn,
        state,
        &user,
        &request.recipient,
        &signup,
        &token,
        again,
    )
    .await?;
    Ok(Some(message_id))
}

/// Confirms the sign-up `token` was issued for, and returns the account: the sign-up's password
/// and display name become the account's, and every other pending sign-up of the address ends
/// (its links answer "superseded"). Presenting a token that was already used, while it is still
/// unexpired, returns the same confirmed account again.
///
/// First counts the request in `client`'s budget, in the same statement on PostgreSQL (one
/// round trip for the whole confirmation), in the same transaction on SQLite; a client over
/// its budget is refused before any link is looked at. Then locks the user row, then the
/// token, as registration does, so that a confirmation and a concurrent sign-up of the same
/// address are decided one after the other (see [`confirmation`](super::confirmation) for how
/// each database does it).
pub async fn confirm_account(
    state: &Accounts,
    client: ClientNetwork,
    token: ConfirmationToken,
) -> Result<users::Model, ConfirmError> {
    match confirmation::confirm(
        &state.db,
        token.hash().as_str(),
        now(),
        state.budget(client),
    )
    .await?
    {
        Outcome::OverBudget(limited) => Err(ConfirmError::RateLimited(limited)),
        Outcome::Unknown => Err(ConfirmError::InvalidToken),
        Outcome::Superseded => Err(ConfirmError::SupersededToken),
        Outcome::Expired => Err(ConfirmError::ExpiredToken),
        Outcome::AlreadyUsed(user) => Ok(user),
        Outcome::Confirmed(user) => {
            metrics::counter!(crate::metrics::CONFIRMATIONS).increment(1);
            let waited = user
                .confirmed_at
                .map(|at| (at - user.created_at).to_std().unwrap_or_default())
                .unwrap_or_default();
            metrics::histogram!(crate::metrics::SIGNUP_TO_CONFIRMATION)
                .record(waited.as_secs_f64());
            Ok(user)
        }
    }
}

/// What one sign-up chose; every link it was sent carries it.
struct SignUp {
    id: Uuid,
    password_hash: String,
    display_name: Option<String>,
}

impl SignUp {
    fn of(link: &verification_tokens::Model) -> Self {
        Self {
            id: link.signup_id.unwrap_or_else(Uuid::now_v7),
            password_hash: link.password_hash.clone().unwrap_or_default(),
            display_name: link.display_name.clone(),
        }
    }
}

pub(super) async fn lock_user_by_key(
    txn: &DatabaseTransaction,
    key: &str,
) -> Result<Option<users::Model>, DbErr> {
    users::Entity::find()
        .filter(users::Column::EmailKey.eq(key))
        .lock_exclusive()
        .one(txn)
        .await
}

/// The account's unused, unsuperseded confirmation links, newest first.
async fn pending_links(
    txn: &DatabaseTransaction,
    user_id: Uuid,
) -> Result<Vec<verification_tokens::Model>, DbErr> {
    verification_tokens::Entity::find()
        .filter(verification_tokens::Column::UserId.eq(user_id))
        .filter(verification_tokens::Column::Purpose.eq(PURPOSE_ACCOUNT_CONFIRMATION))
        .filter(verification_tokens::Column::ConsumedAt.is_null())
        .filter(verification_tokens::Column::SupersededAt.is_null())
        .filter(verification_tokens::Column::PasswordHash.is_not_null())
        .order_by_desc(verification_tokens::Column::CreatedAt)
        .all(txn)
        .await
}

/// Stores `token` for `signup` and queues the email carrying it: the plain confirmation, or,
/// when the address already had a pending sign-up (`again`), the one that says so. Returns the
/// outbox id.
async fn issue_link(
    txn: &DatabaseTransaction,
    state: &Accounts,
    user: &users::Model,
    recipient: &str,
    signup: &SignUp,
    token: &ConfirmationToken,
    again: bool,
) -> anyhow::Result<Uuid> {
    let now = now();
    verification_tokens::Entity::insert(verification_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user.id),
        purpose: Set(PURPOSE_ACCOUNT_CONFIRMATION.to_owned()),
        token_hash: Set(token.hash().as_str().to_owned()),
        created_at: Set(now),
        expires_at: Set(now + state.settings.token_ttl.delta()),
        consumed_at: Set(None),
        superseded_at: Set(None),
        signup_id: Set(Some(signup.id)),
        password_hash: Set(Some(signup.password_hash.clone())),
        display_name: Set(signup.display_name.clone()),
        email: Set(None),
    })
    .exec_without_returning(txn)
    .await?;
    let link = state.confirmation_link(token);
    let message = if again {
        state
            .templates
            .signup_again(&link, state.settings.token_ttl.std())?
    } else {
        state
            .templates
            .confirmation(&link, state.settings.token_ttl.std())?
    };
    Ok(mail::enqueue(txn, &state.secrets, recipient, message).await?)
}

pub(super) fn new_token() -> anyhow::Result<ConfirmationToken> {
    ConfirmationToken::generate().map_err(|err| anyhow::anyhow!("no randomness: {err}"))
}

fn throttle_policy(state: &Accounts) -> ThrottlePolicy {
    state.settings.mail_limits
}
