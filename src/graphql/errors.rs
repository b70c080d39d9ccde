//! The one place where outcomes of the use cases become API responses: expected failures become
//! `userErrors`, unexpected ones a masked error that carries only a request id.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_graphql::{Context, ErrorExtensions};
use entity::users;
use sea_orm::{DbErr, RuntimeErr, sqlx};

use super::{
    session::{self, CookieChange},
    types::{
        Acceptance, ChangePasswordPayload, ConfirmAccountPayload, ConfirmEmailChangePayload,
        DeleteAccountPayload, ErrorCode, RegisterPayload, RequestEmailChangePayload,
        RequestPasswordResetPayload, ResendConfirmationPayload, ResetPasswordPayload,
        RevertEmailChangePayload, RevokeSessionPayload, Session, SessionDelivery, SignInPayload,
        User, UserError,
    },
};
use crate::{
    domain::{DisplayNameError, EmailError, PasswordError},
    services::{
        HashError,
        accounts::{ConfirmError, RegisterError, ResendError},
        email_change::{ChangeEmailError, DeleteAccountError, RequestEmailChangeError},
        recovery::{ChangePasswordError, RequestResetError, ResetError},
        sessions::RevokeError,
        sign_in::{SignInError, SignedIn},
        throttle::{LimitScope, RateLimited},
    },
    state::AppState,
};

/// The id of the HTTP request being served, for correlating logs with what a client saw.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Most costly operations (those that hash, mail or take a write lock) one HTTP request
/// may run, counting its batch entries and aliases together: one request cannot ask for more
/// hashing than one document may.
pub const MAX_COSTLY_PER_REQUEST: usize = 2;

/// What is left of one HTTP request's costly operations; shared by every entry of a batch.
#[derive(Debug, Clone)]
pub struct CostlyBudget(Arc<AtomicUsize>);

impl CostlyBudget {
    /// The budget of one HTTP request.
    pub fn per_request() -> Self {
        Self(Arc::new(AtomicUsize::new(MAX_COSTLY_PER_REQUEST)))
    }

    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }
}

/// Takes one costly operation from the request's budget, or answers that the request asked
/// for too many. A schema run without a budget (tools, tests of the schema) is not limited.
pub(super) fn charge_costly(ctx: &Context<'_>) -> async_graphql::Result<()> {
    match ctx.data_opt::<CostlyBudget>() {
        Some(budget) if !budget.take() => Err(async_graphql::Error::new(format!(
            "One HTTP request may run at most {MAX_COSTLY_PER_REQUEST} costly operations \
             (those that hash a password, send mail or use a link), batches and aliases \
             together."
        ))
        .extend_with(|_, ext| ext.set("code", "TOO_MANY_OPERATIONS"))),
        _ => Ok(()),
    }
}

/// The service did not answer within the database deadline.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
struct DeadlineExceeded(std::time::Duration);

/// Runs a use case under the database deadline (`ADMIT_DB_TIMEOUT`): a database that stops
/// answering makes the request fail with `SERVICE_UNAVAILABLE` instead of hanging.
pub(super) fn within_deadline<T, E: From<anyhow::Error>>(
    state: &AppState,
    work: impl Future<Output = Result<T, E>>,
) -> impl Future<Output = Result<T, E>> {
    let deadline = state.db_timeout;
    // Boxed here, before a future is returned: a use case's future can be kilobytes, and
    // async-graphql's resolver futures are as large as the largest of them, moved whole at
    // every layer (seven per request). Boxed inside an `async fn`, the work would still be
    // held unboxed as its argument; a box is moved as a pointer.
    let work = Box::pin(work);
    async move {
        tokio::time::timeout(deadline, work)
            .await
            .unwrap_or_else(|_| Err(anyhow::Error::new(DeadlineExceeded(deadline)).into()))
    }
}

fn field_error(field: &[&str], code: ErrorCode, message: String) -> UserError {
    UserError {
        field: Some(field.iter().map(|part| (*part).to_owned()).collect()),
        message,
        code,
    }
}

