//! Configuration, read once at start-up from flags or the environment into typed settings.

use std::{net::SocketAddr, num::NonZeroUsize, path::PathBuf, time::Duration};

use clap::Args;
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::domain::PasswordPolicy;

/// Every setting of the service.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Database URL: `sqlite://FILE?mode=rwc` or `postgres://USER:PASS@HOST/DB`.
    #[arg(long, env = "DATABASE_URL", help_heading = "Database", default_value = "sqlite://admit.db?mode=rwc", value_parser = secret, hide_env_values = true, global = true)]
    pub database_url: SecretString,

    /// Address and port to listen on.
    #[arg(
        long,
        env = "ADMIT_LISTEN",
        help_heading = "HTTP",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Public base URL of the service; defaults to `http://` and the address it listens on.
    #[arg(long, env = "ADMIT_PUBLIC_URL", help_heading = "HTTP", global = true)]
    pub public_url: Option<Url>,

    /// Page the confirmation link points at (the token is appended as `#token=...`);
    /// defaults to the service's own `/confirm` page.
    #[arg(long, env = "ADMIT_CONFIRM_URL", help_heading = "HTTP", global = true)]
    pub confirm_url: Option<Url>,

    /// SMTP server: `smtp://HOST:PORT`, `smtp://USER:PASS@HOST:587?tls=required` or
    /// `smtps://USER:PASS@HOST`. When unset, mail is written as `.eml` files to the mail directory.
    #[arg(long, env = "ADMIT_SMTP_URL", help_heading = "Mail", value_parser = secret, hide_env_values = true, global = true)]
    pub smtp_url: Option<SecretString>,

    /// Folder that receives mail as `.eml` files when no SMTP server is set.
    #[arg(
        long,
        env = "ADMIT_MAIL_DIR",
        help_heading = "Mail",
        default_value = "./mail",
        global = true
    )]
    pub mail_dir: PathBuf,

    /// Product name shown in emails.
    #[arg(
        long,
        env = "ADMIT_PRODUCT_NAME",
        help_heading = "Mail",
        default_value = "admit",
        global = true
    )]
    pub product_name: String,

    /// Folder with email templates that replace the built-in ones, file by file
    /// (`confirmation.subject.txt`, `confirmation.txt`, `confirmation.html`, and the same for
    /// `signup_notice`).
    #[arg(long, env = "ADMIT_TEMPLATE_DIR", help_heading = "Mail", global = true)]
    pub template_dir: Option<PathBuf>,

    /// Sender of admit's mail.
    #[arg(
        long,
        env = "ADMIT_MAIL_FROM",
        help_heading = "Mail",
        default_value = "admit <no-reply@admit.localhost>",
        global = true
    )]
    pub mail_from: Mailbox,

    /// Seconds an SMTP conversation may take before it is abandoned and retried later.
    #[arg(long, env = "ADMIT_SMTP_TIMEOUT", help_heading = "Mail", default_value = "10s", value_parser = duration, global = true)]
    pub smtp_timeout: Duration,

    /// Delay before the first retry of a failed send; it doubles with each further attempt.
    #[arg(long, env = "ADMIT_MAIL_RETRY_BASE", help_heading = "Mail", default_value = "5s", value_parser = duration, global = true)]
    pub mail_retry_base: Duration,

    /// Longest delay between two attempts to send one message.
    #[arg(long, env = "ADMIT_MAIL_RETRY_MAX", help_heading = "Mail", default_value = "1h", value_parser = duration, global = true)]
    pub mail_retry_max: Duration,

    /// Attempts to send one message before it is marked dead (see `admit mail retry`).
    #[arg(
        long,
        env = "ADMIT_MAIL_MAX_ATTEMPTS",
        help_heading = "Mail",
        default_value_t = 12,
        global = true
    )]
    pub mail_max_attempts: u32,

    /// How long a process holds a message it is sending; after a crash, another process (or the
    /// restarted one) sends it once this has passed. Must exceed the SMTP timeout.
    #[arg(long, env = "ADMIT_MAIL_LEASE", help_heading = "Mail", default_value = "60s", value_parser = duration, global = true)]
    pub mail_lease: Duration,

    /// How long a confirmation link stays valid.
    #[arg(long, env = "ADMIT_TOKEN_TTL", help_heading = "Accounts", default_value = "24h", value_parser = duration, global = true)]
    pub token_ttl: Duration,

    /// Least time between two account emails (confirmation links, notices) to one address.
    #[arg(long, env = "ADMIT_RESEND_COOLDOWN", help_heading = "Accounts", default_value = "60s", value_parser = duration, global = true)]
    pub resend_cooldown: Duration,

    /// Most account emails to one address in an hour, counted per client network.
    #[arg(
        long,
        env = "ADMIT_RESEND_HOURLY_LIMIT",
        help_heading = "Accounts",
        default_value_t = 5,
        global = true
    )]
    pub resend_hourly_limit: u32,

    /// Most account emails to one address in a day, all networks together (one network may
    /// use half of it).
    #[arg(
        long,
        env = "ADMIT_RESEND_DAILY_LIMIT",
        help_heading = "Accounts",
        default_value_t = 20,
        global = true
    )]
    pub resend_daily_limit: u32,

    /// Accounts not confirmed this long after sign-up are removed; tokens are removed this long
    /// after they expire.
    #[arg(long, env = "ADMIT_UNCONFIRMED_TTL", help_heading = "Accounts", default_value = "7d", value_parser = duration, global = true)]
    pub unconfirmed_ttl: Duration,

    /// How often `admit serve` purges never-confirmed accounts and old tokens.
    #[arg(long, env = "ADMIT_PURGE_INTERVAL", help_heading = "Accounts", default_value = "1h", value_parser = duration, global = true)]
    pub purge_interval: Duration,

    /// Fewest characters (Unicode code points) a password may have.
    #[arg(
        long,
        env = "ADMIT_PASSWORD_MIN_LENGTH",
        help_heading = "Accounts",
        default_value_t = 12,
        global = true
    )]
    pub password_min_length: usize,

    /// Most characters (Unicode code points) a password may have.
    #[arg(
        long,
        env = "ADMIT_PASSWORD_MAX_LENGTH",
        help_heading = "Accounts",
        default_value_t = 128,
        global = true
    )]
    pub password_max_length: usize,

    /// Whether GraphQL introspection is enabled (GraphiQL and code generators need it).
    #[arg(long, env = "ADMIT_INTROSPECTION", help_heading = "HTTP", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub introspection: bool,

    /// Whether browsers get GraphiQL at `GET /graphql` (and `/playground` redirects there).
    /// Turn it off in production unless the API is meant to be explored.
    #[arg(long, env = "ADMIT_IDE", help_heading = "HTTP", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub ide: bool,

    /// Whether `GET /` serves the demo sign-up page.
    #[arg(long, env = "ADMIT_DEMO_PAGES", help_heading = "HTTP", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub demo_pages: bool,

    /// Origins (comma separated, e.g. `https://app.example.com,http://localhost:5173`) whose
    /// pages may call `/graphql` from the browser, with credentials. Others get no CORS headers.
    #[arg(long, env = "ADMIT_CORS_ORIGINS", help_heading = "HTTP", value_delimiter = ',', value_parser = origin, global = true)]
    pub cors_origins: Vec<axum::http::HeaderValue>,

    /// Password hashes computed at once; defaults to the number of CPUs.
    #[arg(
        long,
        env = "ADMIT_HASH_CONCURRENCY",
        help_heading = "Accounts",
        global = true
    )]
    pub hash_concurrency: Option<NonZeroUsize>,

    /// Sign-ups waiting for a hashing thread before further ones are answered
    /// `SERVICE_UNAVAILABLE` at once; defaults to 64 per hashing thread.
    #[arg(
        long,
        env = "ADMIT_HASH_QUEUE",
        help_heading = "Accounts",
        global = true
    )]
    pub hash_queue: Option<NonZeroUsize>,

    /// Costly requests (register, resendConfirmation, confirmAccount) one client network (an
    /// IPv4 address or an IPv6 /64) may make per minute; 0 turns the budget off.
    #[arg(
        long,
        env = "ADMIT_IP_RATE_LIMIT",
        help_heading = "Accounts",
        default_value_t = 120,
        global = true
    )]
    pub ip_rate_limit: u32,

    /// Proxies (comma-separated CIDR blocks, e.g. `10.0.0.0/8,127.0.0.1/32`) whose
    /// `X-Forwarded-For` is believed: the client is then the right-most address not in this
    /// list. Empty: the client is the socket's peer and the header is ignored.
    #[arg(
        long,
        env = "ADMIT_TRUSTED_PROXIES",
        help_heading = "HTTP",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Most connections open at once; further ones wait to be accepted. Defaults to what the
    /// process's file descriptor limit leaves after a reserve, and is lowered to that if set
    /// higher.
    #[arg(
        long,
        env = "ADMIT_MAX_CONNECTIONS",
        help_heading = "HTTP",
        global = true
    )]
    pub max_connections: Option<NonZeroUsize>,

    /// Longest time a connection may take to send a request's headers, counted from when it
    /// opens or finishes its previous request: also how long an idle keep-alive connection
    /// stays open.
    #[arg(long, env = "ADMIT_HEADER_TIMEOUT", help_heading = "HTTP", default_value = "10s", value_parser = duration, global = true)]
    pub header_timeout: Duration,

    /// Longest time a client may take to send a request's body.
    #[arg(long, env = "ADMIT_BODY_TIMEOUT", help_heading = "HTTP", default_value = "10s", value_parser = duration, global = true)]
    pub body_timeout: Duration,

    /// Keys that seal mail in the outbox: `id=BASE64` (32 bytes) entries separated by commas;
    /// the first seals, all open (rotation). Unset: `ADMIT_SECRET_KEY_FILE`, else a key file
    /// generated beside the SQLite database (or in the working folder).
    #[arg(long, env = "ADMIT_SECRET_KEY", help_heading = "Mail", value_parser = secret, hide_env_values = true, global = true)]
    pub secret_key: Option<SecretString>,

    /// File holding the keys, in the format of ADMIT_SECRET_KEY (one entry a line allowed).
    #[arg(
        long,
        env = "ADMIT_SECRET_KEY_FILE",
        help_heading = "Mail",
        global = true
    )]
    pub secret_key_file: Option<PathBuf>,

    /// How long sent and dead mail stays in the outbox before the purge removes it.
    #[arg(long, env = "ADMIT_MAIL_RETENTION", help_heading = "Mail", default_value = "7d", value_parser = duration, global = true)]
    pub mail_retention: Duration,

    /// Address for `/metrics` (Prometheus text format), e.g. `127.0.0.1:9090`; unset: no
    /// metrics listener. Keep it off the public network.
    #[arg(
        long,
        env = "ADMIT_METRICS_LISTEN",
        help_heading = "Operations",
        global = true
    )]
    pub metrics_listen: Option<SocketAddr>,

    /// Log lines as `text` (for people) or `json` (one object a line, for log shippers).
    #[arg(long, env = "ADMIT_LOG_FORMAT", help_heading = "Operations", default_value = "text", value_parser = ["text", "json"], global = true)]
    pub log_format: String,

    /// Longest wait for the database: for a pooled connection, for a new one, and for one
    /// request's work. Past it the request answers `SERVICE_UNAVAILABLE`.
    #[arg(long, env = "ADMIT_DB_TIMEOUT", help_heading = "Database", default_value = "5s", value_parser = duration, global = true)]
    pub db_timeout: Duration,
}

