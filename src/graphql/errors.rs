//! The one place where outcomes of the use cases become API responses: expected failures become
//! `userErrors`, unexpected ones a masked error that carries only a request id.

use async_graphql::{Context, ErrorExtensions};
use entity::users;

use super::types::{
    Acceptance, ConfirmAccountPayload, ErrorCode, RegisterPayload, ResendConfirmationPayload,
    UserError,
};
use crate::{
    domain::{DisplayNameError, EmailError, PasswordError},
    services::{
        accounts::{ConfirmError, RegisterError, ResendError},
        throttle::RateLimited,
    },
    state::AppState,
};

/// The id of the HTTP request being served, for correlating logs with what a client saw.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

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
        let code = match err {
            PasswordError::TooShort { .. } => ErrorCode::PasswordTooShort,
            PasswordError::TooLong { .. } => ErrorCode::PasswordTooLong,
        };
        field_error(&["input", "password"], code, err.to_string())
    }
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
            Ok(rate_limited(&["input", "email"], limited).into())
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
        Err(ResendError::RateLimited(limited)) => Ok(rate_limited(&["email"], limited).into()),
        Err(ResendError::Internal(err)) => Err(internal(ctx, &err)),
    }
}

fn rate_limited(field: &[&str], limited: RateLimited) -> Acceptance {
    let seconds = u32::try_from(limited.retry_after.as_secs()).unwrap_or(u32::MAX);
    Acceptance {
        accepted: false,
        retry_after_seconds: Some(seconds),
        user_errors: vec![field_error(
            field,
            ErrorCode::RateLimited,
            format!(
                "Too many emails were requested for this address. Try again in {seconds} seconds."
            ),
        )],
    }
}

pub(super) fn confirm_account_payload(
    ctx: &Context<'_>,
    outcome: Result<users::Model, ConfirmError>,
) -> async_graphql::Result<ConfirmAccountPayload> {
    let error = match outcome {
        Ok(user) => {
            return Ok(ConfirmAccountPayload {
                user: Some(user.into()),
                user_errors: Vec::new(),
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
            "A newer confirmation link was sent to you. Open the link from the most recent email."
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
        user_errors: vec![error],
    })
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
/// would otherwise show any error's `Display` text, database messages included.
fn internal(ctx: &Context<'_>, err: &anyhow::Error) -> async_graphql::Error {
    let request_id = ctx
        .data_opt::<RequestId>()
        .map_or_else(String::new, |id| id.0.clone());
    tracing::error!(request_id = %request_id, error = ?err, "internal error");
    async_graphql::Error::new("Internal server error").extend_with(|_, ext| {
        ext.set("code", "INTERNAL_SERVER_ERROR");
        ext.set("requestId", request_id.clone());
    })
}
