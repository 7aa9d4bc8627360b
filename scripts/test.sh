#!/usr/bin/env bash
# The test suite. Run scripts/setup.sh first (the README's test command does).
#  1. builds every plugin (shipped, hostile test plugins, the Python example) — no-op when built;
#  2. runs the conformance suite on the Python plugin through the CLI;
#  3. the search core replays the reference vectors natively; the IFEval checker's unit tests;
#  4. the host's unit and integration tests: real plugins through wasmtime, libtorch, the CLI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/env.sh
bash scripts/build-plugins.sh
cargo build --quiet -p spar-host
echo "== plugin check examples/python-checker (a plugin written in Python)"
./target/debug/spar-host plugin check examples/python-checker/build/python_checker.wasm
cargo test --manifest-path plugins/Cargo.toml -p spar-search-core 2>&1
# The IFEval checker's unit tests (per-type pass/fail, Python string semantics, Punkt,
# Treebank, langdetect) run natively; its parity with the reference is in tests/ifeval_parity.rs.
cargo test --manifest-path plugins/Cargo.toml -p ifeval --target "$(rustc -vV | sed -n 's/^host: //p')" 2>&1
cargo test -p spar-gemm 2>&1
cargo test -p spar-host 2>&1
