//! The application state shared by every request.

use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;

use crate::{
    services::{accounts::Accounts, sessions::Sessions},
    settings::HttpSettings,
};

/// Everything a request may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The database pool, for readiness.
    pub db: DatabaseConnection,
    /// The account use cases.
    pub accounts: Accounts,
    /// Sign-in and sessions.
    pub sessions: Sessions,
    /// The origin of the public URL (`https://id.example.com`): pages of this origin may use
    /// the session cookie.
    pub public_origin: String,
    /// Whether the public URL is https: the session cookie is then `Secure` and `__Host-`.
    pub secure_cookies: bool,
    /// Longest a request waits for the database (`ADMIT_DB_TIMEOUT`).
    pub db_timeout: Duration,
    /// What the HTTP layer serves and how.
    pub http: Arc<HttpSettings>,
}
