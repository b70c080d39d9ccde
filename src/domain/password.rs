use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

/// The length rule passwords must meet, counted in Unicode code points after NFKC normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest code points allowed.
    pub min_length: usize,
    /// Most code points allowed; also bounds the work one hash can cost.
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 128,
        }
    }
}

/// A password that meets the policy, NFKC-normalized so that the same password typed on another
/// keyboard or OS hashes the same. It cannot be printed.
#[derive(Clone)]
pub struct Password(SecretString);

/// Why a password does not meet the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Fewer code points than the policy's minimum.
    #[error("Use at least {min} characters.")]
    TooShort {
        /// The policy's minimum.
        min: usize,
    },
    /// More code points than the policy's maximum.
    #[error("Use at most {max} characters.")]
    TooLong {
        /// The policy's maximum.
        max: usize,
    },
}

impl Password {
    /// Normalizes `raw` and checks its length. The password is never trimmed or truncated.
    pub fn parse(raw: &str, policy: PasswordPolicy) -> Result<Self, PasswordError> {
        let normalized: String = raw.nfkc().collect();
        let length = normalized.chars().count();
        if length < policy.min_length {
            return Err(PasswordError::TooShort {
                min: policy.min_length,
            });
        }
        if length > policy.max_length {
            return Err(PasswordError::TooLong {
                max: policy.max_length,
            });
        }
        Ok(Self(SecretString::from(normalized)))
    }

    /// The normalized password, for hashing only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_counts_code_points_not_bytes() {
        let policy = PasswordPolicy::default();
        // Twelve code points, thirty-six bytes.
        assert!(Password::parse("密码密码密码密码密码密码", policy).is_ok());
        assert_eq!(
            Password::parse("密码密码密码密码密码", policy).unwrap_err(),
            PasswordError::TooShort { min: 12 }
        );
    }

    #[test]
    fn passwords_are_nfkc_normalized_and_never_trimmed() {
        let policy = PasswordPolicy::default();
        let composed = Password::parse("caf\u{e9} au lait!!", policy).unwrap();
        let decomposed = Password::parse("cafe\u{301} au lait!!", policy).unwrap();
        assert_eq!(composed.expose(), decomposed.expose());
        let spaced = Password::parse("  twelve chars  ", policy).unwrap();
        assert_eq!(spaced.expose(), "  twelve chars  ");
    }

    #[test]
    fn a_password_over_the_maximum_is_rejected_not_truncated() {
        let policy = PasswordPolicy::default();
        assert!(Password::parse(&"x".repeat(128), policy).is_ok());
        assert_eq!(
            Password::parse(&"x".repeat(129), policy).unwrap_err(),
            PasswordError::TooLong { max: 128 }
        );
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let password = Password::parse("correct horse battery", PasswordPolicy::default()).unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }
}
