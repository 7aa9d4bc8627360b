//! spar-host: SPaR self-play with models in libtorch and plugins as WebAssembly components.
//!
//! Modules by concern, data flowing one way: `plugin` (the sandboxed component host and one
//! module per world) → `score` (checking responses with checker plugins) → `bench`.

pub mod backend;
pub mod bench;
pub mod bench_serve;
pub mod eval;
pub mod export;
pub mod model;
pub mod plot;
pub mod plugin;
pub mod prompts;
pub mod score;
pub mod selfplay;
pub mod serve;
pub mod torch;
pub mod train;
