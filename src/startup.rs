//! Building and running the service: what `admit serve` does, and what tests start on port 0.

use std::{future::Future, net::SocketAddr, num::NonZeroUsize, sync::Arc};

use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret as _;
use tokio::{net::TcpListener, sync::watch};
use url::Url;

use crate::{
    db,
    http::{ConnectionPolicy, Readiness},
    mail::{DeliveryPolicy, Dispatcher, OutboxSignal, Templates, Transport},
    secrets::{SecretKeys, default_key_file},
    services::{
        PasswordHasher,
        accounts::{AccountPolicy, Accounts},
        purge::{self, Retention},
        sessions::{SessionPolicy, Sessions},
        throttle::ThrottlePolicy,
    },
    settings::{
        DatabaseSettings, MailLimitSettings, RetentionSettings, ServeSettings, SessionSettings,
    },
    state::AppState,
};

/// A service whose database is migrated and whose socket is bound, ready to [`run`](Self::run).
pub struct Application {
    listener: TcpListener,
    public_url: Url,
    state: AppState,
    dispatcher: Dispatcher,
    connections: ConnectionPolicy,
    metrics: Option<TcpListener>,
    purge: Purge,
    logged: Logged,
}

/// What the periodic purge keeps and how often it runs.
struct Purge {
    retention: Retention,
    interval: std::time::Duration,
}

/// Where the data and the mail go, with secrets hidden, for the start-up log line.
struct Logged {
    database: String,
    mail: String,
}

