pub mod migrate;
pub mod serve;
