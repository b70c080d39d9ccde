//! The API's object and input types. They are built from models, never derived from entities,
//! so a column such as `password_hash` cannot become a field by accident.

use async_graphql::{Enum, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{sessions, users};
use uuid::Uuid;

use crate::{
    domain::{self, DisplayName, EmailAddress, NewPassword},
    services::{accounts::NewAccount, sessions::Authenticated},
};

/// A person's account.
#[derive(Debug, SimpleObject)]
pub struct User {
    /// Stable identifier.
    pub id: ID,
    /// The email address, as the person typed it.
    pub email: String,
    /// How the person wants to be greeted, if they said.
    pub display_name: Option<String>,
    /// Whether the email address has been confirmed.
    pub confirmed: bool,
    /// When the email address was confirmed.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
}

impl From<users::Model> for User {
    fn from(user: users::Model) -> Self {
        Self {
            id: ID(user.id.to_string()),
            email: user.email,
            display_name: user.display_name,
            confirmed: user.confirmed_at.is_some(),
            confirmed_at: user.confirmed_at.map(|at| at.with_timezone(&Utc)),
            created_at: user.created_at.with_timezone(&Utc),
        }
    }
}

/// What a sign-up form sends.
#[derive(Debug, InputObject)]
pub struct RegisterInput {
    /// The email address to register; surrounding spaces are ignored.
    pub email: String,
    /// The password, used exactly as typed (see `passwordPolicy`).
    pub password: String,
    /// Optional name to greet the person by; at most 100 characters.
    pub display_name: Option<String>,
}

impl RegisterInput {
    /// Parses every field, reporting every problem at once rather than the first.
    pub(super) fn parse(
        self,
        policy: domain::PasswordPolicy,
    ) -> Result<NewAccount, Vec<UserError>> {
        let email = EmailAddress::parse(&self.email);
        // The words of this account, as typed: the password may not be built on them.
        let local_part = self
            .email
            .trim()
            .rsplit_once('@')
            .map_or("", |(local, _)| local);
        let name = self.display_name.as_deref().unwrap_or_default();
        let password = NewPassword::parse(&self.password, policy, &[local_part, name]);
        let display_name = DisplayName::parse(name);
        match (email, password, display_name) {
            (Ok(email), Ok(password), Ok(display_name)) => Ok(NewAccount {
                email,
                password,
                display_name,
            }),
            (email, password, display_name) => Err([
                email.err().map(UserError::from),
                password.err().map(UserError::from),
                display_name.err().map(UserError::from),
            ]
            .into_iter()
            .flatten()
            .collect()),
        }
    }
}

/// The outcome of `register`.
#[derive(Debug, SimpleObject)]
pub struct RegisterPayload {
    /// True when the sign-up was taken and an email is on its way. False when `userErrors` says
    /// what to fix or how long to wait.
    pub accepted: bool,
    /// With `RATE_LIMITED`: seconds to wait before trying again.
    pub retry_after_seconds: Option<u32>,
    /// Problems with the input, one per problem; empty when accepted.
    pub user_errors: Vec<UserError>,
}

/// The outcome of `resendConfirmation`.
#[derive(Debug, SimpleObject)]
pub struct ResendConfirmationPayload {
    /// True when the request was taken: if the address has an unconfirmed account, a new link
    /// is on its way and earlier links no longer work. The answer is the same for addresses
    /// without an account or already confirmed, which get no email.
    pub accepted: bool,
    /// With `RATE_LIMITED`: seconds to wait before asking again.
    pub retry_after_seconds: Option<u32>,
    /// Why the request was not taken; empty when accepted.
    pub user_errors: Vec<UserError>,
}

/// What `register` and `resendConfirmation` answer, before it takes the shape of either payload.
pub(super) struct Acceptance {
    pub accepted: bool,
    pub retry_after_seconds: Option<u32>,
    pub user_errors: Vec<UserError>,
}

impl Acceptance {
    pub(super) fn ok() -> Self {
        Self {
            accepted: true,
            retry_after_seconds: None,
            user_errors: Vec::new(),
        }
    }

    pub(super) fn invalid(user_errors: Vec<UserError>) -> Self {
        Self {
            accepted: false,
            retry_after_seconds: None,
            user_errors,
        }
    }
}

impl From<Acceptance> for RegisterPayload {
    fn from(acceptance: Acceptance) -> Self {
        Self {
            accepted: acceptance.accepted,
            retry_after_seconds: acceptance.retry_after_seconds,
            user_errors: acceptance.user_errors,
        }
    }
}

impl From<Acceptance> for ResendConfirmationPayload {
    fn from(acceptance: Acceptance) -> Self {
        Self {
            accepted: acceptance.accepted,
            retry_after_seconds: acceptance.retry_after_seconds,
            user_errors: acceptance.user_errors,
        }
    }
}

/// The outcome of `confirmAccount`.
#[derive(Debug, SimpleObject)]
pub struct ConfirmAccountPayload {
    /// The confirmed account; null when `userErrors` says why not.
    pub user: Option<User>,
    /// With a `RATE_LIMITED` error: seconds to wait before trying again.
    pub retry_after_seconds: Option<u32>,
    /// Why the account could not be confirmed; empty on success.
    pub user_errors: Vec<UserError>,
}

/// The outcome of `requestPasswordReset`.
#[derive(Debug, SimpleObject)]
pub struct RequestPasswordResetPayload {
    /// True when the request was taken: if the address has an account, a reset link is on
    /// its way and earlier reset links no longer work. The answer is the same for addresses
    /// without an account, which get no email.
    pub accepted: bool,
    /// With `RATE_LIMITED`: seconds to wait before asking again.
    pub retry_after_seconds: Option<u32>,
    /// Why the request was not taken; empty when accepted.
    pub user_errors: Vec<UserError>,
}

impl From<Acceptance> for RequestPasswordResetPayload {
    fn from(acceptance: Acceptance) -> Self {
        Self {
            accepted: acceptance.accepted,
            retry_after_seconds: acceptance.retry_after_seconds,
            user_errors: acceptance.user_errors,
        }
    }
}

/// What the reset page sends.
#[derive(Debug, InputObject)]
pub struct ResetPasswordInput {
    /// The token from the reset link (after `#token=`).
    pub token: String,
    /// The new password, used exactly as typed (see `passwordPolicy`).
    pub new_password: String,
}

/// The outcome of `resetPassword`.
#[derive(Debug, SimpleObject)]
pub struct ResetPasswordPayload {
    /// The account whose password was set; null when `userErrors` says why not. Every session
    /// of the account has ended; it is not signed in.
    pub user: Option<User>,
    /// With `RATE_LIMITED`: seconds to wait before trying again.
    pub retry_after_seconds: Option<u32>,
    /// Why the password was not reset; empty on success.
    pub user_errors: Vec<UserError>,
}

/// What a change-password form sends.
#[derive(Debug, InputObject)]
pub struct ChangePasswordInput {
    /// The password in use now, exactly as typed.
    pub current_password: String,
    /// The new password, used exactly as typed (see `passwordPolicy`).
    pub new_password: String,
}

/// The outcome of `changePassword`.
#[derive(Debug, SimpleObject)]
pub struct ChangePasswordPayload {
    /// The account whose password changed; null when `userErrors` says why not. This session
    /// stays; every other session of the account has ended.
    pub user: Option<User>,
    /// With `RATE_LIMITED`: seconds to wait before trying again.
    pub retry_after_seconds: Option<u32>,
    /// Why the password was not changed; empty on success.
    pub user_errors: Vec<UserError>,
}

/// What a change-email form sends.
#[derive(Debug, InputObject)]
pub struct RequestEmailChangeInput {
    /// The address to move the account to.
    pub new_email: String,
    /// The account's password, exactly as typed.
    pub password: String,
}

/// The outcome of `requestEmailChange`.
#[derive(Debug, SimpleObject)]
pub struct RequestEmailChangePayload {
    /// True when the request was taken: a link to confirm the change is on its way to the new
    /// address (or, if that address has an account of its own, a short notice; the answer is
    /// the same). The address changes only when the link is used.
    pub accepted: bool,
    /// With `RATE_LIMITED`: seconds to wait before trying again.
    pub retry_after_seconds: Option<u32>,
    /// Why the request was not taken; empty when accepted.
    pub user_errors: Vec<UserError>,
}

impl From<Acceptance> for RequestEmailChangePayload {
    fn from(acceptance: Acceptance) -> Self {
        Self {
            accepted: acceptance.accepted,
            retry_after_seconds: acceptance.retry_after_seconds,
            user_errors: acceptance.user_errors,
        }
    }
}

/// The outcome of `confirmEmailChange`.
#[derive(Debug, SimpleObject)]
pub struct ConfirmEmailChangePayload {
    /// The account, now with its new address; null when `userErrors` says why not.
    pub user: Option<User>,
    /// Why the address did not change; empty on success.
    pub user_errors: Vec<UserError>,
}

/// The outcome of `revertEmailChange`.
#[derive(Debug, SimpleObject)]
pub struct RevertEmailChangePayload {
    /// The account, back on its old address, every session ended and a password reset link on
    /// its way there; null when `userErrors` says why not.
    pub user: Option<User>,
    /// Why the change was not undone; empty on success.
    pub user_errors: Vec<UserError>,
}

/// The outcome of `deleteAccount`.
#[derive(Debug, SimpleObject)]
pub struct DeleteAccountPayload {
    /// True when the account, its sessions, links and waiting mail are gone.
    pub deleted: bool,
    /// Why the account was not deleted; empty on success.
    pub user_errors: Vec<UserError>,
}

/// How a new session's token reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SessionDelivery {
    /// In an `HttpOnly` cookie (`admit_session`, or `__Host-admit_session` over https) that
    /// page scripts cannot read; the token is never in the answer. For browsers.
    Cookie,
    /// In `sessionToken`, once; send it as `Authorization: Bearer ...`. No cookie is set. For
    /// native apps and servers.
    Bearer,
}

