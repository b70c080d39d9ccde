//! admit: a GraphQL identity API. People register with an email address and a password,
//! receive a confirmation link by email, and activate their account from it.

pub mod cli;
pub mod db;
pub mod domain;
pub mod graphql;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod secrets;
pub mod services;
pub mod settings;
pub mod startup;
pub mod state;

pub use http::router;
pub use startup::Application;
