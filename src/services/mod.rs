//! The use cases of admit. Each takes parsed input and the application state, and returns a
//! typed error of its own with an opaque `Internal` variant for everything unexpected.

pub mod accounts;
pub mod client_budget;
mod hashing;
pub mod purge;
pub mod recovery;
pub mod sessions;
pub mod sign_in;
pub mod throttle;

pub use hashing::{HashError, PasswordHasher, Verification};