/// What a sign-in form sends.
#[derive(Debug, InputObject)]
pub struct SignInInput {
    /// The address the account was registered with.
    pub email: String,
    /// The password, exactly as typed.
    pub password: String,
    /// How the session's token should be delivered; `COOKIE` when omitted or null.
    #[graphql(default_with = "Some(SessionDelivery::Cookie)")]
    pub delivery: Option<SessionDelivery>,
}

/// A signed-in device or client.
#[derive(Debug, SimpleObject)]
pub struct Session {
    /// Stable identifier, for `revokeSession`. Not the token: it cannot be used to sign in.
    pub id: ID,
    /// When the session was started by a sign-in.
    pub created_at: DateTime<Utc>,
    /// When a request last used the session (updated at most once a minute).
    pub last_seen_at: DateTime<Utc>,
    /// When the session ends at the latest. It ends sooner when unused for the idle timeout.
    pub expires_at: DateTime<Utc>,
    /// The `User-Agent` of the client that signed in (at most 256 characters), to tell
    /// devices apart.
    pub user_agent: Option<String>,
    /// Whether this is the session the request was made with.
    pub current: bool,
}

impl Session {
    /// The API's view of `session`, seen from the session `current`.
    pub(super) fn new(session: sessions::Model, current: Uuid) -> Self {
        Self {
            id: ID(session.id.to_string()),
            created_at: session.created_at.with_timezone(&Utc),
            last_seen_at: session.last_seen_at.with_timezone(&Utc),
            expires_at: session.expires_at.with_timezone(&Utc),
            user_agent: session.user_agent,
            current: session.id == current,
        }
    }
}

