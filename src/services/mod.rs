//! The use cases of admit. Each takes parsed input and the application state, and returns a
//! typed error of its own with an opaque `Internal` variant for everything unexpected.

/// The conversions every use case error has: a database error is `Internal`, a reached limit
/// is `RateLimited`.
macro_rules! use_case_errors {
    ($($error:ty),* $(,)?) => {$(
        impl From<sea_orm::DbErr> for $error {
            fn from(err: sea_orm::DbErr) -> Self {
                Self::Internal(err.into())
            }
        }
        impl From<$crate::services::throttle::RateLimited> for $error {
            fn from(limited: $crate::services::throttle::RateLimited) -> Self {
                Self::RateLimited(limited)
            }
        }
    )*};
}
use use_case_errors;

/// What the use cases a signed-in owner confirms with the password make of a proof that went
/// stale while the password was checked ([`sign_in::Stale`]): a password changed meanwhile is
/// a wrong one, and an ended session is no session.
macro_rules! signed_in_use_case_errors {
    ($($error:ty),* $(,)?) => {$(
        impl From<$crate::services::sign_in::Stale> for $error {
            fn from(stale: $crate::services::sign_in::Stale) -> Self {
                match stale {
                    $crate::services::sign_in::Stale::Password => Self::InvalidCredentials,
                    $crate::services::sign_in::Stale::Session => Self::SessionEnded,
                }
            }
        }
    )*};
}
use signed_in_use_case_errors;

pub mod accounts;
pub mod client_budget;
pub mod confirmation;
pub mod email_change;
mod hashing;
mod links;
pub mod purge;
pub mod recovery;
pub mod sessions;
pub mod sign_in;
pub mod throttle;

pub use hashing::{HashError, PasswordHasher, Verification};
