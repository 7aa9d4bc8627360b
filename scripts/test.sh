#!/usr/bin/env bash
# The test suite: host unit and integration tests (real plugins through wasmtime, libtorch),
# the plugins' own unit tests, and the conformance suite on every plugin including the
# Python one. Run scripts/setup.sh first.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/env.sh
cargo test -p spar-host 2>&1
# The search core (plain Rust shared by the BFS and DFS plugins) replays the reference
# vectors natively; every plugin is also tested as a component by the host tests.
cargo test --manifest-path plugins/Cargo.toml -p spar-search-core 2>&1
