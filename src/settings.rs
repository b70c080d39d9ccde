//! Configuration, read once at start-up from flags or the environment into typed settings,
//! grouped by concern. Each command takes only the groups it uses (see `cli.rs`); values are
//! parsed into the types the code works with, and ranges are checked by the parser, so a
//! setting that cannot work stops the process before anything starts.

use std::{net::SocketAddr, num::NonZeroUsize, path::PathBuf, time::Duration};

use chrono::TimeDelta;
use clap::{Args, Parser};
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::domain::{Lifetime, LifetimeError, MAX_ATTEMPT_LENGTH, PasswordPolicy};

/// Everything `admit serve` uses.
#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    /// Where the data lives.
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// The public listener and what it serves.
    #[command(flatten)]
    pub http: HttpSettings,
    /// How mail leaves.
    #[command(flatten)]
    pub mail: MailSettings,
    /// The keys that seal what is kept.
    #[command(flatten)]
    pub keys: KeySettings,
    /// How often one address may be mailed.
    #[command(flatten)]
    pub mail_limits: MailLimitSettings,
    /// Sign-up, confirmation and passwords.
    #[command(flatten)]
    pub accounts: AccountSettings,
    /// Signed-in sessions.
    #[command(flatten)]
    pub sessions: SessionSettings,
    /// How long old data is kept.
    #[command(flatten)]
    pub retention: RetentionSettings,
    /// Watching the running service.
    #[command(flatten)]
    pub operations: OperationsSettings,
}

/// A setting that cannot work together with another, found before anything starts. (Each
/// setting's own range is checked when it is parsed.)
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The password length bounds contradict each other.
    #[error(
        "ADMIT_PASSWORD_MIN_LENGTH must be at most ADMIT_PASSWORD_MAX_LENGTH (got {min} and {max})"
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
}

impl ServeSettings {
    /// Parses `args` (the first is the program name) as `admit serve` would, environment
    /// included: how tests and tools start the service in-process.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            settings: ServeSettings,
        }
        Serve::try_parse_from(args).map(|serve| serve.settings)
    }

    /// Rejects combinations of settings that cannot work.
    pub fn check(&self) -> Result<(), SettingsError> {
        let (min, max) = (
            self.accounts.password_min_length,
            self.accounts.password_max_length,
        );
        if min > max {
            return Err(SettingsError::PasswordBounds { min, max });
        }
        if self.mail.lease <= self.mail.smtp_timeout {
            return Err(SettingsError::MailLease);
        }
        Ok(())
    }
}

/// Where the data lives.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseSettings {
    /// Database URL: `sqlite://FILE?mode=rwc`, `postgres://USER:PASS@HOST/DB`, or
    /// `sqlite::memory:` (gone when admit stops).
    #[arg(long = "database-url", env = "DATABASE_URL", default_value = "sqlite://admit.db?mode=rwc", value_parser = secret, hide_env_values = true)]
    pub url: SecretString,

    /// Longest wait for the database: for a pooled connection, for a new one, and for one
    /// request's work. Past it the request answers `SERVICE_UNAVAILABLE`.
    #[arg(long = "db-timeout", env = "ADMIT_DB_TIMEOUT", default_value = "5s", value_parser = timeout)]
    pub timeout: Duration,

    /// Most connections the pool opens; unset: 10 on PostgreSQL (whose `max_connections` must
    /// leave room for every instance's pool) and 1 on SQLite, where one connection writes at
    /// a time anyway and more would wait on each other's locks.
    #[arg(long = "db-connections", env = "ADMIT_DB_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub connections: Option<u32>,
}

