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

/// A password ready to hash or to check against a hash: a new one that met the whole policy
/// (see [`NewPassword::judge`]), or one typed at sign-in. NFKC-normalized so that the same
/// password typed on another keyboard or OS hashes the same. It cannot be printed.
#[derive(Clone)]
pub struct Password(SecretString);

/// A password chosen for an account that meets the policy's cheap rules (length, not blank, not
/// built on the account's words) but whose guessability is not judged yet. The judgment is
/// costly and, for crafted input, very costly (see [`JUDGED_PREFIX`]), so it is not part of
/// parsing: whoever hashes the password judges it first, after the client's budget and in its
/// turn for the hashing threads. It cannot be printed.
pub struct NewPassword {
    normalized: SecretString,
    /// The account's own words, lowercased: zxcvbn rates them as guessable.
    account_words: Vec<String>,
}

/// Why a password does not meet the policy. The length is counted in code points as the person
/// typed them; normalization is for hashing only.
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
    /// Nothing but spaces or invisible characters.
    #[error("Use letters, digits or symbols, not only spaces.")]
    Blank,
    /// Contains the account's own address or name.
    #[error("Don't use your email address or name in your password.")]
    ContainsAccountName,
    /// On the list of passwords attackers try first, or as easy to guess.
    #[error(
        "This password is too common or too easy to guess. Try a few unrelated words, or a password manager's suggestion."
    )]
    TooCommon,
}

/// Most code points a password typed at sign-in may have: above any policy admit accepts.
pub const MAX_ATTEMPT_LENGTH: usize = 4096;

/// Shortest account word (local part, name) that a password may not contain: shorter ones such
/// as "al" would refuse too much.
const MIN_ACCOUNT_WORD: usize = 3;
/// The strength estimate below which a password counts as common: zxcvbn's score 2 means an
/// estimated 10^6 guesses or more, beyond what the online throttles let anyone try.
const MIN_SCORE: zxcvbn::Score = zxcvbn::Score::Two;
/// Most code points zxcvbn judges: the first ones of the password.
///
/// zxcvbn's cost grows with the square of the length and, through its l33t matcher, with the
/// product of the substitutions the password's characters allow: on the benchmark machine a
/// 28-character passphrase took 0.6 ms, the costliest 16 characters 22 ms and a crafted
/// 128-character password over 500 ms (a known weakness of every zxcvbn port; dropbox/zxcvbn#326).
/// Judging only a prefix is what zxcvbn's authors recommend for long input. It passes no
/// password that the whole would fail: in zxcvbn's model, characters after a start only add
/// guesses. A longer password whose first sixteen characters alone are guessable is refused.
pub const JUDGED_PREFIX: usize = 16;

impl NewPassword {
    /// Checks `raw` against the policy's rules and against the words of the account it would
    /// protect (`account_words`: the address's local part, the display name), then normalizes
    /// it; [`judge`](Self::judge) does the rest. The password is never trimmed or truncated.
    pub fn parse(
        raw: &str,
        policy: PasswordPolicy,
        account_words: &[&str],
    ) -> Result<Self, PasswordError> {
        // Counted as typed: one U+FDFA must not pass for eighteen characters.
        let length = raw.chars().count();
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
        if raw
            .chars()
            .all(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
        {
            return Err(PasswordError::Blank);
        }
        let normalized: String = raw.nfkc().collect();
        let folded = normalized.to_lowercase();
        let words: Vec<String> = account_words
            .iter()
            .map(|word| word.trim().to_lowercase())
            .filter(|word| word.chars().count() >= MIN_ACCOUNT_WORD)
            .collect();
        if words.iter().any(|word| folded.contains(word.as_str())) {
            return Err(PasswordError::ContainsAccountName);
        }
        Ok(Self {
            normalized: SecretString::from(normalized),
            account_words: words,
        })
    }

    /// The last rule: not on the lists attackers try first, nor as easy to guess, judged on
    /// the first [`JUDGED_PREFIX`] code points. Costs up to tens of milliseconds of CPU.
    pub fn judge(self) -> Result<Password, PasswordError> {
        // A slice, not a copy: no unzeroized copy of the password is left behind.
        let normalized = self.normalized.expose_secret();
        let end = normalized
            .char_indices()
            .nth(JUDGED_PREFIX)
            .map_or(normalized.len(), |(at, _)| at);
        let judged = &normalized[..end];
        let inputs: Vec<&str> = self.account_words.iter().map(String::as_str).collect();
        if zxcvbn::zxcvbn(judged, &inputs).score() < MIN_SCORE {
            return Err(PasswordError::TooCommon);
        }
        Ok(Password(self.normalized))
    }
}

impl Password {
    /// A password as typed at sign-in, to be checked against a stored hash: normalized like a
    /// new one, and judged by nothing else (the policy may have changed since the account's
    /// password was chosen), except a length bound so that no request hashes megabytes.
    pub fn attempt(raw: &str) -> Result<Self, PasswordError> {
        if raw.chars().count() > MAX_ATTEMPT_LENGTH {
            return Err(PasswordError::TooLong {
                max: MAX_ATTEMPT_LENGTH,
            });
        }
        Ok(Self(SecretString::from(raw.nfkc().collect::<String>())))
    }

