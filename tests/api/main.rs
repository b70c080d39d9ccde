//! admit's integration tests: one binary, real databases, real SMTP, real HTTP.

mod binary;
mod client;
mod confirm;
mod delivery;
mod helpers;
mod http;
mod lifecycle;
mod pages;
mod process;
mod purge;
mod register;
mod schema;
mod smtp;
