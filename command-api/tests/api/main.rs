//! Black-box tests of the command API: served on a port of its own, over HTTP, each test with
//! a fresh database.

mod approvals;
mod auth;
mod documents;
mod erasure;
mod helpers;
mod idempotency;
mod incidents;
mod openapi;
mod purchase_order;
mod tasks;
mod tenants;
mod throttle;
mod two_factor;
mod users;
mod workflows;
