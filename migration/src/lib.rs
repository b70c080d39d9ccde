//! Database migrations for admit. They run on SQLite and PostgreSQL alike, and are append-only:
//! a released migration is never edited, a change is a new file.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_users;
mod m20261122_000002_create_verification_tokens;
mod m20261122_000003_create_outbox_messages;
mod m20261122_000004_add_dead_at_to_outbox_messages;
mod m20261122_000005_add_superseded_at_to_verification_tokens;
mod m20261122_000006_create_mail_throttles;
mod m20261123_000007_create_client_budgets;
mod m20261123_000008_add_signup_to_verification_tokens;
mod m20261123_000009_create_mail_throttle_clients;
mod m20261123_000010_create_resend_requests;
mod m20261123_000011_add_purge_and_dispatch_indexes;
mod m20261130_000012_create_sessions_and_sign_in_throttles;
mod m20261130_000013_add_purpose_to_resend_requests;
mod m20261130_000014_add_email_to_verification_tokens;
mod m20261130_000015_index_unconfirmed_users;

/// Every migration of admit, in the order they apply.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_users::Migration),
            Box::new(m20261122_000002_create_verification_tokens::Migration),
            Box::new(m20261122_000003_create_outbox_messages::Migration),
            Box::new(m20261122_000004_add_dead_at_to_outbox_messages::Migration),
            Box::new(m20261122_000005_add_superseded_at_to_verification_tokens::Migration),
            Box::new(m20261122_000006_create_mail_throttles::Migration),
            Box::new(m20261123_000007_create_client_budgets::Migration),
            Box::new(m20261123_000008_add_signup_to_verification_tokens::Migration),
            Box::new(m20261123_000009_create_mail_throttle_clients::Migration),
            Box::new(m20261123_000010_create_resend_requests::Migration),
            Box::new(m20261123_000011_add_purge_and_dispatch_indexes::Migration),
            Box::new(m20261130_000012_create_sessions_and_sign_in_throttles::Migration),
            Box::new(m20261130_000013_add_purpose_to_resend_requests::Migration),
            Box::new(m20261130_000014_add_email_to_verification_tokens::Migration),
            Box::new(m20261130_000015_index_unconfirmed_users::Migration),
        ]
    }
}
