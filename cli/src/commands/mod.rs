pub mod admin;
pub mod audit;
pub mod documents;
pub mod events;
pub mod migrate;
pub mod replay;
pub mod serve;
pub mod status;