/// The signed-in person: their account and sessions.
#[derive(Debug, SimpleObject)]
#[graphql(complex)]
pub struct Viewer {
    /// The account signed in.
    pub user: User,
    /// The session this request was made with.
    pub session: Session,
    #[graphql(skip)]
    pub(super) user_id: Uuid,
    #[graphql(skip)]
    pub(super) session_id: Uuid,
}

impl From<Authenticated> for Viewer {
    fn from(viewer: Authenticated) -> Self {
        let (user_id, session_id) = (viewer.user.id, viewer.session.id);
        Self {
            user: viewer.user.into(),
            session: Session::new(viewer.session, session_id),
            user_id,
            session_id,
        }
    }
}

/// The outcome of `signIn`.
#[derive(Debug, Default, SimpleObject)]
pub struct SignInPayload {
    /// The account signed in; null unless signed in.
    pub user: Option<User>,
    /// The new session; null unless signed in.
    pub session: Option<Session>,
    /// The session's token, only with `delivery: BEARER` (null for `COOKIE`): returned this
    /// once, never stored in clear. Send it as `Authorization: Bearer ...`.
    pub session_token: Option<String>,
    /// With `RATE_LIMITED`: seconds to wait before trying again.
    pub retry_after_seconds: Option<u32>,
    /// Why the sign-in did not go through; empty on success.
    pub user_errors: Vec<UserError>,
}