impl Application {
    /// Connects, migrates, binds the HTTP listener (port 0 picks a free port) and wires
    /// everything together.
    pub async fn build(settings: ServeSettings) -> anyhow::Result<Self> {
        settings.check()?;
        let ServeSettings {
            database: database_settings,
            http,
            mail,
            keys,
            mail_limits,
            accounts: account_settings,
            sessions: session_settings,
            retention,
            operations,
        } = settings;
        let database = open_database(&database_settings).await?;
        let listener = TcpListener::bind(http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", http.listen))?;
        let local_addr = listener.local_addr()?;
        let public_url = match &http.public_url {
            Some(url) => url.clone(),
            None => Url::parse(&format!("http://{local_addr}/"))?,
        };
        let page = |configured: &Option<Url>, own: &str| match configured {
            Some(url) => Ok(url.clone()),
            None => public_url.join(own),
        };
        let confirm_url = page(&http.confirm_url, "confirm")?;
        let reset_url = page(&http.reset_url, "reset")?;
        let email_change_url = page(&http.email_change_url, "email-change")?;
        let email_revert_url = page(&http.email_revert_url, "email-revert")?;
        let transport = Transport::new(
            mail.smtp_url.as_ref(),
            mail.mail_dir.clone(),
            mail.smtp_timeout,
            usize::from(mail.smtp_connections),
        )?;
        let templates = Templates::load(&mail.product_name, mail.template_dir.as_deref())?;
        let secrets = SecretKeys::load(
            keys.secret_key.as_ref(),
            keys.secret_key_file.as_deref(),
            &default_key_file(db::sqlite_file(database_settings.url.expose_secret()).as_deref()),
        )?;
        let outbox = OutboxSignal::default();
        let dispatcher = Dispatcher::new(
            database.clone(),
            secrets.clone(),
            transport,
            mail.mail_from.clone(),
            outbox.clone(),
            DeliveryPolicy {
                base: mail.retry_base,
                max: mail.retry_max,
                max_attempts: mail.max_attempts,
                lease: mail.lease,
                in_flight: usize::from(mail.smtp_connections),
            },
        );
        let metrics = crate::metrics::bind(operations.metrics_listen)
            .await
            .context("cannot listen for metrics")?;
        if metrics.is_some() {
            crate::metrics::recorder();
        }
        let (max_connections, descriptors) = crate::http::connection_cap(http.max_connections);
        tracing::debug!(max_connections, descriptors, "connection cap");
        if http.max_client_connections >= max_connections {
            tracing::warn!(
                max_client_connections = http.max_client_connections,
                max_connections,
                "ADMIT_MAX_CLIENT_CONNECTIONS is not below the connection cap: one client network can hold every connection"
            );
        }
        let connections = ConnectionPolicy {
            max_connections,
            max_per_client: NonZeroUsize::new(http.max_client_connections),
            trusted_proxies: http.trusted_proxies.clone().into(),
            header_timeout: http.header_timeout,
        };
        // Four fifths of the request deadline for the wait: the hash itself, and the
        // statements before and after it, need the rest. Less would turn away more of a
        // burst that could have been served in time; more would let hashes start that finish
        // after their request has timed out.
        let hasher = PasswordHasher::new(
            account_settings.hash_concurrency(),
            account_settings.hash_queue(),
            database_settings.timeout * 4 / 5,
        )
        .context("cannot start the password hashing threads")?;
        let sessions = Sessions::new(
            database.clone(),
            hasher.clone(),
            SessionPolicy {
                ttl: session_settings.session_ttl,
                idle_timeout: session_settings.session_idle_timeout,
                ip_rate_limit: account_settings.ip_rate_limit,
            },
        );
        let accounts = Accounts::new(
            database.clone(),
            hasher,
            templates,
            secrets,
            outbox,
            AccountPolicy {
                ip_rate_limit: account_settings.ip_rate_limit,
                mail_limits: throttle_policy(&mail_limits),
                token_ttl: account_settings.token_ttl,
                password: account_settings.password_policy(),
                confirm_url,
                reset_ttl: account_settings.reset_token_ttl,
                reset_url,
                email_change_url,
                email_revert_url,
                email_revert_ttl: account_settings.email_revert_ttl,
            },
        );
        let purge = Purge {
            retention: purge_retention(&retention, &mail_limits, &session_settings),
            interval: retention.purge_interval.std(),
        };
        let logged = Logged {
            database: database_settings.for_log(),
            mail: mail.for_log(),
        };
        let state = AppState {
            db: database,
            accounts,
            sessions,
            public_origin: public_url.origin().ascii_serialization(),
            secure_cookies: public_url.scheme() == "https",
            db_timeout: database_settings.timeout,
            http: Arc::new(http),
        };
        Ok(Self {
            listener,
            public_url,
            state,
            dispatcher,
            connections,
            metrics,
            purge,
            logged,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address `/metrics` is served on, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The application state, for inspection by tests and tools.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves: then stops accepting, lets requests in flight finish,
    /// lets the dispatcher finish the message it is sending, and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let dispatcher = tokio::spawn(self.dispatcher.run(stop_rx.clone()));
        let metrics = self.metrics.map(|listener| {
            tokio::spawn(crate::metrics::serve(
                listener,
                crate::metrics::recorder(),
                self.state.db.clone(),
                stop_rx.clone(),
            ))
        });
        let resender = tokio::spawn(crate::services::accounts::run_resend_worker(
            self.state.accounts.clone(),
            stop_rx.clone(),
        ));
        let purger = tokio::spawn(purge::run_periodically(
            self.state.db.clone(),
            self.purge.retention,
            self.purge.interval,
            stop_rx,
        ));
        tracing::info!(
            listen = %self.listener.local_addr()?,
            database = %self.logged.database,
            mail = %self.logged.mail,
            "admit is serving: open {}",
            self.public_url
        );
        let readiness = Readiness::default();
        let app = crate::http::router(self.state.clone(), readiness.clone());
        let drain = async move {
            shutdown.await;
            readiness.drain();
        };
        crate::http::serve(self.listener, app, self.connections, drain).await;
        let _ = stop_tx.send(true);
        dispatcher.await.context("the mail dispatcher panicked")?;
        purger.await.context("the purge job panicked")?;
        resender.await.context("the resend worker panicked")?;
        if let Some(metrics) = metrics {
            metrics.await.context("the metrics listener panicked")?;
        }
        Ok(())
    }
}

/// Connects to the database and applies pending migrations; errors name the database with
/// its password hidden.
pub async fn open_database(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    db::open(&settings.url, settings.timeout, settings.connections)
        .await
        .with_context(|| format!("cannot open the database {}", settings.for_log()))
}

/// How long never-confirmed accounts, expired tokens, idle limit rows and old mail are kept.
pub fn purge_retention(
    retention: &RetentionSettings,
    limits: &MailLimitSettings,
    sessions: &SessionSettings,
) -> Retention {
    Retention {
        unconfirmed: retention.unconfirmed_ttl.delta(),
        cooldown: limits.resend_cooldown,
        mail: retention.mail_retention.delta(),
        session_idle: sessions.session_idle_timeout.delta(),
    }
}

/// How often one address may be mailed.
fn throttle_policy(limits: &MailLimitSettings) -> ThrottlePolicy {
    ThrottlePolicy {
        cooldown: limits.resend_cooldown,
        hourly_limit: limits.resend_hourly_limit,
        daily_limit: limits.resend_daily_limit,
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
