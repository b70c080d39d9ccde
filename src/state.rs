//! The application state shared by every request.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{services::accounts::Accounts, settings::Settings};

/// Everything a request may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The database pool, for readiness.
    pub db: DatabaseConnection,
    /// The settings the service started with, for the HTTP and GraphQL layers.
    pub settings: Arc<Settings>,
    /// The account use cases.
    pub accounts: Accounts,
}