impl From<EmailError> for UserError {
    fn from(err: EmailError) -> Self {
        invalid_email(&["input", "email"], err)
    }
}

/// An unusable email address in the argument at `field`.
pub(super) fn invalid_email(field: &[&str], err: EmailError) -> UserError {
    field_error(field, ErrorCode::InvalidEmail, err.to_string())
}

impl From<PasswordError> for UserError {
    fn from(err: PasswordError) -> Self {
        password_error(&["input", "password"], err)
    }
}

/// An unacceptable password in the argument at `field`.
fn password_error(field: &[&str], err: PasswordError) -> UserError {
    let code = match err {
        PasswordError::TooShort { .. } => ErrorCode::PasswordTooShort,
        PasswordError::TooLong { .. } => ErrorCode::PasswordTooLong,
        PasswordError::TooCommon => ErrorCode::PasswordTooCommon,
        PasswordError::Blank | PasswordError::ContainsAccountName => ErrorCode::PasswordTooWeak,
    };
    field_error(field, code, err.to_string())
}

impl From<DisplayNameError> for UserError {
    fn from(err: DisplayNameError) -> Self {
        field_error(
            &["input", "displayName"],
            ErrorCode::InvalidInput,
            err.to_string(),
        )
    }
}

pub(super) fn register_payload(
    ctx: &Context<'_>,
    outcome: Result<(), RegisterError>,
) -> async_graphql::Result<RegisterPayload> {
    match outcome {
        Ok(()) => Ok(Acceptance::ok().into()),
        Err(RegisterError::RateLimited(limited)) => {
            Ok(rate_limited_acceptance(&["input", "email"], limited).into())
        }
        Err(RegisterError::InvalidPassword(err)) => {
            Ok(Acceptance::invalid(vec![UserError::from(err)]).into())
        }
        Err(RegisterError::Internal(err)) => Err(internal(ctx, &err)),
    }
}

pub(super) fn resend_confirmation_payload(
    ctx: &Context<'_>,
    outcome: Result<(), ResendError>,
) -> async_graphql::Result<ResendConfirmationPayload> {
    match outcome {
        Ok(()) => Ok(Acceptance::ok().into()),
        Err(ResendError::RateLimited(limited)) => {
            Ok(rate_limited_acceptance(&["email"], limited).into())
        }
        Err(ResendError::Internal(err)) => Err(internal(ctx, &err)),
    }
}

fn rate_limited_acceptance(field: &[&str], limited: RateLimited) -> Acceptance {
    let (seconds, error) = rate_limited(field, limited);
    Acceptance {
        accepted: false,
        retry_after_seconds: Some(seconds),
        user_errors: vec![error],
    }
}

/// The wait in whole seconds and the user error that says which limit was reached.
fn rate_limited(field: &[&str], limited: RateLimited) -> (u32, UserError) {
    let seconds = u32::try_from(limited.retry_after.as_secs()).unwrap_or(u32::MAX);
    let message = match limited.scope {
        LimitScope::Address => format!(
            "Too many emails were requested for this address. Try again in {seconds} seconds."
        ),
        LimitScope::Client => {
            format!("Too many requests came from your network. Try again in {seconds} seconds.")
        }
        LimitScope::SignIn => {
            format!("Too many failed sign-ins for this address. Try again in {seconds} seconds.")
        }
    };
    (seconds, field_error(field, ErrorCode::RateLimited, message))
}

