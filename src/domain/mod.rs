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

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes` in lowercase hex: what admit stores in place of a secret or an
/// address. Encoded into a buffer: `hex::encode` goes a character at a time, and this runs on
/// every request that uses a link, a session or a budget.
fn sha256_hex(bytes: &[u8]) -> String {
    let mut hex = [0u8; 64];
    // Neither can fail: a SHA-256 is 32 bytes, which fill the 64 hex digits exactly, and hex
    // digits are ASCII.
    match hex::encode_to_slice(Sha256::digest(bytes), &mut hex) {
        Ok(()) => String::from_utf8(hex.to_vec()).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_hashes_are_the_lowercase_hex_sha256_of_their_input() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
