//! The query API through real HTTP on a spawned server, against the real Postgres.

mod audit;
mod comments;
mod consistency;
mod documents;
mod incidents;
mod lists;
mod metrics;
mod paging;
mod reports;
mod resources;
#[allow(dead_code)]
mod support;
mod users;
