//! Types that can only hold valid values: raw input becomes one of these through `parse`, and
//! everything past the API boundary works with them instead of strings.

mod client;
mod display_name;
mod email;
mod lifetime;
mod password;
mod token;

pub use client::ClientNetwork;
pub use display_name::{DisplayName, DisplayNameError};
pub use email::{EmailAddress, EmailError};
pub use lifetime::{Lifetime, LifetimeError};
pub use password::{
    JUDGED_PREFIX, MAX_ATTEMPT_LENGTH, NewPassword, Password, PasswordError, PasswordPolicy,
};
pub use token::{ConfirmationToken, SessionToken, TokenHash, TokenParseError};
