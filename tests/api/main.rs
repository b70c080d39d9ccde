//! admit's integration tests: one binary, real databases, real SMTP, real HTTP.

mod binary;
mod confirm;
mod helpers;
mod http;
mod pages;
mod register;
mod schema;
mod smtp;
