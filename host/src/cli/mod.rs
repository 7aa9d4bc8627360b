//! Subcommand implementations of the `spar-host` binary.

pub mod eval;
pub mod evalsuite;
pub mod model;
pub mod prompts;
pub mod serve;
