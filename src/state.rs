//! The application state shared by every request.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use url::Url;

use crate::{
    domain::ConfirmationToken,
    mail::{OutboxSignal, Templates},
    secrets::SecretKeys,
    services::PasswordHasher,
    settings::Settings,
};

/// Everything a request may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The database pool.
    pub db: DatabaseConnection,
    /// The settings the service started with.
    pub settings: Arc<Settings>,
    /// Bounded Argon2id hashing.
    pub hasher: PasswordHasher,
    /// Wakes the mail dispatcher after a commit.
    pub outbox: OutboxSignal,
    /// Wakes the resend worker after a request is recorded.
    pub resend_signal: OutboxSignal,
    /// The emails, ready to render.
    pub templates: Templates,
    /// The keys that seal mail at rest.
    pub secrets: SecretKeys,
    /// The page confirmation links point at, without fragment.
    pub confirm_url: Arc<Url>,
}

impl AppState {
    /// The link mailed for `token`. The token rides in the fragment, which browsers never send
    /// to a server, so it stays out of access logs and Referer headers.
    pub fn confirmation_link(&self, token: &ConfirmationToken) -> String {
        let mut url = (*self.confirm_url).clone();
        url.set_fragment(Some(&format!("token={}", token.expose())));
        url.to_string()
    }
}
