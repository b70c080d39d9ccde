/// Most code points a display name may have.
const MAX_LENGTH: usize = 100;

/// A trimmed, non-empty name of at most 100 code points with no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Why a display name is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DisplayNameError {
    /// Over the length limit.
    #[error("A display name can be at most 100 characters long.")]
    TooLong,
    /// Contains control characters (line breaks, escapes, ...).
    #[error("A display name cannot contain control characters.")]
    ControlCharacters,
}

impl DisplayName {
    /// Trims `raw`; an empty or all-space name means "no display name" and gives `None`.
    pub fn parse(raw: &str) -> Result<Option<Self>, DisplayNameError> {
        let name = raw.trim();
        if name.is_empty() {
            return Ok(None);
        }
        if name.chars().any(char::is_control) {
            return Err(DisplayNameError::ControlCharacters);
        }
        if name.chars().count() > MAX_LENGTH {
            return Err(DisplayNameError::TooLong);
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