pub(super) fn confirm_account_payload(
    ctx: &Context<'_>,
    outcome: Result<users::Model, ConfirmError>,
) -> async_graphql::Result<ConfirmAccountPayload> {
    let error = match outcome {
        Ok(user) => {
            return Ok(ConfirmAccountPayload {
                user: Some(user.into()),
                retry_after_seconds: None,
                user_errors: Vec::new(),
            });
        }
        Err(ConfirmError::RateLimited(limited)) => {
            let (seconds, error) = rate_limited(&["token"], limited);
            return Ok(ConfirmAccountPayload {
                user: None,
                retry_after_seconds: Some(seconds),
                user_errors: vec![error],
            });
        }
        Err(ConfirmError::InvalidToken) => field_error(
            &["token"],
            ErrorCode::TokenInvalid,
            "This confirmation link is not valid. Open the link from your most recent email."
                .to_owned(),
        ),
        Err(ConfirmError::SupersededToken) => field_error(
            &["token"],
            ErrorCode::TokenSuperseded,
            "This link was replaced: a newer link was sent for this sign-up, or the account was confirmed with another link. Open the most recent email; if your account is confirmed, there is nothing more to do."
                .to_owned(),
        ),
        Err(ConfirmError::ExpiredToken) => field_error(
            &["token"],
            ErrorCode::TokenExpired,
            "This confirmation link has expired.".to_owned(),
        ),
        Err(ConfirmError::Internal(err)) => return Err(internal(ctx, &err)),
    };
    Ok(ConfirmAccountPayload {
        user: None,
        retry_after_seconds: None,
        user_errors: vec![error],
    })
}

/// The answer to `signIn`; a new session's token goes where `delivery` says: into the
/// cookie (set by the HTTP layer) or, once, into the payload.
pub(super) fn sign_in_payload(
    ctx: &Context<'_>,
    outcome: Result<SignedIn, SignInError>,
    delivery: SessionDelivery,
    max_age: std::time::Duration,
) -> async_graphql::Result<SignInPayload> {
    let error = match outcome {
        Ok(signed_in) => {
            let session_id = signed_in.session.id;
            let session_token = match delivery {
                SessionDelivery::Bearer => Some(signed_in.token.expose().to_owned()),
                SessionDelivery::Cookie => {
                    session::of(ctx).set_cookie(CookieChange::Set {
                        token: signed_in.token,
                        max_age,
                    });
                    None
                }
            };
            return Ok(SignInPayload {
                user: Some(signed_in.user.into()),
                session: Some(Session::new(signed_in.session, session_id)),
                session_token,
                ..SignInPayload::default()
            });
        }
        Err(SignInError::RateLimited(limited)) => {
            let (seconds, error) = rate_limited(&["input", "email"], limited);
            return Ok(SignInPayload {
                retry_after_seconds: Some(seconds),
                user_errors: vec![error],
                ..SignInPayload::default()
            });
        }
        Err(SignInError::InvalidCredentials) => invalid_credentials(),
        Err(SignInError::EmailNotConfirmed) => field_error(
            &["input", "email"],
            ErrorCode::EmailNotConfirmed,
            "Confirm your email address first: open the link in the email we sent you, or ask for a new link."
                .to_owned(),
        ),
        Err(SignInError::Internal(err)) => return Err(internal(ctx, &err)),
    };
    Ok(SignInPayload {
        user_errors: vec![error],
        ..SignInPayload::default()
    })
}

pub(super) fn request_password_reset_payload(
    ctx: &Context<'_>,
    outcome: Result<(), RequestResetError>,
) -> async_graphql::Result<RequestPasswordResetPayload> {
    match outcome {
        Ok(()) => Ok(Acceptance::ok().into()),
        Err(RequestResetError::RateLimited(limited)) => {
            Ok(rate_limited_acceptance(&["email"], limited).into())
        }
        Err(RequestResetError::Internal(err)) => Err(internal(ctx, &err)),
    }
}