impl DatabaseSettings {
    /// The URL with any password replaced, for logs.
    pub fn for_log(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

/// The public listener and what it serves.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpSettings {
    /// Address and port to listen on.
    #[arg(long, env = "ADMIT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Public base URL of the service; defaults to `http://` and the address it listens on.
    #[arg(long, env = "ADMIT_PUBLIC_URL")]
    pub public_url: Option<Url>,

    /// Page the confirmation link points at (the token is appended as `#token=...`);
    /// defaults to the service's own `/confirm` page.
    #[arg(long, env = "ADMIT_CONFIRM_URL")]
    pub confirm_url: Option<Url>,

    /// Page the password reset link points at (the token is appended as `#token=...`);
    /// defaults to the service's own `/reset` page.
    #[arg(long, env = "ADMIT_RESET_URL")]
    pub reset_url: Option<Url>,

    /// Page the link that confirms a new email address points at (`#token=...` appended);
    /// defaults to the service's own `/email-change` page.
    #[arg(long, env = "ADMIT_EMAIL_CHANGE_URL")]
    pub email_change_url: Option<Url>,

    /// Page the link that undoes an email change points at (`#token=...` appended); defaults
    /// to the service's own `/email-revert` page.
    #[arg(long, env = "ADMIT_EMAIL_REVERT_URL")]
    pub email_revert_url: Option<Url>,

    /// Whether GraphQL introspection is enabled (GraphiQL and code generators need it).
    #[arg(long, env = "ADMIT_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub introspection: bool,

    /// Whether browsers get GraphiQL at `GET /graphql` (and `/playground` redirects there).
    /// Turn it off in production unless the API is meant to be explored.
    #[arg(long, env = "ADMIT_IDE", default_value_t = true, action = clap::ArgAction::Set)]
    pub ide: bool,

    /// Whether the demo pages are served: sign-up at `/`, `/signin` and `/account`.
    #[arg(long, env = "ADMIT_DEMO_PAGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo_pages: bool,

    /// Origins (comma separated, e.g. `https://app.example.com,http://localhost:5173`) whose
    /// pages may call `/graphql` from the browser, with credentials. Others get no CORS headers.
    #[arg(long, env = "ADMIT_CORS_ORIGINS", value_delimiter = ',', value_parser = origin)]
    pub cors_origins: Vec<axum::http::HeaderValue>,

    /// Proxies (comma-separated CIDR blocks, e.g. `10.0.0.0/8,127.0.0.1/32`) whose
    /// `X-Forwarded-For` is believed: the client is then the right-most address not in this
    /// list. Empty: the client is the socket's peer and the header is ignored.
    #[arg(long, env = "ADMIT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Most connections open at once; further ones wait to be accepted. Defaults to what the
    /// process's file descriptor limit leaves after a reserve, and is lowered to that if set
    /// higher.
    #[arg(long, env = "ADMIT_MAX_CONNECTIONS")]
    pub max_connections: Option<NonZeroUsize>,

    /// Most connections one client network (an IPv4 address or an IPv6 /64) may have open at
    /// once; more are closed at once, unread, so that one client cannot hold every connection
    /// the process may open. Trusted proxies are exempt. 0 turns the cap off.
    #[arg(long, env = "ADMIT_MAX_CLIENT_CONNECTIONS", default_value_t = 100)]
    pub max_client_connections: usize,

    /// Longest time a connection may take to send a request's headers, counted from when it
    /// opens or finishes its previous request: also how long an idle keep-alive connection
    /// stays open.
    #[arg(long, env = "ADMIT_HEADER_TIMEOUT", default_value = "10s", value_parser = timeout)]
    pub header_timeout: Duration,

    /// Longest time a client may take to send a request's body.
    #[arg(long, env = "ADMIT_BODY_TIMEOUT", default_value = "10s", value_parser = timeout)]
    pub body_timeout: Duration,
}

/// How mail leaves.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Mail")]
pub struct MailSettings {
    /// SMTP server: `smtp://HOST:PORT`, `smtp://USER:PASS@HOST:587?tls=required` or
    /// `smtps://USER:PASS@HOST`. When unset, mail is written as `.eml` files to the mail directory.
    #[arg(long, env = "ADMIT_SMTP_URL", value_parser = secret, hide_env_values = true)]
    pub smtp_url: Option<SecretString>,

    /// Folder that receives mail as `.eml` files when no SMTP server is set.
    #[arg(long, env = "ADMIT_MAIL_DIR", default_value = "./mail")]
    pub mail_dir: PathBuf,

