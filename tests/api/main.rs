//! admit's integration tests: one binary, real databases, real SMTP, real HTTP.

mod at_rest;
mod binary;
mod budgets;
mod client;
mod confirm;
mod connections;
mod delivery;
mod documents;
mod email_change;
mod helpers;
mod http;
mod lifecycle;
mod metrics;
mod outage;
mod pages;
mod process;
mod purge;
mod recovery;
mod register;
mod schema;
mod sign_in;
mod smtp;
mod takeover;