pub(super) fn reset_password_payload(
    ctx: &Context<'_>,
    outcome: Result<users::Model, ResetError>,
) -> async_graphql::Result<ResetPasswordPayload> {
    let token = |code, message: &str| field_error(&["input", "token"], code, message.to_owned());
    let error = match outcome {
        Ok(user) => {
            return Ok(ResetPasswordPayload {
                user: Some(user.into()),
                retry_after_seconds: None,
                user_errors: Vec::new(),
            });
        }
        Err(ResetError::RateLimited(limited)) => {
            let (seconds, error) = rate_limited(&["input", "token"], limited);
            return Ok(ResetPasswordPayload {
                user: None,
                retry_after_seconds: Some(seconds),
                user_errors: vec![error],
            });
        }
        Err(ResetError::InvalidToken) => token(
            ErrorCode::TokenInvalid,
            "This reset link is not valid. Open the link from your most recent email, or ask for a new one.",
        ),
        Err(ResetError::ExpiredToken) => token(
            ErrorCode::TokenExpired,
            "This reset link has expired. Ask for a new one.",
        ),
        Err(ResetError::SupersededToken) => token(
            ErrorCode::TokenSuperseded,
            "A newer reset link was sent since: open the most recent email.",
        ),
        Err(ResetError::UsedToken) => token(
            ErrorCode::TokenUsed,
            "This reset link was used already. Sign in with your new password, or ask for a new link.",
        ),
        Err(ResetError::InvalidPassword(err)) => password_error(&["input", "newPassword"], err),
        Err(ResetError::Internal(err)) => return Err(internal(ctx, &err)),
    };
    Ok(ResetPasswordPayload {
        user: None,
        retry_after_seconds: None,
        user_errors: vec![error],
    })
}

pub(super) fn change_password_payload(
    ctx: &Context<'_>,
    outcome: Result<users::Model, ChangePasswordError>,
) -> async_graphql::Result<ChangePasswordPayload> {
    let (error, retry_after_seconds) = match outcome {
        Ok(user) => {
            return Ok(ChangePasswordPayload {
                user: Some(user.into()),
                retry_after_seconds: None,
                user_errors: Vec::new(),
            });
        }
        Err(ChangePasswordError::RateLimited(limited)) => {
            let (seconds, error) = rate_limited(&["input", "currentPassword"], limited);
            (error, Some(seconds))
        }
        Err(ChangePasswordError::InvalidCredentials) => (
            field_error(
                &["input", "currentPassword"],
                ErrorCode::InvalidCredentials,
                "Your current password is wrong.".to_owned(),
            ),
            None,
        ),
        Err(ChangePasswordError::InvalidPassword(err)) => {
            (password_error(&["input", "newPassword"], err), None)
        }
        Err(ChangePasswordError::SessionEnded) => (UserError::unauthenticated(), None),
        Err(ChangePasswordError::Internal(err)) => return Err(internal(ctx, &err)),
    };
    Ok(ChangePasswordPayload {
        user: None,
        retry_after_seconds,
        user_errors: vec![error],
    })
}

pub(super) fn request_email_change_payload(
    ctx: &Context<'_>,
    outcome: Result<(), RequestEmailChangeError>,
) -> async_graphql::Result<RequestEmailChangePayload> {
    let error = match outcome {
        Ok(()) => return Ok(Acceptance::ok().into()),
        Err(RequestEmailChangeError::RateLimited(limited)) => {
            return Ok(rate_limited_acceptance(&["input", "newEmail"], limited).into());
        }
        Err(RequestEmailChangeError::InvalidCredentials) => field_error(
            &["input", "password"],
            ErrorCode::InvalidCredentials,
            "Your password is wrong.".to_owned(),
        ),
        Err(RequestEmailChangeError::SameAddress) => field_error(
            &["input", "newEmail"],
            ErrorCode::InvalidEmail,
            "This is already your address.".to_owned(),
        ),
        Err(RequestEmailChangeError::SessionEnded) => UserError::unauthenticated(),
        Err(RequestEmailChangeError::Internal(err)) => return Err(internal(ctx, &err)),
    };
    Ok(Acceptance::invalid(vec![error]).into())
}

