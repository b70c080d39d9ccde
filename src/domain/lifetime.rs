use std::{fmt, str::FromStr, time::Duration};

use chrono::TimeDelta;

/// The longest lifetime accepted: far beyond any sensible setting, and far below where adding it
/// to a timestamp would overflow (which panics in chrono).
const LONGEST: TimeDelta = TimeDelta::days(100 * 366);

/// How long something lasts (a link, an unconfirmed account, a cooldown): longer than zero and
/// at most a hundred years, so that it converts to the database's time arithmetic and to
/// `std::time::Duration` without a fallible step anywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lifetime(TimeDelta);

/// The text is not a duration admit accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    /// Not a duration at all (`humantime`'s syntax: `90s`, `15m`, `24h`, `7d`, `1h 30m`).
    #[error("{0}")]
    Syntax(String),
    /// Zero.
    #[error("must be longer than zero")]
    Zero,
    /// Beyond a hundred years.
    #[error("must be at most 100 years")]
    TooLong,
}

impl Lifetime {
    /// Parses `humantime` syntax (`30s`, `24h`, `7d`) into a lifetime within the bounds.
    pub fn parse(raw: &str) -> Result<Self, LifetimeError> {
        let duration = humantime::parse_duration(raw.trim())
            .map_err(|err| LifetimeError::Syntax(err.to_string()))?;
        Self::from_std(duration)
    }

    /// A lifetime from a `std` duration, within the same bounds as [`parse`](Self::parse).
    pub fn from_std(duration: Duration) -> Result<Self, LifetimeError> {
        if duration.is_zero() {
            return Err(LifetimeError::Zero);
        }
        match TimeDelta::from_std(duration) {
            Ok(delta) if delta <= LONGEST => Ok(Self(delta)),
            _ => Err(LifetimeError::TooLong),
        }
    }

    /// The lifetime for timestamp arithmetic.
    pub fn delta(self) -> TimeDelta {
        self.0
    }

    /// The lifetime for timers and for saying it in words.
    pub fn std(self) -> Duration {
        // Never negative: checked in `from_std`.
        self.0.to_std().unwrap_or_default()
    }
}

impl FromStr for Lifetime {
    type Err = LifetimeError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.std()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_read_in_humantime_syntax() {
        assert_eq!(
            Lifetime::parse("24h").unwrap().delta(),
            TimeDelta::hours(24)
        );
        assert_eq!(
            Lifetime::parse(" 1h 30m ").unwrap().std(),
            Duration::from_secs(5_400)
        );
        assert_eq!(Lifetime::parse("7d").unwrap().to_string(), "7days");
    }

    #[test]
    fn zero_garbage_and_centuries_are_refused() {
        assert_eq!(Lifetime::parse("0s"), Err(LifetimeError::Zero));
        assert!(matches!(
            Lifetime::parse("soon"),
            Err(LifetimeError::Syntax(_))
        ));
        assert_eq!(Lifetime::parse("101years"), Err(LifetimeError::TooLong));
        assert_eq!(
            Lifetime::parse("99999999999999999s"),
            Err(LifetimeError::TooLong)
        );
        assert!(Lifetime::parse("100years").is_ok());
    }
}
