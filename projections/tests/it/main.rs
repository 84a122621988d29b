//! Projections against the real Postgres: a fresh database per test.

mod audit_trail;
mod broker;
mod comments;
mod email;
mod kafka;
mod notifications;
mod read_models;
mod rebuild;
mod runtime;
#[allow(dead_code)]
mod support;