/// The outcome of `signOut`.
#[derive(Debug, SimpleObject)]
pub struct SignOutPayload {
    /// True when the request's session ended (and its cookie was cleared).
    pub signed_out: bool,
    /// `UNAUTHENTICATED` when the request carried no valid session; empty on success.
    pub user_errors: Vec<UserError>,
}

/// The outcome of `revokeSession` and `revokeOtherSessions`.
#[derive(Debug, SimpleObject)]
pub struct RevokeSessionPayload {
    /// True when the session (or the other sessions) ended.
    pub revoked: bool,
    /// `UNAUTHENTICATED` without a session, `NOT_FOUND` for an id that is not one of the
    /// viewer's sessions; empty on success.
    pub user_errors: Vec<UserError>,
}

impl RevokeSessionPayload {
    /// The answer without a signed-in session.
    pub(super) fn unauthenticated() -> Self {
        Self {
            revoked: false,
            user_errors: vec![UserError::unauthenticated()],
        }
    }
}

impl UserError {
    /// The request carries no valid session.
    pub(super) fn unauthenticated() -> Self {
        Self {
            field: None,
            message: "Sign in first: this needs a signed-in session.".to_owned(),
            code: ErrorCode::Unauthenticated,
        }
    }
}

/// A problem the person can fix, tied to the input field it concerns.
#[derive(Debug, Clone, SimpleObject)]
pub struct UserError {
    /// Path to the input field at fault, e.g. `["input", "email"]`; null when no single field is.
    pub field: Option<Vec<String>>,
    /// A sentence to show the person.
    pub message: String,
    /// What went wrong, for code to act on.
    pub code: ErrorCode,
}

/// Machine-readable reasons for a `UserError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ErrorCode {
    /// The email address is missing, malformed, too long or cannot receive mail.
    InvalidEmail,
    /// The password has fewer characters than `passwordPolicy.minLength`.
    PasswordTooShort,
    /// The password has more characters than `passwordPolicy.maxLength`.
    PasswordTooLong,
    /// Another field's value is not acceptable; the message says why.
    InvalidInput,
    /// The token is unknown or was altered.
    TokenInvalid,
    /// The token was valid but its lifetime is over.
    TokenExpired,
    /// A newer link was sent since; only the newest one works.
    TokenSuperseded,
    /// The single-use link was used already.
    TokenUsed,
    /// The password is on the list of common passwords, or as easy to guess.
    PasswordTooCommon,
    /// The password is only white space, or contains the address or the name.
    PasswordTooWeak,
    /// Too many emails were requested for this address, too many sign-ins failed for it, or
    /// too many requests came from the client's network; see `retryAfterSeconds`.
    RateLimited,
    /// No account has this address and password (which of the two is wrong is not said).
    InvalidCredentials,
    /// The password is right, but the address was never confirmed: open the confirmation
    /// email, or ask for a new link with `resendConfirmation`.
    EmailNotConfirmed,
    /// The operation needs a signed-in session and the request carried none that is valid, or
    /// its session ended (a password reset, a sign-out elsewhere) while the operation ran.
    Unauthenticated,
    /// No such thing among the viewer's own (another account's are not told apart from ones
    /// that never existed).
    NotFound,
}

/// The password rule, for forms to show.
#[derive(Debug, SimpleObject)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode code points) a password may have.
    pub min_length: u32,
    /// Most characters (Unicode code points) a password may have.
    pub max_length: u32,
    /// Always true: passwords that attackers try first (found in lists of common and leaked
    /// passwords, or as easy to guess), made only of spaces, or containing the email address's
    /// local part or the display name are refused with `PASSWORD_TOO_COMMON` or
    /// `PASSWORD_TOO_WEAK`. How easy to guess is judged on the first 16 characters. Forms can
    /// say so next to the length rule.
    pub rejects_common_passwords: bool,
}

impl From<domain::PasswordPolicy> for PasswordPolicy {
    fn from(policy: domain::PasswordPolicy) -> Self {
        Self {
            min_length: u32::try_from(policy.min_length).unwrap_or(u32::MAX),
            max_length: u32::try_from(policy.max_length).unwrap_or(u32::MAX),
            rejects_common_passwords: true,
        }
    }
}
