//! The application state shared by every request.

use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;

use crate::{services::accounts::Accounts, settings::HttpSettings};

/// Everything a request may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The database pool, for readiness.
    pub db: DatabaseConnection,
    /// The account use cases.
    pub accounts: Accounts,
    /// Longest a request waits for the database (`ADMIT_DB_TIMEOUT`).
    pub db_timeout: Duration,
    /// What the HTTP layer serves and how.
    pub http: Arc<HttpSettings>,
}
