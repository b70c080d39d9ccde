use std::fmt;

use validator::ValidateEmail;

/// The longest address SMTP can carry (RFC 5321 path limit less the angle brackets).
const MAX_OCTETS: usize = 254;

/// An email address that passed every rule admit applies, with the key that decides whether two
/// addresses belong to the same account.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress {
    /// As typed, trimmed: what the person sees in their mail client.
    address: String,
    /// Local part as typed, domain in IDNA ASCII form: what SMTP gets.
    deliverable: String,
    /// Local part lowercased, domain lowercased and IDNA-encoded: what the UNIQUE index holds.
    key: String,
}

/// Why a string is not an acceptable email address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Nothing but white space.
    #[error("Enter an email address.")]
    Empty,
    /// Longer than SMTP allows.
    #[error("An email address can be at most 254 characters long.")]
    TooLong,
    /// Anything else that makes it unusable for mail.
    #[error("Enter a valid email address, like name@example.com.")]
    Invalid,
}

impl EmailAddress {
    /// Checks `raw` (surrounding white space is ignored) and computes its uniqueness key.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let address = raw.trim();
        if address.is_empty() {
            return Err(EmailError::Empty);
        }
        if address.len() > MAX_OCTETS {
            return Err(EmailError::TooLong);
        }
        // The validator crate accepts some addresses that cannot receive mail from us: inner
        // white space and control characters, IP literals, and single-label domains.
        if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::Invalid);
        }
        if !address.validate_email() {
            return Err(EmailError::Invalid);
        }
        let (local, domain) = address.rsplit_once('@').ok_or(EmailError::Invalid)?;
        if domain.starts_with('[') {
            return Err(EmailError::Invalid);
        }
        let ascii_domain = idna::domain_to_ascii(domain).map_err(|_| EmailError::Invalid)?;
        let labels: Vec<&str> = ascii_domain.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|label| label.is_empty()) {
            return Err(EmailError::Invalid);
        }
        // The top-level label must be a name, not a number: that rules out IPv4 addresses
        // written without brackets in any notation (`127.0.0.1`, `0x7f.1`). Internationalized
        // top-level domains arrive here as `xn--` labels.
        let top = labels.last().copied().unwrap_or_default();
        if !(top.bytes().all(|b| b.is_ascii_alphabetic()) || top.starts_with("xn--")) {
            return Err(EmailError::Invalid);
        }
        let deliverable = format!("{local}@{ascii_domain}");
        if deliverable.len() > MAX_OCTETS {
            return Err(EmailError::TooLong);
        }
        // The mailer's own rule (which refuses `a..b@`, `.a@` and `a.@`, among others): an
        // address accepted here can always be sent to.
        if deliverable.parse::<lettre::Address>().is_err() {
            return Err(EmailError::Invalid);
        }
        let key = format!("{}@{ascii_domain}", local.to_lowercase());
        Ok(Self {
            address: address.to_owned(),
            deliverable,
            key,
        })
    }

    /// The address as typed, trimmed.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The address with an ASCII domain, for the SMTP envelope and headers.
    pub fn deliverable(&self) -> &str {
        &self.deliverable
    }

    /// The case-insensitive key under which the account is unique.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EmailAddress").field(&self.address).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_folds_case_and_encodes_the_domain_but_keeps_tags() {
        let email = EmailAddress::parse("  Anna.Smith+News@Bücher.Example ").unwrap();
        assert_eq!(email.as_str(), "Anna.Smith+News@Bücher.Example");
        assert_eq!(email.key(), "anna.smith+news@xn--bcher-kva.example");
        assert_eq!(email.deliverable(), "Anna.Smith+News@xn--bcher-kva.example");
    }

    #[test]
    fn addresses_that_cannot_receive_our_mail_are_rejected() {
        for raw in [
            "plainaddress",
            "a@localhost",
            "a@[127.0.0.1]",
            "a@127.0.0.1",
            "a b@example.com",
            "a\u{7}b@example.com",
            "a@example..com",
            "@example.com",
            "a@",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "user@0x7f.1",
            "user@example.123",
        ] {
            assert_eq!(
                EmailAddress::parse(raw),
                Err(EmailError::Invalid),
                "{raw:?}"
            );
        }
        assert_eq!(EmailAddress::parse("   "), Err(EmailError::Empty));
    }

    #[test]
    fn internationalized_top_level_domains_are_names_too() {
        let email = EmailAddress::parse("anna@example.рф").unwrap();
        assert_eq!(email.deliverable(), "anna@example.xn--p1ai");
    }

    #[test]
    fn an_address_over_254_octets_is_too_long() {
        let raw = format!("{}@{}.com", "a".repeat(60), "b".repeat(200));
        assert_eq!(EmailAddress::parse(&raw), Err(EmailError::TooLong));
    }
}