    /// Product name shown in emails.
    #[arg(long, env = "ADMIT_PRODUCT_NAME", default_value = "admit")]
    pub product_name: String,

    /// Folder with email templates that replace the built-in ones, file by file
    /// (`confirmation.subject.txt`, `confirmation.txt`, `confirmation.html`, and the same for
    /// `signup_again`, `signup_notice`, `password_reset`, `password_changed`, `email_change`,
    /// `email_changed`, `email_in_use` and `account_deleted`).
    #[arg(long, env = "ADMIT_TEMPLATE_DIR")]
    pub template_dir: Option<PathBuf>,

    /// Sender of admit's mail.
    #[arg(
        long,
        env = "ADMIT_MAIL_FROM",
        default_value = "admit <no-reply@admit.localhost>"
    )]
    pub mail_from: Mailbox,

    /// Longest an SMTP conversation may take before it is abandoned and retried later.
    #[arg(long, env = "ADMIT_SMTP_TIMEOUT", default_value = "10s", value_parser = timeout)]
    pub smtp_timeout: Duration,

    /// Delay before the first retry of a failed send; it doubles with each further attempt.
    #[arg(long = "mail-retry-base", env = "ADMIT_MAIL_RETRY_BASE", default_value = "5s", value_parser = timeout)]
    pub retry_base: Duration,

    /// Longest delay between two attempts to send one message.
    #[arg(long = "mail-retry-max", env = "ADMIT_MAIL_RETRY_MAX", default_value = "1h", value_parser = timeout)]
    pub retry_max: Duration,

    /// Attempts to send one message before it is marked dead (see `admit mail retry`).
    #[arg(long = "mail-max-attempts", env = "ADMIT_MAIL_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: u32,

    /// How long a process holds a message it is sending; after a crash, another process (or the
    /// restarted one) sends it once this has passed. Must exceed the SMTP timeout.
    #[arg(long = "mail-lease", env = "ADMIT_MAIL_LEASE", default_value = "60s", value_parser = timeout)]
    pub lease: Duration,

    /// Messages sent at once, each on its own SMTP connection (kept open between messages).
    /// Mind the server's limit on connections per client.
    #[arg(long, env = "ADMIT_SMTP_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub smtp_connections: u16,
}

impl MailSettings {
    /// Where mail goes, for logs.
    pub fn for_log(&self) -> String {
        match &self.smtp_url {
            Some(url) => redact_url(url.expose_secret()),
            None => format!("files in {}", self.mail_dir.display()),
        }
    }
}

/// The keys that seal what is kept.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Keys")]
pub struct KeySettings {
    /// Keys that seal mail in the outbox: `id=BASE64` (32 bytes) entries separated by commas;
    /// the first seals, all open (rotation). Unset: `ADMIT_SECRET_KEY_FILE`, else a key file
    /// generated beside the SQLite database (or in the working folder).
    #[arg(long, env = "ADMIT_SECRET_KEY", value_parser = secret, hide_env_values = true)]
    pub secret_key: Option<SecretString>,

    /// File holding the keys, in the format of ADMIT_SECRET_KEY (one entry a line allowed).
    #[arg(long, env = "ADMIT_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

/// How often one address may be mailed: shared by the service and the purge, which removes
/// limit rows once nothing is left to limit.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Mail limits")]
pub struct MailLimitSettings {
    /// Least time between two account emails (confirmation links, notices) to one address;
    /// `0s` for none.
    #[arg(long, env = "ADMIT_RESEND_COOLDOWN", default_value = "60s", value_parser = cooldown)]
    pub resend_cooldown: TimeDelta,

    /// Most account emails to one address in an hour, counted per client network.
    #[arg(long, env = "ADMIT_RESEND_HOURLY_LIMIT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub resend_hourly_limit: u32,