/// A setting that cannot work, found before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The password length bounds contradict each other.
    #[error(
        "ADMIT_PASSWORD_MIN_LENGTH must be at least 1 and at most ADMIT_PASSWORD_MAX_LENGTH (got {min} and {max})"
    )]
    PasswordBounds {
        /// The minimum given.
        min: usize,
        /// The maximum given.
        max: usize,
    },
    /// A claim on a message could run out while it is still being sent.
    #[error("ADMIT_MAIL_LEASE must be longer than ADMIT_SMTP_TIMEOUT")]
    MailLease,
    /// No attempt at all would be made.
    #[error("ADMIT_MAIL_MAX_ATTEMPTS must be at least 1")]
    MailAttempts,
    /// No account email could ever be sent.
    #[error("ADMIT_RESEND_HOURLY_LIMIT and ADMIT_RESEND_DAILY_LIMIT must be at least 1")]
    HourlyLimit,
    /// The purge would spin.
    #[error("ADMIT_PURGE_INTERVAL must be longer than zero")]
    PurgeInterval,
    /// The token lifetime is zero or beyond what timestamps can hold.
    #[error("ADMIT_TOKEN_TTL must be longer than zero and shorter than a million years")]
    TokenTtl,
    /// A timeout of zero would refuse everything.
    #[error(
        "ADMIT_HEADER_TIMEOUT, ADMIT_BODY_TIMEOUT and ADMIT_DB_TIMEOUT must be longer than zero"
    )]
    Timeout,
}