/// The user error for a change or revert link that did not change the address.
fn email_link_error(err: ChangeEmailError) -> Result<UserError, anyhow::Error> {
    let token = |code, message: &str| field_error(&["token"], code, message.to_owned());
    Ok(match err {
        ChangeEmailError::InvalidToken => token(
            ErrorCode::TokenInvalid,
            "This link is not valid. Open the link from your most recent email.",
        ),
        ChangeEmailError::ExpiredToken => token(ErrorCode::TokenExpired, "This link has expired."),
        ChangeEmailError::SupersededToken => token(
            ErrorCode::TokenSuperseded,
            "A newer link was sent since: open the most recent email.",
        ),
        ChangeEmailError::UsedToken => token(ErrorCode::TokenUsed, "This link was used already."),
        ChangeEmailError::AddressTaken => token(
            ErrorCode::InvalidInput,
            "This address belongs to another account now, so it cannot be yours.",
        ),
        ChangeEmailError::RateLimited(limited) => rate_limited(&["token"], limited).1,
        ChangeEmailError::Internal(err) => return Err(err),
    })
}

pub(super) fn confirm_email_change_payload(
    ctx: &Context<'_>,
    outcome: Result<users::Model, ChangeEmailError>,
) -> async_graphql::Result<ConfirmEmailChangePayload> {
    let (user, user_errors) = email_link_outcome(ctx, outcome)?;
    Ok(ConfirmEmailChangePayload { user, user_errors })
}

pub(super) fn revert_email_change_payload(
    ctx: &Context<'_>,
    outcome: Result<users::Model, ChangeEmailError>,
) -> async_graphql::Result<RevertEmailChangePayload> {
    let (user, user_errors) = email_link_outcome(ctx, outcome)?;
    Ok(RevertEmailChangePayload { user, user_errors })
}

/// The account or the user error of a change or revert link, shared by both payloads.
fn email_link_outcome(
    ctx: &Context<'_>,
    outcome: Result<users::Model, ChangeEmailError>,
) -> async_graphql::Result<(Option<User>, Vec<UserError>)> {
    match outcome {
        Ok(user) => Ok((Some(user.into()), Vec::new())),
        Err(err) => {
            let error = email_link_error(err).map_err(|err| internal(ctx, &err))?;
            Ok((None, vec![error]))
        }
    }
}

pub(super) fn delete_account_payload(
    ctx: &Context<'_>,
    outcome: Result<(), DeleteAccountError>,
) -> async_graphql::Result<DeleteAccountPayload> {
    let error = match outcome {
        Ok(()) => {
            return Ok(DeleteAccountPayload {
                deleted: true,
                user_errors: Vec::new(),
            });
        }
        Err(DeleteAccountError::RateLimited(limited)) => rate_limited(&["password"], limited).1,
        Err(DeleteAccountError::InvalidCredentials) => field_error(
            &["password"],
            ErrorCode::InvalidCredentials,
            "Your password is wrong.".to_owned(),
        ),
        Err(DeleteAccountError::SessionEnded) => UserError::unauthenticated(),
        Err(DeleteAccountError::Internal(err)) => return Err(internal(ctx, &err)),
    };
    Ok(DeleteAccountPayload {
        deleted: false,
        user_errors: vec![error],
    })
}

/// The one answer for a wrong address, a wrong password, or both.
pub(super) fn invalid_credentials() -> UserError {
    UserError {
        field: None,
        message: "The email address or the password is wrong.".to_owned(),
        code: ErrorCode::InvalidCredentials,
    }
}

/// The answer to `revokeSession`.
pub(super) fn revoke_session_payload(
    ctx: &Context<'_>,
    outcome: Result<(), RevokeError>,
) -> async_graphql::Result<RevokeSessionPayload> {
    match outcome {
        Ok(()) => Ok(RevokeSessionPayload {
            revoked: true,
            user_errors: Vec::new(),
        }),
        Err(RevokeError::NotFound) => Ok(RevokeSessionPayload {
            revoked: false,
            user_errors: vec![field_error(
                &["id"],
                ErrorCode::NotFound,
                "You have no session with this id.".to_owned(),
            )],
        }),
        Err(RevokeError::Internal(err)) => Err(internal(ctx, &err)),
    }
}

