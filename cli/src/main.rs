use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: the request path allocates a lot of small,
/// short-lived buffers across Tokio's worker threads, where glibc's malloc showed as the
/// largest single cost in profiles (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    workledger::run(workledger::cli::Cli::parse())
}