impl Settings {
    /// Rejects combinations of settings that cannot work.
    pub fn check(&self) -> Result<(), SettingsError> {
        if self.password_min_length == 0 || self.password_min_length > self.password_max_length {
            return Err(SettingsError::PasswordBounds {
                min: self.password_min_length,
                max: self.password_max_length,
            });
        }
        if self.mail_lease <= self.smtp_timeout {
            return Err(SettingsError::MailLease);
        }
        if self.mail_max_attempts == 0 {
            return Err(SettingsError::MailAttempts);
        }
        if self.resend_hourly_limit == 0 || self.resend_daily_limit == 0 {
            return Err(SettingsError::HourlyLimit);
        }
        if self.purge_interval.is_zero() {
            return Err(SettingsError::PurgeInterval);
        }
        if self.token_ttl.is_zero() || chrono::TimeDelta::from_std(self.token_ttl).is_err() {
            return Err(SettingsError::TokenTtl);
        }
        if [self.header_timeout, self.body_timeout, self.db_timeout]
            .iter()
            .any(Duration::is_zero)
        {
            return Err(SettingsError::Timeout);
        }
        Ok(())
    }

    /// The password rule in force.
    pub fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy {
            min_length: self.password_min_length,
            max_length: self.password_max_length,
        }
    }

    /// Concurrent password hashes allowed.
    pub fn hash_concurrency(&self) -> usize {
        self.hash_concurrency
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }

    /// Sign-ups that may wait for a hashing thread.
    pub fn hash_queue(&self) -> usize {
        self.hash_queue
            .map_or(64 * self.hash_concurrency(), NonZeroUsize::get)
    }

    /// The database URL with any password replaced, for logs.
    pub fn database_for_log(&self) -> String {
        redact_url(self.database_url.expose_secret())
    }

    /// Where mail goes, for logs.
    pub fn mail_for_log(&self) -> String {
        match &self.smtp_url {
            Some(url) => redact_url(url.expose_secret()),
            None => format!("files in {}", self.mail_dir.display()),
        }
    }
}

fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw.to_owned()))
}

/// An origin as browsers send it: scheme, host and port, nothing else.
fn origin(raw: &str) -> Result<axum::http::HeaderValue, String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url = Url::parse(trimmed).map_err(|err| format!("{trimmed:?} is not an origin: {err}"))?;
    let origin = url.origin().ascii_serialization();
    if origin != trimmed {
        return Err(format!(
            "{trimmed:?} is not an origin; did you mean {origin:?}?"
        ));
    }
    axum::http::HeaderValue::from_str(&origin).map_err(|err| err.to_string())
}

fn duration(raw: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(raw)
}

/// Replaces the password of a URL with `***` so it can be logged; unparsable URLs are hidden
/// whole, since they may still hold a secret.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have credentials, which this one has.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "[unparsable URL]".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted_for_logs() {
        let shown = redact_url("postgres://admit:hunter2hunter2@db.internal/admit");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("db.internal"));
    }

    #[test]
    fn debug_output_of_settings_never_shows_secrets() {
        let mut settings = crate::cli::Cli::try_parse_from(["admit"]).unwrap().settings;
        settings.smtp_url = Some(SecretString::from("smtps://me:s3cr3t-pass@mail.example"));
        assert!(!format!("{settings:?}").contains("s3cr3t-pass"));
    }
}
