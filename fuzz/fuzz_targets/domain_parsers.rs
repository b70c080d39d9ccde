//! Raw text through every parser that turns client input into a domain type, and through the
//! document scan that runs before any GraphQL parser.
#![no_main]

use admit::{
    domain::{ConfirmationToken, DisplayName, EmailAddress, NewPassword, PasswordPolicy},
    graphql::limits,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(email) = EmailAddress::parse(&text) {
        // What parses must be usable: a key and a deliverable form.
        assert!(!email.key().is_empty());
        assert!(!email.deliverable().is_empty());
    }
    let _ =
        NewPassword::parse(&text, PasswordPolicy::default(), &[&text]).and_then(NewPassword::judge);
    let _ = ConfirmationToken::parse(&text);
    let _ = DisplayName::parse(&text);
    let _ = limits::scan_source(&text);
});