    /// Most account emails to one address in a day, all networks together (one network may
    /// use half of it).
    #[arg(long, env = "ADMIT_RESEND_DAILY_LIMIT", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub resend_daily_limit: u32,
}

/// Sign-up, confirmation and passwords.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Accounts")]
pub struct AccountSettings {
    /// How long a confirmation link stays valid.
    #[arg(long, env = "ADMIT_TOKEN_TTL", default_value = "24h")]
    pub token_ttl: Lifetime,

    /// How long a password reset link stays valid.
    #[arg(long, env = "ADMIT_RESET_TOKEN_TTL", default_value = "1h")]
    pub reset_token_ttl: Lifetime,

    /// How long the link that undoes an email change (mailed to the old address) stays valid.
    #[arg(long, env = "ADMIT_EMAIL_REVERT_TTL", default_value = "7d")]
    pub email_revert_ttl: Lifetime,

    /// Fewest characters (Unicode code points) a password may have.
    #[arg(long, env = "ADMIT_PASSWORD_MIN_LENGTH", default_value_t = 12, value_parser = password_length)]
    pub password_min_length: usize,

    /// Most characters (Unicode code points) a password may have.
    #[arg(long, env = "ADMIT_PASSWORD_MAX_LENGTH", default_value_t = 128, value_parser = password_length)]
    pub password_max_length: usize,

    /// Password hashes computed at once; defaults to the number of CPUs.
    #[arg(long, env = "ADMIT_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<NonZeroUsize>,

    /// Sign-ups waiting for a hashing thread before further ones are answered
    /// `SERVICE_UNAVAILABLE` at once; defaults to 256 per hashing thread (about 5 s of
    /// hashing at 20 ms a hash). A waiting sign-up costs nothing; a turned-away one that is
    /// sent again at once costs a request's work each time. Whatever the queue's size, one
    /// that waited longer than four fifths of `ADMIT_DB_TIMEOUT` is answered
    /// `SERVICE_UNAVAILABLE` when its turn comes, unhashed.
    #[arg(long, env = "ADMIT_HASH_QUEUE")]
    pub hash_queue: Option<NonZeroUsize>,

    /// Costly requests (every one that hashes a password, mails or uses a link) one client
    /// network (an IPv4 address or an IPv6 /64) may make per minute; 0 turns the budget off.
    #[arg(long, env = "ADMIT_IP_RATE_LIMIT", default_value_t = 120)]
    pub ip_rate_limit: u32,
}

impl AccountSettings {
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
            .map_or(256 * self.hash_concurrency(), NonZeroUsize::get)
    }
}

/// Signed-in sessions: shared by the service and the purge, which removes ended ones.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sessions")]
pub struct SessionSettings {
    /// A session ends this long after sign-in, however active (also the cookie's `Max-Age`).
    #[arg(long, env = "ADMIT_SESSION_TTL", default_value = "30d")]
    pub session_ttl: Lifetime,

    /// A session ends when no request used it for this long.
    #[arg(long, env = "ADMIT_SESSION_IDLE_TIMEOUT", default_value = "7d")]
    pub session_idle_timeout: Lifetime,
}

/// How long old data is kept.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Retention")]
pub struct RetentionSettings {
    /// Accounts not confirmed this long after sign-up are removed; tokens are removed this long
    /// after they expire.
    #[arg(long, env = "ADMIT_UNCONFIRMED_TTL", default_value = "7d")]
    pub unconfirmed_ttl: Lifetime,

    /// How long sent and dead mail stays in the outbox before the purge removes it.
    #[arg(long, env = "ADMIT_MAIL_RETENTION", default_value = "7d")]
    pub mail_retention: Lifetime,

    /// How often `admit serve` purges what is past its retention.
    #[arg(long, env = "ADMIT_PURGE_INTERVAL", default_value = "1h")]
    pub purge_interval: Lifetime,
}

/// Watching the running service.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Operations")]
pub struct OperationsSettings {
    /// Address for `/metrics` (Prometheus text format), e.g. `127.0.0.1:9090`; unset: no
    /// metrics listener. Keep it off the public network.
    #[arg(long, env = "ADMIT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw.to_owned()))
}

