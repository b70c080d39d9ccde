//! Building and running the service: what `admit serve` does, and what tests start on port 0.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
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
        accounts::{AccountSettings, Accounts},
        purge::{self, Retention},
    },
    settings::Settings,
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
}

impl Application {
    /// Connects, migrates, binds `settings.listen` (port 0 picks a free port) and wires
    /// everything together.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.check()?;
        let database = db::open(&settings).await?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let local_addr = listener.local_addr()?;
        let public_url = match &settings.public_url {
            Some(url) => url.clone(),
            None => Url::parse(&format!("http://{local_addr}/"))?,
        };
        let confirm_url = match &settings.confirm_url {
            Some(url) => url.clone(),
            None => public_url.join("confirm")?,
        };
        let transport = Transport::new(
            settings.smtp_url.as_ref(),
            settings.mail_dir.clone(),
            settings.smtp_timeout,
        )?;
        let templates = Templates::load(&settings.product_name, settings.template_dir.as_deref())?;
        let secrets = SecretKeys::load(
            settings.secret_key.as_ref(),
            settings.secret_key_file.as_deref(),
            &default_key_file(db::sqlite_file(settings.database_url.expose_secret()).as_deref()),
        )?;
        let outbox = OutboxSignal::default();
        let dispatcher = Dispatcher::new(
            database.clone(),
            secrets.clone(),
            transport,
            settings.mail_from.clone(),
            outbox.clone(),
            DeliveryPolicy {
                base: settings.mail_retry_base,
                max: settings.mail_retry_max,
                max_attempts: settings.mail_max_attempts,
                lease: settings.mail_lease,
            },
        );
        let metrics = crate::metrics::bind(settings.metrics_listen)
            .await
            .context("cannot listen for metrics")?;
        if metrics.is_some() {
            crate::metrics::recorder();
        }
        let (max_connections, descriptors) = crate::http::connection_cap(settings.max_connections);
        tracing::debug!(max_connections, descriptors, "connection cap");
        let connections = ConnectionPolicy {
            max_connections,
            header_timeout: settings.header_timeout,
        };
        let hasher = PasswordHasher::new(settings.hash_concurrency(), settings.hash_queue())
            .context("cannot start the password hashing threads")?;
        let accounts = Accounts::new(
            database.clone(),
            hasher,
            templates,
            secrets,
            outbox,
            AccountSettings {
                ip_rate_limit: settings.ip_rate_limit,
                resend_cooldown: settings.resend_cooldown,
                resend_hourly_limit: settings.resend_hourly_limit,
                resend_daily_limit: settings.resend_daily_limit,
                token_ttl: settings.token_ttl,
                confirm_url,
            },
        );
        let state = AppState {
            db: database,
            accounts,
            settings: Arc::new(settings),
        };
        Ok(Self {
            listener,
            public_url,
            state,
            dispatcher,
            connections,
            metrics,
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
            retention(&self.state.settings),
            self.state.settings.purge_interval,
            stop_rx,
        ));
        let settings = &self.state.settings;
        tracing::info!(
            listen = %self.listener.local_addr()?,
            database = %settings.database_for_log(),
            mail = %settings.mail_for_log(),
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

/// How long never-confirmed accounts, expired tokens and old mail are kept, in the form the
/// purge counts in.
pub fn retention(settings: &Settings) -> Retention {
    let delta = |duration| chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX);
    Retention {
        unconfirmed: delta(settings.unconfirmed_ttl),
        cooldown: delta(settings.resend_cooldown),
        mail: delta(settings.mail_retention),
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