    /// The normalized password, for hashing only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Format characters that render as nothing (zero-width space and joiners, word joiner, BOM).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Password, PasswordError> {
        NewPassword::parse(raw, PasswordPolicy::default(), &[]).and_then(NewPassword::judge)
    }

    #[test]
    fn length_counts_code_points_as_typed() {
        // Twelve code points, thirty-six bytes.
        assert!(parse("密码安全长城黄河月亮星星太阳").is_ok());
        assert_eq!(
            parse("密码安全长城黄河月亮星").unwrap_err(),
            PasswordError::TooShort { min: 12 }
        );
        // One code point that NFKC turns into eighteen.
        assert_eq!(
            parse("\u{FDFA}").unwrap_err(),
            PasswordError::TooShort { min: 12 }
        );
    }

    #[test]
    fn passwords_are_nfkc_normalized_and_never_trimmed() {
        let composed = parse("caf\u{e9} au lait, s'il vous pla\u{ee}t").unwrap();
        let decomposed = parse("cafe\u{301} au lait, s'il vous plai\u{302}t").unwrap();
        assert_eq!(composed.expose(), decomposed.expose());
        let spaced = parse("  purple giraffe kettle  ").unwrap();
        assert_eq!(spaced.expose(), "  purple giraffe kettle  ");
    }

    #[test]
    fn a_password_over_the_maximum_is_rejected_not_truncated() {
        let long: String = "tangerine orbit velvet ".repeat(6);
        assert!(parse(&long[..128]).is_ok());
        assert_eq!(
            parse(&long[..129]).unwrap_err(),
            PasswordError::TooLong { max: 128 }
        );
    }

    #[test]
    fn blank_common_and_personal_passwords_are_refused() {
        for blank in [" ".repeat(14), "\u{200B}".repeat(14), "\t\n".repeat(7)] {
            assert_eq!(parse(&blank).unwrap_err(), PasswordError::Blank);
        }
        for common in [
            "password12345",
            "123456789012",
            "qwertyuiopasdf",
            "aaaaaaaaaaaaaa",
        ] {
            assert_eq!(
                parse(common).unwrap_err(),
                PasswordError::TooCommon,
                "{common}"
            );
        }
        let personal = NewPassword::parse(
            "ada.lovelace-rocks-42",
            PasswordPolicy::default(),
            &["Ada.Lovelace", "Ada"],
        );
        assert_eq!(personal.unwrap_err(), PasswordError::ContainsAccountName);
        assert!(
            NewPassword::parse(
                "correct horse battery staple",
                PasswordPolicy::default(),
                &["al"]
            )
            .and_then(NewPassword::judge)
            .is_ok()
        );
    }

    #[test]
    fn guessability_is_judged_on_the_first_sixteen_code_points_only() {
        // A strong start passes whatever follows; a guessable start fails whatever follows.
        assert!(parse("Vq7#mZ2p!Lx9@wR4password123456").is_ok());
        assert_eq!(
            parse("passwordpassword Vq7#mZ2p!Lx9@wR4").unwrap_err(),
            PasswordError::TooCommon
        );
    }

    #[test]
    fn a_sign_in_attempt_is_normalized_and_only_bounded_in_length() {
        let typed = Password::attempt("cafe\u{301}").unwrap();
        assert_eq!(typed.expose(), "caf\u{e9}");
        assert!(Password::attempt("").is_ok());
        assert!(Password::attempt(&"x".repeat(MAX_ATTEMPT_LENGTH)).is_ok());
        assert_eq!(
            Password::attempt(&"x".repeat(MAX_ATTEMPT_LENGTH + 1)).unwrap_err(),
            PasswordError::TooLong {
                max: MAX_ATTEMPT_LENGTH
            }
        );
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let password = parse("correct horse battery").unwrap();
        assert!(!format!("{password:?}").contains("horse"));
        let new = NewPassword::parse("correct horse battery", PasswordPolicy::default(), &["al"]);
        assert!(!format!("{new:?}").contains("horse"));
    }
}