/// A deadline: longer than zero (a zero deadline would refuse everything) and at most a day.
fn timeout(raw: &str) -> Result<Duration, String> {
    let lifetime = Lifetime::parse(raw).map_err(|err| err.to_string())?;
    let duration = lifetime.std();
    if duration > Duration::from_secs(86_400) {
        return Err("must be at most a day".to_owned());
    }
    Ok(duration)
}

/// A wait that may be zero (none), and otherwise a [`Lifetime`].
fn cooldown(raw: &str) -> Result<TimeDelta, String> {
    match Lifetime::parse(raw) {
        Ok(lifetime) => Ok(lifetime.delta()),
        Err(LifetimeError::Zero) => Ok(TimeDelta::zero()),
        Err(err) => Err(err.to_string()),
    }
}

/// A password length bound, in code points: at least 1, and small enough that hashing and
/// the strength check stay cheap.
fn password_length(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(length @ 1..=MAX_ATTEMPT_LENGTH) => Ok(length),
        Ok(_) => Err(format!("must be from 1 to {MAX_ATTEMPT_LENGTH}")),
        Err(err) => Err(err.to_string()),
    }
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
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeSettings, clap::Error> {
        ServeSettings::try_parse_from(std::iter::once("admit").chain(args.iter().copied()))
    }

    #[test]
    fn passwords_in_urls_are_redacted_for_logs() {
        let shown = redact_url("postgres://admit:hunter2hunter2@db.internal/admit");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("db.internal"));
    }

    #[test]
    fn debug_output_of_settings_never_shows_secrets() {
        let settings = serve(&[
            "--smtp-url",
            "smtps://me:s3cr3t-pass@mail.example",
            "--database-url",
            "postgres://admit:db-s3cret@db/admit",
            "--secret-key",
            "k1=c2VjcmV0LWtleS1tYXRlcmlhbA",
        ])
        .unwrap();
        let shown = format!("{settings:?}");
        for secret in ["s3cr3t-pass", "db-s3cret", "c2VjcmV0"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn out_of_range_values_are_refused_by_the_parser() {
        for args in [
            &["--token-ttl", "0s"][..],
            &["--token-ttl", "200years"],
            &["--db-timeout", "0s"],
            &["--header-timeout", "2days"],
            &["--password-min-length", "0"],
            &["--password-max-length", "100000"],
            &["--mail-max-attempts", "0"],
            &["--resend-hourly-limit", "0"],
            &["--resend-daily-limit", "0"],
            &["--purge-interval", "0s"],
            &["--unconfirmed-ttl", "forever"],
            &["--smtp-connections", "0"],
            &["--smtp-connections", "65"],
            &["--db-connections", "0"],
            &["--db-connections", "1001"],
        ] {
            let err = serve(args).expect_err("out of range");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
        }
    }

    #[test]
    fn contradictory_settings_are_refused_before_start() {
        let bounds = serve(&["--password-min-length", "20", "--password-max-length", "16"]);
        assert!(matches!(
            bounds.unwrap().check(),
            Err(SettingsError::PasswordBounds { min: 20, max: 16 })
        ));
        let lease = serve(&["--mail-lease", "5s", "--smtp-timeout", "10s"]);
        assert!(matches!(
            lease.unwrap().check(),
            Err(SettingsError::MailLease)
        ));
        assert!(serve(&[]).unwrap().check().is_ok());
    }

    #[test]
    fn a_cooldown_of_zero_means_none() {
        let settings = serve(&["--resend-cooldown", "0s"]).unwrap();
        assert_eq!(settings.mail_limits.resend_cooldown, TimeDelta::zero());
        assert!(serve(&["--resend-cooldown", "1000years"]).is_err());
    }

    #[test]
    fn durations_arrive_as_the_types_the_code_uses() {
        let settings = serve(&["--token-ttl", "2h", "--smtp-timeout", "1500ms"]).unwrap();
        assert_eq!(
            settings.accounts.token_ttl.delta(),
            chrono::TimeDelta::hours(2)
        );
        assert_eq!(settings.mail.smtp_timeout, Duration::from_millis(1500));
    }
}
