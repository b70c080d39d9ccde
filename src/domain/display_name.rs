use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Most code points a display name may have.
const MAX_LENGTH: usize = 100;

/// A trimmed, non-empty name of at most 100 code points: no control or format characters (so
/// no line breaks and no bidirectional overrides that reorder what a reader sees), and nothing
/// that looks like a link or an address, since whoever signs up chooses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Why a display name is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DisplayNameError {
    /// Over the length limit.
    #[error("A display name can be at most 100 characters long.")]
    TooLong,
    /// Contains control, format or separator characters (line breaks, direction overrides,
    /// invisible characters, ...).
    #[error("A display name can hold only visible characters and spaces.")]
    ControlCharacters,
    /// Looks like a web address or an email address.
    #[error("A display name cannot contain a web or email address.")]
    LooksLikeALink,
}

impl DisplayName {
    /// Trims `raw`; an empty or all-space name means "no display name" and gives `None`.
    pub fn parse(raw: &str) -> Result<Option<Self>, DisplayNameError> {
        let name = raw.trim();
        if name.is_empty() {
            return Ok(None);
        }
        if name.chars().any(is_hidden) {
            return Err(DisplayNameError::ControlCharacters);
        }
        if name.chars().count() > MAX_LENGTH {
            return Err(DisplayNameError::TooLong);
        }
        if looks_like_a_link(name) {
            return Err(DisplayNameError::LooksLikeALink);
        }
        Ok(Some(Self(name.to_owned())))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<DisplayName> for String {
    fn from(name: DisplayName) -> Self {
        name.0
    }
}

/// Controls, format characters (bidirectional overrides and isolates, zero-width characters),
/// line and paragraph separators, and unassigned or private code points.
fn is_hidden(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::Surrogate
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
    )
}

/// A scheme, `www.`, an `@`, or a dotted name such as `evil.example` or `bit.ly`: a letter or
/// digit, a dot, then two letters or more. "Dr. Who" and "J.R.R. Tolkien" pass.
fn looks_like_a_link(name: &str) -> bool {
    let lower = name.to_lowercase();
    if lower.contains("://") || lower.contains("www.") || lower.contains('@') {
        return true;
    }
    let chars: Vec<char> = lower.chars().collect();
    chars.windows(2).enumerate().any(|(i, pair)| {
        pair[0].is_alphanumeric()
            && pair[1] == '.'
            && chars[i + 2..]
                .iter()
                .take_while(|c| c.is_alphabetic())
                .count()
                >= 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_people_use_are_kept_as_typed_but_trimmed() {
        for name in [
            "Ada Lovelace",
            "Dr. Who",
            "J.R.R. Tolkien",
            "李小龙",
            "Zoë O'Brien-Smith",
        ] {
            assert_eq!(
                DisplayName::parse(&format!("  {name} "))
                    .unwrap()
                    .unwrap()
                    .as_str(),
                name
            );
        }
        assert_eq!(DisplayName::parse("   "), Ok(None));
    }

    #[test]
    fn hidden_characters_and_links_are_refused() {
        for hidden in [
            "Ada\u{202E}evoL",
            "Ada\u{2028}Lovelace",
            "Ada\u{2029}x",
            "A\u{200B}da",
            "Ada\nL",
            "Ada\u{2066}x",
        ] {
            assert_eq!(
                DisplayName::parse(hidden),
                Err(DisplayNameError::ControlCharacters),
                "{hidden:?}"
            );
        }
        for link in [
            "Ada. URGENT: verify now at https://evil.example/login",
            "visit evil.example",
            "bit.ly/x",
            "www.example",
            "me@example.com",
        ] {
            assert_eq!(
                DisplayName::parse(link),
                Err(DisplayNameError::LooksLikeALink),
                "{link:?}"
            );
        }
        assert_eq!(
            DisplayName::parse(&"a".repeat(101)),
            Err(DisplayNameError::TooLong)
        );
    }
}
