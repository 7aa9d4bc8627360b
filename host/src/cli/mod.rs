//! Subcommand implementations of the `spar-host` binary.

pub mod model;