/// The application state, which every executing schema carries.
pub(super) fn app_state<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a AppState> {
    ctx.data::<AppState>().map_err(|_| {
        internal(
            ctx,
            &anyhow::anyhow!("schema executed without application state"),
        )
    })
}

/// Logs `err` with the request id and returns an error that reveals nothing of it: async-graphql
/// would otherwise show any error's `Display` text, database messages included. Failures that
/// mean "busy or database unreachable" get `SERVICE_UNAVAILABLE` and `retryAfterSeconds`, so
/// that clients know to try again and when; everything else `INTERNAL_SERVER_ERROR`. The log
/// line is one line with the error's chain; the backtrace, where there is one, only at debug
/// level.
pub(super) fn internal(ctx: &Context<'_>, err: &anyhow::Error) -> async_graphql::Error {
    let request_id = ctx
        .data_opt::<RequestId>()
        .map_or_else(String::new, |id| id.0.clone());
    let retry_after = unavailable(err);
    let (code, message) = if let Some(wait) = retry_after {
        tracing::warn!(request_id = %request_id, error = %format_args!("{err:#}"), retry_after = ?wait, "service unavailable");
        (
            "SERVICE_UNAVAILABLE",
            "The service is busy or cannot reach its database. Try again after retryAfterSeconds.",
        )
    } else {
        tracing::error!(request_id = %request_id, error = %format_args!("{err:#}"), "internal error");
        ("INTERNAL_SERVER_ERROR", "Internal server error")
    };
    tracing::debug!(request_id = %request_id, error = ?err, "internal error in detail");
    async_graphql::Error::new(message).extend_with(|_, ext| {
        ext.set("code", code);
        ext.set("requestId", request_id.clone());
        if let Some(wait) = retry_after {
            // Whole seconds, rounded up, as `Retry-After` counts them.
            ext.set(
                "retryAfterSeconds",
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            );
        }
    })
}

/// The wait suggested when the database does not answer: a pool or a connection may be back
/// in a moment, and nothing tells how long it will take.
const DATABASE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// When to try again, if `err` means the service is overloaded or its database does not
/// answer, rather than a bug: a full hashing queue (its own estimate), the deadline, no pooled
/// connection, a broken connection, a statement timeout, or SQLite's write lock held past the
/// busy timeout.
fn unavailable(err: &anyhow::Error) -> Option<Duration> {
    err.chain().find_map(|cause| {
        if let Some(hash) = cause.downcast_ref::<HashError>() {
            return match hash {
                HashError::Busy { retry_after } => Some(*retry_after),
                HashError::Failed(_) => None,
            };
        }
        let database_unavailable = if cause.is::<DeadlineExceeded>() {
            true
        } else if let Some(db) = cause.downcast_ref::<DbErr>() {
            match db {
                DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
                DbErr::Exec(RuntimeErr::SqlxError(sqlx))
                | DbErr::Query(RuntimeErr::SqlxError(sqlx)) => sqlx_unavailable(sqlx),
                _ => false,
            }
        } else {
            cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(sqlx_unavailable)
        };
        database_unavailable.then_some(DATABASE_RETRY_AFTER)
    })
}

fn sqlx_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            match code.parse::<u32>() {
                // SQLite's (extended) result codes: SQLITE_BUSY and SQLITE_LOCKED.
                Ok(sqlite) if code.len() <= 4 => matches!(sqlite & 0xff, 5 | 6),
                // PostgreSQL's SQLSTATEs: statement timeout, too many connections, shutdown,
                // and the connection exceptions.
                _ => {
                    code == "57014"
                        || code == "53300"
                        || code.starts_with("57P")
                        || code.starts_with("08")
                }
            }
        }),
        _ => false,
    }
}
