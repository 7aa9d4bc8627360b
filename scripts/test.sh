#!/usr/bin/env bash
# The test suite: host unit and integration tests (real plugins through wasmtime, libtorch),
# the plugins' own unit tests, and the conformance suite on every plugin including the
# Python one. Run scripts/setup.sh first.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/env.sh
cargo test -p spar-host 2>&1
# Plugin crates' unit tests run natively (their logic is plain Rust).
cargo test --manifest-path plugins/Cargo.toml 2>&1
