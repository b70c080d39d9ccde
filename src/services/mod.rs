//! The use cases of admit. Each takes parsed input and the application state, and returns a
//! typed error of its own with an opaque `Internal` variant for everything unexpected.

pub mod accounts;
pub mod client_budget;
pub mod email_change;
mod hashing;
mod links;
pub mod purge;
pub mod recovery;
pub mod sessions;
pub mod sign_in;
pub mod throttle;

pub use hashing::{HashError, PasswordHasher, Verification};
