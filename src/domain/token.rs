use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

/// Bytes of entropy in a token.
const TOKEN_BYTES: usize = 32;
/// Characters of a token in URL-safe base64 without padding.
const TOKEN_CHARS: usize = 43;

/// The SHA-256 of a token, hex-encoded: what the database stores and looks tokens up by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(String);

/// The string is not something admit could have issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("The token is malformed.")]
pub struct TokenParseError;

/// Defines a secret token type: 32 bytes from the OS's CSPRNG, carried as 43 URL-safe base64
/// characters, stored only as its [`TokenHash`], and never printed. Each use has its own type,
/// so that a session token cannot be passed where a confirmation token is expected.
macro_rules! secret_token {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(String);

        impl $name {
            /// A fresh token from the operating system's CSPRNG.
            pub fn generate() -> Result<Self, getrandom::Error> {
                let mut bytes = [0u8; TOKEN_BYTES];
                getrandom::fill(&mut bytes)?;
                Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
            }

            /// Accepts exactly the shape [`generate`](Self::generate) produces: 43 URL-safe
            /// base64 characters that decode to 32 bytes. Surrounding white space from a sloppy
            /// copy is ignored.
            pub fn parse(raw: &str) -> Result<Self, TokenParseError> {
                let token = raw.trim();
                if token.len() != TOKEN_CHARS {
                    return Err(TokenParseError);
                }
                match URL_SAFE_NO_PAD.decode(token) {
                    Ok(bytes) if bytes.len() == TOKEN_BYTES => Ok(Self(token.to_owned())),
                    _ => Err(TokenParseError),
                }
            }

            /// The token in clear, to hand to its holder (in a link, a cookie, a payload).
            pub fn expose(&self) -> &str {
                &self.0
            }

            /// The hash stored in place of the token.
            pub fn hash(&self) -> TokenHash {
                TokenHash(super::sha256_hex(self.0.as_bytes()))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }
    };
}

secret_token! {
    /// A single-use secret sent by email. It exists in clear only on its way to the person: at
    /// rest there is only its [`TokenHash`]. It cannot be printed.
    ConfirmationToken
}

secret_token! {
    /// What a signed-in client presents (in the `admit_session` cookie or as a bearer token).
    /// It exists in clear only in the sign-in answer and the client's requests: at rest there is
    /// only its [`TokenHash`]. It cannot be printed.
    SessionToken
}

impl TokenHash {
    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_43_url_safe_characters_and_parse_back() {
        let token = ConfirmationToken::generate().unwrap();
        assert_eq!(token.expose().len(), 43);
        assert!(
            token
                .expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        let parsed = ConfirmationToken::parse(token.expose()).unwrap();
        assert_eq!(parsed.hash(), token.hash());
        assert_eq!(token.hash().as_str().len(), 64);
    }

    #[test]
    fn tokens_never_print() {
        let token = SessionToken::generate().unwrap();
        assert_eq!(format!("{token:?}"), "SessionToken([REDACTED])");
    }

    #[test]
    fn strings_of_the_wrong_shape_are_not_tokens() {
        let token = ConfirmationToken::generate().unwrap();
        let truncated = &token.expose()[..42];
        let padded = format!("{}=", token.expose());
        let bad_alphabet = format!("{}+", &token.expose()[..42]);
        for raw in ["", truncated, &padded, &bad_alphabet] {
            assert!(ConfirmationToken::parse(raw).is_err(), "{raw:?}");
        }
    }
}
