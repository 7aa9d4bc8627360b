//! The host's integration tests, one binary with a module per area (`cargo test -p spar-host
//! --test integration AREA::` runs one): real plugins through wasmtime, libtorch models, the
//! CLI, servers on loopback.

mod common;

mod cli;
mod dpo_parity;
mod evalsuite;
mod gguf_import;
mod ifeval_parity;
mod model_cli;
mod model_parity;
mod model_save;
mod plugin_cache;
mod plugin_conformance;
mod plugin_sandbox;
mod search_replay;
mod selfplay_run;
mod selfplay_search;
mod serve;
mod train_loop;
